"""scikit-learn's 8x8 digits as kubeloop's example data, and the "designer-glasses" new user.

The 1797 digits ship inside scikit-learn, so examples, the demo and CI need no network.
They are split once, stratified by class and seeded, into train (60 %), val (20 %) and
test (20 %); images are float32 in [0, 1] of shape (N, 8, 8), labels the class names
"0".."9".

The new user wears designer glasses and writes every digit mirrored, left to right
(`new_user`). The mirror image keeps the strokes of a digit but not their direction, so a
model trained on ordinary digits gets most of them wrong, while a few of the user's own
samples teach it the mirrored shapes. No mirrored digit looks like an ordinary digit of
another class often enough to make both slices unlearnable together.

Evaluation slices (`load_slice`): `base` is the test split, `new-user` is the test split
as the new user writes it. Feedback for the demo comes from the train split
(`new_user_feedback`), so no evaluated image is ever trained on.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

CLASSES = tuple(str(digit) for digit in range(10))
HEIGHT = WIDTH = 8
SPLITS = ("train", "val", "test")
SLICES = ("base", "new-user")
NEW_USER = "new-user"
_FRACTIONS = (0.6, 0.8)  # cumulative: train up to 60 %, val up to 80 %, test the rest
_SEED = 0

Images = NDArray[np.float32]
Labels = NDArray[np.str_]


def load_split(name: str) -> tuple[Images, Labels]:
    """Images (N, 8, 8) float32 in [0, 1] and their labels of split train, val or test."""
    if name not in SPLITS:
        raise ValueError(f"unknown digits split {name!r}; expected one of {list(SPLITS)}")
    images, labels = _all()
    index = _split_indices()[SPLITS.index(name)]
    return images[index].copy(), labels[index].copy()


def new_user(images: Images) -> Images:
    """The images as the designer-glasses user writes them: mirrored left to right.

    Deterministic and pure; works on any (N, H, W) batch.
    """
    return np.ascontiguousarray(np.asarray(images, dtype=np.float32)[..., ::-1])


def load_slice(name: str) -> tuple[Images, Labels]:
    """Evaluation data of slice `base` (the test split) or `new-user` (the same, mirrored)."""
    if name not in SLICES:
        raise ValueError(f"unknown digits slice {name!r}; expected one of {list(SLICES)}")
    images, labels = load_split("test")
    return (new_user(images) if name == NEW_USER else images), labels


def new_user_feedback(count: int, seed: int = 0) -> tuple[Images, Labels]:
    """`count` train-split digits as the new user writes them, picked at random by `seed`."""
    images, labels = load_split("train")
    if not 0 <= count <= len(labels):
        raise ValueError(f"count must be between 0 and {len(labels)}, got {count}")
    pick = np.random.default_rng(seed).choice(len(labels), size=count, replace=False)
    return new_user(images[pick]), labels[pick]


@functools.cache
def _all() -> tuple[Images, Labels]:
    rows = np.loadtxt(_bundled_file(), delimiter=",", dtype=np.float32)
    images = (rows[:, :-1].reshape(-1, HEIGHT, WIDTH) / 16.0).astype(np.float32)
    labels = np.asarray([CLASSES[int(target)] for target in rows[:, -1]], dtype=np.str_)
    return images, labels


def _bundled_file() -> Path:
    """scikit-learn's digits.csv.gz (64 pixels in 0..16, then the digit, per row), found
    without importing scikit-learn: `sklearn.datasets` takes ~2 s to import, and what
    `load_digits` does with the file is one `np.loadtxt`."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the digits ship with scikit-learn, which is not installed")
    return Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"


@functools.cache
def _split_indices() -> tuple[NDArray[np.intp], ...]:
    """Stratified: every class is split in the same proportions, in a seeded order."""
    _, labels = _all()
    rng = np.random.default_rng(_SEED)
    parts: list[list[NDArray[np.intp]]] = [[], [], []]
    for label in CLASSES:
        members = rng.permutation(np.flatnonzero(labels == label))
        cuts = [round(len(members) * fraction) for fraction in _FRACTIONS]
        for part, chunk in zip(parts, np.split(members, cuts), strict=True):
            part.append(chunk)
    return tuple(np.sort(np.concatenate(part)) for part in parts)
