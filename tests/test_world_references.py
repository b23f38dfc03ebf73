"""The reference learners that measure the world's headroom (leclip.world.references) and
the world's own views, on small inputs."""
import numpy as np
import torch
from PIL import Image
import torchvision.transforms as T

from leclip.world import properties, references, render, synth_fg, synth_ml


def _finned_disc():
    rng = np.random.default_rng(0)
    scenes = synth_fg.object_scenes(rng, ["disc"], ["azure"], ["plain"], ["finned"])
    scenes.shape[:, : synth_fg.OBJECT_SLOT] = -1  # no clutter
    scenes.angle[:] = 0
    scenes.center[:, synth_fg.OBJECT_SLOT] = render.IMAGE_SIZE / 2
    return render.render(scenes, rng)[0]


def _orange(image):
    """[H, W] bool: pixels of the fin's colour."""
    return np.abs(image.astype(int) - np.array(render.MARK_COLOURS["finned"])).sum(-1) < 90


def test_views_keep_the_part_where_it_is_and_the_hue():
    image = _finned_disc()
    assert _orange(image)[:, 40:].sum() > 5 and not _orange(image)[:, :24].any()  # the fin points right
    for strong in (False, True):
        ops = T.Compose(references.view_ops(render.IMAGE_SIZE, strong))
        torch.manual_seed(0)
        for _ in range(20):
            view = np.asarray(ops(Image.fromarray(image)))
            assert view.shape == image.shape
            # never mirrored: the fin stays on the right; the blue disc stays blue
            assert not _orange(view)[:, :24].any()
            centre = view[24:40, 24:40].reshape(-1, 3).astype(float).mean(0)
            assert centre[2] > centre[0] + 40 and centre[2] > centre[1]


def test_views_are_drawn_from_torch_and_the_strong_one_differs():
    images = np.stack([_finned_disc()] * 3)
    encode = lambda x: torch.from_numpy(x.reshape(len(x), -1).astype(np.float32))  # noqa: E731
    weak = references.encoded_views(encode, images, 2, strong=False, seed=0)
    assert weak.shape == (2, 3, images[0].size)
    assert torch.equal(weak, references.encoded_views(encode, images, 2, strong=False, seed=0))
    strong = references.encoded_views(encode, images, 2, strong=True, seed=0)
    assert not torch.equal(weak, strong)


def _clusters(rng, n, centres, noise=0.6):
    labels = rng.integers(len(centres), size=n)
    return torch.as_tensor(centres[labels] + noise * rng.normal(size=(n, centres.shape[1])), dtype=torch.float32), labels


def test_fixmatch_head_learns_from_labels_and_masks_unconfident_pseudo_labels():
    rng = np.random.default_rng(0)
    centres = np.eye(4, 8) * 3
    labeled, labels = _clusters(rng, 8, centres)
    test, test_labels = _clusters(rng, 200, centres)
    unlabeled, _ = _clusters(rng, 100, centres)
    text = torch.zeros(4, 8)  # no prior: what it knows comes from the data
    alone = references.fixmatch_head(text, 10.0, labeled[None], labels, test, seed=1, steps=100, lr=0.05)
    assert (alone == test_labels).mean() > 0.8
    # a threshold no pseudo-label passes leaves the labels-only learner unchanged
    masked = references.fixmatch_head(text, 10.0, labeled[None], labels, test, (unlabeled[None], unlabeled[None]),
                                      seed=1, steps=100, lr=0.05, threshold=1.01)
    assert np.array_equal(masked, alone)
    used = references.fixmatch_head(text, 10.0, labeled[None], labels, test, (unlabeled[None], unlabeled[None]),
                                     seed=1, steps=100, lr=0.05, threshold=0.5)
    assert not np.array_equal(used, alone) and (used == test_labels).mean() > 0.8


def test_bce_classifier_learns_a_planted_label_and_its_maps_grow_with_the_input(tmp_path):
    import torchvision

    from leclip.world import trunk

    model = torchvision.models.mobilenet_v3_small(num_classes=len(trunk.CLASSES))
    path = str(tmp_path / "trunk.pt")
    trunk.save_trunk(model, path)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 60, size=(48, 64, 64, 3)).astype(np.uint8)
    labels = np.zeros((48, 2), dtype=np.int64)
    labels[::2, 0] = 1  # class 0: a bright image
    images[::2] += 150
    labels[:, 1] = rng.integers(0, 2, size=48)  # class 1: noise
    scores, cam = references.bce_classifier(images, labels, images, path, "mobilenet_v3_small", 64, epochs=3, lr=3e-3)
    assert scores.shape == (48, 2) and cam == (2, 2)
    assert scores[::2, 0].min() > scores[1::2, 0].max()
    _, cam = references.bce_classifier(images[:4], labels[:4], images[:2], path, "mobilenet_v3_small", 128, epochs=1)
    assert cam == (4, 4)


def test_each_scene_is_drawn_from_its_context():
    contexts = synth_ml.split_contexts(0, "train", 400)
    _, objects = synth_ml.split_scenes(0, "train", 400)
    members = [set(synth_ml.context_classes()[k][0].tolist()) for k in range(synth_ml.NUM_CONTEXTS)]
    inside = np.mean([c in members[k] for k, classes in zip(contexts, objects) for c in classes])
    assert abs(inside - (synth_ml.IN_CONTEXT + (1 - synth_ml.IN_CONTEXT) * 5 / 16)) < 0.03
    assert set(contexts.tolist()) == set(range(synth_ml.NUM_CONTEXTS))


def test_shots_pick_per_class_without_repeats():
    labels = np.repeat(np.arange(4), 10)
    rows = properties._shots(labels, range(3), 5, np.random.default_rng(0))
    assert len(set(rows.tolist())) == 15 and np.bincount(labels[rows]).tolist() == [5, 5, 5]
