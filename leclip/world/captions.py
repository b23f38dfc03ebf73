"""Captioned images of the synthetic world, for pre-training the embedded CLIP.

Captions name coarse attributes (shape, colour family, objects of a scene) reliably and
fine ones rarely and noisily: the exact shade in `P_SHADE` of the captions (a sibling
shade of the same family in `P_WRONG_SHADE` of those), the texture in `P_TEXTURE`.
This mimics web captions, which say "a red car" far more often than the model year, so
the pre-trained CLIP is good at coarse concepts and weak at fine ones, as real CLIP is
on fine-grained benchmarks. Class names of the benchmarks ("crimson striped disc") are
phrases of this caption language, so the text tower knows every word of them.
"""
import numpy as np

from . import render, synth_fg, synth_ml

P_SHADE = 0.06
P_WRONG_SHADE = 0.3
P_TEXTURE = 0.1
P_SIZE = 0.3
P_ONE_OBJECT = 0.5  # a scene's caption names just one of its objects, as web captions do
SINGLE_OBJECT_SHARE = 0.6  # the rest of a batch are multi-object scenes
TEMPLATES = ("a photo of a {}.", "a {}.", "a picture of a {}.", "a photo of the {}.")
SMALL, LARGE = 0.31, 0.38  # object radius / image size below / above which size is named


def object_phrase(rng, shape, shade, texture, relative_radius):
    """'red disc', rarely 'crimson disc' or 'red dotted disc', sometimes 'small red disc'."""
    family = render.FAMILY_OF[shade]
    colour = family
    if rng.random() < P_SHADE:
        colour = shade
        if rng.random() < P_WRONG_SHADE:
            colour = rng.choice(sorted(set(render.FAMILIES[family]) - {shade}))
    words = [colour, shape]
    if rng.random() < P_TEXTURE:
        words.insert(1, texture)
    if rng.random() < P_SIZE and not SMALL <= relative_radius <= LARGE:
        words.insert(0, "small" if relative_radius < SMALL else "large")
    return " ".join(words)


def scene_caption(rng, classnames):
    """'a photo of a red disc and a blue square.'; three or more objects in a short list
    ('red disc, blue square and green cross'), so every caption fits 16 tokens; or,
    in `P_ONE_OBJECT` of the scenes, only one of the objects."""
    names = list(dict.fromkeys(classnames))  # objects of one class are named once
    rng.shuffle(names)
    if len(names) == 1 or rng.random() < P_ONE_OBJECT:
        return rng.choice(TEMPLATES).format(names[0])
    if len(names) == 2:
        return f"a photo of a {names[0]} and a {names[1]}."
    return ", ".join(names[:-1]) + f" and {names[-1]}"


def pretraining_batch(rng, n, size=32):
    """(uint8 images [n, size, size, 3], captions) drawn from the whole world."""
    n_single = int(round(n * SINGLE_OBJECT_SHARE))
    shapes = rng.choice(render.SHAPES, size=n_single)
    shades = rng.choice(sorted(render.SHADES), size=n_single)
    textures = rng.choice(render.TEXTURES, size=n_single)
    single = synth_fg.object_scenes(rng, shapes, shades, textures, size)
    relative_radius = single.radius[:, -1] / size
    captions = [
        rng.choice(TEMPLATES).format(object_phrase(rng, *attrs))
        for attrs in zip(shapes, shades, textures, relative_radius)
    ]
    objects = synth_ml.sample_objects(rng, n - n_single)
    captions += [scene_caption(rng, [synth_ml.CLASSNAMES[k] for k in obj]) for obj in objects]
    images = np.concatenate([
        render.render(single, rng, size),
        render.render(synth_ml.sample_scenes(rng, objects, size), rng, size),
    ])
    return images, captions
