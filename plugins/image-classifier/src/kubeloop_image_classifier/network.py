"""The network's checkpoint format, pretrained weights, and the ONNX export.

The architectures are in `backbones`. A checkpoint holds the Shape (backbone, sizes, classes,
normalisation) and the weights; format 1 (the small CNN before backbones were a choice) is
still read. Pretrained weights are a torchvision state_dict (`.pth`, what
`torchvision.models.resnet18(weights=...).state_dict()` saves) or a kubeloop checkpoint;
they initialise every layer they fit (the head never: its classes are the job's).
"""

from __future__ import annotations

import dataclasses
import io
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kubeloop import plugins
from kubeloop_image_classifier.backbones import Network, Shape, build

CHECKPOINT_FORMAT = "kubeloop-image-classifier/2"
_FORMAT_1 = "kubeloop-image-classifier/1"
OPSET = 17
_WRAPPERS = ("state_dict", "model", "model_state_dict")  # how training scripts nest weights

__all__ = ["Network", "Served", "Shape", "export_onnx", "load", "load_pretrained", "save"]


class Served(nn.Module):
    """The exported graph: probabilities (softmax inside) and the embedding."""

    def __init__(self, network: Network) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, embedding = self.network(images)
        return torch.softmax(logits.float(), dim=1), embedding.float()


def save(network: Network) -> bytes:
    """The checkpoint: the Shape and the weights, loadable with weights_only."""
    shape = dataclasses.asdict(network.shape)
    shape["classes"] = list(network.shape.classes)
    shape["mean"], shape["std"] = list(network.shape.mean), list(network.shape.std)
    buffer = io.BytesIO()
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "shape": shape,
            "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        },
        buffer,
    )
    return buffer.getvalue()


def load(checkpoint: bytes) -> Network:
    """A network from `save`'s bytes; only tensors and plain values are unpickled."""
    raw = _read(checkpoint, "the base model's checkpoint")
    shape = _shape(raw)
    if shape is None:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise plugins.PluginError(
            f"the base model's checkpoint is not an image-classifier checkpoint "
            f"(format {found!r}, expected {CHECKPOINT_FORMAT!r})"
        )
    network = build(shape)
    network.load_state_dict(raw["state_dict"])
    return network


def load_pretrained(network: Network, data: bytes, uri: str) -> list[str]:
    """Copy the weights in `data` into every layer of `network` they fit, but the head.

    The first convolution of a grayscale network gets RGB weights summed over the colours.
    Returns the keys left as initialised (their shapes differ, e.g. a CIFAR stem's); refuses
    weights that fit too little of the network to be for its backbone.
    """
    raw = _read(data, f"the pretrained weights {uri}")
    weights = _weights(raw, uri)
    own = network.state_dict()
    head = network.head_prefix + "."
    loaded: dict[str, torch.Tensor] = {}
    kept: list[str] = []
    for key, value in own.items():
        if key.startswith(head):
            continue
        theirs = weights.get(key)
        if theirs is None or not isinstance(theirs, torch.Tensor):
            kept.append(key)
            continue
        if key == network.first_conv and theirs.shape[1] == 3 and value.shape[1] == 1:
            theirs = theirs.sum(dim=1, keepdim=True)
        if theirs.shape != value.shape:
            kept.append(key)
            continue
        loaded[key] = theirs.to(value.dtype)
    body = [k for k in own if not k.startswith(head)]
    if len(loaded) < len(body) // 2:
        example = ", ".join(kept[:3])
        raise plugins.InvalidArguments(
            f"args.pretrained: {uri} fits only {len(loaded)} of the {len(body)} tensors of "
            f"backbone {network.shape.backbone} (e.g. not {example}); give weights of that "
            "backbone (a torchvision state_dict or a kubeloop checkpoint)"
        )
    network.load_state_dict(loaded, strict=False)
    return kept


def export_onnx(network: Network) -> bytes:
    """One self-contained ONNX file with a dynamic batch axis (see kubeloop.plugins)."""
    shape = network.shape
    served = Served(network).cpu().eval()
    example = torch.zeros(2, shape.input_channels, shape.height, shape.width)
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


def _read(data: bytes, what: str) -> Any:
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as error:  # torch raises several unrelated types for a bad file
        raise plugins.PluginError(f"{what} is unreadable: {error}") from error


def _shape(raw: Any) -> Shape | None:
    """The Shape of a kubeloop checkpoint, or None when `raw` is none."""
    if not isinstance(raw, dict):
        return None
    if raw.get("format") == _FORMAT_1:  # the small CNN, grayscale, before backbones
        return Shape(
            height=int(raw["height"]),
            width=int(raw["width"]),
            classes=tuple(str(c) for c in raw["classes"]),
            channels=int(raw["channels"]),
            embedding=int(raw["embedding"]),
        )
    if raw.get("format") != CHECKPOINT_FORMAT:
        return None
    fields = dict(raw["shape"])
    fields["classes"] = tuple(str(c) for c in fields["classes"])
    fields["mean"] = tuple(float(v) for v in fields.get("mean", ()))
    fields["std"] = tuple(float(v) for v in fields.get("std", ()))
    return Shape(**fields)


def _weights(raw: Any, uri: str) -> dict[str, Any]:
    if _shape(raw) is not None:
        return dict(raw["state_dict"])
    if isinstance(raw, dict):
        for wrapper in _WRAPPERS:
            if isinstance(raw.get(wrapper), dict):
                raw = raw[wrapper]
                break
    if not isinstance(raw, dict) or not any(isinstance(v, torch.Tensor) for v in raw.values()):
        raise plugins.InvalidArguments(
            f"args.pretrained: {uri} holds no state_dict (a mapping of layer names to tensors)"
        )
    return {str(k).removeprefix("module."): v for k, v in raw.items()}  # DataParallel's prefix
