"""Fixed, made-up weights for any state_dict, the same wherever they are made: they let a test
compare kubeloop's backbones with torchvision's without shipping torchvision's weights."""

from __future__ import annotations

import math

import torch

REFERENCE_ARCHITECTURES = {
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "resnet50": "resnet50",
    "mobilenet-v3-small": "mobilenet_v3_small",
    "mobilenet-v3-large": "mobilenet_v3_large",
    "efficientnet-b0": "efficientnet_b0",
}
"""kubeloop backbone name: torchvision model function."""
INPUT_SHAPE = (2, 3, 64, 64)


def fixed_weights(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """A deterministic tensor per key: small sines, scaled by fan-in so activations stay bounded;
    batch-norm variances positive."""
    weights = {}
    for index, (key, shape) in enumerate(sorted(shapes.items())):
        count = math.prod(shape)
        if key.endswith("num_batches_tracked"):
            weights[key] = torch.zeros(shape, dtype=torch.long)
            continue
        wave = torch.sin(torch.arange(count, dtype=torch.float64) * 0.7311 + index).float()
        wave = wave.reshape(shape)
        if key.endswith("running_var"):
            weights[key] = 1.0 + 0.2 * wave.abs()
        elif len(shape) == 1 and (key.endswith(".weight")):  # a norm's scale
            weights[key] = 1.0 + 0.1 * wave
        elif len(shape) == 1:  # biases and running means
            weights[key] = 0.05 * wave
        else:
            fan_in = math.prod(shape[1:])
            weights[key] = wave * (1.5 / math.sqrt(fan_in))
    return weights


def fixed_input() -> torch.Tensor:
    count = math.prod(INPUT_SHAPE)
    wave = torch.sin(torch.arange(count, dtype=torch.float64) * 0.0137).float()
    return (0.5 + 0.5 * wave).reshape(INPUT_SHAPE)
