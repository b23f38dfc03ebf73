"""`synth_fg`: fine-grained open-set classification in the synthetic world (task A).

24 classes in four coarse groups (shape + colour family). Inside a group the six
classes differ only by the exact shade (two per family) and the texture, e.g.
"crimson striped disc" vs "scarlet striped disc" vs "crimson dotted disc". The first
three classes of each group are ID, the other three their OOD look-alikes, so every
OOD class shares shape and colour family with three ID classes. Class order: all ID
classes, then all OOD classes (the protocol takes the first half as ID).
"""
from collections import namedtuple

import numpy as np

from . import render

FGClass = namedtuple("FGClass", "name shape family shade texture")

# (shape, family, shade A, shade B, three textures); group g's classes are
# ID: A+t0, B+t0, A+t1 and OOD: B+t1, A+t2, B+t2
_GROUPS = (
    ("disc", "red", "crimson", "scarlet", ("striped", "dotted", "checkered")),
    ("square", "blue", "navy", "azure", ("dotted", "checkered", "plain")),
    ("triangle", "green", "olive", "emerald", ("checkered", "plain", "striped")),
    ("hexagon", "yellow", "gold", "lemon", ("plain", "striped", "dotted")),
)


def _make_classes():
    id_classes, ood_classes = [], []
    for shape, family, shade_a, shade_b, (t0, t1, t2) in _GROUPS:
        for shade, texture, bucket in (
            (shade_a, t0, id_classes), (shade_b, t0, id_classes), (shade_a, t1, id_classes),
            (shade_b, t1, ood_classes), (shade_a, t2, ood_classes), (shade_b, t2, ood_classes),
        ):
            bucket.append(FGClass(f"{shade} {texture} {shape}", shape, family, shade, texture))
    return tuple(id_classes + ood_classes)


CLASSES = _make_classes()
CLASSNAMES = tuple(c.name for c in CLASSES)
NUM_ID = len(CLASSES) // 2

# seed streams of the world: a split's images depend on (world seed, stream) only
STREAMS = {"pool": 11, "test": 12}


def object_scenes(rng, shapes, shades, textures, size=32):
    """One object per scene with the given attributes; random size, pose, place, clutter."""
    n = len(shapes)
    scenes = render.empty_scenes(rng, n, slots=4)
    render.add_clutter(scenes, rng, max_items=3, size=size)
    render.place(
        scenes, np.arange(n), slot=3,
        shape=[render.SHAPES.index(s) for s in shapes],
        texture=[render.TEXTURES.index(t) for t in textures],
        rgb=render.jittered_shades(rng, shades),
        center=size / 2 + rng.uniform(-3.5, 3.5, size=(n, 2)),
        radius=rng.uniform(0.27, 0.42, size=n) * size,
        rng=rng,
    )
    return scenes


def sample_scenes(rng, labels, size=32):
    """One object of class `labels[i]` per scene."""
    chosen = [CLASSES[k] for k in labels]
    return object_scenes(
        rng, [c.shape for c in chosen], [c.shade for c in chosen], [c.texture for c in chosen], size
    )


def split_labels(per_class):
    """Labels of a split: `per_class` images of every class, class-major."""
    return np.repeat(np.arange(len(CLASSES)), per_class)


def render_split(world_seed, split, per_class, size=32, progress=None):
    """(uint8 images [N, size, size, 3], labels [N]) of one split of the world."""
    if split not in STREAMS:
        raise KeyError(f"Unknown synth_fg split {split!r}; valid: {', '.join(STREAMS)}")
    seed = [world_seed, STREAMS[split]]
    labels = split_labels(per_class)
    scenes = sample_scenes(np.random.default_rng(seed), labels, size)
    return render.render_in_chunks(scenes, seed, size, progress=progress), labels
