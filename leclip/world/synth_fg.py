"""`synth_fg`: fine-grained open-set classification in the synthetic world (task A).

24 classes in four groups of six siblings. The siblings of a group share shape, colour
and texture (a red disc, plain) and differ only in one small local part (`render.PARTS`:
a horned red disc, a tailed red disc, ...), under 10 % of the object's area, so only a
local detail tells them apart. Classes are named by proper nouns ("arven disc",
`PROPER_NOUNS`) that the captions seldom attach to the detail (`captions`). Three siblings of each group are ID, the other three
their OOD look-alikes: every OOD class differs from three ID classes in its part alone.
Which parts are ID rotates over the groups, so no part word marks a class as OOD.
Class order: all ID classes, then all OOD classes (the protocol takes the first half
as ID).
"""
from collections import namedtuple

import numpy as np

from . import render

FGClass = namedtuple("FGClass", "name shape family shade texture part description")

# Each class is named like a fine-grained benchmark's class: a proper noun (a model, a
# species, "Cessna 172") before the common word of its group ("vesper disc"), never by
# its detail. `description` is how the captions say what it looks like ("horned red
# disc"): the detail in common words. Siblings' proper nouns, in PART_NAMES order.
PROPER_NOUNS = {
    "disc": ("arven", "belto", "corra", "dunic", "elsop", "fenra"),
    "square": ("gavro", "hulme", "istra", "jorek", "kelda", "lumar"),
    "triangle": ("mervo", "nalda", "orvik", "pesca", "quorn", "rilda"),
    "hexagon": ("sarno", "tevil", "ulmar", "vondo", "wesla", "yarek"),
}

# (shape, family, shade, texture, the group's three ID parts); the other parts are OOD
_GROUPS = (
    ("disc", "red", "crimson", "plain", ("horned", "tailed", "knobbed")),
    ("square", "blue", "azure", "plain", ("finned", "eyed", "notched")),
    ("triangle", "green", "emerald", "striped", ("horned", "knobbed", "eyed")),
    ("hexagon", "yellow", "amber", "plain", ("tailed", "finned", "notched")),
)
RADIUS = (0.24, 0.28)  # object radius / image size; with its part the object stays inside
MAX_SHIFT = 0.06  # centre jitter / image size
MAX_CLUTTER = 2


def _make_classes():
    id_classes, ood_classes = [], []
    for shape, family, shade, texture, id_parts in _GROUPS:
        for part in render.PART_NAMES:
            bucket = id_classes if part in id_parts else ood_classes
            proper = PROPER_NOUNS[shape][render.PART_NAMES.index(part)]
            bucket.append(FGClass(f"{proper} {shape}", shape, family, shade, texture, part, f"{part} {family} {shape}"))
    return tuple(id_classes + ood_classes)


CLASSES = _make_classes()
CLASSNAMES = tuple(c.name for c in CLASSES)
NUM_ID = len(CLASSES) // 2

# seed streams of the world: a split's images depend on (world seed, stream) only
STREAMS = {"pool": 11, "test": 12}
OBJECT_SLOT = MAX_CLUTTER  # the object is drawn after the clutter


def object_scenes(rng, shapes, shades, textures, parts, size=render.IMAGE_SIZE):
    """One object per scene with the given attributes (part None: no part); random size,
    pose, place and clutter."""
    n = len(shapes)
    scenes = render.empty_scenes(rng, n, slots=MAX_CLUTTER + 1)
    render.add_clutter(scenes, rng, max_items=MAX_CLUTTER, size=size)
    render.place(
        scenes, np.arange(n), slot=OBJECT_SLOT,
        shape=[render.SHAPES.index(s) for s in shapes],
        texture=[render.TEXTURES.index(t) for t in textures],
        rgb=render.jittered_shades(rng, shades),
        center=size / 2 + rng.uniform(-MAX_SHIFT, MAX_SHIFT, size=(n, 2)) * size,
        radius=rng.uniform(*RADIUS, size=n) * size,
        rng=rng,
        size=size,
        part=[-1 if p is None else render.PART_NAMES.index(p) for p in parts],
    )
    return scenes


def sample_scenes(rng, labels, size=render.IMAGE_SIZE):
    """One object of class `labels[i]` per scene."""
    chosen = [CLASSES[k] for k in labels]
    return object_scenes(
        rng, [c.shape for c in chosen], [c.shade for c in chosen], [c.texture for c in chosen],
        [c.part for c in chosen], size,
    )


def split_labels(per_class):
    """Labels of a split: `per_class` images of every class, class-major."""
    return np.repeat(np.arange(len(CLASSES)), per_class)


def split_scenes(world_seed, split, per_class, size=render.IMAGE_SIZE):
    """(scenes, labels) of one split, before drawing: the geometry behind its images."""
    if split not in STREAMS:
        raise KeyError(f"Unknown synth_fg split {split!r}; valid: {', '.join(STREAMS)}")
    labels = split_labels(per_class)
    return sample_scenes(np.random.default_rng([world_seed, STREAMS[split]]), labels, size), labels


def render_split(world_seed, split, per_class, size=render.IMAGE_SIZE, progress=None):
    """(uint8 images [N, size, size, 3], labels [N]) of one split of the world."""
    scenes, labels = split_scenes(world_seed, split, per_class, size)
    return render.render_in_chunks(scenes, [world_seed, STREAMS[split]], size, progress=progress), labels


def part_centres(world_seed, split, per_class, size=render.IMAGE_SIZE):
    """[N, 2] pixel position (x, y) of each image's part, in render_split's order."""
    scenes, _ = split_scenes(world_seed, split, per_class, size)
    return render.part_centres(scenes, OBJECT_SLOT)
