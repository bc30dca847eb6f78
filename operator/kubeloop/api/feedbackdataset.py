"""FeedbackDataset: labelled feedback in object storage that triggers retraining."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from kubeloop.api import common
from kubeloop.api.common import LIST_SET, ApiModel, Condition, CustomResource, cel_rules
from kubeloop.api.trainingjob import TrainingJobSpec

Strategy = Literal[
    "random",
    "least-confidence",
    "margin",
    "ratio",
    "entropy",
    "k-center",
    "k-means",
    "every-nth",
    "confidence-threshold",
]

KEY_PREFIX = r"^([A-Za-z0-9_-][A-Za-z0-9._-]*/)+$"
"""Path segments, each ending in '/'; none is '.' or '..', so keys stay under the prefix
wherever they land (an S3 server, or files of the local runtime)."""


class Storage(ApiModel):
    """Where the feedback samples live."""

    bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]+[a-z0-9]$")
    """S3 bucket holding samples and snapshot manifests."""
    prefix: str = Field(min_length=1, max_length=512, pattern=KEY_PREFIX)
    """Key prefix of this dataset, e.g. feedback/digits/: path segments ending in '/'."""
    endpoint: str | None = None
    """S3 endpoint URL; the operator's default endpoint when omitted."""
    region: str = "us-east-1"
    """S3 region."""
    secret_ref: common.ObjectName | None = None
    """Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; the operator's when omitted."""


class Kpi(ApiModel):
    """Skip retraining while the served model already does well enough on feedback."""

    served_model: common.ObjectName
    """ServedModel whose live accuracy on feedback is compared."""
    min_accuracy: float = Field(ge=0.0, le=1.0)
    """Retrain only while live accuracy is below this."""
    min_samples: common.Int64 = Field(default=20, ge=1)
    """Live accuracy counts only once this many predictions were judged."""


class Retrain(ApiModel):
    """When and how a new TrainingJob is created."""

    threshold: common.Int64 = Field(ge=1)
    """New samples since the last snapshot that trigger a retrain."""
    cooldown_seconds: common.Int32 = Field(default=0, ge=0)
    """Minimum seconds between two triggers."""
    kpi: Kpi | None = None
    """Optional KPI that, while met, holds retraining back."""
    training_template: TrainingJobSpec
    """Spec of the TrainingJob to create; the new snapshot is added to its datasets."""


SHARES = "auditShare and goldShare together exceed the whole request: lower one"


class Review(ApiModel):
    """How the review queue picks predictions for a person to label."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            (
                "(has(self.auditShare) ? self.auditShare : 0.0)"
                " + (has(self.goldShare) ? self.goldShare : 0.0) <= 1.0",
                SHARES,
            ),
        )
    )

    strategy: Strategy = "least-confidence"
    """Active-learning strategy ordering the queue."""
    budget: common.Int64 = Field(default=50, ge=1)
    """Predictions offered per review request."""
    audit_share: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of each request drawn at random instead (random checking), so live accuracy is
    not measured on the hard cases alone."""
    overlap: int = Field(default=1, ge=1, le=10)
    """Labels an item needs from different labellers: agreeing labels become one sample,
    disagreements wait for an adjudicator (the review page's adjudication view). 1: every
    label is a sample."""
    gold_share: float = Field(default=0.0, ge=0.0, le=0.5)
    """Share of each request that are gold items (samples with known labels under the
    storage prefix's gold/), which score the labellers and never become samples."""

    @model_validator(mode="after")
    def _shares(self) -> Review:
        if self.audit_share + self.gold_share > 1.0:
            raise ValueError(f"{SHARES} ({self.audit_share} + {self.gold_share})")
        return self


class FeedbackDatasetSpec(ApiModel):
    """Desired state of a FeedbackDataset."""

    storage: Storage
    """Object storage location of the samples."""
    classes: list[str] = Field(min_length=1, json_schema_extra=LIST_SET)
    """Labels a sample may carry."""
    slices: common.StringSet = Field(default_factory=list)
    """Slice tags a sample may carry (e.g. new-user); any tag when empty."""
    input_shape: list[Annotated[common.Int64, Field(ge=1)]] = Field(default_factory=list)
    """Shape of one input, e.g. [8, 8]; not checked when empty."""
    retrain: Retrain | None = None
    """Retraining trigger; samples are only collected when omitted."""
    review: Review = Field(default_factory=Review)
    """Review queue settings."""

    @model_validator(mode="after")
    def _unique_classes(self) -> FeedbackDatasetSpec:
        duplicates = sorted({c for c in self.classes if self.classes.count(c) > 1})
        if duplicates:
            raise ValueError(f"classes must be unique; repeated: {', '.join(duplicates)}")
        return self


class Snapshot(ApiModel):
    """A frozen set of samples that a TrainingJob trained on."""

    generation: common.Int64 = Field(ge=1)
    """Snapshot number, counting from 1."""
    manifest: str
    """URI of the manifest listing the sample keys."""
    samples: common.Int64 = Field(ge=0)
    """Samples in the snapshot."""
    created_at: str
    """When the snapshot was frozen (RFC 3339)."""


class FeedbackDatasetStatus(ApiModel):
    """Observed state of a FeedbackDataset."""

    samples: common.Int64 = 0
    """Samples counted in storage."""
    samples_since_snapshot: common.Int64 = 0
    """Samples that arrived after the latest snapshot."""
    archived_generation: int = 0
    """The latest snapshot whose segments are gone from the inbox (kept in its archive)."""
    storage: str | None = None
    """The location the counts and snapshots describe (spec.storage, which must not move)."""
    snapshots: list[Snapshot] = Field(default_factory=list)
    """Snapshots by generation."""
    last_training_job: str | None = None
    """TrainingJob created by the latest trigger."""
    last_trigger_time: str | None = None
    """When the latest retrain was triggered (RFC 3339)."""
    conditions: list[Condition] = Field(default_factory=list)
    """Standard conditions: Ready, Retraining."""
    observed_generation: common.Int64 = 0
    """metadata.generation this status describes."""


class FeedbackDataset(CustomResource):
    """Collects feedback samples in object storage and triggers retraining at a threshold."""

    KIND: ClassVar[str] = "FeedbackDataset"
    PLURAL: ClassVar[str] = "feedbackdatasets"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("fd",)
    DESCRIPTION: ClassVar[str] = __doc__ or ""
    PRINTER_COLUMNS: ClassVar[tuple[dict[str, str | int], ...]] = (
        {"name": "Samples", "type": "integer", "jsonPath": ".status.samples"},
        {"name": "New", "type": "integer", "jsonPath": ".status.samplesSinceSnapshot"},
        {"name": "Threshold", "type": "integer", "jsonPath": ".spec.retrain.threshold"},
        {"name": "Last-Job", "type": "string", "jsonPath": ".status.lastTrainingJob"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    )

    kind: Literal["FeedbackDataset"] = "FeedbackDataset"
    spec: FeedbackDatasetSpec
    status: FeedbackDatasetStatus | None = None
