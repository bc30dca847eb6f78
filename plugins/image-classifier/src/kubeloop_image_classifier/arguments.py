"""The image-classifier's arguments: the model a TrainingJob's `args` are checked against.

Everything `kubeloop plugins list` shows and `kubeloop validate` checks comes from here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from kubeloop import plugins

FineTune = Literal["none", "full", "head"]
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

    def mode(self, fine_tuning: bool) -> FineTune:
        """fineTune, or its default: full when there is a base model, none without."""
        if self.fine_tune is not None:
            return self.fine_tune
        return "full" if fine_tuning else "none"
