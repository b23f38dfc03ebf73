"""The embedded world: generators, render cache, shipped CLIP, registered datasets."""
import json
import os
import os.path as osp

import numpy as np
import pytest
import torch

from leclip.world import cache, captions, pretrain, render, synth_fg, synth_ml


# ------------------------------------------------------------------ generators
def test_fg_split_is_deterministic_per_seed():
    images, labels = synth_fg.render_split(0, "test", 2)
    again, labels_again = synth_fg.render_split(0, "test", 2)
    other, _ = synth_fg.render_split(1, "test", 2)
    pool, _ = synth_fg.render_split(0, "pool", 2)
    assert images.shape == (2 * len(synth_fg.CLASSES), 32, 32, 3) and images.dtype == np.uint8
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


def test_chunked_render_equals_itself_and_draws_the_requested_object():
    rng = np.random.default_rng(0)
    scenes = synth_fg.object_scenes(rng, ["disc"] * 3, ["crimson"] * 3, ["plain"] * 3)
    scenes.gradient[:] = 0  # flat grey background, no pixel noise
    scenes.background[:] = 128
    scenes.shape[:, :3] = -1  # no clutter
    scenes.center[:, 3] = 16
    images = render.render_in_chunks(scenes, [5], chunk=2)
    assert np.array_equal(images, render.render_in_chunks(scenes, [5], chunk=2))
    crimson = np.array(render.SHADES["crimson"])
    # centre pixel: the shade within its jitter; corner: the background
    assert np.abs(images[:, 16, 16].astype(int) - crimson).max() <= 25
    assert (images[:, 0, 0] == 128).all()


def test_fg_classes_are_fine_grained_with_ood_look_alikes():
    names = synth_fg.CLASSNAMES
    assert len(names) >= 20 and len(set(names)) == len(names)
    assert all(2 <= len(n.split()) <= 3 for n in names)
    attrs = [(c.shape, c.shade, c.texture) for c in synth_fg.CLASSES]
    assert len(set(attrs)) == len(attrs)
    id_classes, ood_classes = synth_fg.CLASSES[: synth_fg.NUM_ID], synth_fg.CLASSES[synth_fg.NUM_ID :]
    assert len(id_classes) == len(ood_classes)
    for ood in ood_classes:
        twins = [c for c in id_classes if (c.shape, c.family) == (ood.shape, ood.family)]
        # a look-alike: same shape and colour family, one fine attribute apart from an ID class
        assert any((c.shade == ood.shade) + (c.texture == ood.texture) == 1 for c in twins), ood.name
    for c in synth_fg.CLASSES:
        assert render.FAMILY_OF[c.shade] == c.family and c.name == f"{c.shade} {c.texture} {c.shape}"


def test_ml_scenes_hold_one_to_four_objects_of_twelve_or_more_classes():
    assert len(synth_ml.CLASSNAMES) >= 12 and len(set(synth_ml.CLASSNAMES)) == len(synth_ml.CLASSNAMES)
    objects = synth_ml.sample_objects(np.random.default_rng(0), 500)
    assert {len(o) for o in objects} == {1, 2, 3, 4}
    labels = synth_ml.multi_hot(objects)
    assert labels.sum(1).min() >= 1 and labels.sum(1).max() <= 4
    assert labels.sum(0).min() > 0  # every class occurs


def test_ml_cooccurrence_follows_the_contexts():
    labels = synth_ml.multi_hot(synth_ml.sample_objects(np.random.default_rng(0), 4000)).astype(float)
    corr = np.corrcoef(labels.T)
    members = [{synth_ml.CLASSNAMES.index(c) for c in ctx} for ctx in synth_ml.CONTEXTS]
    together, apart = [], []
    for a in range(len(synth_ml.CLASSNAMES)):
        for b in range(a + 1, len(synth_ml.CLASSNAMES)):
            shared = any(a in m and b in m for m in members)
            (together if shared else apart).append(corr[a, b])
    assert np.mean(together) > 0.1 and np.mean(apart) < -0.08


def test_captions_name_coarse_attributes_and_fit_the_context():
    images, texts = captions.pretraining_batch(np.random.default_rng(0), 64)
    assert images.shape == (64, 32, 32, 3) and len(texts) == 64
    model_context = pretrain.ARCH["context_length"]
    import clip

    tokens = clip.tokenize(texts, context_length=model_context, truncate=True)
    assert (tokens == 49407).sum(1).eq(1).all()  # one end token each: nothing was cut off
    families = tuple(render.FAMILIES) + tuple(render.SHADES)
    assert all(any(w in t.split() or w + "," in t.split() for w in families) for t in texts)


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


# ------------------------------------------------------------------ pre-training
def test_pretraining_is_deterministic_per_seed():
    torch.set_num_threads(1)

    def weights(seed):
        model = pretrain.pretrain(steps=2, batch_size=6, seed=seed, log=None)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    first = weights(0)
    assert torch.equal(first, weights(0))
    assert not torch.equal(first, weights(1))


def test_shipped_checkpoint_loads_and_scores_above_chance():
    from leclip.backbone.loader import EMBEDDED_MODELS, load_clip

    assert osp.getsize(EMBEDDED_MODELS["synth-vit"]) <= 10 * 2**20
    model = load_clip("synth-vit")
    assert model.visual.input_resolution == 32 and model.context_length == 16
    k = synth_fg.NUM_ID
    images, labels = synth_fg.render_split(0, "test", 4)
    scores = pretrain.zero_shot_scores(model, images[labels < k], synth_fg.CLASSNAMES[:k]).numpy()
    accuracy = (scores.argmax(1) == labels[labels < k]).mean()
    assert accuracy > 2.5 / k  # chance is 1 / k

    ml_images, ml_labels = synth_ml.render_split(0, "test", 160)
    ml_scores = pretrain.zero_shot_scores(model, ml_images, synth_ml.CLASSNAMES).numpy()
    frequency = np.broadcast_to(ml_labels.mean(0), ml_labels.shape)
    from leclip.metrics import mean_average_precision

    assert mean_average_precision(ml_scores, ml_labels) > mean_average_precision(frequency, ml_labels) + 10
