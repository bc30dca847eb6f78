"""kubeloop.images: PNG and JPEG of any size and colour mode to a model input, the transform's
tag format, and arrays already in memory."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from kubeloop import images

RGB = images.Preprocessing(channels=3, height=8, width=8)
GRAY = images.Preprocessing(channels=1, height=8, width=8)


def _encoded(pixels: np.ndarray, mode: str, format_: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buffer, format=format_)
    return buffer.getvalue()


def _halves(height: int, width: int) -> np.ndarray:
    """Left half red, right half blue."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2, 0] = 255
    pixels[:, width // 2 :, 2] = 255
    return pixels


@pytest.mark.parametrize("format_", ["PNG", "JPEG"])
@pytest.mark.parametrize(("height", "width"), [(8, 8), (16, 16), (12, 20), (40, 10)])
def test_any_size_becomes_the_input_shape(format_: str, height: int, width: int) -> None:
    data = _encoded(_halves(height, width), "RGB", format_)
    rgb = images.decode(data, RGB)
    gray = images.decode(data, GRAY)
    assert rgb.shape == (3, 8, 8)
    assert gray.shape == (1, 8, 8)
    assert rgb.dtype == np.float32
    assert rgb.min() >= 0.0
    assert rgb.max() <= 1.0


def test_resize_keeps_the_aspect_and_crops_the_centre() -> None:
    # 8 x 32: the shorter side is already 8, so the centre 8 x 8 straddles the colour edge.
    rgb = images.decode(_encoded(_halves(8, 32), "RGB"), RGB)
    assert rgb[0, :, :4].mean() == pytest.approx(1.0)  # left of the crop: red
    assert rgb[2, :, 4:].mean() == pytest.approx(1.0)  # right of it: blue
    # resize: 16 makes a 16 x 64 image whose centre crop is all edge-free halves again.
    zoomed = images.Preprocessing(channels=3, height=8, width=8, resize=16)
    out = images.decode(_encoded(_halves(8, 32), "RGB"), zoomed)
    assert out[0, :, :3].mean() > 0.95
    assert out[2, :, 5:].mean() > 0.95


def test_grayscale_and_alpha_images() -> None:
    gray = np.full((10, 10), 128, np.uint8)
    as_rgb = images.decode(_encoded(gray, "L"), RGB)
    assert np.allclose(as_rgb, 128 / 255)
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 1] = 255  # green, fully transparent: black
    assert np.allclose(images.decode(_encoded(rgba, "RGBA"), RGB), 0.0)


@pytest.mark.parametrize("data", [b"", b"not an image", b"\x89PNG\r\n\x1a\n broken"])
def test_undecodable_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(images.ImageError, match="not a decodable PNG or JPEG"):
        images.decode(data, RGB)


def test_the_tag_round_trips_and_is_documented_json() -> None:
    transform = images.Preprocessing(
        channels=3, height=32, width=32, resize=36, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2)
    )
    tag = transform.to_tag()
    assert images.Preprocessing.from_tag(tag) == transform
    assert '"format":"kubeloop.preprocessing/1"' in tag
    assert '"normalizeInModel":true' in tag
    defaults = images.Preprocessing.from_tag(GRAY.to_tag())
    assert (defaults.means, defaults.stds) == ((0.0,), (1.0,))
    with pytest.raises(ValueError, match="one per channel"):
        images.Preprocessing(channels=3, height=2, width=2, mean=(0.5,))
    with pytest.raises(ValueError, match=r"not a kubeloop\.preprocessing/1"):
        images.Preprocessing.from_json({"format": "other"})


def test_arrays_of_the_input_shape_pass_unchanged() -> None:
    digit = np.random.default_rng(0).random((8, 8), dtype=np.float32)
    assert np.array_equal(images.fit_array(digit, GRAY)[0], digit)
    small = np.random.default_rng(1).random((3, 4, 4), dtype=np.float32)
    grown = images.fit_array(small, RGB)
    assert grown.shape == (3, 8, 8)
    assert images.fit_array(digit, RGB).shape == (3, 8, 8)  # grayscale repeated to RGB
    batch = np.ones((2, 3, 8, 8), np.float32)
    normalised = images.normalize(
        batch, images.Preprocessing(3, 8, 8, mean=(0.5,) * 3, std=(0.25,) * 3)
    )
    assert np.allclose(normalised, 2.0)
