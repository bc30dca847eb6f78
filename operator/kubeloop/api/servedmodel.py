"""ServedModel: serves a registered model and promotes new versions through a gate."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from kubeloop.api import common
from kubeloop.api.common import LIST_SET, ApiModel, Condition, CustomResource, cel_rules
from kubeloop.api.trainingjob import IMAGE_SCHEMA, REGISTERED_MODEL, PodTemplate, Resources

Verdict = Literal["Pending", "Passed", "Failed", "RolledBack"]
INCREASING = "canary steps must be strictly increasing"
ALIAS = r"^[A-Za-z0-9_-]+$"
"""An MLflow model alias: letters, digits, '_' and '-'."""
RESERVED_ALIAS = "'latest' and v<number> name versions in MLflow, not aliases"


class Canary(ApiModel):
    """Gradual rollout of a promoted candidate."""

    steps: list[Annotated[int, Field(ge=1, le=99)]] = Field(
        default_factory=list,
        max_length=10,
        json_schema_extra={**LIST_SET, **cel_rules(("self.isSorted()", INCREASING))},
    )
    """Traffic percentages to the candidate, in order, e.g. [10, 50]; then 100."""
    step_seconds: common.Int32 = Field(default=300, ge=0)
    """Time each step holds before the next."""
    min_judged: common.Int64 = Field(default=20, ge=1)
    """Predictions of each version that feedback must judge before their live accuracies are
    compared during the canary."""
    max_accuracy_drop: float = Field(default=0.0, ge=0.0, le=1.0)
    """How far the candidate's live accuracy may fall below the stable version's during the
    canary; further, and the candidate is rolled back."""

    @model_validator(mode="after")
    def _increasing(self) -> Canary:
        if any(not 0 < p < 100 for p in self.steps):
            raise ValueError("canary steps are percentages between 1 and 99")
        if self.steps != sorted(set(self.steps)):
            raise ValueError(INCREASING)
        return self


class Promotion(ApiModel):
    """How a candidate version becomes the served one."""

    mode: Literal["auto", "manual"] = "auto"
    """auto: promote when the gate passes; manual: only report the verdict."""
    metric: Literal["accuracy", "macro_f1"] = "accuracy"
    """Metric the gate compares."""
    max_slice_regression: float = Field(default=0.02, ge=0.0, le=1.0)
    """Largest drop of the metric any slice may show: the guard against forgetting."""
    min_improvement: float = Field(default=0.0, ge=-1.0, le=1.0)
    """Overall metric must change by at least this (0: must not fall)."""


class Batching(ApiModel):
    """Server-side micro-batching of concurrent requests."""

    max_batch_size: int = Field(default=32, ge=1, le=4096)
    """Largest batch sent to onnxruntime."""
    max_latency_ms: int = Field(default=5, ge=0, le=1000)
    """Longest a request waits for others to fill a batch."""


class ServedModelSpec(ApiModel):
    """Desired state of a ServedModel."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            ("self.minReplicas <= self.maxReplicas", "minReplicas must not be above maxReplicas")
        )
    )

    registered_model: str = Field(min_length=1, pattern=REGISTERED_MODEL)
    """Registered model in MLflow."""
    alias: str = Field(
        default="champion",
        min_length=1,
        max_length=255,
        pattern=ALIAS,
        json_schema_extra=cel_rules(
            ("self != 'latest' && !self.matches('^[vV][0-9]+$')", RESERVED_ALIAS)
        ),
    )
    """MLflow alias that names the served version; moved on promotion."""
    version: str | None = None
    """Pin a version instead of following the alias; disables promotion."""
    runtime: Literal["kserve", "deployment"] = "kserve"
    """kserve: an InferenceService; deployment: a Deployment and Service (no KServe)."""
    min_replicas: common.Int32 = Field(default=1, ge=0)
    """Fewest predictor replicas."""
    max_replicas: common.Int32 = Field(default=1, ge=1)
    """Most predictor replicas. Above minReplicas the predictor autoscales: KServe's own
    autoscaler, or (runtime: deployment) a HorizontalPodAutoscaler on scaleMetric."""
    scale_metric: Literal["cpu", "memory"] | None = None
    """What the autoscaler follows, as KServe's scaleMetric: the pods' average use of their
    requested cpu or memory; KServe's default (runtime: deployment: cpu) when omitted."""
    scale_target: common.Int32 | None = Field(default=None, ge=1)
    """The average use, in percent of the pods' request, the autoscaler keeps the pods at
    (KServe's scaleTarget); KServe's default (runtime: deployment: 80) when omitted."""
    canary: Canary | None = None
    """Canary rollout; promoted versions go to 100% at once when omitted."""
    promotion: Promotion = Field(default_factory=Promotion)
    """Quality gate and promotion mode."""
    batching: Batching = Field(default_factory=Batching)
    """Micro-batching in the predictor."""
    feedback_dataset: common.ObjectName | None = None
    """FeedbackDataset receiving this model's feedback and prediction log."""
    image: str | None = Field(default=None, json_schema_extra=IMAGE_SCHEMA)
    """Predictor image; the operator's default predictor image when omitted."""
    resources: Resources | None = None
    """CPU, memory and GPUs of each predictor; the operator's default (the chart's
    predictorResources) when omitted."""
    template: PodTemplate = Field(default_factory=PodTemplate)
    """Labels, annotations, scheduling and security contexts of the predictor pods."""

    @field_validator("alias")
    @classmethod
    def _not_reserved(cls, alias: str) -> str:
        if alias == "latest" or re.fullmatch(r"[vV][0-9]+", alias):
            raise ValueError(f"{alias!r}: {RESERVED_ALIAS}")
        return alias

    @model_validator(mode="after")
    def _replica_range(self) -> ServedModelSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) is above maxReplicas ({self.max_replicas})"
            )
        return self


class Gate(ApiModel):
    """The verdict of the quality gate on the latest candidate."""

    verdict: Verdict = "Pending"
    """Pending, Passed, Failed, or RolledBack (`kubeloop rollback` took it off the alias)."""
    candidate_version: str | None = None
    """Version that was judged."""
    baseline_version: str | None = None
    """Version it was compared against."""
    overall_delta: float | None = None
    """Candidate minus baseline, overall."""
    slice_deltas: dict[str, float] = Field(default_factory=dict)
    """Candidate minus baseline, per slice."""
    failed_slices: list[str] = Field(default_factory=list)
    """Slices that regressed beyond maxSliceRegression."""
    message: str = ""
    """The verdict in words."""


class SliceRecord(ApiModel):
    """The best value a slice's metric had among the versions a ServedModel served."""

    value: float
    """The metric."""
    version: str
    """The version that had it."""


class ServedModelStatus(ApiModel):
    """Observed state of a ServedModel."""

    url: str | None = None
    """Where the predictor answers."""
    serving_version: str | None = None
    """Model version taking the traffic."""
    candidate_version: str | None = None
    """Newer version under evaluation or canary."""
    canary_percent: common.Int64 = 0
    """Traffic share of the candidate during a canary."""
    canary_step_time: str | None = None
    """When the current canary step began (RFC 3339)."""
    gate: Gate | None = None
    """Latest gate verdict."""
    slice_records: dict[str, SliceRecord] = Field(default_factory=dict)
    """Per slice, the best value among the versions served: the gate's ratchet on forgetting."""
    rollback_request: str | None = None
    """The last kubeloop.io/rollback annotation value acted on: each new value is one
    rollback."""
    conditions: list[Condition] = Field(default_factory=list)
    """Standard conditions: Ready, RolledOut, GateFailed."""
    observed_generation: common.Int64 = 0
    """metadata.generation this status describes."""


class ServedModel(CustomResource):
    """Serves a registered ONNX model and promotes new versions through a quality gate."""

    KIND: ClassVar[str] = "ServedModel"
    PLURAL: ClassVar[str] = "servedmodels"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("sm",)
    DESCRIPTION: ClassVar[str] = __doc__ or ""
    PRINTER_COLUMNS: ClassVar[tuple[dict[str, str | int], ...]] = (
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        {"name": "Serving", "type": "string", "jsonPath": ".status.servingVersion"},
        {"name": "Candidate", "type": "string", "jsonPath": ".status.candidateVersion"},
        {"name": "Gate", "type": "string", "jsonPath": ".status.gate.verdict"},
        {"name": "URL", "type": "string", "jsonPath": ".status.url", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    )

    kind: Literal["ServedModel"] = "ServedModel"
    spec: ServedModelSpec
    status: ServedModelStatus | None = None
