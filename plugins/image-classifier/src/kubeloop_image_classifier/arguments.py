"""The image-classifier's arguments: the model a TrainingJob's `args` are checked against.

Everything `kubeloop plugins list` shows and `kubeloop validate` checks comes from here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from kubeloop import plugins

FineTune = Literal["none", "full", "head"]
Backbone = Literal[
    "small-cnn",
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet-v3-small",
    "mobilenet-v3-large",
    "efficientnet-b0",
]
"""The architectures of kubeloop_image_classifier.backbones (declared here: no torch needed)."""
WIDENABLE = ("small-cnn", "resnet18", "resnet34", "resnet50")
"""Backbones whose width (base channels) may be chosen; the others have torchvision's."""
PRETRAINED_SCHEMES = ("s3://", "models:/")
SEEDS = 2**32
"""numpy seeds its generators with integers in [0, 2**32)."""


class ImageClassifierArgs(plugins.Arguments):
    """Arguments of the image-classifier plugin."""

    height: int = Field(default=8, ge=2)
    """Image height in pixels."""
    width: int = Field(default=8, ge=2)
    """Image width in pixels."""
    epochs: int = Field(default=30, ge=1)
    """Passes over the training data."""
    learning_rate: float = Field(default=0.003, ge=1e-6, le=1.0)
    """Adam learning rate."""
    batch_size: int = Field(default=64, ge=1)
    """Examples per gradient step."""
    seed: int = Field(default=0, ge=0, lt=SEEDS)
    """Seed of every random choice."""
    fine_tune: FineTune | None = None
    """How to use baseModel: full retrains every layer; head retrains only the classifier
    (faster per epoch, but on digits it adapts less to a new user and loses about 5 points
    on the base slice: see bench/README.md); none trains from scratch. Default: full with a
    baseModel, none without."""
    replay: float = Field(default=1.0, ge=0.0, le=1.0)
    """Share of the reference (non-feedback) training data replayed when fine-tuning."""
    feedback_share: float = Field(default=0.5, ge=0.0, le=0.95)
    """Feedback is repeated to make up about this share of each epoch (0: no repeats)."""
    augment: bool = True
    """Shift training images by up to one pixel at random."""
    backbone: Backbone | None = None
    """Architecture: small-cnn (for tiny inputs such as the 8 x 8 digits), resnet18/34/50,
    mobilenet-v3-small/large or efficientnet-b0, with torchvision's layer names, so its
    published weights load (see pretrained). Default: the base model's, else small-cnn."""
    stem: Literal["imagenet", "cifar"] | None = None
    """First layers: imagenet (strided 7x7 convolution and max pooling, for 224 x 224) or
    cifar (3x3 convolution, stride 1, no pooling: for inputs of 32 x 32 or so). Default: the
    base model's, else imagenet."""
    base_width: int | None = Field(default=None, ge=4, le=1024)
    """Channels of the first stage: ResNet's (torchvision's 64; pretrained weights need
    that) or small-cnn's filters (32). Default: the base model's, else those."""
    channels: Literal[1, 3] | None = None
    """Input channels: 1 grayscale or 3 RGB; images are converted as they are read. Default:
    the base model's, else 3 for image files or RGB images, 1 for grayscale."""
    resize: int | None = Field(default=None, ge=2)
    """Shorter side in pixels an image is resized to before the centre crop of height x
    width; default: the smallest size that covers the crop."""
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    """Resampling of that resize."""
    mean: list[float] | None = Field(default=None, min_length=1, max_length=3)
    """Per-channel mean subtracted from [0, 1] pixels, inside the model (torchvision's
    ImageNet weights: [0.485, 0.456, 0.406]). Default: the base model's, else 0."""
    std: list[float] | None = Field(default=None, min_length=1, max_length=3)
    """Per-channel standard deviation the pixels are divided by, inside the model (ImageNet:
    [0.229, 0.224, 0.225]). Default: the base model's, else 1."""
    pretrained: str | None = None
    """Weights to start from when training from scratch (not with baseModel): an S3 object
    such as s3://bucket/resnet18.pth holding a torchvision state_dict or a kubeloop
    checkpoint, or models:/name/version (that version's checkpoint). Layers that do not fit
    (the head, a CIFAR stem) start afresh."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train: cuda (a GPU; fails when torch sees none), cpu, or auto (cuda when
    there is one). The ONNX export and its check run on the CPU either way."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Arithmetic of the forward pass: bf16 autocast or fp32; auto is bf16 on cuda, fp32 on
    the CPU. Weights and the exported model stay float32."""
    workers: int | None = Field(default=None, ge=0, le=64)
    """DataLoader processes reading and decoding image files (0: in the training process);
    default: up to 8 on cuda, up to 2 on the CPU, within the CPUs there are."""

    @field_validator("fine_tune")
    @classmethod
    def _fits_the_base_model(cls, mode: FineTune | None, info: ValidationInfo) -> FineTune | None:
        job = plugins.job_of(info)
        if job is None:
            return mode
        if job.base_model is None and mode in ("full", "head"):
            raise ValueError(f"{mode!r} needs spec.baseModel, the version to start from")
        if job.base_model is not None and mode == "none":
            raise ValueError(
                "'none' trains from scratch, so spec.baseModel would be ignored; remove "
                "baseModel or choose full or head"
            )
        return mode

    @field_validator("pretrained")
    @classmethod
    def _pretrained_uri(cls, uri: str | None, info: ValidationInfo) -> str | None:
        if uri is None:
            return uri
        if not uri.startswith(PRETRAINED_SCHEMES):
            raise ValueError(f"{uri!r} is neither s3://bucket/key.pth nor models:/name/version")
        job = plugins.job_of(info)
        if job is not None and job.base_model is not None:
            raise ValueError(
                "a fine-tune starts from spec.baseModel; pretrained initialises a model "
                "trained from scratch: remove one of them"
            )
        return uri

    @model_validator(mode="after")
    def _fits_together(self) -> ImageClassifierArgs:
        problems = []
        if self.base_width is not None and self.backbone not in (None, *WIDENABLE):
            problems.append(
                f"baseWidth: {self.backbone} has torchvision's widths; baseWidth applies to "
                f"{', '.join(WIDENABLE)}"
            )
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None and self.channels is not None and len(values) != self.channels:
                problems.append(f"{name}: give one value per channel ({self.channels})")
        if self.std is not None and any(v <= 0 for v in self.std):
            problems.append("std: every value must be positive")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def mode(self, fine_tuning: bool) -> FineTune:
        """fineTune, or its default: full when there is a base model, none without."""
        if self.fine_tune is not None:
            return self.fine_tune
        return "full" if fine_tuning else "none"
