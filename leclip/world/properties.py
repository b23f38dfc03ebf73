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
from . import pretrain, render, synth_fg, synth_ml

TEMPLATE = "a photo of a {}."  # DATASET.PROMPT_TEMPLATE's default, the prompt of zero-shot CLIP
CCD_TEMPLATE = "a photo of the {}."  # CCD's pseudo-label prompt
CCD_SCALE = 100.0  # CCD scores softmax(100 cos) whatever the model's temperature
RELIABLE_ENTROPY = 2.0  # CCD: images above this entropy are unreliable
SFM_TOP_K = 10  # TRAINER.CFSG.TOP_K's default


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
    """CLIP's class bias on the training split (CCD's rule) and the mAP of its raw and
    debiased labels against the true ones."""
    images, labels = synth_ml.render_split(world_seed, "train", num_images, model.visual.input_resolution)
    probs = zero_shot_probs(model, encode(model, images)[0], synth_ml.CLASSNAMES, CCD_TEMPLATE, CCD_SCALE)
    reliable = clip_labels.entropy(probs) <= RELIABLE_ENTROPY
    bias = clip_labels.class_bias(probs, reliable)
    return {
        "bias": bias.numpy(),
        "bias_spread": float(bias.max() / bias.min()),
        "reliable_share": 100.0 * float(reliable.float().mean()),
        "map_raw": metrics.mean_average_precision(probs.numpy(), labels),
        "map_debiased": metrics.mean_average_precision(clip_labels.debias(probs, bias).numpy(), labels),
    }


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
    CSA's premise as it matters when labels are few."""
    size = model.visual.input_resolution
    train, train_labels = synth_ml.render_split(world_seed, "train", train_images, size)
    test, test_labels = synth_ml.render_split(world_seed, "test", test_images, size)
    (train_global, train_patches), (test_global, test_patches) = encode(model, train), encode(model, test)
    text = class_text_features(model, synth_ml.CLASSNAMES, TEMPLATE)
    train_specific, test_specific = (F.normalize(label_specific_features(p, text)[0], dim=-1).numpy()
                                     for p in (train_patches, test_patches))
    few = max(2, round(ratio * train_images))
    return {
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
