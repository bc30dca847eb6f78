"""The architectures, in plain torch, each with torchvision's state_dict keys and shapes.

torchvision itself is not imported: PyPI's torchvision 0.28.0 (for torch 2.13) is a CUDA
build that fails at import beside the CPU torch wheel (`operator torchvision::nms does not
exist`), and the CUDA stack it needs is 2.6 GB of wheels. Writing the few architectures here
keeps the CPU install small, while torchvision's published weights (a `.pth` state_dict the
user keeps in S3) still load key for key: tests/unit/test_backbones.py checks the keys,
shapes and outputs against torchvision on fixed weights.

Every network maps images (N, C, H, W) in [0, 1] to (logits, embedding): it first
normalises by the mean and std it was built with (buffers, not in the state_dict, so the
keys stay torchvision's), then runs the architecture; the embedding is the input of the last
linear layer (`head`), which is all a head-only fine-tune retrains.

    small-cnn            three 3x3 convolutions and a dense layer: for tiny inputs (digits)
    resnet18/34/50       torchvision's ResNet (v1.5); stem imagenet (7x7/2 + max pool) or
                         cifar (3x3/1, no pool: for 32 x 32 inputs); width = base channels
    mobilenet-v3-small   torchvision's MobileNetV3; stem cifar makes the first conv stride 1
    mobilenet-v3-large
    efficientnet-b0      torchvision's EfficientNet-B0; stem cifar as for MobileNetV3
"""

from __future__ import annotations

import abc
import math
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
from torch import nn

from kubeloop_image_classifier.arguments import Backbone

BACKBONES: tuple[Backbone, ...] = typing.get_args(Backbone)
Stem = Literal["imagenet", "cifar"]


@dataclass(frozen=True)
class Shape:
    """What fixes the layers' sizes; stored in the checkpoint."""

    height: int
    width: int
    classes: tuple[str, ...]
    channels: int = 32
    """small-cnn: filters of its first convolution (the name older checkpoints use)."""
    embedding: int = 64
    """small-cnn: size of its embedding."""
    backbone: Backbone = "small-cnn"
    input_channels: int = 1
    stem: Stem = "imagenet"
    base_width: int = 64
    """ResNet: channels of the first stage (torchvision's 64)."""
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()


class Network(nn.Module, abc.ABC):
    """Images (N, C, H, W) in [0, 1] -> (logits (N, classes), embedding (N, D))."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.shape = shape
        channels = shape.input_channels
        mean = torch.tensor(shape.mean or (0.0,) * channels).view(1, channels, 1, 1)
        std = torch.tensor(shape.std or (1.0,) * channels).view(1, channels, 1, 1)
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self._normalizes = bool(shape.mean or shape.std)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._normalizes:
            images = (images - self.mean) / self.std
        embedding = self.embed(images)
        return self.head(embedding), embedding

    @abc.abstractmethod
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The normalised images' embedding (N, D)."""

    @property
    @abc.abstractmethod
    def head(self) -> nn.Linear:
        """The last linear layer: embedding -> logits."""

    @property
    def head_prefix(self) -> str:
        """The state_dict key prefix of `head`, e.g. fc."""
        return str(next(name for name, module in self.named_modules() if module is self.head))

    @property
    def first_conv(self) -> str:
        """The state_dict key of the first convolution's weight."""
        return next(
            f"{name}.weight"
            for name, module in self.named_modules()
            if isinstance(module, nn.Conv2d)
        )

    def body_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the head's: what a head-only fine-tune freezes."""
        head = {id(p) for p in self.head.parameters()}
        return [p for p in self.parameters() if id(p) not in head]


def build(shape: Shape) -> Network:
    """The network `shape` describes, freshly initialised (torch's global generator)."""
    builders: dict[str, Callable[[Shape], Network]] = {
        "small-cnn": SmallCnn,
        "resnet18": partial(ResNet, blocks=(2, 2, 2, 2), bottleneck=False),
        "resnet34": partial(ResNet, blocks=(3, 4, 6, 3), bottleneck=False),
        "resnet50": partial(ResNet, blocks=(3, 4, 6, 3), bottleneck=True),
        "mobilenet-v3-small": partial(MobileNetV3, large=False),
        "mobilenet-v3-large": partial(MobileNetV3, large=True),
        "efficientnet-b0": EfficientNetB0,
    }
    return builders[shape.backbone](shape)


class SmallCnn(Network):
    """Two 3x3 convolutions, a 2x2 max pooling, a third convolution, a dense layer over the
    whole feature map, a linear classifier. Any H x W of at least 2 x 2 fits."""

    def __init__(self, shape: Shape) -> None:
        super().__init__(shape)
        width = shape.channels
        self.features = nn.Sequential(
            nn.Conv2d(shape.input_channels, width, 3, padding=1),
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

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return _tensor(self.features(images))

    @property
    def head(self) -> nn.Linear:
        return self.classifier


# ResNet -----------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return _tensor(self.relu(out + identity))


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck: the stride is on the 3x3 convolution."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return _tensor(self.relu(out + identity))


class ResNet(Network):
    def __init__(self, shape: Shape, blocks: Sequence[int], bottleneck: bool) -> None:
        super().__init__(shape)
        block = Bottleneck if bottleneck else BasicBlock
        width = shape.base_width
        if shape.stem == "cifar":
            self.conv1 = nn.Conv2d(shape.input_channels, width, 3, 1, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(shape.input_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = nn.Identity() if shape.stem == "cifar" else nn.MaxPool2d(3, 2, 1)
        self._inplanes = width
        self.layer1 = self._stage(block, width, blocks[0], 1)
        self.layer2 = self._stage(block, 2 * width, blocks[1], 2)
        self.layer3 = self._stage(block, 4 * width, blocks[2], 2)
        self.layer4 = self._stage(block, 8 * width, blocks[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * width * block.expansion, len(shape.classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _stage(
        self, block: type[BasicBlock | Bottleneck], planes: int, count: int, stride: int
    ) -> nn.Sequential:
        downsample = None
        out = planes * block.expansion
        if stride != 1 or self._inplanes != out:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out)
            )
        layers: list[nn.Module] = [block(self._inplanes, planes, stride, downsample)]
        self._inplanes = out
        layers += [block(out, planes, 1, None) for _ in range(1, count)]
        return nn.Sequential(*layers)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    @property
    def head(self) -> nn.Linear:
        return self.fc


# MobileNetV3 and EfficientNet-B0 ------------------------------------------------------------


def make_divisible(value: float, divisor: int = 8) -> int:
    """Channels rounded to a multiple of 8, never down by more than 10 % (as torchvision)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvNormActivation(nn.Sequential):
    """Conv (no bias) + BatchNorm + activation: torchvision's Conv2dNormActivation keys 0/1."""

    def __init__(
        self,
        inputs: int,
        outputs: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        activation: Callable[[], nn.Module] | None = None,
        norm: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                inputs, outputs, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False
            ),
            norm(outputs),
        ]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    def __init__(
        self,
        channels: int,
        squeeze: int,
        activation: Callable[[], nn.Module],
        gate: Callable[[], nn.Module],
    ) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = activation()
        self.scale_activation = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(self.activation(self.fc1(self.avgpool(x))))
        return _tensor(self.scale_activation(scale) * x)


class InvertedResidual(nn.Module):
    """MobileNetV3's block: expand 1x1, depthwise kxk, squeeze-excite, project 1x1."""

    def __init__(
        self,
        inputs: int,
        kernel: int,
        expanded: int,
        outputs: int,
        excite: bool,
        hard_swish: bool,
        stride: int,
        norm: Callable[[int], nn.Module],
    ) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and inputs == outputs
        activation: Callable[[], nn.Module] = nn.Hardswish if hard_swish else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != inputs:
            layers.append(ConvNormActivation(inputs, expanded, 1, activation=activation, norm=norm))
        layers.append(
            ConvNormActivation(
                expanded, expanded, kernel, stride, expanded, activation=activation, norm=norm
            )
        )
        if excite:
            layers.append(
                SqueezeExcitation(expanded, make_divisible(expanded // 4), nn.ReLU, nn.Hardsigmoid)
            )
        layers.append(ConvNormActivation(expanded, outputs, 1, norm=norm))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.block(x)
        return _tensor(result + x if self.use_res_connect else result)


# (input, kernel, expanded, output, squeeze-excite, hard-swish, stride): torchvision's tables.
_V3_LARGE = (
    (16, 3, 16, 16, False, False, 1),
    (16, 3, 64, 24, False, False, 2),
    (24, 3, 72, 24, False, False, 1),
    (24, 5, 72, 40, True, False, 2),
    (40, 5, 120, 40, True, False, 1),
    (40, 5, 120, 40, True, False, 1),
    (40, 3, 240, 80, False, True, 2),
    (80, 3, 200, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1),
    (80, 3, 480, 112, True, True, 1),
    (112, 3, 672, 112, True, True, 1),
    (112, 5, 672, 160, True, True, 2),
    (160, 5, 960, 160, True, True, 1),
    (160, 5, 960, 160, True, True, 1),
)
_V3_SMALL = (
    (16, 3, 16, 16, True, False, 2),
    (16, 3, 72, 24, False, False, 2),
    (24, 3, 88, 24, False, False, 1),
    (24, 5, 96, 40, True, True, 2),
    (40, 5, 240, 40, True, True, 1),
    (40, 5, 240, 40, True, True, 1),
    (40, 5, 120, 48, True, True, 1),
    (48, 5, 144, 48, True, True, 1),
    (48, 5, 288, 96, True, True, 2),
    (96, 5, 576, 96, True, True, 1),
    (96, 5, 576, 96, True, True, 1),
)


class MobileNetV3(Network):
    def __init__(self, shape: Shape, large: bool) -> None:
        super().__init__(shape)
        table = _V3_LARGE if large else _V3_SMALL
        last = 1280 if large else 1024
        norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        stride = 1 if shape.stem == "cifar" else 2
        layers: list[nn.Module] = [
            ConvNormActivation(
                shape.input_channels, 16, 3, stride, activation=nn.Hardswish, norm=norm
            )
        ]
        layers += [InvertedResidual(*row, norm=norm) for row in table]
        final = 6 * table[-1][3]
        layers.append(
            ConvNormActivation(table[-1][3], final, 1, activation=nn.Hardswish, norm=norm)
        )
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(final, last),
            nn.Hardswish(inplace=True),
            nn.Dropout(p=0.2, inplace=True),
            nn.Linear(last, len(shape.classes)),
        )
        _init_mobile(self)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(images)), 1)
        for layer in list(self.classifier)[:3]:
            x = layer(x)
        return x

    @property
    def head(self) -> nn.Linear:
        head = self.classifier[3]
        assert isinstance(head, nn.Linear)
        return head


class StochasticDepth(nn.Module):
    """Drops a residual branch per example with probability p while training (row mode)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        keep = torch.empty((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device)
        return x * keep.bernoulli_(survival).div_(survival)


class MBConv(nn.Module):
    """EfficientNet's block: expand 1x1, depthwise kxk, squeeze-excite, project 1x1."""

    def __init__(
        self, ratio: int, kernel: int, stride: int, inputs: int, outputs: int, drop: float
    ) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and inputs == outputs
        expanded = make_divisible(inputs * ratio)
        silu = partial(nn.SiLU, inplace=True)
        layers: list[nn.Module] = []
        if expanded != inputs:
            layers.append(ConvNormActivation(inputs, expanded, 1, activation=nn.SiLU))
        layers.append(ConvNormActivation(expanded, expanded, kernel, stride, expanded, nn.SiLU))
        layers.append(SqueezeExcitation(expanded, max(1, inputs // 4), silu, nn.Sigmoid))
        layers.append(ConvNormActivation(expanded, outputs, 1))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.block(x)
        if self.use_res_connect:
            return _tensor(self.stochastic_depth(result) + x)
        return _tensor(result)


# (expand ratio, kernel, stride, input, output, layers): torchvision's B0 table.
_B0 = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)


class EfficientNetB0(Network):
    def __init__(self, shape: Shape, stochastic_depth: float = 0.2) -> None:
        super().__init__(shape)
        stride = 1 if shape.stem == "cifar" else 2
        layers: list[nn.Module] = [
            ConvNormActivation(shape.input_channels, 32, 3, stride, activation=nn.SiLU)
        ]
        total = sum(row[5] for row in _B0)
        done = 0
        for ratio, kernel, first_stride, inputs, outputs, count in _B0:
            stage: list[nn.Module] = []
            for index in range(count):
                drop = stochastic_depth * done / total
                stage.append(
                    MBConv(
                        ratio,
                        kernel,
                        first_stride if index == 0 else 1,
                        inputs if index == 0 else outputs,
                        outputs,
                        drop,
                    )
                )
                done += 1
            layers.append(nn.Sequential(*stage))
        layers.append(ConvNormActivation(320, 1280, 1, activation=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.2, inplace=True), nn.Linear(1280, len(shape.classes))
        )
        _init_mobile(self, uniform_linear=True)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(images)), 1)
        return _tensor(self.classifier[0](x))

    @property
    def head(self) -> nn.Linear:
        head = self.classifier[1]
        assert isinstance(head, nn.Linear)
        return head


def _init_mobile(network: nn.Module, uniform_linear: bool = False) -> None:
    """torchvision's initialisation of MobileNetV3 (and, with uniform_linear, EfficientNet)."""
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and uniform_linear:
            bound = 1.0 / math.sqrt(module.out_features)
            nn.init.uniform_(module.weight, -bound, bound)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            nn.init.zeros_(module.bias)


def _tensor(value: object) -> torch.Tensor:
    """`value`, typed: nn.Module calls return Any to mypy. (torch.as_tensor would do, but the
    ONNX tracer records it as a constant.)"""
    assert isinstance(value, torch.Tensor)
    return value
