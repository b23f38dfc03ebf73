"""Vectorised drawing of the synthetic world: shapes with small parts on noisy backgrounds.

A scene is a list of object slots (clutter specks first, then the real objects) over a
background with a colour gradient and pixel noise. An object has a shape, a colour, a
texture and optionally one small local part (`PARTS`): a spike, stub or knob on its
outline or an eye inside it, each in its own colour (`MARK_COLOURS`), or a notch cut out of it, at a fixed place in the
object's own frame (so it turns with the object). Every part covers under 10 % of the
object's area: siblings that differ only in their part differ only locally.

`render` draws a whole batch of scenes at once with numpy on a 2x supersampled grid
(anti-aliasing), so a few thousand 64 px images take seconds. All randomness comes
from the `numpy.random.Generator` passed in, so a seed fixes every pixel.
"""
from dataclasses import dataclass, fields

import numpy as np

SHAPES = ("disc", "square", "triangle", "hexagon", "cross", "ring", "star")
TEXTURES = ("plain", "striped", "dotted", "checkered")

# colour family -> its shades (RGB); an object of a family takes one of them, so a
# colour word covers a little range, as it does in photos
FAMILIES = {
    "red": {"crimson": (196, 24, 64), "scarlet": (236, 64, 24), "maroon": (150, 28, 36)},
    "blue": {"navy": (36, 52, 160), "azure": (48, 128, 232), "cobalt": (20, 80, 200)},
    "green": {"olive": (112, 142, 32), "emerald": (24, 164, 96), "lime": (110, 200, 40)},
    "yellow": {"gold": (232, 176, 20), "lemon": (240, 226, 70), "amber": (250, 190, 50)},
    "purple": {"violet": (130, 50, 210), "plum": (130, 40, 110), "lilac": (170, 110, 220)},
}
SHADES = {shade: rgb for family in FAMILIES.values() for shade, rgb in family.items()}
FAMILY_OF = {shade: family for family, shades in FAMILIES.items() for shade in shades}

# part -> (kind, direction of its place in the object's frame in degrees: 0 right, 90 up)
PARTS = {
    "horned": ("spike", 90),
    "tailed": ("stub", 270),
    "knobbed": ("knob", 135),
    "finned": ("spike", 0),
    "eyed": ("eye", 45),
    "notched": ("notch", 180),
}
PART_NAMES = tuple(PARTS)
# sizes on a disc, in units of its radius; on other shapes they scale with the square
# root of the shape's area (`PART_SCALE`), so every part covers 5-8 % of its object
SPIKE_LENGTH, SPIKE_HALF_BASE = 0.5, 0.28
STUB_LENGTH, STUB_HALF_WIDTH = 0.5, 0.12
KNOB_RADIUS, KNOB_OFFSET = 0.24, 0.1  # knob centre: this far outside the outline
EYE_RADIUS, EYE_DEPTH = 0.22, 0.55  # eye centre: this fraction of the way to the outline
NOTCH_DEPTH, NOTCH_HALF_WIDTH = 0.45, 0.3
JOIN = 0.04  # spikes and stubs start this far inside the outline, so no gap shows

IMAGE_SIZE = 64  # pixels per side of every world image (the shipped CLIP's input)
SUPERSAMPLE = 2
TEXTURE_PERIOD = (0.106, 0.131)  # stripe / dot / check period, a share of the image size
CLUTTER_RADIUS = (0.025, 0.056)  # clutter specks, a share of the image size
MAX_ANGLE = np.pi / 6  # poses stay within +-30 degrees, so a square never turns into a diamond
TEXTURE_DARKEN = 0.45  # pattern colour = the shade darkened by this factor
# every part kind but the notch (a cut) has its own colour, unlike any object's, so a part
# is told by its colour as well as by its shape and place, as a bird's wing bar is
MARK_COLOURS = {
    "horned": (245, 245, 240),  # white
    "tailed": (25, 25, 30),  # black
    "knobbed": (40, 215, 225),  # cyan
    "finned": (255, 120, 0),  # orange
    "eyed": (255, 90, 200),  # pink
}


@dataclass
class Scenes:
    """A batch of N scenes with M object slots each (`shape` -1 marks an empty slot)."""

    shape: np.ndarray  # [N, M] int index into SHAPES, -1 = empty
    texture: np.ndarray  # [N, M] int index into TEXTURES
    part: np.ndarray  # [N, M] int index into PART_NAMES, -1 = no part
    rgb: np.ndarray  # [N, M, 3] float, 0..255
    center: np.ndarray  # [N, M, 2] float, pixels (x, y)
    radius: np.ndarray  # [N, M] float, pixels
    angle: np.ndarray  # [N, M] float, radians
    period: np.ndarray  # [N, M] float, texture period in pixels
    phase: np.ndarray  # [N, M, 2] float in [0, 1)
    background: np.ndarray  # [N, 3] float base colour
    gradient: np.ndarray  # [N, 3] float: change across the image in x and in y, pixel-noise std

    def __len__(self):
        return self.shape.shape[0]

    def __getitem__(self, index):
        """The scenes selected by a slice or index array, as a new batch."""
        return Scenes(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def jittered_shades(rng, shade_names):
    """RGB of each named shade with small brightness and per-channel jitter."""
    base = np.array([SHADES[s] for s in shade_names], dtype=np.float32).reshape(-1, 3)
    brightness = rng.uniform(0.92, 1.08, size=(len(base), 1))
    return np.clip(base * brightness + rng.normal(0, 5, size=base.shape), 0, 255)


def empty_scenes(rng, n, slots):
    """`n` backgrounds (grey with a faint tint, a gradient, pixel noise) and empty slots."""
    grey = rng.uniform(70, 190, size=(n, 1))
    background = grey + rng.uniform(-18, 18, size=(n, 3))
    gradient = np.concatenate([rng.uniform(-38, 38, size=(n, 2)), rng.uniform(3, 12, size=(n, 1))], axis=1)
    return Scenes(
        shape=np.full((n, slots), -1, dtype=np.int64),
        texture=np.zeros((n, slots), dtype=np.int64),
        part=np.full((n, slots), -1, dtype=np.int64),
        rgb=np.zeros((n, slots, 3), dtype=np.float32),
        center=np.zeros((n, slots, 2), dtype=np.float32),
        radius=np.ones((n, slots), dtype=np.float32),
        angle=np.zeros((n, slots), dtype=np.float32),
        period=np.full((n, slots), 4.0, dtype=np.float32),
        phase=np.zeros((n, slots, 2), dtype=np.float32),
        background=background.astype(np.float32),
        gradient=gradient.astype(np.float32),
    )


def place(scenes, rows, slot, shape, texture, rgb, center, radius, rng, size, part=-1):
    """Fill `slot` of the scenes `rows` (images of `size` pixels) with objects; pose,
    texture period and phase are random."""
    n = len(rows)
    scenes.shape[rows, slot] = shape
    scenes.texture[rows, slot] = texture
    scenes.part[rows, slot] = part
    scenes.rgb[rows, slot] = rgb
    scenes.center[rows, slot] = center
    scenes.radius[rows, slot] = radius
    scenes.angle[rows, slot] = rng.uniform(-MAX_ANGLE, MAX_ANGLE, size=n)
    scenes.period[rows, slot] = rng.uniform(*TEXTURE_PERIOD, size=n) * size
    scenes.phase[rows, slot] = rng.uniform(0, 1, size=(n, 2))


def add_clutter(scenes, rng, max_items, size):
    """Up to `max_items` small plain specks of random colour in the first slots."""
    n = len(scenes)
    count = rng.integers(0, max_items + 1, size=n)
    for slot in range(max_items):
        rows = np.flatnonzero(count > slot)
        rgb = rng.uniform(40, 220, size=(len(rows), 1)) + rng.uniform(-40, 40, size=(len(rows), 3))
        place(
            scenes, rows, slot,
            shape=rng.choice([SHAPES.index("disc"), SHAPES.index("square")], size=len(rows)),
            texture=0,
            rgb=np.clip(rgb, 0, 255),
            center=rng.uniform(1, size - 1, size=(len(rows), 2)),
            radius=rng.uniform(*CLUTTER_RADIUS, size=len(rows)) * size,
            rng=rng,
            size=size,
        )


def _shape_mask(shape_name, u, v):
    """Inside-test of a unit-size shape in its local coordinates (u right, v up)."""
    if shape_name == "disc":
        return u * u + v * v <= 1.0
    if shape_name == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.82
    if shape_name == "triangle":
        return _polygon(u, v + 0.15, sides=3, apothem=0.6, first_normal=-np.pi / 2)
    if shape_name == "hexagon":
        return _polygon(u, v, sides=6, apothem=0.88, first_normal=0.0)
    if shape_name == "cross":
        arm, length = 0.34, 0.95
        return ((np.abs(u) <= arm) & (np.abs(v) <= length)) | ((np.abs(v) <= arm) & (np.abs(u) <= length))
    if shape_name == "ring":
        rho2 = u * u + v * v
        return (rho2 <= 1.0) & (rho2 >= 0.5**2)
    if shape_name == "star":
        rho = np.sqrt(u * u + v * v)
        theta = np.arctan2(v, u) - np.pi / 2
        return rho <= 0.62 + 0.38 * np.cos(5 * theta)
    raise KeyError(f"Unknown shape {shape_name!r}; valid shapes: {', '.join(SHAPES)}")


def _polygon(u, v, sides, apothem, first_normal):
    inside = np.ones(np.broadcast(u, v).shape, dtype=bool)
    for k in range(sides):
        phi = first_normal + 2 * np.pi * k / sides
        inside &= u * np.cos(phi) + v * np.sin(phi) <= apothem
    return inside


def _outline_distance(shape_name, degrees):
    """Distance from the centre to the outermost point of the unit shape in a direction."""
    t = np.linspace(0.0, 1.5, 3001)
    phi = np.deg2rad(degrees)
    inside = _shape_mask(shape_name, t * np.cos(phi), t * np.sin(phi))
    return float(t[np.flatnonzero(inside)[-1]])


def _part_scale(shape_name):
    """Parts scale with the square root of their shape's area (a disc's parts keep the
    sizes above), so a part covers the same share of every shape."""
    t = np.linspace(-1.5, 1.5, 601)
    u, v = np.meshgrid(t, t)
    area = _shape_mask(shape_name, u, v).mean() * 9.0
    return float(np.sqrt(area / np.pi))


# [shape, part] distance to the outline in the part's direction, in units of the radius
OUTLINE = np.array([[_outline_distance(s, PARTS[p][1]) for p in PART_NAMES] for s in SHAPES], dtype=np.float32)
PART_SCALE = np.array([_part_scale(s) for s in SHAPES], dtype=np.float32)


def _part_centre_distance(shape_id, part_id):
    """Distance from the object's centre to its part's centre, in units of the radius."""
    kind = PARTS[PART_NAMES[part_id]][0]
    outline, scale = OUTLINE[shape_id, part_id], PART_SCALE[shape_id]
    if kind == "eye":
        return outline * EYE_DEPTH
    shift = {"spike": SPIKE_LENGTH / 2, "stub": STUB_LENGTH / 2, "knob": KNOB_OFFSET, "notch": -NOTCH_DEPTH / 2}
    return outline + scale * shift[kind]


PART_DISTANCE = np.array(
    [[_part_centre_distance(s, p) for p in range(len(PART_NAMES))] for s in range(len(SHAPES))], dtype=np.float32
)
PART_DIRECTION = np.deg2rad([PARTS[p][1] for p in PART_NAMES]).astype(np.float32)


def part_centres(scenes, slot):
    """[N, 2] pixel position (x, y) of the part of the object in `slot` (NaN: no part)."""
    centres = np.full((len(scenes), 2), np.nan, dtype=np.float32)
    rows = np.flatnonzero((scenes.part[:, slot] >= 0) & (scenes.shape[:, slot] >= 0))
    if not len(rows):
        return centres
    shape, part = scenes.shape[rows, slot], scenes.part[rows, slot]
    along = PART_DISTANCE[shape, part] * scenes.radius[rows, slot]
    phi = PART_DIRECTION[part] + scenes.angle[rows, slot]
    # local v is up, image y is down
    centres[rows, 0] = scenes.center[rows, slot, 0] + along * np.cos(phi)
    centres[rows, 1] = scenes.center[rows, slot, 1] - along * np.sin(phi)
    return centres


def _part_mask(shape_id, part_id, u, v):
    """Pixels of a part on a unit shape (u, v: the object's unit coordinates)."""
    kind, degrees = PARTS[PART_NAMES[part_id]]
    outline, scale = OUTLINE[shape_id, part_id], PART_SCALE[shape_id]
    phi = np.deg2rad(degrees)
    radial = u * np.cos(phi) + v * np.sin(phi)
    across = np.abs(-u * np.sin(phi) + v * np.cos(phi)) / scale
    if kind == "eye":
        return ((radial - outline * EYE_DEPTH) / scale) ** 2 + across**2 <= EYE_RADIUS**2
    along = (radial - outline) / scale  # 0 at the outline, > 0 outside
    if kind == "spike":
        return (along >= -JOIN) & (along <= SPIKE_LENGTH) & (across <= SPIKE_HALF_BASE * np.minimum(1, 1 - along / SPIKE_LENGTH))
    if kind == "stub":
        return (along >= -JOIN) & (along <= STUB_LENGTH) & (across <= STUB_HALF_WIDTH)
    if kind == "knob":
        return (along - KNOB_OFFSET) ** 2 + across**2 <= KNOB_RADIUS**2
    if kind == "notch":  # a wedge cut inwards from the outline
        return (along <= 0.1) & (along >= -NOTCH_DEPTH) & (across <= NOTCH_HALF_WIDTH * (along + NOTCH_DEPTH) / NOTCH_DEPTH)
    raise KeyError(f"Unknown part kind {kind!r}")


def _pattern(texture_name, pu, pv):
    """1 where the darker pattern colour shows; pu, pv are local coordinates in periods."""
    if texture_name == "plain":
        return np.zeros(pu.shape, dtype=bool)
    if texture_name == "striped":
        return (pu % 1.0) < 0.5
    if texture_name == "dotted":
        return ((pu % 1.0) - 0.5) ** 2 + ((pv % 1.0) - 0.5) ** 2 < 0.32**2
    if texture_name == "checkered":
        return (np.floor(pu) + np.floor(pv)) % 2 == 0
    raise KeyError(f"Unknown texture {texture_name!r}; valid textures: {', '.join(TEXTURES)}")


def render(scenes, rng, size=IMAGE_SIZE):
    """Draw the scenes: uint8 array [N, size, size, 3]."""
    n, slots = scenes.shape.shape
    hi = size * SUPERSAMPLE
    coords = (np.arange(hi, dtype=np.float32) + 0.5) / SUPERSAMPLE
    xs, ys = coords[None, None, :], coords[None, :, None]  # [1, 1, W], [1, H, 1]

    slope_x, slope_y, noise_std = (scenes.gradient[:, k, None, None] for k in range(3))
    offset = slope_x * (xs / size - 0.5) + slope_y * (ys / size - 0.5)  # [N, H, W]
    canvas = scenes.background[:, None, None, :] + offset[..., None]  # [N, H, W, 3]

    for slot in range(slots):
        for shape_id, shape_name in enumerate(SHAPES):
            rows = np.flatnonzero(scenes.shape[:, slot] == shape_id)
            if len(rows):
                _draw(canvas, rows, scenes, slot, shape_id, xs, ys)

    # box-filter the supersampled canvas down to the output size
    canvas = canvas.reshape(n, size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean(axis=(2, 4))
    canvas += rng.normal(0.0, 1.0, size=canvas.shape).astype(np.float32) * noise_std[..., None]
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def render_in_chunks(scenes, seed, size=IMAGE_SIZE, chunk=256, progress=None):
    """`render` chunk by chunk (bounded memory); chunk i's noise comes from seed + [i].

    The chunk length is part of the seed: keep it fixed so the pixels never change.
    `progress(n)` is called after each chunk with its number of images.
    """
    images = np.empty((len(scenes), size, size, 3), dtype=np.uint8)
    for index, start in enumerate(range(0, len(scenes), chunk)):
        part = slice(start, start + chunk)
        images[part] = render(scenes[part], np.random.default_rng([*seed, index]), size)
        if progress is not None:
            progress(len(images[part]))
    return images


def _draw(canvas, rows, scenes, slot, shape_id, xs, ys):
    def per_row(values):
        return values[rows, slot][:, None, None]

    radius, angle, period = per_row(scenes.radius), per_row(scenes.angle), per_row(scenes.period)
    cx, cy = scenes.center[rows, slot, 0][:, None, None], scenes.center[rows, slot, 1][:, None, None]
    cos, sin = np.cos(angle), np.sin(angle)
    dx, dy = xs - cx, cy - ys  # image y grows downwards, local v upwards
    local_u = cos * dx + sin * dy
    local_v = -sin * dx + cos * dy
    unit_u, unit_v = local_u / radius, local_v / radius
    inside = _shape_mask(SHAPES[shape_id], unit_u, unit_v)

    colour = np.broadcast_to(scenes.rgb[rows, slot][:, None, None, :], inside.shape + (3,)).copy()
    pu = local_u / period + scenes.phase[rows, slot, 0][:, None, None]
    pv = local_v / period + scenes.phase[rows, slot, 1][:, None, None]
    for texture_id, texture_name in enumerate(TEXTURES):
        which = np.flatnonzero(scenes.texture[rows, slot] == texture_id)
        if texture_id == 0 or not len(which):
            continue
        dark = _pattern(texture_name, pu[which], pv[which])
        colour[which] = np.where(dark[..., None], colour[which] * TEXTURE_DARKEN, colour[which])

    for part_id, part_name in enumerate(PART_NAMES):
        which = np.flatnonzero(scenes.part[rows, slot] == part_id)
        if not len(which):
            continue
        kind = PARTS[part_name][0]
        mask = _part_mask(shape_id, part_id, unit_u[which], unit_v[which])
        if kind == "notch":
            inside[which] &= ~mask
        else:
            mark = np.array(MARK_COLOURS[part_name], dtype=np.float32)
            colour[which] = np.where(mask[..., None], mark, colour[which])
            inside[which] |= mask
    canvas[rows] = np.where(inside[..., None], colour, canvas[rows])


def crop_and_resize(images, boxes, size):
    """Bilinear crops of uint8 images [N, H, W, 3] to boxes [N, 4] (x0, y0, x1, y1 in
    pixels; parts outside the image repeat its edge), each resized to size x size."""
    n, height, width, _ = images.shape
    steps = (np.arange(size, dtype=np.float32) + 0.5) / size
    x0, y0, x1, y1 = (boxes[:, k, None].astype(np.float32) for k in range(4))
    xs = np.clip(x0 + steps * (x1 - x0) - 0.5, 0, width - 1)  # [N, size] pixel-centre coordinates
    ys = np.clip(y0 + steps * (y1 - y0) - 0.5, 0, height - 1)
    left, top = np.minimum(np.floor(xs).astype(np.int64), width - 2), np.minimum(np.floor(ys).astype(np.int64), height - 2)
    fx, fy = (xs - left)[:, None, :, None], (ys - top)[:, :, None, None]
    rows = np.arange(n)[:, None, None]
    pixels = images.astype(np.float32)

    def at(dy, dx):
        return pixels[rows, (top + dy)[:, :, None], (left + dx)[:, None, :]]

    out = (at(0, 0) * (1 - fx) + at(0, 1) * fx) * (1 - fy) + (at(1, 0) * (1 - fx) + at(1, 1) * fx) * fy
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
