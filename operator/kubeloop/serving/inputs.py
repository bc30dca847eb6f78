"""Inputs as users send them (nested lists, tensors, PNG images) to float32 rows.

One input has the model's instance shape, e.g. (8, 8); also accepted: the same with size-1
axes added or dropped ((1, 8, 8)) and the flattened form ((64,)). PNG images are decoded to
grayscale in [0, 1] and must have the instance's height and width. Every problem is an
InputError whose reason is one word (a metric label) and whose message names the problem.
No I/O; no HTTP.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

Rows = NDArray[np.float32]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class InputError(ValueError):
    """A request's input cannot be used; `reason` is a short, bounded label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def rows(values: NDArray[Any], shape: tuple[int, ...]) -> Rows:
    """N inputs of `shape` from an array whose first axis counts them."""
    array = np.asarray(values)
    if array.ndim == 0 or len(array) == 0:
        raise InputError("bad-shape", "no inputs: expected a list of inputs")
    if not _fits(array.shape[1:], shape):
        raise InputError(
            "bad-shape",
            f"each input must have shape {list(shape)} (or {math.prod(shape)} values), "
            f"got {list(array.shape[1:])}",
        )
    return _finite(_floats(array).reshape(len(array), *shape))


def one(values: Any, shape: tuple[int, ...]) -> NDArray[np.float32]:
    """One input of `shape` from a nested list or array."""
    try:
        array = np.asarray(values, dtype=np.float32)
    except (ValueError, TypeError) as error:
        raise InputError("bad-shape", f"the input is not a numeric array: {error}") from None
    if not _fits(array.shape, shape):
        raise InputError(
            "bad-shape",
            f"the input must have shape {list(shape)} (or {math.prod(shape)} values), "
            f"got {list(array.shape)}",
        )
    return _finite(array.reshape(shape))


def instances(items: Any, shape: tuple[int, ...]) -> Rows:
    """V1 `instances`: a list of nested lists and/or {"b64": PNG} (or {"image_bytes": {"b64"}})."""
    if not isinstance(items, list) or not items:
        raise InputError("bad-shape", '"instances" must be a non-empty list')
    try:  # the common case, all numeric: one conversion
        return rows(np.asarray(items, dtype=np.float32), shape)
    except (ValueError, TypeError):
        pass
    out = np.empty((len(items), *shape), dtype=np.float32)
    for i, item in enumerate(items):
        try:
            out[i] = png(_b64(item), shape) if isinstance(item, dict) else one(item, shape)
        except InputError as error:
            raise InputError(error.reason, f"instance {i}: {error}") from None
    return out


def encoded_images(items: Sequence[Any], shape: tuple[int, ...]) -> Rows:
    """V2 BYTES tensor: PNG bytes, or base64 text of them, one per input."""
    out = np.empty((len(items), *shape), dtype=np.float32)
    for i, item in enumerate(items):
        data = item if isinstance(item, bytes) else _b64decode(str(item))
        try:
            out[i] = png(data, shape)
        except InputError as error:
            raise InputError(error.reason, f"input {i}: {error}") from None
    return out


def png(data: bytes, shape: tuple[int, ...]) -> NDArray[np.float32]:
    """A PNG image as one input of `shape`: grayscale, scaled to [0, 1]."""
    height, width = image_size(shape)
    if not data.startswith(PNG_SIGNATURE):
        raise InputError("bad-image", "the image is not a PNG (wrong signature)")
    try:
        image = Image.open(io.BytesIO(data), formats=["PNG"])
        # Size comes from the header: a wrong or huge image is refused before decoding.
        if image.size != (width, height):
            raise InputError(
                "bad-shape",
                f"the image is {image.size[0]}x{image.size[1]} pixels; expected "
                f"{width}x{height} (width x height)",
            )
        image.load()
        gray = image.convert("L")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError("bad-image", f"the PNG cannot be decoded: {error}") from None
    pixels = np.asarray(gray, dtype=np.float32) / 255.0
    return pixels.reshape(shape)


def image_size(shape: tuple[int, ...]) -> tuple[int, int]:
    """(height, width) of an image input of `shape`; InputError if it is no image."""
    dims = [d for d in shape if d != 1]
    if len(dims) == 2:
        return dims[0], dims[1]
    if len(shape) >= 2 and math.prod(shape[:-2]) == 1:
        return shape[-2], shape[-1]
    raise InputError("bad-image", f"inputs of shape {list(shape)} are not images")


def _fits(got: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    if got == shape or got == (math.prod(shape),):
        return True
    return [d for d in got if d != 1] == [d for d in shape if d != 1]


def _floats(array: NDArray[Any]) -> Rows:
    if array.dtype == np.float32:
        return array
    try:
        return array.astype(np.float32)
    except (ValueError, TypeError) as error:
        raise InputError("bad-value", f"inputs must be numbers: {error}") from None


def _finite(array: NDArray[np.float32]) -> NDArray[np.float32]:
    if not np.isfinite(array).all():
        raise InputError("bad-value", "inputs must be finite numbers (no NaN or infinity)")
    return array


def _b64(item: dict[str, Any]) -> bytes:
    if "image_bytes" in item and isinstance(item["image_bytes"], dict):
        item = item["image_bytes"]
    text = item.get("b64")
    if not isinstance(text, str):
        raise InputError("bad-image", 'an image instance must be {"b64": "<base64 PNG>"}')
    return _b64decode(text)


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("bad-image", "the image is not valid base64") from None
