"""TrainingJob: one run of a training plugin that registers a model version."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from kubeloop.api import common
from kubeloop.api.common import (
    DNS_LABEL,
    ApiModel,
    Condition,
    CustomResource,
    SecretKeyRef,
    cel_rules,
)

Phase = Literal["Pending", "Running", "Succeeded", "Failed"]
DatasetFormat = Literal["image-folder", "manifest", "feedback"]
ONE_SOURCE = "set exactly one of uri or feedbackDataset"
PROCESSES_PER_NODE = "numProcPerNode is a number of processes (1 or more) or auto"
REGISTERED_MODEL = r"^[A-Za-z0-9][-A-Za-z0-9_.]*$"
"""A registered model's name in MLflow, as kubeloop allows it."""
IMAGE_SCHEMA: dict[str, Any] = {"pattern": common.NO_WHITESPACE}
"""Schema extra of an image reference: the API server refuses one with whitespace on apply.

Only the schema says it: the operator's spec_problems names it for objects already stored.
"""


class PluginRef(ApiModel):
    """Which training plugin runs, found by name among the installed plugins."""

    name: str = Field(min_length=1, examples=["image-classifier"])
    """Name of the plugin, as `kubeloop plugins list` shows it."""
    version: str | None = None
    """Required plugin version; any installed version when omitted."""


class DatasetSource(ApiModel):
    """One dataset the plugin trains and evaluates on: a URI or a FeedbackDataset snapshot."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            ("has(self.uri) != has(self.feedbackDataset)", ONE_SOURCE),
        )
    )

    name: str = Field(min_length=1, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    """Name the plugin sees this dataset under, e.g. base or feedback."""
    uri: str | None = None
    """Where the data is: s3://bucket/prefix/ (an image folder, or a FeedbackDataset's
    prefix), s3://bucket/key.csv or .jsonl (a manifest of images), s3://bucket/key.json (a
    snapshot manifest), or builtin://digits and builtin://objects for the bundled data."""
    format: DatasetFormat | None = None
    """How uri is read: image-folder (one sub-folder of PNG/JPEG files per class), manifest
    (CSV or JSON lines of key, label and an optional slice) or feedback (FeedbackDataset
    samples or a snapshot manifest). Inferred when omitted: .csv/.jsonl is a manifest, .json
    a snapshot, and a prefix is feedback when it holds samples/, else an image folder."""
    classes: common.StringSet | None = None
    """Labels this dataset may hold; an image folder's class sub-folder or a manifest label
    outside them is refused before training. Not checked when empty."""
    feedback_dataset: common.ObjectName | None = None
    """Name of a FeedbackDataset in the same namespace whose snapshot is used."""
    generation: common.Int64 | None = Field(default=None, ge=1)
    """Snapshot generation of feedbackDataset; the latest snapshot when omitted."""
    manifest: str | None = None
    """URI of a frozen snapshot manifest; filled in when a FeedbackDataset creates the job."""

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSource:
        if (self.uri is None) == (self.feedback_dataset is None):
            raise ValueError(f"dataset {self.name!r}: {ONE_SOURCE}")
        return self


class Evaluation(ApiModel):
    """How the trained model is judged."""

    metric: Literal["accuracy", "macro_f1"] = "accuracy"
    """Metric computed overall and per slice; the quality gate compares it."""
    slices: common.StringSet = Field(default_factory=list)
    """Data slices evaluated on their own held-out split, e.g. base, new-user."""


class Resources(ApiModel):
    """Compute for the training pod."""

    cpu: str = Field(default="1", pattern=r"^[0-9]+(\.[0-9]+)?m?$")
    """CPU request and limit, as a Kubernetes quantity (e.g. 2 or 500m)."""
    memory: str = Field(default="2Gi", pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")
    """Memory request and limit, as a Kubernetes quantity (e.g. 4Gi)."""
    gpu: common.Int64 = Field(default=0, ge=0)
    """Number of nvidia.com/gpu to request; 0 trains on the CPU."""


class Distributed(ApiModel):
    """Training over several processes: Kubeflow Trainer's names (numNodes, numProcPerNode)."""

    num_nodes: common.Int32 = Field(default=1, ge=1)
    """Nodes (pods) training together: one runs as a batch Job; several as Kubeflow Trainer's
    TrainJob (its torch-distributed runtime), or a JobSet where only JobSet is installed
    (Ready=False says to install one when neither is); `kubeloop up` runs numNodes x
    numProcPerNode processes on its one machine."""
    num_proc_per_node: int | Literal["auto"] = Field(
        default="auto",
        json_schema_extra=cel_rules(
            ("type(self) == string ? self == 'auto' : self >= 1", PROCESSES_PER_NODE)
        ),
    )
    """Training processes in each pod, run by torchrun (one DistributedDataParallel rank
    each: NCCL on GPUs, gloo on the CPU); auto: one per GPU (resources.gpu), else 1."""

    @field_validator("num_proc_per_node")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError(PROCESSES_PER_NODE)
        return value


class PodTemplate(ApiModel):
    """What passes through to the pods kubeloop creates (a trainer's, a predictor's)."""

    labels: dict[str, str] = Field(default_factory=dict)
    """Labels for the Job and pod, e.g. kueue.x-k8s.io/queue-name."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations for the Job and pod."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels the pod must run on."""
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    """Tolerations of the pod, as in a PodSpec."""
    image_pull_secrets: common.ObjectNameSet = Field(default_factory=list)
    """Secrets of the registries the pod's image comes from."""
    service_account_name: str | None = None
    """Service account the pod runs as."""
    security_context: dict[str, Any] | None = None
    """The pod's securityContext, as in a PodSpec; the operator's default (non-root user,
    seccomp RuntimeDefault, from the Helm chart's childPodSecurityContext) when omitted."""
    container_security_context: dict[str, Any] | None = None
    """The container's securityContext; the operator's default (no privilege escalation, all
    capabilities dropped, read-only root: /tmp is a writable emptyDir) when omitted."""


class TrainingJobSpec(ApiModel):
    """Desired state of a TrainingJob."""

    plugin: PluginRef
    """The training plugin to run."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Arguments for the plugin, checked against the arguments it declares."""
    datasets: list[DatasetSource] = Field(min_length=1)
    """Datasets to train and evaluate on."""
    base_model: str | None = None
    """MLflow model URI to fine-tune from, e.g. models:/digits@champion."""
    registered_model: str = Field(min_length=1, pattern=REGISTERED_MODEL)
    """Registered model in MLflow that receives the new version."""
    evaluation: Evaluation = Field(default_factory=Evaluation)
    """Metric and slices to evaluate."""
    resources: Resources = Field(default_factory=Resources)
    """CPU, memory and GPUs for the training pod."""
    image: str | None = Field(default=None, json_schema_extra=IMAGE_SCHEMA)
    """Trainer image; the operator's default trainer image when omitted."""
    active_deadline_seconds: int | None = Field(default=None, ge=1, le=2**31 - 1)
    """Fail the training when it runs longer than this (the Job's activeDeadlineSeconds);
    the operator's default (the chart's trainerActiveDeadlineSeconds) when omitted."""
    backoff_limit: int = Field(default=1, ge=0, le=10)
    """Retries of the training pod before the job fails."""
    ttl_seconds_after_finished: common.Int32 | None = Field(default=None, ge=0)
    """Delete the finished Job after this many seconds; kept when omitted."""
    template: PodTemplate = Field(default_factory=PodTemplate)
    """Labels, annotations and scheduling passed to the training pod."""
    distributed: Distributed = Field(default_factory=Distributed)
    """Processes training together (torchrun in the pod)."""
    queue_name: str | None = Field(default=None, min_length=1, max_length=63, pattern=DNS_LABEL)
    """Kueue LocalQueue admitting the training: the kueue.x-k8s.io/queue-name label on the
    Job and its pod."""
    credentials: list[SecretKeyRef] = Field(default_factory=list)
    """Secret keys exposed to the trainer as environment variables named after the key."""


def processes_per_node(spec: TrainingJobSpec) -> int:
    """numProcPerNode resolved: auto is one process per GPU, or one on the CPU."""
    wanted = spec.distributed.num_proc_per_node
    if wanted == "auto":
        return max(1, spec.resources.gpu)
    return int(wanted)


class Metrics(ApiModel):
    """Evaluation results of a trained model version."""

    overall: float | None = None
    """Metric over all evaluation data."""
    slices: dict[str, float] = Field(default_factory=dict)
    """Metric per data slice."""


class TrainingProgress(ApiModel):
    """How far training is, as the trainer's rank 0 reports it after each epoch."""

    epoch: common.Int32 = 0
    """Epochs finished."""
    epochs: common.Int32 = 0
    """Epochs in all."""
    percent: common.Int32 = Field(default=0, ge=0, le=100)
    """epoch / epochs, in percent."""
    metrics: dict[str, float] = Field(default_factory=dict)
    """The last epoch's metrics: train_loss, val_<metric>, images_per_second (all ranks)."""
    update_time: str | None = None
    """When the trainer reported them (RFC 3339)."""


class TrainingJobStatus(ApiModel):
    """Observed state of a TrainingJob."""

    phase: Phase = "Pending"
    """Pending, Running, Succeeded or Failed."""
    conditions: list[Condition] = Field(default_factory=list)
    """Standard conditions: Ready, Succeeded."""
    job_name: str | None = None
    """Name of the batch/v1 Job (or local process) running the trainer."""
    mlflow_run_id: str | None = None
    """MLflow run that logged the training."""
    model_version: str | None = None
    """Registered model version this job produced."""
    metrics: Metrics | None = None
    """Evaluation metrics overall and per slice."""
    progress: TrainingProgress | None = None
    """Epoch, total epochs and the last epoch's metrics while it trains (the last report
    after)."""
    start_time: str | None = None
    """When the trainer started (RFC 3339)."""
    completion_time: str | None = None
    """When the trainer finished (RFC 3339)."""
    observed_generation: common.Int64 = 0
    """metadata.generation this status describes."""


class TrainingJob(CustomResource):
    """Runs a training plugin, evaluates per slice, exports ONNX and registers a model version."""

    KIND: ClassVar[str] = "TrainingJob"
    PLURAL: ClassVar[str] = "trainingjobs"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("tj",)
    DESCRIPTION: ClassVar[str] = __doc__ or ""
    PRINTER_COLUMNS: ClassVar[tuple[dict[str, str | int], ...]] = (
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Progress", "type": "integer", "jsonPath": ".status.progress.percent"},
        {"name": "Model", "type": "string", "jsonPath": ".spec.registeredModel"},
        {"name": "Version", "type": "string", "jsonPath": ".status.modelVersion"},
        {"name": "Accuracy", "type": "number", "jsonPath": ".status.metrics.overall"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    )

    kind: Literal["TrainingJob"] = "TrainingJob"
    spec: TrainingJobSpec
    status: TrainingJobStatus | None = None
