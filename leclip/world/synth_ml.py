"""`synth_ml`: multi-label scenes in the synthetic world (tasks B and C).

16 object classes (colour family x shape, e.g. "red disc"). A scene holds 1 to 4
objects, one per quadrant, each with a random shade of its family, texture and pose.
Objects are large or small (`P_SMALL` of them, about a third of a large one's width):
CLIP on the whole image tends to miss a small object that a crop around it shows.

Scenes have contexts: every scene first picks one of four scene types and draws most of
its objects (`IN_CONTEXT`) from that type's classes: four classes of its own (its
members, one of each colour and each shape) and one class shared from the next type
at a lower weight. `PRIMARY_CONTEXT[c]` is the type class c belongs to, the planted
answer a clustering of label co-occurrence should recover.
"""
import numpy as np

from . import render

FAMILIES = ("red", "blue", "green", "purple")
SHAPES = ("disc", "square", "triangle", "cross")
CLASSNAMES = tuple(f"{family} {shape}" for family in FAMILIES for shape in SHAPES)

NUM_CONTEXTS = 4
# context k owns the classes (colour i, shape (i + k) mod 4): one of each colour and shape
PRIMARY_CONTEXT = np.array(
    [(s - f) % NUM_CONTEXTS for f in range(len(FAMILIES)) for s in range(len(SHAPES))], dtype=np.int64
)
SHARED_WEIGHT = 0.3  # weight of the class a context borrows from the next one (a member weighs 1)
IN_CONTEXT = 0.9  # chance that an object comes from the scene's context (else any class)
OBJECT_COUNTS = (1, 2, 3, 4)
COUNT_PROBS = (0.1, 0.3, 0.3, 0.3)
P_SMALL = 0.4
LARGE_RADIUS = (0.15, 0.2)  # object radius / image size
SMALL_RADIUS = (0.085, 0.11)
MAX_CLUTTER = 2

STREAMS = {"train": 21, "test": 22}


def context_classes():
    """Per context: (class indices, their sampling weights): its members, then the
    next context's member of colour k as context k's shared class."""
    contexts = []
    for k in range(NUM_CONTEXTS):
        members = list(np.flatnonzero(PRIMARY_CONTEXT == k))
        shared = int(np.flatnonzero(PRIMARY_CONTEXT == (k + 1) % NUM_CONTEXTS)[k % len(FAMILIES)])
        weights = np.array([1.0] * len(members) + [SHARED_WEIGHT])
        contexts.append((np.array(members + [shared]), weights / weights.sum()))
    return contexts


def sample_objects(rng, n, picked=None):
    """Class indices of the objects of `n` scenes: a list of int arrays; each scene's
    context is appended to the list `picked` when one is given."""
    contexts = context_classes()
    objects = []
    for _ in range(n):
        context = rng.integers(NUM_CONTEXTS)
        if picked is not None:
            picked.append(int(context))
        members, weights = contexts[context]
        count = rng.choice(OBJECT_COUNTS, p=COUNT_PROBS)
        objects.append(np.array([
            rng.choice(members, p=weights) if rng.random() < IN_CONTEXT else rng.integers(len(CLASSNAMES))
            for _ in range(count)
        ], dtype=np.int64))
    return objects


def multi_hot(objects):
    labels = np.zeros((len(objects), len(CLASSNAMES)), dtype=np.int64)
    for i, classes in enumerate(objects):
        labels[i, classes] = 1
    return labels


def sample_scenes(rng, objects, size=render.IMAGE_SIZE):
    """Scenes holding the given objects, one per quadrant (quadrants in random order);
    object k of scene i sits in slot MAX_CLUTTER + k."""
    n = len(objects)
    slots = MAX_CLUTTER + max(OBJECT_COUNTS)
    scenes = render.empty_scenes(rng, n, slots)
    render.add_clutter(scenes, rng, max_items=MAX_CLUTTER, size=size)
    quadrant_order = np.argsort(rng.random((n, 4)), axis=1)
    quadrant_corners = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float32) * size / 2
    for k in range(max(OBJECT_COUNTS)):
        rows = np.array([i for i in range(n) if len(objects[i]) > k], dtype=np.int64)
        classes = [objects[i][k] for i in rows]
        family = [FAMILIES[c // len(SHAPES)] for c in classes]
        shades = [rng.choice(sorted(render.FAMILIES[f])) for f in family]
        small = rng.random(len(rows)) < P_SMALL
        radius = np.where(small, rng.uniform(*SMALL_RADIUS, size=len(rows)), rng.uniform(*LARGE_RADIUS, size=len(rows))) * size
        # anywhere in its quadrant with a margin of its radius
        free = size / 2 - 2 * radius
        offset = radius[:, None] + rng.uniform(0, 1, size=(len(rows), 2)) * free[:, None]
        render.place(
            scenes, rows, MAX_CLUTTER + k,
            shape=[render.SHAPES.index(SHAPES[c % len(SHAPES)]) for c in classes],
            texture=rng.integers(0, len(render.TEXTURES), size=len(rows)),
            rgb=render.jittered_shades(rng, shades),
            center=quadrant_corners[quadrant_order[rows, k]] + offset,
            radius=radius,
            rng=rng,
            size=size,
        )
    return scenes


def split_scenes(world_seed, split, num_images, size=render.IMAGE_SIZE):
    """(scenes, objects) of one split, before drawing: the geometry behind its images."""
    if split not in STREAMS:
        raise KeyError(f"Unknown synth_ml split {split!r}; valid: {', '.join(STREAMS)}")
    rng = np.random.default_rng([world_seed, STREAMS[split]])
    objects = sample_objects(rng, num_images)
    return sample_scenes(rng, objects, size), objects


def split_contexts(world_seed, split, num_images):
    """[num_images] the context each scene of a split was drawn from."""
    picked = []
    sample_objects(np.random.default_rng([world_seed, STREAMS[split]]), num_images, picked)
    return np.array(picked, dtype=np.int64)


def render_split(world_seed, split, num_images, size=render.IMAGE_SIZE, progress=None):
    """(uint8 images [N, size, size, 3], multi-hot labels [N, C]) of one split."""
    scenes, objects = split_scenes(world_seed, split, num_images, size)
    images = render.render_in_chunks(scenes, [world_seed, STREAMS[split]], size, progress=progress)
    return images, multi_hot(objects)


def object_boxes(scenes, objects):
    """Per scene, one row per object: (class, x0, y0, x1, y1, radius) in pixels, the box
    being the square around the object's circle."""
    boxes = []
    for i, classes in enumerate(objects):
        slots = MAX_CLUTTER + np.arange(len(classes))
        centre, radius = scenes.center[i, slots], scenes.radius[i, slots]
        boxes.append(np.column_stack([classes, centre - radius[:, None], centre + radius[:, None], radius]))
    return boxes
