"""The runtime interface: the small ports each kind's reconcile works through.

A runtime (kubeloop.kube, the kopf operator; kubeloop.local, `kubeloop up`) implements these
and decides nothing: the reconciles in this package gather observations through the ports,
decide in pure functions and apply the plan through the ports again. Any call may raise
`kubeloop.api.errors.Unavailable` (a dependency cannot be reached: the reconcile says so in a
condition and re-raises, the runtime retries later) or fail otherwise (retried as well).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from kubeloop.api.common import ApiModel
from kubeloop.api.feedbackdataset import FeedbackDatasetSpec, Storage
from kubeloop.api.samples import LiveAccuracy, SnapshotManifest
from kubeloop.api.servedmodel import ServedModel
from kubeloop.api.trainingjob import Metrics, TrainingJob, TrainingProgress

Body = dict[str, Any]
"""An object as the runtime stores it: apiVersion, kind, metadata, spec, status."""


@dataclass(frozen=True)
class Event:
    """Something a person watching the object should hear about.

    The operator posts it as a Kubernetes Event; the local mode prints it.
    """

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


class Objects(Protocol):
    """kubeloop's own objects: read them, create them, write their status, tell of them."""

    def get(self, kind: str, namespace: str, name: str) -> Body | None:
        """The object, or None when there is none."""
        ...

    def create(self, manifest: Body, owner: Body) -> bool:
        """Create `manifest`, owned by `owner`; False when one of that name existed."""
        ...

    def write_status(self, body: Body, status: ApiModel) -> None:
        """Store `status` as the object's status (unchanged fields cost nothing)."""
        ...

    def emit(self, body: Body, events: Sequence[Event]) -> None:
        """Tell each event about the object; never raises."""
        ...


TrainerPhase = Literal["Pending", "Running", "Succeeded", "Failed"]


@dataclass(frozen=True)
class TrainerState:
    """What a runtime saw of its trainer, whatever runs it (batch Job, local process)."""

    phase: TrainerPhase
    start_time: str | None = None
    """When the trainer started (RFC 3339)."""
    completion_time: str | None = None
    """When it finished (RFC 3339)."""
    reason: str = ""
    """One CamelCase word for why it waits or failed: Suspended, ImagePullBackOff, ..."""
    message: str = ""
    """The same for a person."""
    result: str | None = None
    """The trainer's result text, once it succeeded."""
    progress: TrainingProgress | None = None
    """Its last epoch report, when the runtime could read one (its log)."""


@dataclass(frozen=True)
class TrainerObservation:
    """The trainer of one TrainingJob, as its runtime sees it."""

    name: str
    """What runs it is called: the batch Job, or the local process."""
    state: TrainerState | None
    """None: not started yet, or gone."""
    problem: str | None = None
    """Why it cannot be started, e.g. another object holds the name."""


class Trainer(Protocol):
    """Runs the trainer entrypoint for a TrainingJob: a batch Job, or a local process."""

    def observe(self, body: Body, *, recorded: bool = True) -> TrainerObservation:
        """The trainer's state. `recorded` False: the status names no trainer, so no
        reconcile finished starting one; a port that pays for each look may then say there
        is none, and `start` tells if there was."""
        ...

    def start(self, tj: TrainingJob, body: Body) -> bool:
        """Start the trainer; False when one of that name exists already (harmless: an
        interrupted reconcile's, or someone else's; observe it)."""
        ...


@dataclass(frozen=True)
class Deploy:
    """What the predictor should run."""

    stable_uri: str
    """Model URI of the stable predictor (the alias, or a pinned version)."""
    canary_uri: str | None = None
    """Model URI of the canary (a pinned candidate), during a canary."""
    canary_percent: int = 0
    """Traffic share of the canary."""
    version: str | None = None
    """The version `stable_uri` names once this step is done (the alias's target), so a
    runtime can tell its predictor to swap now instead of at its next registry poll."""


@dataclass(frozen=True)
class ServingState:
    """What a runtime saw of its predictor (InferenceService, Deployment, local process)."""

    ready: bool
    url: str | None = None
    reason: str = ""
    """Why it is not ready: one CamelCase word."""
    message: str = ""


FeedbackRef = tuple[str, FeedbackDatasetSpec]
"""A FeedbackDataset the predictor sends feedback to: its name and spec."""


class Predictor(Protocol):
    """Runs the predictor entrypoint for a ServedModel."""

    def problem(self, sm: ServedModel) -> tuple[str, str] | None:
        """(reason, message) when this runtime cannot serve `sm` at all, e.g. no KServe."""
        ...

    def apply(
        self,
        sm: ServedModel,
        body: Body,
        deploy: Deploy,
        feedback: FeedbackRef | None,
        spec_changed: bool,
    ) -> ServingState:
        """Run what `deploy` says (idempotently) and report the predictor's state.

        `spec_changed`: the spec's generation is new, so children of a runtime no longer
        chosen may be left over.
        """
        ...


class Registry(Protocol):
    """The model registry reads and the alias moves a ServedModel's rollout needs."""

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version behind `alias`, or None when it is not set."""
        ...

    def latest_version_number(self, name: str) -> str | None:
        """The highest version of `name`, or None when it has none."""
        ...

    def version_metrics(self, name: str, version: str, metric: str) -> Metrics:
        """The version's evaluation; empty when its run is gone."""
        ...

    def set_alias(self, name: str, alias: str, version: str) -> None: ...

    def alias_owner(self, name: str, alias: str) -> str | None:
        """The ServedModel (namespace/name) that promotes through `alias`, or None."""
        ...

    def claim_alias(self, name: str, alias: str, owner: str) -> None:
        """Record `owner` as the one ServedModel promoting through `alias`."""
        ...

    def tag_version(self, name: str, version: str, key: str, value: str) -> None:
        """Set tag `key` of version `version` of `name` to `value`."""
        ...

    def version_tag(self, name: str, version: str, key: str) -> str | None:
        """Tag `key` of version `version` of `name`; None when unset or the version is gone."""
        ...


class FeedbackStore(Protocol):
    """One FeedbackDataset's objects in object storage."""

    def list_inbox(self) -> list[str]:
        """Every key under `{prefix}inbox/` (and `{prefix}samples/`): the samples no snapshot
        has taken, and the latest snapshot's until it is archived."""
        ...

    def archive(self, keys: list[str], generation: int) -> list[str]:
        """Copy `keys` to snapshot `generation`'s archive; their archive keys, in order."""
        ...

    def delete(self, keys: list[str]) -> None:
        """Delete `keys`; absent ones are fine."""
        ...

    def read_manifest(self, generation: int) -> SnapshotManifest | None:
        """The snapshot manifest of `generation`, or None when it is not stored."""
        ...

    def write_manifest(self, manifest: SnapshotManifest) -> None:
        """Store `manifest` at its deterministic key, replacing what is there."""
        ...

    def live_accuracy(self) -> LiveAccuracy | None:
        """The predictors' record of predictions judged by feedback, or None before any."""
        ...


class FeedbackStores(Protocol):
    """Opens a FeedbackDataset's storage with the credentials its spec names."""

    def open(self, namespace: str, storage: Storage) -> FeedbackStore:
        """The store; Unavailable (reason SecretNotFound, ...) when it cannot be opened."""
        ...


@dataclass(frozen=True)
class Ports:
    """Everything a runtime gives the reconciles."""

    objects: Objects
    trainer: Trainer
    predictor: Predictor
    registry: Registry
    feedback: FeedbackStores
