"""Small real models for the serving tests: a torch CNN exported to ONNX, registered in MLflow.

The export follows kubeloop's model contract: input "input" float32 [-1, H, W] (or
[-1, 1, H, W] with `channel_axis`), outputs "probabilities" [-1, C] (softmax applied) and
"embedding" [-1, D]; the class names go in the version tag `kubeloop.classes`.
"""

from __future__ import annotations

import io
import json
import uuid
import warnings
from dataclasses import dataclass

import numpy as np

CLASSES = [str(i) for i in range(10)]
SHAPE = (8, 8)


def tiny_classifier_onnx(
    seed: int = 0,
    classes: int = len(CLASSES),
    shape: tuple[int, int] = SHAPE,
    dim: int = 16,
    channel_axis: bool = False,
    channels: int = 1,
) -> bytes:
    """A randomly initialised CNN (different per seed), exported with a dynamic batch axis."""
    import torch

    torch.manual_seed(seed)
    height, width = shape

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(channels, 4, 3, padding=1)
            self.embed = torch.nn.Linear(4 * height * width, dim)
            self.out = torch.nn.Linear(dim, classes)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            images = x if channel_axis else x.unsqueeze(1)
            embedding = torch.relu(self.embed(torch.relu(self.conv(images)).flatten(1)))
            # Sharper logits than the initialisation gives, so classes differ across inputs.
            return torch.softmax(4.0 * self.out(embedding), dim=-1), embedding

    example = torch.zeros((2, channels, height, width) if channel_axis else (2, height, width))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            Net().eval(),
            (example,),
            buffer,  # type: ignore[arg-type]  # the legacy exporter writes to file objects too
            input_names=["input"],
            output_names=["probabilities", "embedding"],
            dynamic_axes={name: {0: "batch"} for name in ("input", "probabilities", "embedding")},
            dynamo=False,
        )
    return buffer.getvalue()


@dataclass(frozen=True)
class Registered:
    name: str
    version: str


def register(
    tracking_uri: str,
    name: str,
    model: bytes,
    classes: list[str] | None = CLASSES,
    alias: str | None = None,
    tags: dict[str, str] | None = None,
) -> Registered:
    """Log `model` with mlflow.onnx in a new run and register it as the next version of `name`."""
    import mlflow
    import mlflow.onnx
    import onnx

    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    with mlflow.start_run():
        info = mlflow.onnx.log_model(
            onnx.load_from_string(model),
            name="model",
            registered_model_name=name,
            pip_requirements=["onnxruntime"],
            save_as_external_data=False,  # one self-contained .onnx file, as the trainer logs
        )
    version = str(info.registered_model_version)
    if classes is not None:
        client.set_model_version_tag(name, version, "kubeloop.classes", json.dumps(classes))
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, version, key, value)
    if alias is not None:
        client.set_registered_model_alias(name, alias, version)
    return Registered(name, version)


def champion_and_candidate(tracking_uri: str, prefix: str) -> str:
    """A new registered model (named from `prefix`) with two versions, different models:
    1 behind alias champion, and 2, a candidate; its name."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    register(tracking_uri, name, tiny_classifier_onnx(0), alias="champion")
    register(tracking_uri, name, tiny_classifier_onnx(1))
    return name


def digit_like_inputs(count: int, seed: int = 0) -> np.ndarray:
    """`count` inputs of SHAPE in [0, 1]."""
    return np.random.default_rng(seed).random((count, *SHAPE), dtype=np.float32)


def png_bytes(pixels: np.ndarray) -> bytes:
    """A grayscale PNG of a 2-D array in [0, 1]."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8), mode="L").save(
        buffer, format="PNG"
    )
    return buffer.getvalue()
