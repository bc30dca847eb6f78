"""The CNN, its checkpoint format and its ONNX export.

Feature layers (two 3x3 convolutions, a 2x2 max pooling, a third convolution, a dense
layer over the whole feature map) end in the embedding; the classifier is one linear layer
on it, which is all a `head` fine-tune retrains. Any H x W of at least 2 x 2 fits: only the
dense layer's width depends on it, and every layer exports to plain ONNX operators.
"""

from __future__ import annotations

import io
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kubeloop import plugins

CHECKPOINT_FORMAT = "kubeloop-image-classifier/1"
OPSET = 17


@dataclass(frozen=True)
class Shape:
    """What fixes the layers' sizes; stored in the checkpoint."""

    height: int
    width: int
    classes: tuple[str, ...]
    channels: int = 32
    embedding: int = 64


class Network(nn.Module):
    """Grayscale images (N, 1, H, W) -> (logits (N, classes), embedding (N, D))."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        width = shape.channels
        self.shape = shape
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * width * (shape.height // 2) * (shape.width // 2), shape.embedding),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(shape.embedding, len(shape.classes))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.features(images)
        return self.classifier(embedding), embedding


class Served(nn.Module):
    """The exported graph: probabilities (softmax inside) and the embedding."""

    def __init__(self, network: Network) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, embedding = self.network(images)
        return torch.softmax(logits, dim=1), embedding


def save(network: Network) -> bytes:
    """The checkpoint: layer sizes, class names and weights, loadable with weights_only."""
    shape = network.shape
    buffer = io.BytesIO()
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "height": shape.height,
            "width": shape.width,
            "classes": list(shape.classes),
            "channels": shape.channels,
            "embedding": shape.embedding,
            "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        },
        buffer,
    )
    return buffer.getvalue()


def load(checkpoint: bytes) -> Network:
    """A network from `save`'s bytes; only tensors and plain values are unpickled."""
    try:
        raw: dict[str, Any] = torch.load(io.BytesIO(checkpoint), weights_only=True)
    except Exception as error:  # torch raises several unrelated types for a bad file
        raise plugins.PluginError(f"the base model's checkpoint is unreadable: {error}") from error
    if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise plugins.PluginError(
            f"the base model's checkpoint is not an image-classifier checkpoint "
            f"(format {found!r}, expected {CHECKPOINT_FORMAT!r})"
        )
    shape = Shape(
        height=int(raw["height"]),
        width=int(raw["width"]),
        classes=tuple(str(c) for c in raw["classes"]),
        channels=int(raw["channels"]),
        embedding=int(raw["embedding"]),
    )
    network = Network(shape)
    network.load_state_dict(raw["state_dict"])
    return network


def export_onnx(network: Network) -> bytes:
    """One self-contained ONNX file with a dynamic batch axis (see kubeloop.plugins)."""
    shape = network.shape
    served = Served(network).cpu().eval()
    example = torch.zeros(2, 1, shape.height, shape.width)
    batch = {0: "batch"}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # The TorchScript exporter is exact, fast and needs no onnxscript; torch < 2.14 has it.
        warnings.simplefilter("ignore", DeprecationWarning)
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(
            served,
            (example,),
            path,
            dynamo=False,
            input_names=[plugins.INPUT],
            output_names=list(plugins.OUTPUTS),
            dynamic_axes=dict.fromkeys((plugins.INPUT, *plugins.OUTPUTS), batch),
            opset_version=OPSET,
        )
        return path.read_bytes()
