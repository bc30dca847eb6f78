"""Inputs as users send them (nested lists, tensors, PNG images) to float32 rows.

One input has the model's instance shape, e.g. (8, 8); also accepted: the same with size-1
axes added or dropped ((1, 8, 8)) and the flattened form ((64,)). PNG images are decoded to
grayscale in [0, 1] and must have the instance's height and width. JSON values must be
numbers: a string ("0.5"), a boolean or a null is refused, not coerced as numpy would. A V2
tensor must declare positive sizes, and a request names its input once. A request holds at
most `max_rows` inputs, checked before anything is decoded. Every problem is an InputError
whose reason is one word (a metric label) and whose message names the field and the problem.
The one place inputs are validated, for V1, V2 and feedback alike. No I/O; no HTTP.
"""

from __future__ import annotations

import base64
import binascii
import io
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from kubeloop.images import TAG, ImageError, Preprocessing, decode

Rows = NDArray[np.float32]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


TOO_MANY_ROWS = "too-many-rows"
"""The reason of a request over the row limit (413, not 400)."""

NUMERIC_DATATYPES = {
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
}  # fmt: skip
"""V2 datatypes read as numbers (BOOL is not one: a boolean is no pixel value)."""


class InputError(ValueError):
    """A request's input cannot be used; `reason` is a short, bounded label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Tensor:
    """One V2 input tensor as the request declared it."""

    name: str
    shape: Sequence[Any]
    datatype: str
    data: Any
    """JSON data (nested lists), or the binary extension's: bytes of numbers, or an array
    of encoded images."""


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


def one(values: Any, shape: tuple[int, ...], field: str = "the input") -> NDArray[np.float32]:
    """One input of `shape` from a nested list of numbers (or an array)."""
    array = numbers(values, field)
    if not _fits(array.shape, shape):
        raise InputError(
            "bad-shape",
            f"the input must have shape {list(shape)} (or {math.prod(shape)} values), "
            f"got {list(array.shape)}",
        )
    return _finite(array.reshape(shape))


def instances(
    items: Any, shape: tuple[int, ...], max_rows: int, preprocessing: Preprocessing | None = None
) -> Rows:
    """V1 `instances`: a list of nested lists and/or {"b64": image} (or {"image_bytes":
    {"b64"}}); images are decoded with the model's `preprocessing` (see `image`)."""
    if not isinstance(items, list) or not items:
        raise InputError("bad-shape", '"instances" must be a non-empty list')
    check_rows(len(items), max_rows, "instances")
    if not any(isinstance(item, dict) for item in items):  # the common case: one conversion
        return rows(numbers(items, "instances"), shape)
    out = np.empty((len(items), *shape), dtype=np.float32)
    for i, item in enumerate(items):
        try:
            item_rows = image(_b64(item), shape, preprocessing) if isinstance(item, dict) else None
            out[i] = item_rows if item_rows is not None else one(item, shape)
        except InputError as error:
            raise InputError(error.reason, f"instance {i}: {error}") from None
    return out


def tensor_rows(
    tensors: Sequence[Tensor],
    shape: tuple[int, ...],
    max_rows: int,
    preprocessing: Preprocessing | None = None,
) -> Rows:
    """V2 `inputs`: the one tensor named "input" (or the only one), as rows of `shape`."""
    index, tensor = _the_input(tensors)
    field = f"inputs[{index}]"
    dims = _declared_shape(tensor.shape, f"{field}.shape")
    if tensor.datatype == "BYTES":
        items = list(np.asarray(tensor.data, dtype=object).reshape(-1))
        check_rows(len(items), max_rows, field)
        return encoded_images(items, shape, preprocessing)
    check_rows(dims[0], max_rows, field)
    dtype = NUMERIC_DATATYPES.get(tensor.datatype)
    if dtype is None:
        raise InputError(
            "bad-value",
            f"{field}.datatype {tensor.datatype!r} is not supported: send FP32 numbers (or "
            "BYTES holding PNG images)",
        )
    if isinstance(tensor.data, bytes):  # binary data: typed already, nothing to coerce
        if len(tensor.data) % np.dtype(dtype).itemsize:
            whole = dtype.__name__
            raise InputError("bad-shape", f"{field}: its binary data is not whole {whole}s")
        values = np.frombuffer(tensor.data, dtype=dtype).astype(np.float32)
    else:
        values = numbers(tensor.data, f"{field}.data")
    if values.size != math.prod(dims):
        raise InputError(
            "bad-shape",
            f"{field}.data holds {values.size} values; its shape {list(dims)} needs "
            f"{math.prod(dims)}",
        )
    return rows(values.reshape(dims), shape)


def check_rows(count: int, max_rows: int, field: str) -> None:
    """InputError (reason TOO_MANY_ROWS) when a request holds more than `max_rows` inputs."""
    if count > max_rows:
        raise InputError(
            TOO_MANY_ROWS,
            f"{field} holds {count} inputs; the limit is {max_rows} per request "
            "(--max-request-rows): split the request",
        )


def numbers(value: Any, field: str) -> NDArray[np.float32]:
    """A nested list of JSON numbers (or an array of numbers) as float32; anything else,
    strings and booleans included, is an InputError naming `field`."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iuf":
            raise InputError("bad-shape", f"{field} is not a numeric array ({value.dtype})")
        return _finite(value.astype(np.float32, copy=False))
    # Level by level, C-speed passes: every element of a level is a list (go down) or
    # every one is a number (the leaves); anything else is refused by name.
    level: list[Any] = [value]
    while level:
        kinds = set(map(type, level))
        if kinds == {list}:
            level = list(itertools.chain.from_iterable(level))
        elif kinds <= {int, float}:
            break
        else:
            raise InputError("bad-shape", f"{field} is not a numeric array: {_odd_one(kinds)}")
    try:
        array = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError, OverflowError) as error:
        raise InputError("bad-shape", f"{field} is not a numeric array: {error}") from None
    return _finite(array)


def _odd_one(kinds: set[type]) -> str:
    named = {str: "a string", bool: "a boolean", type(None): "a null", dict: "an object"}
    for kind, words in named.items():
        if kind in kinds:
            return f"it holds {words} where a number belongs; send JSON numbers"
    if list in kinds:
        return "its lists nest unevenly (numbers beside lists): every input needs one shape"
    return f"it holds {', '.join(sorted(k.__name__ for k in kinds))} values; send JSON numbers"


def _the_input(tensors: Sequence[Tensor]) -> tuple[int, Tensor]:
    named = [i for i, tensor in enumerate(tensors) if tensor.name == "input"]
    if len(named) > 1:
        raise InputError(
            "bad-input", f"inputs: {len(named)} tensors are named 'input'; send it once"
        )
    if len(tensors) == 1:
        return 0, tensors[0]
    if not named:
        raise InputError("bad-input", 'V2 requests need one input tensor, named "input"')
    others = [tensor.name for tensor in tensors if tensor.name != "input"]
    raise InputError(
        "bad-input", f"inputs: unknown tensors {others}; this model takes one, named 'input'"
    )


def _declared_shape(shape: Sequence[Any], field: str) -> tuple[int, ...]:
    sizes = list(shape)
    if not sizes or not all(type(size) is int and size >= 1 for size in sizes):
        raise InputError(
            "bad-shape",
            f"{field} must be positive sizes, first the number of inputs (e.g. [2, 8, 8]); "
            f"got {sizes}",
        )
    return tuple(sizes)


def encoded_images(
    items: Sequence[Any], shape: tuple[int, ...], preprocessing: Preprocessing | None = None
) -> Rows:
    """V2 BYTES tensor: encoded images, or base64 text of them, one per input."""
    out = np.empty((len(items), *shape), dtype=np.float32)
    for i, item in enumerate(items):
        data = item if isinstance(item, bytes) else _b64decode(str(item))
        try:
            out[i] = image(data, shape, preprocessing)
        except InputError as error:
            raise InputError(error.reason, f"input {i}: {error}") from None
    return out


def image(
    data: bytes, shape: tuple[int, ...], preprocessing: Preprocessing | None
) -> NDArray[np.float32]:
    """An encoded image as one input of `shape`. With the model's `preprocessing` (its
    training transform): PNG or JPEG of any size, RGB or grayscale, resized and cropped as in
    training; without it, a PNG of exactly the input's size, as grayscale (`png`)."""
    if preprocessing is None:
        return png(data, shape)
    try:
        decoded = decode(data, preprocessing)
    except ImageError as error:
        raise InputError("bad-image", str(error)) from None
    if decoded.size != math.prod(shape):
        raise InputError(
            "bad-shape",
            f"the model's transform makes {list(decoded.shape)} of an image, but its input is "
            f"{list(shape)}: the model's {TAG} tag does not fit it",
        )
    return decoded.reshape(shape)


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
    if array.dtype.kind not in "iuf":  # an array built by a caller from strings or booleans
        raise InputError("bad-shape", f"inputs must be numbers, not {array.dtype}")
    return array.astype(np.float32)


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
