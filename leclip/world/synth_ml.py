"""`synth_ml`: multi-label scenes in the synthetic world (tasks B and C).

16 object classes (colour family x shape, e.g. "red disc"); a scene holds 1 to 4
objects, each in its own quadrant, with a random shade of its family, a random
texture, size and pose. Every scene first picks one of four contexts and draws most
of its objects from that context's classes, so labels co-occur as in real photos.
"""
import numpy as np

from . import render

FAMILIES = ("red", "blue", "green", "yellow")
SHAPES = ("disc", "square", "triangle", "cross")
CLASSNAMES = tuple(f"{family} {shape}" for family in FAMILIES for shape in SHAPES)

# the classes each context favours (every class belongs to at least one)
CONTEXTS = (
    ("red disc", "red square", "yellow disc", "yellow triangle", "blue cross"),
    ("blue square", "blue disc", "green square", "green cross", "red triangle"),
    ("green triangle", "green disc", "yellow cross", "yellow square", "blue triangle"),
    ("red cross", "red disc", "green disc", "blue triangle", "yellow square"),
)
IN_CONTEXT = 0.9  # chance that an object comes from the scene's context
OBJECT_COUNTS = (1, 2, 3, 4)
COUNT_PROBS = (0.2, 0.3, 0.3, 0.2)
MAX_CLUTTER = 2

STREAMS = {"train": 21, "test": 22}


def sample_objects(rng, n):
    """Class indices of the objects of `n` scenes: a list of int arrays."""
    context_members = [[CLASSNAMES.index(c) for c in ctx] for ctx in CONTEXTS]
    objects = []
    for _ in range(n):
        members = context_members[rng.integers(len(CONTEXTS))]
        count = rng.choice(OBJECT_COUNTS, p=COUNT_PROBS)
        objects.append(np.array([
            rng.choice(members) if rng.random() < IN_CONTEXT else rng.integers(len(CLASSNAMES))
            for _ in range(count)
        ], dtype=np.int64))
    return objects


def multi_hot(objects):
    labels = np.zeros((len(objects), len(CLASSNAMES)), dtype=np.int64)
    for i, classes in enumerate(objects):
        labels[i, classes] = 1
    return labels


def sample_scenes(rng, objects, size=32):
    """Scenes holding the given objects, one per quadrant (quadrants in random order)."""
    n = len(objects)
    slots = MAX_CLUTTER + max(OBJECT_COUNTS)
    scenes = render.empty_scenes(rng, n, slots)
    render.add_clutter(scenes, rng, max_items=MAX_CLUTTER, size=size)
    quadrant_order = np.argsort(rng.random((n, 4)), axis=1)
    quadrant_centres = np.array([[1, 1], [3, 1], [1, 3], [3, 3]], dtype=np.float32) * size / 4
    for k in range(max(OBJECT_COUNTS)):
        rows = np.array([i for i in range(n) if len(objects[i]) > k], dtype=np.int64)
        classes = [objects[i][k] for i in rows]
        family = [FAMILIES[c // len(SHAPES)] for c in classes]
        shades = [rng.choice(sorted(render.FAMILIES[f])) for f in family]
        render.place(
            scenes, rows, MAX_CLUTTER + k,
            shape=[render.SHAPES.index(SHAPES[c % len(SHAPES)]) for c in classes],
            texture=rng.integers(0, len(render.TEXTURES), size=len(rows)),
            rgb=render.jittered_shades(rng, shades),
            center=quadrant_centres[quadrant_order[rows, k]] + rng.uniform(-2, 2, size=(len(rows), 2)),
            radius=rng.uniform(0.15, 0.21, size=len(rows)) * size,
            rng=rng,
        )
    return scenes


def render_split(world_seed, split, num_images, size=32, progress=None):
    """(uint8 images [N, size, size, 3], multi-hot labels [N, C]) of one split."""
    if split not in STREAMS:
        raise KeyError(f"Unknown synth_ml split {split!r}; valid: {', '.join(STREAMS)}")
    seed = [world_seed, STREAMS[split]]
    rng = np.random.default_rng(seed)
    objects = sample_objects(rng, num_images)
    scenes = sample_scenes(rng, objects, size)
    return render.render_in_chunks(scenes, seed, size, progress=progress), multi_hot(objects)
