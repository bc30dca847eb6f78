"""Coloured objects, RGB 32 x 32, as kubeloop's second example, and the "night camera" new user.

Nothing is downloaded or shipped: the images are drawn here, deterministically from fixed
seeds. Each of the ten classes is a shape (circle, square, triangle, cross, ring) in a
colour; every shape comes in two colours 0.085 of the colour wheel apart
(red-circle / orange-circle, ...), over a muted, textured background, with position, size,
rotation, colour and lighting jittered. Images are float32 in [0, 1] of shape
(N, 3, 32, 32), labels the class names; splits train (1500), val (500), test (500).

The new user's camera has a colour cast and takes pictures in low light (`new_user`): its
colours are turned 0.06 of the wheel, most of the way to the shape's other colour, dimmed to
40 % and noisy. A model trained on ordinary pictures mistakes many of them for the
shape's other colour, while a few of the user's own pictures teach it the camera; their
darkness tells them from ordinary pictures, so both slices can be learnt together.

Evaluation slices (`load_slice`): `base` is the test split, `new-user` the test split as the
new user's camera takes it. Feedback for the demo comes from the train split
(`new_user_feedback`), so no evaluated image is ever trained on.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numpy.typing import NDArray

SHAPES = ("circle", "square", "triangle", "cross", "ring")
COLOURS = (
    ("red", 0.0),
    ("orange", 0.085),
    ("lime", 0.2),
    ("green", 0.285),
    ("teal", 0.4),
    ("cyan", 0.485),
    ("azure", 0.6),
    ("blue", 0.685),
    ("purple", 0.8),
    ("pink", 0.885),
)
"""(name, hue in turns); classes 2j and 2j+1 share shape j."""
CLASSES = tuple(f"{name}-{SHAPES[i // 2]}" for i, (name, _) in enumerate(COLOURS))
SIZE = 32
CHANNELS = 3
SPLITS = ("train", "val", "test")
SIZES = {"train": 1500, "val": 500, "test": 500}
SLICES = ("base", "new-user")
NEW_USER = "new-user"
CAST_TURNS = 0.06
"""How far the new user's camera turns colours, in turns of the colour wheel."""
LOW_LIGHT = 0.4
_SEEDS = {"train": 11, "val": 12, "test": 13}
_NEW_USER_SEED = 99

Images = NDArray[np.float32]
Labels = NDArray[np.str_]


def load_split(name: str) -> tuple[Images, Labels]:
    """Images (N, 3, 32, 32) float32 in [0, 1] and their labels of split train, val or test."""
    if name not in SPLITS:
        raise ValueError(f"unknown objects split {name!r}; expected one of {list(SPLITS)}")
    images, labels = _split(name)
    return images.copy(), labels.copy()


def new_user(images: Images, seed: int = _NEW_USER_SEED) -> Images:
    """The images as the new user's camera takes them: colour cast, low light, sensor noise.

    Deterministic for a seed; works on any (N, 3, H, W) batch.
    """
    batch = np.asarray(images, dtype=np.float32)
    turned = np.asarray(np.einsum("ij,njhw->nihw", _hue_rotation(CAST_TURNS), batch), np.float32)
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 0.025, size=batch.shape).astype(np.float32)
    dim = LOW_LIGHT * turned + 0.03 + noise
    return np.asarray(np.clip(dim, 0.0, 1.0), dtype=np.float32)


def load_slice(name: str) -> tuple[Images, Labels]:
    """Evaluation data of slice `base` (the test split) or `new-user` (the same, as the new
    user's camera takes it)."""
    if name not in SLICES:
        raise ValueError(f"unknown objects slice {name!r}; expected one of {list(SLICES)}")
    images, labels = load_split("test")
    return (new_user(images) if name == NEW_USER else images), labels


def new_user_feedback(count: int, seed: int = 0) -> tuple[Images, Labels]:
    """`count` train-split images as the new user's camera takes them, picked by `seed`."""
    images, labels = load_split("train")
    if not 0 <= count <= len(labels):
        raise ValueError(f"count must be between 0 and {len(labels)}, got {count}")
    pick = np.random.default_rng(seed).choice(len(labels), size=count, replace=False)
    return new_user(images[pick], seed=seed + 1), labels[pick]


def draw(count: int, seed: int) -> tuple[Images, Labels]:
    """`count` images, classes in turn, drawn from `seed`; pure."""
    rng = np.random.default_rng(seed)
    classes = np.arange(count) % len(CLASSES)
    axis = (np.arange(SIZE, dtype=np.float32) + 0.5) / SIZE * 2 - 1  # pixel centres in [-1, 1]
    y, x = (np.asarray(a, np.float32) for a in np.meshgrid(axis, axis, indexing="ij"))
    # Shape frame: shifted, rotated and scaled per image.
    centre = rng.uniform(-0.3, 0.3, size=(count, 2)).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi, size=count).astype(np.float32)
    scale = rng.uniform(0.38, 0.6, size=count).astype(np.float32)
    dx = x[None] - centre[:, 0, None, None]
    dy = y[None] - centre[:, 1, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u = (cos * dx + sin * dy) / scale[:, None, None]
    v = (-sin * dx + cos * dy) / scale[:, None, None]
    shapes = classes // 2
    mask = np.zeros((count, SIZE, SIZE), dtype=bool)
    for index, shape in enumerate(SHAPES):
        chosen = shapes == index
        mask[chosen] = _shape_mask(shape, u[chosen], v[chosen])
    hue = np.asarray([COLOURS[c][1] for c in classes], np.float32) + rng.uniform(
        -0.02, 0.02, size=count
    ).astype(np.float32)
    saturation = rng.uniform(0.65, 0.95, size=count).astype(np.float32)
    value = rng.uniform(0.75, 1.0, size=count).astype(np.float32)
    colour = _hsv_to_rgb(hue % 1.0, saturation, value)  # (N, 3)
    background = _background(rng, count, x, y)  # (N, 3, H, W)
    shading = 1.0 - 0.25 * (u * 0.5 + v * 0.5)  # a light from the top left
    shading = np.clip(shading, 0.7, 1.2)[:, None]
    images = np.where(mask[:, None], colour[:, :, None, None] * shading, background)
    exposure = rng.uniform(0.85, 1.1, size=(count, 1, 1, 1)).astype(np.float32)
    images = images * exposure + rng.normal(0, 0.02, size=images.shape).astype(np.float32)
    labels = np.asarray([CLASSES[c] for c in classes], dtype=np.str_)
    order = rng.permutation(count)
    return np.clip(images[order], 0, 1).astype(np.float32), labels[order]


def _shape_mask(shape: str, u: NDArray[np.float32], v: NDArray[np.float32]) -> NDArray[np.bool_]:
    radius = np.sqrt(u**2 + v**2)
    if shape == "circle":
        return np.asarray(radius <= 1.0)
    if shape == "square":
        return np.asarray((np.abs(u) <= 0.8) & (np.abs(v) <= 0.8))
    if shape == "triangle":
        return np.asarray((v <= 0.6) & (v >= 1.8 * np.abs(u) - 1.1))
    if shape == "cross":
        arm = 0.3
        return np.asarray(
            ((np.abs(u) <= arm) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= arm) & (np.abs(u) <= 1.0))
        )
    if shape == "ring":
        return np.asarray((radius <= 1.0) & (radius >= 0.55))
    raise ValueError(f"unknown shape {shape!r}")


def _background(
    rng: np.random.Generator, count: int, x: NDArray[np.float32], y: NDArray[np.float32]
) -> NDArray[np.float32]:
    """Muted colours with a gradient and a stripe texture, different in every image."""
    base = rng.uniform(0.25, 0.6, size=(count, 1, 1, 1)).astype(np.float32)
    tint = rng.uniform(-0.08, 0.08, size=(count, 3, 1, 1)).astype(np.float32)
    direction = rng.uniform(0, 2 * math.pi, size=count).astype(np.float32)
    along = np.cos(direction)[:, None, None] * x + np.sin(direction)[:, None, None] * y
    frequency = rng.uniform(2, 6, size=count).astype(np.float32)[:, None, None]
    texture = 0.06 * np.sin(frequency * math.pi * along) + 0.1 * along
    return (base + tint + texture[:, None]).astype(np.float32)


def _hsv_to_rgb(
    hue: NDArray[np.float32], saturation: NDArray[np.float32], value: NDArray[np.float32]
) -> NDArray[np.float32]:
    sector = np.floor(hue * 6).astype(int) % 6
    fraction = hue * 6 - np.floor(hue * 6)
    p = value * (1 - saturation)
    q = value * (1 - fraction * saturation)
    t = value * (1 - (1 - fraction) * saturation)
    table = np.stack(
        [
            np.stack([value, t, p], 1),
            np.stack([q, value, p], 1),
            np.stack([p, value, t], 1),
            np.stack([p, q, value], 1),
            np.stack([t, p, value], 1),
            np.stack([value, p, q], 1),
        ]
    )
    return np.asarray(table[sector, np.arange(len(hue))], dtype=np.float32)


def _hue_rotation(turns: float) -> NDArray[np.float32]:
    """The 3 x 3 matrix turning colours by `turns` about the grey axis (red towards orange)."""
    angle = 2 * math.pi * turns
    cos, sin = math.cos(angle), math.sin(angle)
    ones = np.ones((3, 3)) / 3
    cross = np.asarray([[0, -1, 1], [1, 0, -1], [-1, 1, 0]]) / math.sqrt(3)
    return np.asarray(cos * np.eye(3) + (1 - cos) * ones + sin * cross, dtype=np.float32)


@functools.cache
def _split(name: str) -> tuple[Images, Labels]:
    return draw(SIZES[name], _SEEDS[name])
