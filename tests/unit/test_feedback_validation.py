"""Feedback requests are validated before anything is stored, and each refusal names the
problem with a 4xx status and a bounded reason."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from kubeloop.serving import feedback
from tests import serving_models

POLICY = feedback.Policy(
    dataset="digits",
    classes=tuple(serving_models.CLASSES),
    input_shape=(8, 8),
    slices=("base", "new-user"),
    max_payload_bytes=4096,
)
SHAPE = (8, 8)
PIXELS = np.eye(8, dtype=np.float32)
PREDICTION_ID = "01J0000000000000000000000A"


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_json_with_an_array_input() -> None:
    parsed = feedback.parse_json(
        body(input=PIXELS.tolist(), label="3", prediction_id=PREDICTION_ID, slice="new-user"),
        POLICY,
        SHAPE,
    )
    assert parsed.label == "3"
    assert parsed.slice == "new-user"
    assert parsed.prediction_id == PREDICTION_ID
    assert parsed.input is not None
    assert parsed.input == pytest.approx(PIXELS)


def test_json_with_a_png_and_a_raw_png_body() -> None:
    png = serving_models.png_bytes(PIXELS)
    parsed = feedback.parse_json(
        body(image_png=base64.b64encode(png).decode(), label="1"), POLICY, SHAPE
    )
    assert parsed.input == pytest.approx(PIXELS)
    raw = feedback.parse_image(png, {"label": "1", "slice": "base"}, POLICY, SHAPE)
    assert raw.input == pytest.approx(PIXELS)
    assert raw.slice == "base"


def test_input_may_be_left_to_the_prediction_id() -> None:
    parsed = feedback.parse_json(body(label="0", prediction_id=PREDICTION_ID), POLICY, SHAPE)
    assert parsed.input is None


@pytest.mark.parametrize(
    ("payload", "status", "reason", "message"),
    [
        (b"{not json", 400, "bad-json", "not JSON"),
        (b"[1, 2]", 400, "bad-json", "JSON object"),
        (body(label="1", input=[[0]], colour="red"), 400, "bad-json", "unknown fields ['colour']"),
        (body(input=np.eye(8).tolist()), 422, "bad-label", "label is required"),
        (body(label="11", input=np.eye(8).tolist()), 422, "bad-label", "'11' is not one of"),
        (body(label=3, input=np.eye(8).tolist()), 422, "bad-label", "label is required"),
        (body(label="1", input=np.eye(4).tolist()), 422, "bad-shape", "got [4, 4]"),
        (body(label="1", input=[["x"] * 8] * 8), 422, "bad-shape", "not a numeric array"),
        (body(label="1", image_png="%%%"), 400, "bad-image", "not valid base64"),
        (
            body(label="1", image_png=base64.b64encode(b"\x89PNG\r\n\x1a\nxx").decode()),
            400,
            "bad-image",
            "cannot be decoded",
        ),
        (body(label="1", input=np.eye(8).tolist(), slice="other"), 422, "bad-slice", "'other'"),
        (body(label="1", prediction_id="p-17"), 422, "bad-prediction-id", "'p-17'"),
        (body(label="1", input=[[0.0] * 8] * 200), 413, "too-large", "limit is 4096"),
    ],
)
def test_bad_json_requests(payload: bytes, status: int, reason: str, message: str) -> None:
    with pytest.raises(feedback.Rejected) as refused:
        feedback.parse_json(payload, POLICY, SHAPE)
    assert (refused.value.status, refused.value.reason) == (status, reason)
    assert message in str(refused.value)


def test_bad_png_requests() -> None:
    png = serving_models.png_bytes(np.zeros((10, 10)))
    with pytest.raises(feedback.Rejected, match="10x10 pixels; expected 8x8") as wrong_size:
        feedback.parse_image(png, {"label": "1"}, POLICY, SHAPE)
    assert wrong_size.value.status == 422
    with pytest.raises(feedback.Rejected, match="not a PNG") as not_png:
        feedback.parse_image(b"hello", {"label": "1"}, POLICY, SHAPE)
    assert not_png.value.status == 400
    with pytest.raises(feedback.Rejected, match="label is required"):
        feedback.parse_image(serving_models.png_bytes(PIXELS), {}, POLICY, SHAPE)


def test_declared_length_is_checked_before_reading() -> None:
    with pytest.raises(feedback.Rejected, match="limit is 4096") as refused:
        feedback.check_size("5000", POLICY)
    assert refused.value.status == 413
    feedback.check_size("4096", POLICY)
    feedback.check_size(None, POLICY)


def test_any_slice_when_the_dataset_names_none() -> None:
    open_policy = feedback.Policy("d", ("a", "b"), (8, 8))
    parsed = feedback.parse_json(
        body(label="a", input=PIXELS.tolist(), slice="anything"), open_policy, SHAPE
    )
    assert parsed.slice == "anything"
