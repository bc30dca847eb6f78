"""A model trained on RGB images answers PNG and JPEG of any size, decoded with the transform
its version records (kubeloop.preprocessing), over V1, V2 and the feedback API."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime
import pytest
from PIL import Image

from kubeloop import images
from kubeloop.local import services
from kubeloop.storage import ObjectStore
from tests import serving_models
from tests.conftest import ACCESS_KEY, SECRET_KEY
from tests.serving_process import AUTH, TOKEN, start_predictor

pytestmark = pytest.mark.slow
PREPROCESSING = images.Preprocessing(channels=3, height=16, width=16, resize=16)
MODEL = serving_models.tiny_classifier_onnx(seed=3, shape=(16, 16), channel_axis=True, channels=3)


def jpeg(width: int, height: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def predictor(
    tmp_path_factory: pytest.TempPathFactory,
    mlflow_server: services.Service,
    s3_server: services.Service,
) -> Iterator[str]:
    registered = serving_models.register(
        mlflow_server.url,
        "rgb-images",
        MODEL,
        alias="champion",
        tags={images.TAG: PREPROCESSING.to_tag()},
    )
    ObjectStore(s3_server.url, ACCESS_KEY, SECRET_KEY).ensure_bucket("rgb")
    args = [
        "--feedback-dataset", "rgb-fb", "--feedback-bucket", "rgb", "--feedback-prefix", "fb/",
        "--classes", ",".join(serving_models.CLASSES),
    ]  # fmt: skip
    process = start_predictor(
        Path(tmp_path_factory.mktemp("rgb")),
        f"models:/{registered.name}@champion",
        mlflow_server.url,
        s3_server.url,
        args,
        env={"KUBELOOP_FEEDBACK_TOKEN": TOKEN},
        name="rgb",
    )
    yield process.url
    process.stop()


def expected(data: bytes) -> np.ndarray:
    """What onnxruntime answers for the image decoded as in training."""
    session = onnxruntime.InferenceSession(MODEL)
    batch = images.decode(data, PREPROCESSING)[None]
    return np.asarray(session.run(["probabilities"], {"input": batch})[0])[0]


def test_jpegs_and_pngs_of_other_sizes_are_answered_with_the_training_transform(
    predictor: str,
) -> None:
    wide, tall = jpeg(40, 30, seed=1), jpeg(24, 50, seed=2)
    png = io.BytesIO()
    Image.fromarray(np.full((20, 20, 3), 128, np.uint8)).save(png, format="PNG")
    sent = [wide, tall, png.getvalue()]
    v1 = httpx.post(
        f"{predictor}/v1/models/rgb:predict",
        json={"instances": [{"b64": base64.b64encode(d).decode()} for d in sent]},
        timeout=30,
    )
    assert v1.status_code == 200, v1.text
    for answer, data in zip(v1.json()["predictions"], sent, strict=True):
        assert answer["probabilities"] == pytest.approx(expected(data).tolist(), abs=1e-4)
    v2 = httpx.post(
        f"{predictor}/v2/models/rgb/infer",
        json={
            "inputs": [
                {
                    "name": "input",
                    "shape": [1],
                    "datatype": "BYTES",
                    "data": [base64.b64encode(wide).decode()],
                }
            ]
        },
        timeout=30,
    )
    assert v2.status_code == 200, v2.text
    (probabilities,) = [o for o in v2.json()["outputs"] if o["name"] == "probabilities"]
    assert probabilities["data"] == pytest.approx(expected(wide).tolist(), abs=1e-4)
    feedback = httpx.post(
        f"{predictor}/v1/feedback/rgb-fb",
        content=tall,
        params={"label": "3"},
        headers={**AUTH, "Content-Type": "image/jpeg"},
        timeout=30,
    )
    assert feedback.status_code == 201, feedback.text
    broken = httpx.post(
        f"{predictor}/v1/models/rgb:predict",
        json={"instances": [{"b64": base64.b64encode(b"not an image").decode()}]},
    )
    assert broken.status_code == 400
    assert "not a decodable PNG or JPEG" in broken.text
