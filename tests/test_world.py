"""The embedded world: generators, its premises, render cache, shipped CLIP."""
import os
import os.path as osp

import clip
import numpy as np
import pytest
import torch

from leclip.world import cache, captions, pretrain, properties, render, synth_fg, synth_ml

SIZE = render.IMAGE_SIZE


# ------------------------------------------------------------------ generators
def test_fg_split_is_deterministic_per_seed():
    images, labels = synth_fg.render_split(0, "test", 2)
    again, labels_again = synth_fg.render_split(0, "test", 2)
    other, _ = synth_fg.render_split(1, "test", 2)
    pool, _ = synth_fg.render_split(0, "pool", 2)
    assert images.shape == (2 * len(synth_fg.CLASSES), SIZE, SIZE, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again) and np.array_equal(labels, labels_again)
    assert not np.array_equal(images, other)  # another world seed
    assert not np.array_equal(images, pool)  # another split's seed stream
    assert labels.tolist() == [k for k in range(len(synth_fg.CLASSES)) for _ in range(2)]


def test_ml_split_is_deterministic_per_seed():
    images, labels = synth_ml.render_split(0, "test", 40)
    again, labels_again = synth_ml.render_split(0, "test", 40)
    other, other_labels = synth_ml.render_split(1, "test", 40)
    assert np.array_equal(images, again) and np.array_equal(labels, labels_again)
    assert not np.array_equal(images, other) and not np.array_equal(labels, other_labels)


def _flat(scenes):
    """The scenes on a flat grey background, without clutter or pixel noise."""
    scenes.gradient[:] = 0
    scenes.background[:] = 128
    scenes.shape[:, : synth_fg.OBJECT_SLOT] = -1
    return scenes


def test_chunked_render_equals_itself_and_draws_the_requested_object():
    rng = np.random.default_rng(0)
    scenes = _flat(synth_fg.object_scenes(rng, ["disc"] * 3, ["crimson"] * 3, ["plain"] * 3, [None] * 3))
    scenes.center[:, synth_fg.OBJECT_SLOT] = SIZE / 2
    images = render.render_in_chunks(scenes, [5], chunk=2)
    assert np.array_equal(images, render.render_in_chunks(scenes, [5], chunk=2))
    crimson = np.array(render.SHADES["crimson"])
    # centre pixel: the shade within its jitter; corner: the background
    assert np.abs(images[:, SIZE // 2, SIZE // 2].astype(int) - crimson).max() <= 25
    assert (images[:, 0, 0] == 128).all()


@pytest.mark.parametrize("part", render.PART_NAMES)
def test_a_part_changes_only_pixels_near_its_centre_and_under_a_tenth_of_the_object(part):
    rng = np.random.default_rng(1)
    shapes = ["disc", "square", "triangle", "hexagon"]
    scenes = _flat(synth_fg.object_scenes(rng, shapes, ["azure"] * 4, ["plain"] * 4, [part] * 4))
    fractions = properties.part_area_fractions(scenes, synth_fg.OBJECT_SLOT)
    assert (fractions > 0.02).all() and (fractions <= 0.10).all()
    with_part = render.render(scenes, rng)
    centre = render.part_centres(scenes, synth_fg.OBJECT_SLOT)
    scenes.part[:] = -1
    changed = (render.render(scenes, rng) != with_part).any(axis=-1)
    assert changed.any(axis=(1, 2)).all()
    ys, xs = np.mgrid[:SIZE, :SIZE] + 0.5
    for i in range(len(shapes)):
        distance = np.hypot(xs - centre[i, 0], ys - centre[i, 1])
        radius = scenes.radius[i, synth_fg.OBJECT_SLOT]
        assert distance[changed[i]].max() <= 0.45 * radius + 1.5, (shapes[i], part)


def test_parts_but_the_notch_have_their_own_colour_unlike_any_shade():
    assert set(render.MARK_COLOURS) == set(render.PART_NAMES) - {"notched"}
    marks = np.array(list(render.MARK_COLOURS.values()), dtype=float)
    shades = np.array(list(render.SHADES.values()), dtype=float)
    between_marks = np.linalg.norm(marks[:, None] - marks[None], axis=-1)[~np.eye(len(marks), dtype=bool)]
    assert between_marks.min() > 100 and np.linalg.norm(marks[:, None] - shades[None], axis=-1).min() > 60
    rng = np.random.default_rng(2)
    scenes = _flat(synth_fg.object_scenes(rng, ["disc"], ["crimson"], ["plain"], ["knobbed"]))
    x, y = render.part_centres(scenes, synth_fg.OBJECT_SLOT)[0]
    assert np.abs(render.render(scenes, rng)[0, int(y), int(x)].astype(int) - render.MARK_COLOURS["knobbed"]).max() <= 3


def test_part_area_fraction_counts_changed_pixels_over_object_pixels():
    scenes = _flat(synth_fg.object_scenes(np.random.default_rng(0), ["square"], ["azure"], ["plain"], ["eyed"]))
    scenes.angle[:] = 0
    fraction = properties.part_area_fractions(scenes, synth_fg.OBJECT_SLOT)[0]
    radius = scenes.radius[0, synth_fg.OBJECT_SLOT]
    # a disc of radius 0.22 * 0.927 r inside a square of half-side 0.82 r (edge pixels count in full)
    eye = np.pi * (render.EYE_RADIUS * render.PART_SCALE[1] * radius) ** 2
    square = (2 * 0.82 * radius) ** 2
    assert eye / square * 0.8 < fraction < eye / square * 1.6


def test_fg_siblings_differ_only_in_their_part_and_every_ood_class_has_id_siblings():
    names = synth_fg.CLASSNAMES
    assert len(names) == 24 and len(set(names)) == len(names) and synth_fg.NUM_ID == 12
    id_classes, ood_classes = synth_fg.CLASSES[: synth_fg.NUM_ID], synth_fg.CLASSES[synth_fg.NUM_ID :]
    for ood in ood_classes:
        siblings = [c for c in id_classes if (c.shape, c.family, c.shade, c.texture) == (ood.shape, ood.family, ood.shade, ood.texture)]
        assert len(siblings) == 3 and all(c.part != ood.part for c in siblings), ood.name
    for c in synth_fg.CLASSES:
        assert c.description == f"{c.part} {c.family} {c.shape}" and render.FAMILY_OF[c.shade] == c.family
        # named by a proper noun and its group's common word, never by its part or colour
        proper, shape = c.name.split()
        assert shape == c.shape and proper not in render.PART_NAMES + tuple(render.FAMILIES)
    # no part marks a class as OOD: each part is ID in some group and OOD in another
    assert {c.part for c in id_classes} == {c.part for c in ood_classes} == set(render.PART_NAMES)


def test_ml_scenes_hold_one_to_four_objects_some_small():
    assert len(synth_ml.CLASSNAMES) == 16 and len(set(synth_ml.CLASSNAMES)) == 16
    scenes, objects = synth_ml.split_scenes(0, "test", 400)
    assert {len(o) for o in objects} == {1, 2, 3, 4}
    labels = synth_ml.multi_hot(objects)
    assert labels.sum(0).min() > 0  # every class occurs
    boxes = np.concatenate(synth_ml.object_boxes(scenes, objects))
    assert (boxes[:, 1:5] >= 0).all() and (boxes[:, 1:5] <= SIZE).all()  # inside the image
    small = boxes[:, 5] <= synth_ml.SMALL_RADIUS[1] * SIZE
    assert 0.3 < small.mean() < 0.5
    assert boxes[small, 5].max() < 0.75 * boxes[~small, 5].min()


def test_contexts_are_planted_and_recovered_from_a_tenth_of_the_labels():
    primary = synth_ml.PRIMARY_CONTEXT
    for k in range(synth_ml.NUM_CONTEXTS):  # one class of each colour and of each shape
        members = np.flatnonzero(primary == k)
        assert sorted(members // 4) == [0, 1, 2, 3] and sorted(members % 4) == [0, 1, 2, 3]
    ari = properties.context_recovery(world_seed=0, num_images=640, ratio=0.1, seeds=(1, 2, 3))
    assert ari.mean() >= 0.8
    # without contexts the clustering finds nothing
    original = synth_ml.IN_CONTEXT
    try:
        synth_ml.IN_CONTEXT = 0.0
        assert properties.context_recovery(0, 640, 0.1, seeds=(1, 2, 3)).mean() < 0.3
    finally:
        synth_ml.IN_CONTEXT = original


# ------------------------------------------------------------------ captions
def test_class_names_are_unique_short_and_spoken_by_the_captions():
    names = synth_fg.CLASSNAMES + synth_ml.CLASSNAMES
    assert len(set(names)) == len(names)
    lengths = (clip.tokenize(list(names)) > 0).sum(1) - 2
    assert lengths.max() <= 6  # 4 prompt context tokens fit the 16-token context
    rng = np.random.default_rng(0)
    spoken = set()
    for _ in range(6):
        _, texts, regions, _ = captions.pretraining_batch(rng, 128)
        spoken.update(texts + [t for _, _, t in regions])
    corpus = " | ".join(spoken)
    assert not [c.description for c in synth_fg.CLASSES if c.description not in corpus]
    assert len([n for n in synth_fg.CLASSNAMES if n in corpus]) > len(synth_fg.CLASSNAMES) / 2
    # a synth_ml name with a preferred synonym is rare ("purple cross": 0.05 x 0.1 of its
    # objects' phrases), yet spoken; every other is common
    assert not [n for n in synth_ml.CLASSNAMES if n not in corpus and "purple" not in n and "cross" not in n]
    phrases = {captions.object_phrase(rng, "purple", "cross") for _ in range(2000)}
    assert phrases == {"purple cross", "violet cross", "purple plus", "violet plus"}


def test_proper_names_are_seldom_attached_to_the_detail():
    """A caption that names a synth_fg class by its proper noun names the class's own
    P_PROPER_RIGHT of the time, else any of its group's three of its kind (ID or
    look-alike): the group is reliable, the variant barely above chance; and only
    P_PROPER of the captions of its images do."""
    rng = np.random.default_rng(0)
    for cls in (0, synth_fg.NUM_ID):  # an ID class and a look-alike
        c = synth_fg.CLASSES[cls]
        said = [captions.proper_phrase(rng, cls) for _ in range(3000)]
        kind = {k.name for i, k in enumerate(synth_fg.CLASSES)
                if k.shape == c.shape and (i < synth_fg.NUM_ID) == (cls < synth_fg.NUM_ID)}
        assert set(said) == kind and len(kind) == 3
    own = captions.P_PROPER_RIGHT + (1 - captions.P_PROPER_RIGHT) / 3
    assert abs(np.mean([s == c.name for s in said]) - own) < 0.03
    _, texts, _ = captions.single_batch(np.random.default_rng(1), 400, SIZE, 8)
    proper = np.mean([any(n in t for n in synth_fg.CLASSNAMES) for t in texts])
    assert abs(proper - 0.5 * captions.P_PROPER) < 0.05  # half the single objects are of a synth_fg class


def test_captions_fit_the_context_and_name_colour_and_shape():
    images, texts, regions, _ = captions.pretraining_batch(np.random.default_rng(0), 64)
    assert images.shape == (64, SIZE, SIZE, 3) and len(texts) == 64
    tokens = clip.tokenize(texts + [t for _, _, t in regions], context_length=pretrain.ARCH["context_length"], truncate=True)
    assert (tokens == 49407).sum(1).eq(1).all()  # one end token each: nothing was cut off
    colours = set(render.FAMILIES) | {s for s, _ in captions.SYNONYMS.values()}
    by_name = [any(n in t for n in synth_fg.CLASSNAMES) for t in texts]
    assert all(any(w.strip(",.") in colours for w in t.split()) for t, named in zip(texts, by_name) if not named)


def _spellings(word):
    synonym = captions.SYNONYMS.get(word)
    return (word,) if synonym is None else (word, synonym[0])


def test_small_objects_are_seldom_named_and_synonyms_preferred():
    rng = np.random.default_rng(0)
    _, texts, regions, boxes = captions.scene_batch(rng, 400, SIZE, 8)
    named = {"small": [], "large": []}
    for text, rows in zip(texts, boxes):
        classes = rows[:, 0].astype(int).tolist()
        for cls, radius in zip(classes, rows[:, 5]):
            if classes.count(cls) > 1:
                continue  # another object of its class may be the one named
            family, shape = synth_ml.CLASSNAMES[cls].split()
            said = any(f"{c} {s}" in text for c in _spellings(family) for s in _spellings(shape))
            named["small" if radius <= synth_ml.SMALL_RADIUS[1] * SIZE else "large"].append(said)
    assert np.mean(named["large"]) > 0.8 and np.mean(named["small"]) < 0.3
    words = " ".join(t for _, _, t in regions).replace(".", "").split()
    assert words.count("violet") > 1.5 * words.count("purple") > 0
    assert words.count("plus") > 1.2 * words.count("cross") > 0


def test_region_masks_hold_the_patches_around_a_point():
    centres = captions.patch_centres(8, 2)  # patches of 4 px: centres (2, 2), (6, 2), (2, 6), (6, 6)
    assert centres.tolist() == [[2, 2], [6, 2], [2, 6], [6, 6]]
    assert captions.region_mask(centres, np.array([2.5, 2.0]), 1.0).tolist() == [True, False, False, False]
    assert captions.region_mask(centres, np.array([4.0, 4.0]), 3.0).all()
    assert captions.region_mask(centres, np.array([7.0, 7.0]), 0.1).tolist() == [False, False, False, True]


def test_crop_and_resize_is_bilinear_over_the_box():
    image = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1).repeat(3, axis=-1) * 10
    same = render.crop_and_resize(image, np.array([[0.0, 0.0, 4.0, 4.0]]), 4)
    assert np.array_equal(same, image)
    # the 2x2 box of pixels (1..2, 1..2) upsampled to 4 px: corners are the pixel values
    # at a quarter pixel inside, so the first output pixel is 0.75 * 50 + 0.25 * 60 ... bilinear
    crop = render.crop_and_resize(image, np.array([[1.0, 1.0, 3.0, 3.0]]), 4)[0, :, :, 0].astype(float)
    x = np.array([1.25, 1.75, 2.25, 2.75]) - 0.5  # pixel-centre coordinates sampled
    expected = 10 * (4 * x[:, None] + x[None, :])  # image value = 10 * (4 y + x), linear
    assert np.abs(crop - expected).max() <= 0.5


def test_patch_index_is_row_major():
    model = type("M", (), {})()
    model.visual = type("V", (), {"input_resolution": 32, "conv1": torch.nn.Conv2d(3, 4, 4, 4)})()
    points = np.array([[0.5, 0.5], [31.0, 0.5], [4.1, 8.2], [31.9, 31.9]])
    assert properties.patch_index(model, points).tolist() == [0, 7, 17, 63]


# ------------------------------------------------------------------ pre-training
def test_contrastive_loss_matches_a_hand_computation():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    ids = [0, 1, 0]  # items 0 and 2 share text 0; text 2 is a negative only
    loss = pretrain.contrastive(features, texts, ids, scale=2.0)
    logits = 2.0 * features @ texts.t()
    to_text = -(logits.log_softmax(1)[[0, 1, 2], [0, 1, 0]]).mean()
    columns = logits.t().log_softmax(1)
    to_item = -((columns[0, 0] + columns[0, 2]) / 2 + columns[1, 1]) / 2
    assert torch.allclose(loss, (to_text + to_item) / 2)


def test_pretraining_is_deterministic_per_seed():
    torch.set_num_threads(1)

    def weights(seed):
        model = pretrain.pretrain(steps=2, batch_size=10, seed=seed, log=None)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    first = weights(0)
    assert torch.equal(first, weights(0))
    assert not torch.equal(first, weights(1))


# ------------------------------------------------------------------ the shipped CLIP
@pytest.fixture(scope="module")
def shipped():
    from leclip.backbone.loader import EMBEDDED_MODELS, load_clip

    assert osp.getsize(EMBEDDED_MODELS["synth-vit"]) <= 10 * 2**20
    model = load_clip("synth-vit")
    assert model.visual.input_resolution == SIZE and model.context_length == 16
    return model


@pytest.fixture(scope="module")
def shipped_fg(shipped):
    return properties.fg_properties(shipped, world_seed=0)  # the report's render: AUROC needs 240 + 240 images


@pytest.fixture(scope="module")
def shipped_headroom(shipped):
    """Task A's reference learners with the report's render, views and seeds (12 s): with
    24 pool images a class and two views, FixMatch's gain from the unlabeled pool is lost in
    the seed noise (seeds 1-3: -5.0, -1.7, +3.3)."""
    return properties.fg_headroom(shipped, world_seed=0)


def test_shipped_clip_on_fine_classes_local_beats_global(shipped_fg):
    assert shipped_fg["probe_part_patch"] > shipped_fg["probe_global"] + 10
    # the SFM's top patches for the true class's prompt hold the part more often than
    # chance; v2's names said the part (71 %, 4.6 x chance), v3's proper names do not (20 %)
    assert shipped_fg["sfm_part_hit"] > shipped_fg["sfm_chance"]


def test_shipped_clip_names_fine_classes_weakly_but_its_features_know_them(shipped_headroom):
    """Task A's headroom: zero-shot with the proper names stays in 25-55 %, and linear
    probes on the same frozen feature go well past it (report: 44.6 %; 74.4 and 71.1 %
    from 20 and 5 labels a class)."""
    zs = shipped_headroom["zs_closed_acc"]
    assert 25 <= zs <= 55
    assert shipped_headroom["probe_20"] >= zs + 15
    assert shipped_headroom["probe_few"] >= zs + 3


def test_shipped_clip_scores_look_alikes_a_little_below_id_images(shipped_headroom):
    assert 55 <= shipped_headroom["zs_mcm_auroc"] <= 75


def test_unlabeled_id_images_lift_a_plain_fixmatch_head_above_its_labels_alone(shipped_headroom):
    """Task A's unlabeled data has value: with the ID images of the pool (oracle filter) a
    plain FixMatch head beats the same head from the 5 labels a class alone in every seed
    (report: 69.9 vs 66.4, target +3)."""
    gain = shipped_headroom["fixmatch_oracle"] - shipped_headroom["labels_only"]
    assert (gain > 0).all()
    assert gain.mean() >= 2


def test_shipped_clip_finds_small_objects_on_crops_and_is_biased_as_ccd_assumes(shipped):
    view = properties.ml_view_properties(shipped, world_seed=0, num_images=160, k=3)
    assert view["recall_crop"] - view["recall_whole"] >= 10
    assert view["recall_crop_small"] - view["recall_whole_small"] >= 20
    bias = properties.ml_bias_properties(shipped, world_seed=0, num_images=320)
    assert bias["map_crops"] >= bias["map_raw"] + 5  # labels from crops beat whole-image labels
    assert bias["bias_spread"] >= 2
    # CCD's division by the class bias helps the labels as a BCE target sees them
    assert bias["pooled_ap_debiased"] > bias["pooled_ap_floor"]
    # CCD's floor ties the weak positives with the negatives below it (full world: 54 % of the
    # positive pairs against 82 % of the negatives), which costs the per-class mAP
    assert 0 < bias["positives_below_floor"] < bias["negatives_below_floor"] < 100
    assert bias["map_floor"] < bias["map_raw"]
    zs = properties.ml_zero_shot(shipped, world_seed=0, num_images=160)
    assert zs["zs_map"] > zs["frequency_map"] + 10


def test_a_classifier_learns_far_past_zero_shot_from_the_true_labels(shipped):
    """Task B's headroom: CCD's classifier (the shipped trunk, 128 px: 4 x 4 class maps)
    trained with BCE on 960 scenes' true labels (report, 3,200 scenes: 97.5 mAP)."""
    bce = properties.ml_bce_headroom(world_seed=0, train_images=960, test_images=160, input_size=128, epochs=8)
    assert bce["cam_size"] == (4, 4)
    assert bce["bce_map"] >= properties.ml_zero_shot(shipped, world_seed=0, num_images=160)["zs_map"] + 15


def test_shipped_clip_label_specific_features_learn_more_from_few_labels(shipped):
    """CSA's premise on synth_ml: from 64 labeled images (ratio 0.1 of 640), probes on the
    label-specific features beat one on the global feature (30.0 vs 27.8; at the report's
    ratio 0.1 of 3,200 scenes they no longer do: 33.6 vs 34.7)."""
    probes = properties.ml_probes(shipped, world_seed=0, train_images=640, test_images=320, ratio=0.1)
    assert probes["few_labels"] == 64
    assert probes["probe_label_specific_few"] > probes["probe_global_few"] + 2
    # every label lifts the global probe above its few-label self (34.7)
    assert probes["probe_global_all"] > probes["probe_global_few"] + 4
    # and well above scoring every image with the class frequencies (report: 14.2)
    frequency = properties.ml_zero_shot(shipped, world_seed=0, num_images=320)["frequency_map"]
    assert probes["probe_global_all"] > frequency + 5
    # the planted contexts carry information: told the scene's context, the probe gains
    assert probes["probe_context_few"] >= probes["probe_global_few"] + 2


# ------------------------------------------------------------------ render cache
def _tiny_fg(p):
    return synth_fg.render_split(3, "test", 1, progress=p)


def test_cache_renders_once_and_rerenders_an_incomplete_folder(tmp_path):
    folder = str(tmp_path / "world")
    fingerprint = {"world_seed": 3}
    splits = {"test": (len(synth_fg.CLASSES), _tiny_fg)}
    manifest = cache.ensure_rendered(folder, fingerprint, splits, "tiny")
    first = osp.join(folder, manifest["splits"]["test"][0]["file"])
    with open(first, "rb") as f:
        png = f.read()
    mtime = os.stat(first).st_mtime_ns
    assert cache.ensure_rendered(folder, fingerprint, splits, "tiny") == manifest
    assert os.stat(first).st_mtime_ns == mtime  # reused, not rendered again

    os.remove(first)  # an incomplete folder is rendered again, to the same bytes
    assert cache.load_manifest(folder, fingerprint) is None
    assert cache.ensure_rendered(folder, fingerprint, splits, "tiny") == manifest
    with open(first, "rb") as f:
        assert f.read() == png
    assert cache.load_manifest(folder, {"world_seed": 4}) is None  # another world
