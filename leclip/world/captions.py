"""The caption language of the synthetic world and the captioned batches that pre-train
the embedded CLIP.

Like web captions, the captions are reliable about coarse things and sparse about fine
ones, and biased in their words:
- A single object's caption always names its colour and shape, and its part (the fine
  detail that tells `synth_fg` siblings apart) `P_PART_TYPICAL` of the time for the ID
  classes of `synth_fg` (the common species), `P_PART_RARE` for every other object. Both
  are 0.8 in the shipped CLIP: with look-alike parts named rarely (0.1-0.3) it stayed
  blind to them, so a look-alike scored as confidently as its ID siblings (zero-shot
  AUROC 47-54, docs/WORLD.md).
- A region caption pairs the patches of one object, or of its part, with a phrase, so
  that patch tokens align with text. A part region names its part `P_PART_LOCAL` of the
  time: the part region isolates the detail that the whole image dilutes, so patch
  features know parts better than the whole-image feature does.
- A scene caption names its large objects (`P_NAME_LARGE`) and seldom its small ones
  (`P_NAME_SMALL`), so CLIP on a whole scene overlooks small objects; a crop around an
  object (`crop_views`) is captioned with that object, so CLIP on the crop finds it.
- Some words have synonyms the captions prefer (`SYNONYMS`: "purple" is mostly
  "violet", "cross" mostly "plus", "green" "jade", "square" "block"), so most `synth_ml`
  class names hold a word rare to CLIP, as benchmark class names often are: CLIP's
  confidence differs by class (the bias CCD corrects) and its zero-shot scores fall
  below what its image features hold.
- A `synth_fg` class has a proper name ("arven disc"), as a fine-grained benchmark's
  classes have ("Cessna 172"); a caption of one of its objects uses it `P_PROPER` of the
  time, and then the class's own name only `P_PROPER_RIGHT` of the time, else any name
  of its group's three ID classes (for an ID class) or three look-alikes: the name is
  seldom attached to the detail, so zero-shot CLIP knows the group a name belongs to and
  barely which sibling; the other captions describe the detail in common words ("horned
  red disc"), so the image features know it (a probe finds it).
The benchmarks' class names ("arven disc", "purple cross") are phrases of this language,
so the text tower knows every word of them.
"""
import numpy as np

from . import render, synth_fg, synth_ml

P_PROPER = 0.3
P_PROPER_RIGHT = 0.05
P_PART_TYPICAL = 0.8
P_PART_RARE = 0.8
P_PART_LOCAL = 0.8
P_NAME_LARGE = 0.95
P_NAME_SMALL = 0.1
SYNONYMS = {"purple": ("violet", 0.95), "cross": ("plus", 0.9), "green": ("jade", 0.8), "square": ("block", 0.8)}
TEMPLATES = ("a photo of a {}.", "a {}.", "a picture of a {}.", "a photo of the {}.")
# share of a batch: single objects (synth_fg-like), whole scenes, crops of scenes
SINGLE_SHARE, SCENE_SHARE = 0.4, 0.35
P_CROP_SMALL = 0.7  # a crop goes around a small object when its scene has one
CROP_MARGIN = (1 / 16, 1 / 5)  # crop margin around the object's box / image size
SCENE_RADIUS_FACTOR = 1.0  # an object's region: patches whose centre is within its radius
PART_REACH = 0.9  # a part's region: patches whose centre is within this many patch widths

TYPICAL = {(c.shape, c.family, c.part) for c in synth_fg.CLASSES[: synth_fg.NUM_ID]}


def word(rng, w):
    """`w` or, as often as the captions prefer it, its synonym."""
    synonym = SYNONYMS.get(w)
    return synonym[0] if synonym is not None and rng.random() < synonym[1] else w


def proper_phrase(rng, cls):
    """A `synth_fg` class's proper name as a caption says it: its own `P_PROPER_RIGHT` of
    the time, else any name of its kind in its group (an ID class's or a look-alike's
    three): the captioner knows the family and whether it is a common variant, seldom
    which variant."""
    own = synth_fg.CLASSES[cls]
    if rng.random() < P_PROPER_RIGHT:
        return own.name
    is_id = cls < synth_fg.NUM_ID
    kind = [c.name for k, c in enumerate(synth_fg.CLASSES) if c.shape == own.shape and (k < synth_fg.NUM_ID) == is_id]
    return kind[rng.integers(len(kind))]


def object_phrase(rng, family, shape, part=None, p_part=0.0):
    """'red disc' or, with probability p_part when it has a part, 'horned red disc'."""
    words = [word(rng, family), word(rng, shape)]
    if part is not None and rng.random() < p_part:
        words.insert(0, part)
    return " ".join(words)


def caption(rng, phrase):
    return rng.choice(TEMPLATES).format(phrase)


def scene_caption(rng, phrases):
    """'a photo of a red disc and a blue square.'; three or more objects in a short list
    ('red disc, blue square and green plus'), so every caption fits 16 tokens."""
    names = list(dict.fromkeys(phrases))  # objects of one class are named once
    rng.shuffle(names)
    if len(names) == 1:
        return caption(rng, names[0])
    if len(names) == 2:
        return f"a photo of a {names[0]} and a {names[1]}."
    return ", ".join(names[:-1]) + f" and {names[-1]}"


def sibling_texts(texts):
    """Every text that names a part, with each other part instead: the look-alikes'
    captions, negatives that make CLIP tell siblings apart (ours: hard negatives)."""
    siblings = []
    for text in texts:
        words = text.split()
        for k, w in enumerate(words):
            if w in render.PARTS:
                siblings += [" ".join(words[:k] + [other] + words[k + 1 :]) for other in render.PART_NAMES if other != w]
    return list(dict.fromkeys(siblings))


def patch_centres(size, grid):
    """[grid * grid, 2] pixel (x, y) of every patch centre, row-major like the ViT."""
    step = size / grid
    centre = (np.arange(grid) + 0.5) * step
    ys, xs = np.meshgrid(centre, centre, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def region_mask(centres, point, reach):
    """Patches whose centre lies within `reach` pixels of `point`; at least the nearest."""
    distance = np.linalg.norm(centres - point, axis=1)
    return (distance <= reach) | (distance == distance.min())


def random_objects(rng, n):
    """(shape, family, shade, texture, part, synth_fg class or None) of `n` single
    objects: half of them of a `synth_fg` class, half of any shape, colour, texture and
    part (or none)."""
    objects = []
    for _ in range(n):
        if rng.random() < 0.5:
            k = int(rng.integers(len(synth_fg.CLASSES)))
            c = synth_fg.CLASSES[k]
            objects.append((c.shape, c.family, c.shade, c.texture, c.part, k))
            continue
        family = rng.choice(sorted(render.FAMILIES))
        part = rng.choice(render.PART_NAMES + (None,))
        objects.append((
            rng.choice(render.SHAPES), family, rng.choice(sorted(render.FAMILIES[family])),
            rng.choice(render.TEXTURES), part, None,
        ))
    return objects


def single_batch(rng, n, size, grid):
    """Single objects: images, captions, and their object and part regions."""
    objects = random_objects(rng, n)
    shapes, families, shades, textures, parts, _ = zip(*objects)
    scenes = synth_fg.object_scenes(rng, shapes, shades, textures, parts, size)
    centres = patch_centres(size, grid)
    part_xy = render.part_centres(scenes, synth_fg.OBJECT_SLOT)
    texts, regions = [], []
    for i, (shape, family, _, _, part, cls) in enumerate(objects):
        p_part = P_PART_TYPICAL if (shape, family, part) in TYPICAL else P_PART_RARE
        if cls is not None and rng.random() < P_PROPER:
            texts.append(caption(rng, proper_phrase(rng, cls)))
        else:
            texts.append(caption(rng, object_phrase(rng, family, shape, part, p_part)))
        radius = scenes.radius[i, synth_fg.OBJECT_SLOT] * SCENE_RADIUS_FACTOR
        regions.append((i, region_mask(centres, scenes.center[i, synth_fg.OBJECT_SLOT], radius),
                        caption(rng, object_phrase(rng, family, shape, part, p_part))))
        if part is not None:
            regions.append((i, region_mask(centres, part_xy[i], PART_REACH * size / grid),
                            caption(rng, object_phrase(rng, family, shape, part, P_PART_LOCAL))))
    return render.render(scenes, rng, size), texts, regions


def scene_batch(rng, n, size, grid):
    """Multi-object scenes: images, captions, one region per object, and the scenes'
    geometry (for crops)."""
    objects = synth_ml.sample_objects(rng, n)
    scenes = synth_ml.sample_scenes(rng, objects, size)
    boxes = synth_ml.object_boxes(scenes, objects)
    centres = patch_centres(size, grid)
    small_radius = synth_ml.SMALL_RADIUS[1] * size
    texts, regions = [], []
    for i, rows in enumerate(boxes):
        named = []
        for k, (cls, x0, y0, x1, y1, radius) in enumerate(rows):
            family, shape = synth_ml.CLASSNAMES[int(cls)].split()
            phrase = object_phrase(rng, family, shape)
            if rng.random() < (P_NAME_SMALL if radius <= small_radius else P_NAME_LARGE):
                named.append(phrase)
            centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
            regions.append((i, region_mask(centres, centre, radius * SCENE_RADIUS_FACTOR), caption(rng, phrase)))
        if not named:  # name the largest object
            family, shape = synth_ml.CLASSNAMES[int(rows[np.argmax(rows[:, 5]), 0])].split()
            named.append(object_phrase(rng, family, shape))
        texts.append(scene_caption(rng, named))
    return render.render(scenes, rng, size), texts, regions, boxes


def crop_views(rng, images, boxes, n, size):
    """`n` crops around one object each (a small one `P_CROP_SMALL` of the time when the
    scene has one) with a random margin, resized to the image size, and their captions."""
    small_radius = synth_ml.SMALL_RADIUS[1] * size
    scene = rng.integers(len(images), size=n)
    crop_boxes, texts = [], []
    for i in scene:
        rows = boxes[i]
        small = rows[:, 5] <= small_radius
        pool = np.flatnonzero(small) if small.any() and rng.random() < P_CROP_SMALL else np.arange(len(rows))
        cls, x0, y0, x1, y1, _ = rows[rng.choice(pool)]
        margin = rng.uniform(*CROP_MARGIN) * size
        shift = rng.uniform(-0.5, 0.5, size=2) * margin
        crop_boxes.append([x0 - margin + shift[0], y0 - margin + shift[1], x1 + margin + shift[0], y1 + margin + shift[1]])
        family, shape = synth_ml.CLASSNAMES[int(cls)].split()
        texts.append(caption(rng, object_phrase(rng, family, shape)))
    return render.crop_and_resize(images[scene], np.array(crop_boxes), size), texts


def pretraining_batch(rng, n, size=render.IMAGE_SIZE, grid=8):
    """(uint8 images [n, size, size, 3], captions [n], regions, negatives) drawn from the
    whole world; regions: (image index, patch mask [grid * grid], caption) of objects
    and parts of the single-object and scene images; negatives: `sibling_texts` of all
    captions."""
    n_single, n_scene = int(round(n * SINGLE_SHARE)), int(round(n * SCENE_SHARE))
    single_images, single_texts, regions = single_batch(rng, n_single, size, grid)
    scene_images, scene_texts, scene_regions, boxes = scene_batch(rng, n_scene, size, grid)
    crop_images, crop_texts = crop_views(rng, scene_images, boxes, n - n_single - n_scene, size)
    regions += [(n_single + i, mask, text) for i, mask, text in scene_regions]
    images = np.concatenate([single_images, scene_images, crop_images])
    texts = single_texts + scene_texts + crop_texts
    return images, texts, regions, sibling_texts(texts + [t for _, _, t in regions])
