"""Images as they come (PNG or JPEG, RGB or grayscale, any size) to a model's input.

`Preprocessing` is the transform a model was trained with; the trainer records it in the
model card and as the model-version tag `kubeloop.preprocessing`, so whoever feeds the model
later (the predictor) applies the same one. Its JSON, the tag's value:

    {"format": "kubeloop.preprocessing/1", "channels": 3, "height": 32, "width": 32,
     "resize": 36, "crop": "center", "interpolation": "bilinear", "scale": 255,
     "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26], "normalizeInModel": true}

Applied in this order:
  1. decode; convert to `channels` (1: PIL "L" luminance; 3: "RGB"; alpha dropped);
  2. resize, keeping the aspect ratio, so the shorter side is `resize` pixels (null: the
     smallest size that covers height x width), with `interpolation`;
  3. crop `height` x `width` from the centre;
  4. pixel values / `scale`, to float32 in [0, 1], laid out [channels, height, width];
  5. (x - mean) / std per channel. With `normalizeInModel` true (what the image-classifier
     exports) this step is inside the ONNX graph: the model's input is the [0, 1] image of
     step 4, the same range the predictor's float inputs have always had.

The functions here are that transform, the one implementation the trainer uses; pure (no
I/O), numpy and Pillow only, so the predictor can import them too.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

FORMAT = "kubeloop.preprocessing/1"
TAG = "kubeloop.preprocessing"
"""Model-version tag holding the Preprocessing JSON."""
Interpolation = Literal["bilinear", "bicubic", "nearest"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
"""File names an image folder's images have (case-insensitive); others are skipped."""
_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
_DECODE_PIXELS = 64_000_000  # a larger image is refused before decoding (a bomb, or a mistake)


class ImageError(ValueError):
    """An image cannot be decoded or has no pixels."""


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a model input; see the module docstring for each step."""

    channels: int
    height: int
    width: int
    resize: int | None = None
    crop: Literal["center"] = "center"
    interpolation: Interpolation = "bilinear"
    scale: float = 255.0
    mean: tuple[float, ...] = field(default=())
    """Per channel; empty: 0 for every channel."""
    std: tuple[float, ...] = field(default=())
    """Per channel; empty: 1 for every channel."""
    normalize_in_model: bool = True

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values and len(values) != self.channels:
                raise ValueError(
                    f"{name} has {len(values)} values; give one per channel ({self.channels})"
                )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {list(self.std)}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def means(self) -> tuple[float, ...]:
        return self.mean or (0.0,) * self.channels

    @property
    def stds(self) -> tuple[float, ...]:
        return self.std or (1.0,) * self.channels

    def to_json(self) -> dict[str, Any]:
        raw = asdict(self)
        return {
            "format": FORMAT,
            "channels": self.channels,
            "height": self.height,
            "width": self.width,
            "resize": self.resize,
            "crop": self.crop,
            "interpolation": self.interpolation,
            "scale": self.scale,
            "mean": list(self.means),
            "std": list(self.stds),
            "normalizeInModel": raw["normalize_in_model"],
        }

    def to_tag(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Preprocessing:
        if value.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} document (format {value.get('format')!r})")
        return cls(
            channels=int(value["channels"]),
            height=int(value["height"]),
            width=int(value["width"]),
            resize=None if value.get("resize") is None else int(value["resize"]),
            crop=value.get("crop", "center"),
            interpolation=value.get("interpolation", "bilinear"),
            scale=float(value.get("scale", 255.0)),
            mean=tuple(float(v) for v in value.get("mean", ())),
            std=tuple(float(v) for v in value.get("std", ())),
            normalize_in_model=bool(value.get("normalizeInModel", True)),
        )

    @classmethod
    def from_tag(cls, tag: str) -> Preprocessing:
        return cls.from_json(json.loads(tag))

    def describe(self) -> str:
        """One line for the model card."""
        resize = f"shorter side to {self.resize} px" if self.resize else "to cover the crop"
        color = "RGB" if self.channels == 3 else "grayscale"
        where = "inside the model" if self.normalize_in_model else "before the model"
        return (
            f"{color}; resize {resize} ({self.interpolation}); centre crop {self.height} x "
            f"{self.width}; / {self.scale:g} to [0, 1]; normalise mean "
            f"{[round(m, 4) for m in self.means]} std {[round(s, 4) for s in self.stds]} "
            f"({where})"
        )


def decode(data: bytes, preprocessing: Preprocessing) -> NDArray[np.float32]:
    """PNG or JPEG bytes as one input [channels, height, width] in [0, 1] (steps 1-4)."""
    try:
        image = Image.open(io.BytesIO(data), formats=["PNG", "JPEG"])
        width, height = image.size
        if width * height > _DECODE_PIXELS or not width or not height:
            raise ImageError(f"the image is {width} x {height} pixels; too large or empty")
        if image.format == "JPEG":  # decode at a reduced size when the crop is much smaller
            image.draft(
                "RGB" if preprocessing.channels == 3 else "L", _draft_size(image, preprocessing)
            )
        image.load()
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as error:
        if isinstance(error, ImageError):
            raise
        raise ImageError(f"not a decodable PNG or JPEG image ({error})") from None
    return _to_input(_to_mode(image, preprocessing.channels), preprocessing)


def fit_array(array: NDArray[Any], preprocessing: Preprocessing) -> NDArray[np.float32]:
    """An image already in [0, 1], (H, W) or (C, H, W), as one input [C, H, W].

    An image of the input's shape is returned as it is (bit for bit); another size or
    channel count goes through steps 1-3 on float pixels.
    """
    image = np.asarray(array, dtype=np.float32)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise ImageError(f"an image has shape (H, W) or (C, H, W), got {list(array.shape)}")
    if image.shape == preprocessing.input_shape:
        return image
    channels = preprocessing.channels
    if image.shape[0] != channels:
        if image.shape[0] == 1:
            image = np.repeat(image, channels, axis=0)
        elif image.shape[0] == 3 and channels == 1:
            image = np.tensordot(np.asarray(_LUMA, np.float32), image, axes=1)[None]
        else:
            raise ImageError(f"cannot make {image.shape[0]} channels into {channels}")
    if image.shape[1:] == (preprocessing.height, preprocessing.width):
        return np.ascontiguousarray(image, dtype=np.float32)
    planes = [_resize_crop(Image.fromarray(plane, mode="F"), preprocessing) for plane in image]
    return np.stack([np.asarray(p, dtype=np.float32) for p in planes])


def normalize(batch: NDArray[np.float32], preprocessing: Preprocessing) -> NDArray[np.float32]:
    """Step 5 on a batch [N, C, H, W]; what the model does first when normalizeInModel."""
    mean = np.asarray(preprocessing.means, np.float32)[None, :, None, None]
    std = np.asarray(preprocessing.stds, np.float32)[None, :, None, None]
    return ((batch - mean) / std).astype(np.float32)


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, what PIL's "L" conversion uses


def _to_mode(image: Image.Image, channels: int) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")  # transparency over black, as a decoder without alpha
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    if image.mode in ("I;16", "I;16B", "I"):
        image = image.point(lambda v: v / 256).convert("L")
    return image.convert("RGB" if channels == 3 else "L")


def _to_input(image: Image.Image, preprocessing: Preprocessing) -> NDArray[np.float32]:
    pixels = np.asarray(_resize_crop(image, preprocessing), dtype=np.float32) / preprocessing.scale
    pixels = pixels[None] if pixels.ndim == 2 else np.moveaxis(pixels, -1, 0)
    return np.ascontiguousarray(pixels, dtype=np.float32)


def _resize_crop(image: Image.Image, preprocessing: Preprocessing) -> Image.Image:
    width, height = image.size
    target_h, target_w = preprocessing.height, preprocessing.width
    if preprocessing.resize is None:
        factor = max(target_h / height, target_w / width)
    else:
        factor = preprocessing.resize / min(height, width)
    new_w = max(target_w, round(width * factor))
    new_h = max(target_h, round(height * factor))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), _RESAMPLE[preprocessing.interpolation])
    left = (new_w - target_w) // 2
    top = (new_h - target_h) // 2
    if (left, top, new_w, new_h) == (0, 0, target_w, target_h):
        return image
    return image.crop((left, top, left + target_w, top + target_h))


def _draft_size(image: Image.Image, preprocessing: Preprocessing) -> tuple[int, int]:
    """The size JPEG's draft mode may shrink to: still at least what step 2 scales to."""
    width, height = image.size
    shorter = preprocessing.resize or max(preprocessing.height, preprocessing.width)
    factor = max(
        shorter / min(width, height), preprocessing.height / height, preprocessing.width / width
    )
    return (math.ceil(width * factor), math.ceil(height * factor))
