"""Vectorised drawing of the synthetic world: textured shapes on noisy backgrounds.

A scene is a list of object slots (clutter specks first, then the real objects) over a
background with a colour gradient and pixel noise. `render` draws a whole batch of
scenes at once with numpy on a 2x supersampled grid (anti-aliasing), so a few thousand
32 px images take seconds. All randomness comes from the `numpy.random.Generator`
passed in, so a seed fixes every pixel.
"""
from dataclasses import dataclass, fields

import numpy as np

SHAPES = ("disc", "square", "triangle", "hexagon", "cross", "ring", "star")
TEXTURES = ("plain", "striped", "dotted", "checkered")

# colour family -> its named shades (RGB). Shades of one family are close on purpose:
# telling them apart is a fine-grained skill, telling families apart a coarse one.
FAMILIES = {
    "red": {"crimson": (196, 24, 64), "scarlet": (236, 64, 24), "maroon": (140, 28, 36)},
    "blue": {"navy": (28, 44, 150), "azure": (48, 128, 232), "cobalt": (20, 80, 200)},
    "green": {"olive": (112, 132, 32), "emerald": (24, 164, 96), "lime": (120, 210, 40)},
    "yellow": {"gold": (232, 176, 20), "lemon": (246, 238, 84), "amber": (250, 200, 60)},
    "purple": {"violet": (130, 50, 210), "plum": (130, 40, 110), "lilac": (190, 140, 230)},
}
SHADES = {shade: rgb for family in FAMILIES.values() for shade, rgb in family.items()}
FAMILY_OF = {shade: family for family, shades in FAMILIES.items() for shade in shades}

SUPERSAMPLE = 2
MAX_ANGLE = np.pi / 6  # poses stay within +-30 degrees, so a square never turns into a diamond
TEXTURE_DARKEN = 0.45  # pattern colour = the shade darkened by this factor


@dataclass
class Scenes:
    """A batch of N scenes with M object slots each (`shape` -1 marks an empty slot)."""

    shape: np.ndarray  # [N, M] int index into SHAPES, -1 = empty
    texture: np.ndarray  # [N, M] int index into TEXTURES
    rgb: np.ndarray  # [N, M, 3] float, 0..255
    center: np.ndarray  # [N, M, 2] float, pixels (x, y)
    radius: np.ndarray  # [N, M] float, pixels
    angle: np.ndarray  # [N, M] float, radians
    period: np.ndarray  # [N, M] float, texture period in pixels
    phase: np.ndarray  # [N, M, 2] float in [0, 1)
    background: np.ndarray  # [N, 3] float base colour
    gradient: np.ndarray  # [N, 3] float: x slope, y slope, pixel-noise std

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
    gradient = np.concatenate([rng.uniform(-1.2, 1.2, size=(n, 2)), rng.uniform(3, 12, size=(n, 1))], axis=1)
    return Scenes(
        shape=np.full((n, slots), -1, dtype=np.int64),
        texture=np.zeros((n, slots), dtype=np.int64),
        rgb=np.zeros((n, slots, 3), dtype=np.float32),
        center=np.zeros((n, slots, 2), dtype=np.float32),
        radius=np.ones((n, slots), dtype=np.float32),
        angle=np.zeros((n, slots), dtype=np.float32),
        period=np.full((n, slots), 4.0, dtype=np.float32),
        phase=np.zeros((n, slots, 2), dtype=np.float32),
        background=background.astype(np.float32),
        gradient=gradient.astype(np.float32),
    )


def place(scenes, rows, slot, shape, texture, rgb, center, radius, rng):
    """Fill `slot` of the scenes `rows` with objects; pose and texture phase are random."""
    n = len(rows)
    scenes.shape[rows, slot] = shape
    scenes.texture[rows, slot] = texture
    scenes.rgb[rows, slot] = rgb
    scenes.center[rows, slot] = center
    scenes.radius[rows, slot] = radius
    scenes.angle[rows, slot] = rng.uniform(-MAX_ANGLE, MAX_ANGLE, size=n)
    scenes.period[rows, slot] = rng.uniform(3.4, 4.2, size=n)
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
            radius=rng.uniform(0.8, 1.8, size=len(rows)),
            rng=rng,
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


def render(scenes, rng, size=32):
    """Draw the scenes: uint8 array [N, size, size, 3]."""
    n, slots = scenes.shape.shape
    hi = size * SUPERSAMPLE
    coords = (np.arange(hi, dtype=np.float32) + 0.5) / SUPERSAMPLE
    xs, ys = coords[None, None, :], coords[None, :, None]  # [1, 1, W], [1, H, 1]

    slope_x, slope_y, noise_std = (scenes.gradient[:, k, None, None] for k in range(3))
    offset = slope_x * (xs - size / 2) + slope_y * (ys - size / 2)  # [N, H, W]
    canvas = scenes.background[:, None, None, :] + offset[..., None]  # [N, H, W, 3]

    for slot in range(slots):
        for shape_id, shape_name in enumerate(SHAPES):
            rows = np.flatnonzero(scenes.shape[:, slot] == shape_id)
            if len(rows):
                _draw(canvas, rows, scenes, slot, shape_name, xs, ys)

    # box-filter the supersampled canvas down to the output size
    canvas = canvas.reshape(n, size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean(axis=(2, 4))
    canvas += rng.normal(0.0, 1.0, size=canvas.shape).astype(np.float32) * noise_std[..., None]
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def render_in_chunks(scenes, seed, size=32, chunk=256, progress=None):
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


def _draw(canvas, rows, scenes, slot, shape_name, xs, ys):
    def per_row(values):
        return values[rows, slot][:, None, None]

    radius, angle, period = per_row(scenes.radius), per_row(scenes.angle), per_row(scenes.period)
    cx, cy = scenes.center[rows, slot, 0][:, None, None], scenes.center[rows, slot, 1][:, None, None]
    cos, sin = np.cos(angle), np.sin(angle)
    dx, dy = xs - cx, cy - ys  # image y grows downwards, local v upwards
    local_u = cos * dx + sin * dy
    local_v = -sin * dx + cos * dy
    inside = _shape_mask(shape_name, local_u / radius, local_v / radius)

    colour = np.broadcast_to(scenes.rgb[rows, slot][:, None, None, :], inside.shape + (3,)).copy()
    pu = local_u / period + scenes.phase[rows, slot, 0][:, None, None]
    pv = local_v / period + scenes.phase[rows, slot, 1][:, None, None]
    for texture_id, texture_name in enumerate(TEXTURES):
        which = np.flatnonzero(scenes.texture[rows, slot] == texture_id)
        if texture_id == 0 or not len(which):
            continue
        dark = _pattern(texture_name, pu[which], pv[which])
        colour[which] = np.where(dark[..., None], colour[which] * TEXTURE_DARKEN, colour[which])
    canvas[rows] = np.where(inside[..., None], colour, canvas[rows])
