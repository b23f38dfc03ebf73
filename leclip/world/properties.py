"""The measurable premises of the embedded world, one function per property.

Each function returns plain numbers, so `scripts/world_report.py` prints them beside
their targets and the tests check them on small renders:
- task A (`synth_fg`): part area / object area; a linear probe on the frozen global
  feature against one on the patch that holds the part; zero-shot closed accuracy and
  AUROC (max softmax over the ID classes at the model's logit scale); how often
  CFSG-CLIP's SFM (top-10 patches by cosine with the true class's prompt) keeps the part.
- task B (`synth_ml`): CLIP recall@k on whole images against crops around the ground-
  truth boxes; CLIP's class bias (CCD's rule) and the mAP of raw and debiased labels.
- task C (`synth_ml`): adjusted Rand index between the planted contexts and the spectral
  clustering of a labeled subset's co-occurrence; linear probes from a labeled subset on
  the global feature and on CSA's label-specific features, and on the global feature
  from every label (the frozen feature's ceiling).
"""
import copy

import numpy as np
import torch
import torch.nn.functional as F

from .. import metrics
from ..data import splits
from ..backbone.encoders import ImageEncoder
from ..backbone.prompts import class_text_features
from ..multilabel import clip_labels, contexts
from ..multilabel.label_features import label_specific_features
from ..sfm import SemanticFilter
from . import pretrain, references, render, synth_fg, synth_ml

TEMPLATE = "a photo of a {}."  # DATASET.PROMPT_TEMPLATE's default, the prompt of zero-shot CLIP
CCD_TEMPLATE = "a photo of the {}."  # CCD's pseudo-label prompt
CCD_SCALE = 100.0  # CCD scores softmax(100 cos) whatever the model's temperature
RELIABLE_ENTROPY = 2.0  # CCD: images above this entropy are unreliable
CCD_FLOOR = 1.0 / 20  # CCD's label floor 1/LS_COEFF: every label below it ties there
SFM_TOP_K = 10  # TRAINER.CFSG.TOP_K's default
MCM_TEMPERATURE = 1.0  # MCM scores max softmax(cos / T) with T = 1
FEW_SHOTS = 5  # synth_fg's labeled images per ID class (the benchmark's own labeled set)


# ---------------------------------------------------------------- features
@torch.no_grad()
def encode(model, images, batch_size=256):
    """(global [N, D], patches [N, P, D]) normalised features of uint8 images."""
    encoder = ImageEncoder(model).eval()
    out_global, out_patches = [], []
    for start in range(0, len(images), batch_size):
        g, p = encoder(pretrain.to_tensor(images[start : start + batch_size]))
        out_global.append(F.normalize(g.float(), dim=-1))
        out_patches.append(F.normalize(p.float(), dim=-1))
    return torch.cat(out_global), torch.cat(out_patches)


def patch_index(model, points):
    """Row-major index of the patch holding each pixel point (x, y) [N, 2]."""
    grid = pretrain.grid_size(model)
    patch = model.visual.input_resolution / grid
    cells = np.clip(np.floor(np.asarray(points) / patch).astype(np.int64), 0, grid - 1)
    return cells[:, 1] * grid + cells[:, 0]


def zero_shot_probs(model, features, classnames, template=TEMPLATE, scale=None):
    """softmax(scale * cos) [N, C]; scale defaults to the model's learned logit scale."""
    text = class_text_features(model, classnames, template)
    scale = model.logit_scale.exp().item() if scale is None else scale
    return (scale * features @ text.t()).softmax(dim=-1)


# ---------------------------------------------------------------- task A
def part_area_fractions(scenes, slot, size=render.IMAGE_SIZE):
    """[N] pixels the part changes / pixels of its object, on a flat noiseless canvas."""
    flat = copy.deepcopy(scenes)
    flat.gradient[:] = 0
    flat.background[:] = 0
    flat.shape[:, :slot] = -1  # no clutter
    rng = np.random.default_rng(0)  # no noise is drawn with a zero noise level
    with_part = render.render(flat, rng, size)
    flat.part[:, slot] = -1
    without_part = render.render(flat, rng, size)
    flat.shape[:, slot] = -1
    empty = render.render(flat, rng, size)
    object_pixels = (without_part != empty).any(axis=-1).sum(axis=(1, 2))
    part_pixels = (with_part != without_part).any(axis=-1).sum(axis=(1, 2))
    return part_pixels / np.maximum(object_pixels, 1)


def linear_probe(train_x, train_y, test_x, test_y, c=10.0):
    """Accuracy (%) of a multinomial logistic regression on frozen features."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=c, max_iter=3000).fit(train_x, train_y)
    return 100.0 * float((clf.predict(test_x) == test_y).mean())


def fg_properties(model, world_seed=0, pool_per_class=40, test_per_class=20):
    k = synth_fg.NUM_ID
    pool_images, pool_labels = synth_fg.render_split(world_seed, "pool", pool_per_class)
    test_images, test_labels = synth_fg.render_split(world_seed, "test", test_per_class)
    pool_global, pool_patches = encode(model, pool_images)
    test_global, test_patches = encode(model, test_images)

    def part_index(split, per_class):  # [N] the patch that holds each image's part
        return torch.from_numpy(patch_index(model, synth_fg.part_centres(world_seed, split, per_class)))

    def at(patches, index):
        return patches[torch.arange(len(index)), index]

    pool_part, test_part = part_index("pool", pool_per_class), part_index("test", test_per_class)
    probe_global = linear_probe(pool_global.numpy(), pool_labels, test_global.numpy(), test_labels)
    probe_part = linear_probe(
        at(pool_patches, pool_part).numpy(), pool_labels, at(test_patches, test_part).numpy(), test_labels
    )
    probs = zero_shot_probs(model, test_global, synth_fg.CLASSNAMES[:k])
    is_ood = test_labels >= k
    # CFSG-CLIP's SFM keeps the patches most like the class prompt: does it keep the part's?
    text = class_text_features(model, synth_fg.CLASSNAMES, TEMPLATE)
    _, kept, _ = SemanticFilter(SFM_TOP_K)(test_patches, test_global, text[torch.from_numpy(test_labels)])
    sfm_hit = (kept == test_part[:, None]).any(dim=1).float().mean().item()
    msp = probs.max(dim=-1).values.numpy()
    scenes, _ = synth_fg.split_scenes(world_seed, "test", 1)
    return {
        "part_area_max": 100.0 * float(part_area_fractions(scenes, synth_fg.OBJECT_SLOT).max()),
        "probe_global": probe_global,
        "probe_part_patch": probe_part,
        "probe_chance": 100.0 / len(synth_fg.CLASSES),
        "zs_closed_acc": metrics.closed_accuracy(probs.numpy(), test_labels, k),
        "zs_auroc": metrics.auroc(msp[~is_ood], msp[is_ood]),
        "zs_chance": 100.0 / k,
        "sfm_part_hit": 100.0 * sfm_hit,
        "sfm_chance": 100.0 * SFM_TOP_K / test_patches.shape[1],
    }


def _shots(labels, classes, per_class, rng):
    """Indices of `per_class` random images of each class in `classes`."""
    return np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes])


def fg_headroom(model, world_seed=0, pool_per_class=40, test_per_class=20, seeds=(1, 2, 3), views=3,
                fixmatch_steps=300):
    """Task A's headroom, by reference learners on the frozen global feature of the ID
    classes: zero-shot closed accuracy; linear probes from 20 and `FEW_SHOTS` labels a
    class; MCM's AUROC (ID test images against the look-alikes); a linear head from the
    text features trained on the `FEW_SHOTS` labels alone, with plain FixMatch on the
    oracle unlabeled pool (ID images only) and on the benchmark's pool (look-alikes
    included). Learners that draw labels are averaged over `seeds`."""
    k = synth_fg.NUM_ID
    pool_images, pool_labels = synth_fg.render_split(world_seed, "pool", pool_per_class)
    test_images, test_labels = synth_fg.render_split(world_seed, "test", test_per_class)
    pool = encode(model, pool_images)[0]
    test = encode(model, test_images)[0]
    is_id = test_labels < k
    text = class_text_features(model, synth_fg.CLASSNAMES[:k], TEMPLATE)
    scale = model.logit_scale.exp().item()
    zs = zero_shot_probs(model, test, synth_fg.CLASSNAMES[:k])
    mcm = (test @ text.t() / MCM_TEMPERATURE).softmax(dim=-1).max(dim=-1).values.numpy()

    def accuracy(predicted):
        return 100.0 * float((predicted[is_id] == test_labels[is_id]).mean())

    def probe(per_class, seed):
        rows = _shots(pool_labels, range(k), per_class, np.random.default_rng(seed))
        return linear_probe(pool[rows].numpy(), pool_labels[rows], test[is_id].numpy(), test_labels[is_id])

    encoder = lambda images: encode(model, images)[0]  # noqa: E731
    weak = references.encoded_views(encoder, pool_images, views, strong=False, seed=world_seed)
    strong = references.encoded_views(encoder, pool_images, views, strong=True, seed=world_seed + 1)
    runs = {"labels_only": [], "fixmatch_oracle": [], "fixmatch_pool": []}
    for seed in seeds:
        labeled = _shots(pool_labels, range(k), FEW_SHOTS, np.random.default_rng(seed))
        rest = np.setdiff1d(np.arange(len(pool_labels)), labeled)
        oracle = rest[pool_labels[rest] < k]
        for name, unlabeled in (("labels_only", None), ("fixmatch_oracle", oracle), ("fixmatch_pool", rest)):
            views_u = None if unlabeled is None else (weak[:, unlabeled], strong[:, unlabeled])
            predicted = references.fixmatch_head(
                text, scale, weak[:, labeled], pool_labels[labeled], test, views_u, seed=seed, steps=fixmatch_steps
            )
            runs[name].append(accuracy(predicted))
    return {
        "zs_closed_acc": metrics.closed_accuracy(zs.numpy(), test_labels, k),
        "zs_mcm_auroc": metrics.auroc(mcm[is_id], mcm[~is_id]),
        "probe_20": float(np.mean([probe(20, seed) for seed in seeds])),
        "probe_few": float(np.mean([probe(FEW_SHOTS, seed) for seed in seeds])),
        **{name: np.array(values) for name, values in runs.items()},
    }


# ---------------------------------------------------------------- task B
def crop_boxes(boxes, size, margin=1 / 8):
    """Each ground-truth box grown by `margin` of the image size on every side (CCD grows
    its boxes by 80 px at 640 px)."""
    grow = margin * size
    return np.concatenate([b[:, 1:5] + np.array([-grow, -grow, grow, grow]) for b in boxes])


def ml_view_properties(model, world_seed=0, num_images=320, k=3):
    """Recall@k of CLIP (CCD's prompt and scale) on whole test images and on crops around
    their objects, overall and for the small objects."""
    size = model.visual.input_resolution
    scenes, objects = synth_ml.split_scenes(world_seed, "test", num_images, size)
    images = render.render_in_chunks(scenes, [world_seed, synth_ml.STREAMS["test"]], size)
    boxes = synth_ml.object_boxes(scenes, objects)
    names = synth_ml.CLASSNAMES
    whole = zero_shot_probs(model, encode(model, images)[0], names, CCD_TEMPLATE, CCD_SCALE)
    owner = np.concatenate([np.full(len(b), i) for i, b in enumerate(boxes)])
    classes = np.concatenate([b[:, 0] for b in boxes]).astype(np.int64)
    small = np.concatenate([b[:, 5] for b in boxes]) <= synth_ml.SMALL_RADIUS[1] * size
    crops = render.crop_and_resize(images[owner], crop_boxes(boxes, size), size)
    on_crop = zero_shot_probs(model, encode(model, crops)[0], names, CCD_TEMPLATE, CCD_SCALE)
    # an object is found when its class is among the top-k of its image (or its crop)
    found_whole = (whole.topk(k, dim=-1).indices.numpy()[owner] == classes[:, None]).any(axis=1)
    found_crop = (on_crop.topk(k, dim=-1).indices.numpy() == classes[:, None]).any(axis=1)
    return {
        "recall_whole": 100.0 * float(found_whole.mean()),
        "recall_crop": 100.0 * float(found_crop.mean()),
        "recall_whole_small": 100.0 * float(found_whole[small].mean()),
        "recall_crop_small": 100.0 * float(found_crop[small].mean()),
        "top_k": k,
    }


def ml_bias_properties(model, world_seed=0, num_images=640):
    """On the training split (CCD's prompt and scale): the mAP of CLIP's labels from whole
    images and from crops around the objects (per class, the max over the image's crops,
    as CCD's local labels), CLIP's class bias (CCD's rule) and the mAP of the raw and
    debiased labels, per class and over all image-class pairs, and the share of positive
    and negative pairs that CCD's floor ties: per class, the rule is
    monotone up to the ties its floor and clamp make, so only the pooled AP sees what a
    per-class rescaling does to a BCE target; it is compared with CCD's ablation (the
    floor without the division)."""
    from sklearn.metrics import average_precision_score

    size = model.visual.input_resolution
    scenes, objects = synth_ml.split_scenes(world_seed, "train", num_images, size)
    images = render.render_in_chunks(scenes, [world_seed, synth_ml.STREAMS["train"]], size)
    labels = synth_ml.multi_hot(objects)
    probs = zero_shot_probs(model, encode(model, images)[0], synth_ml.CLASSNAMES, CCD_TEMPLATE, CCD_SCALE)
    boxes = synth_ml.object_boxes(scenes, objects)
    owner = np.concatenate([np.full(len(b), i) for i, b in enumerate(boxes)])
    crops = render.crop_and_resize(images[owner], crop_boxes(boxes, size), size)
    on_crop = zero_shot_probs(model, encode(model, crops)[0], synth_ml.CLASSNAMES, CCD_TEMPLATE, CCD_SCALE)
    crop_max = np.zeros(probs.shape, dtype=np.float32)
    np.maximum.at(crop_max, owner, on_crop.numpy())
    reliable = clip_labels.entropy(probs) <= RELIABLE_ENTROPY
    bias = clip_labels.class_bias(probs, reliable)
    debiased = clip_labels.debias(probs, bias, 1.0 / CCD_FLOOR)
    floor_only = clip_labels.debias(probs, torch.ones_like(bias), 1.0 / CCD_FLOOR)  # CCD's ablation without debiasing
    below = probs.numpy() < CCD_FLOOR
    return {
        "bias": bias.numpy(),
        "bias_spread": float(bias.max() / bias.min()),
        "reliable_share": 100.0 * float(reliable.float().mean()),
        "map_raw": metrics.mean_average_precision(probs.numpy(), labels),
        "map_crops": metrics.mean_average_precision(crop_max, labels),
        "map_debiased": metrics.mean_average_precision(debiased.numpy(), labels),
        "map_floor": metrics.mean_average_precision(floor_only.numpy(), labels),
        # the floor ties these: a positive below it ranks level with most negatives
        "positives_below_floor": 100.0 * float(below[labels == 1].mean()),
        "negatives_below_floor": 100.0 * float(below[labels == 0].mean()),
        "pooled_ap_raw": 100.0 * average_precision_score(labels.ravel(), probs.numpy().ravel()),
        "pooled_ap_debiased": 100.0 * average_precision_score(labels.ravel(), debiased.numpy().ravel()),
        "pooled_ap_floor": 100.0 * average_precision_score(labels.ravel(), floor_only.numpy().ravel()),
    }


def ml_bce_headroom(world_seed=0, train_images=640, test_images=320, backbone="mobilenet_v3_small", input_size=64,
                    epochs=10, seed=1):
    """Test mAP of CCD's classifier (the shipped world-pretrained `backbone`) trained with
    BCE on the true training labels, and the size of its class maps."""
    from .trunk import asset_path

    train, train_labels = synth_ml.render_split(world_seed, "train", train_images)
    test, test_labels = synth_ml.render_split(world_seed, "test", test_images)
    scores, cam_size = references.bce_classifier(
        train, train_labels, test, asset_path(backbone), backbone, input_size, seed=seed, epochs=epochs
    )
    return {"bce_map": metrics.mean_average_precision(scores, test_labels), "cam_size": cam_size}


def ml_zero_shot(model, world_seed=0, num_images=320):
    """Zero-shot mAP on the test split (zero-shot CLIP's prompt) from the global feature
    (its softmax over the classes, and its raw cosines) and from CSA's label-specific
    features, and the label-frequency baseline (every image scored with the class
    frequencies)."""
    images, labels = synth_ml.render_split(world_seed, "test", num_images, model.visual.input_resolution)
    global_features, patches = encode(model, images)
    probs = zero_shot_probs(model, global_features, synth_ml.CLASSNAMES)
    # CSA's premise: class k's own attention-pooled patches f_k, scored by cos(f_k, t_k)
    text = class_text_features(model, synth_ml.CLASSNAMES, TEMPLATE)
    pooled, _ = label_specific_features(patches, text)
    label_specific = torch.einsum("bcd,cd->bc", F.normalize(pooled, dim=-1), text)
    frequency = np.broadcast_to(labels.mean(axis=0), labels.shape)
    return {
        "zs_map": metrics.mean_average_precision(probs.numpy(), labels),
        # the same feature ranked by its raw cosines, without the softmax over the classes
        "zs_map_cosine": metrics.mean_average_precision((global_features @ text.t()).numpy(), labels),
        "zs_map_label_specific": metrics.mean_average_precision(label_specific.numpy(), labels),
        "frequency_map": metrics.mean_average_precision(frequency, labels),
    }


def _probe_map(train_features, train_labels, test_features, test_labels):
    """Test mAP of one logistic regression per class; features [N, D] shared by every class,
    or [N, C, D] with class c's own feature in column c. A class constant in training keeps score 0."""
    from sklearn.linear_model import LogisticRegression

    scores = np.zeros(test_labels.shape)
    for c in range(test_labels.shape[1]):
        if train_labels[:, c].min() != train_labels[:, c].max():
            fit_on = train_features if train_features.ndim == 2 else train_features[:, c]
            score_on = test_features if test_features.ndim == 2 else test_features[:, c]
            probe = LogisticRegression(max_iter=2000).fit(fit_on, train_labels[:, c])
            scores[:, c] = probe.decision_function(score_on)
    return metrics.mean_average_precision(scores, test_labels)


def ml_probes(model, world_seed=0, train_images=640, test_images=320, ratio=0.1):
    """Test mAP of per-class linear probes on frozen CLIP features: the global feature with
    every training label (about what a method that keeps CLIP frozen can reach), and, with
    the first `ratio` of the training images only (task C's labeled part), the global
    feature against CSA's label-specific features (each class's probe reads its own f_k):
    CSA's premise as it matters when labels are few; and the global feature with the
    scene's planted context as extra inputs: do contexts carry information?"""
    size = model.visual.input_resolution
    train, train_labels = synth_ml.render_split(world_seed, "train", train_images, size)
    test, test_labels = synth_ml.render_split(world_seed, "test", test_images, size)
    (train_global, train_patches), (test_global, test_patches) = encode(model, train), encode(model, test)
    text = class_text_features(model, synth_ml.CLASSNAMES, TEMPLATE)
    train_specific, test_specific = (F.normalize(label_specific_features(p, text)[0], dim=-1).numpy()
                                     for p in (train_patches, test_patches))
    few = max(2, round(ratio * train_images))
    # the scene's context as extra inputs (one-hot): does knowing it help the few labels?
    train_context, test_context = (np.eye(synth_ml.NUM_CONTEXTS)[synth_ml.split_contexts(world_seed, split, n)]
                                   for split, n in (("train", train_images), ("test", test_images)))
    with_context = [np.concatenate([g.numpy(), c], axis=1) for g, c in ((train_global, train_context),
                                                                         (test_global, test_context))]
    return {
        "probe_context_few": _probe_map(with_context[0][:few], train_labels[:few], with_context[1], test_labels),
        "probe_global_all": _probe_map(train_global.numpy(), train_labels, test_global.numpy(), test_labels),
        "probe_global_few": _probe_map(train_global[:few].numpy(), train_labels[:few], test_global.numpy(), test_labels),
        "probe_label_specific_few": _probe_map(train_specific[:few], train_labels[:few], test_specific, test_labels),
        "few_labels": few,
    }


# ---------------------------------------------------------------- task C
def context_recovery(world_seed=0, num_images=640, ratio=0.1, seeds=(1, 2, 3)):
    """[len(seeds)] adjusted Rand index between the planted primary contexts and the
    spectral clustering of the co-occurrence of a labeled `ratio` of the training split
    (drawn as the benchmark draws it for each run seed)."""
    from sklearn.metrics import adjusted_rand_score

    _, objects = synth_ml.split_scenes(world_seed, "train", num_images)
    labels = synth_ml.multi_hot(objects)
    scores = []
    for seed in seeds:
        labeled = splits.labeled_ratio_split(len(labels), ratio, seed)["labeled"]
        found = contexts.cluster_classes(labels[labeled], synth_ml.NUM_CONTEXTS, seed=seed)
        scores.append(adjusted_rand_score(synth_ml.PRIMARY_CONTEXT, found))
    return np.array(scores)
