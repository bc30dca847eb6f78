"""The reconciles' ports in memory, with a crash at any chosen call.

Both runtimes run the same reconciles through these ports' interface, so a crash test
against them covers the operator and `kubeloop up` alike; tests/api and tests/e2e run the
real ports. `Crashes` counts the calls that act (reads, writes, creations; not Events, which
never fail) and makes the n-th one raise `Crash`, before or after it acted.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kubeloop.api.common import ApiModel
from kubeloop.api.feedbackdataset import Storage
from kubeloop.api.samples import LiveAccuracy, SnapshotManifest
from kubeloop.api.servedmodel import ServedModel
from kubeloop.api.trainingjob import Metrics, TrainingJob
from kubeloop.reconcile.ports import (
    Body,
    Deploy,
    Event,
    FeedbackRef,
    FeedbackStore,
    Ports,
    ServingState,
    TrainerObservation,
    TrainerState,
)


class Crash(Exception):
    pass


@dataclass
class Crashes:
    """Counts acting port calls; `at` = (n, after) makes the n-th crash before or after it acts."""

    calls: int = 0
    at: tuple[int, bool] | None = None

    def before(self) -> bool:
        """Count a call; raise when it must crash before acting; True when after."""
        self.calls += 1
        if self.at is not None and self.at[0] == self.calls:
            if not self.at[1]:
                raise Crash(f"crash before call {self.calls}")
            return True
        return False

    def after(self, crash: bool, what: str) -> None:
        if crash:
            raise Crash(f"crash after {what}")


def _key(body: Body) -> tuple[str, str, str]:
    metadata = body["metadata"]
    return (body["kind"], metadata.get("namespace", "default"), metadata["name"])


@dataclass
class MemoryObjects:
    crashes: Crashes
    items: dict[tuple[str, str, str], Body] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    creations: int = 0
    owners: dict[str, str] = field(default_factory=dict)
    """Created object's name -> its owner's uid."""

    def put(self, body: Body) -> Body:
        body = copy.deepcopy(body)
        body["metadata"].setdefault("namespace", "default")
        self.items[_key(body)] = body
        return copy.deepcopy(body)

    def get(self, kind: str, namespace: str, name: str) -> Body | None:
        crash = self.crashes.before()
        found = copy.deepcopy(self.items.get((kind, namespace, name)))
        self.crashes.after(crash, f"reading {kind}/{name}")
        return found

    def create(self, manifest: Body, owner: Body) -> bool:
        crash = self.crashes.before()
        key = _key({**manifest, "metadata": {"namespace": "default", **manifest["metadata"]}})
        created = key not in self.items
        if created:
            self.put(manifest)
            self.creations += 1
            self.owners[manifest["metadata"]["name"]] = owner["metadata"].get("uid", "")
        self.crashes.after(crash, f"creating {key} (the answer is lost)")
        return created

    def write_status(self, body: Body, status: ApiModel) -> None:
        crash = self.crashes.before()
        stored = self.items.get(_key(body))
        if stored is not None:
            stored["status"] = status.to_wire()
        self.crashes.after(crash, "writing the status")

    def emit(self, body: Body, events: Sequence[Event]) -> None:
        self.events += events

    def status(self, kind: str, name: str) -> dict[str, Any]:
        return dict(self.items[(kind, "default", name)].get("status") or {})


@dataclass
class MemoryStore:
    """One FeedbackDataset's S3 prefix: its inbox, archive and manifests."""

    crashes: Crashes
    keys: list[str] = field(default_factory=list)
    """The inbox."""
    archived: dict[str, str] = field(default_factory=dict)
    """Archive key -> the inbox key it was copied from."""
    manifests: dict[int, SnapshotManifest] = field(default_factory=dict)
    live: LiveAccuracy | None = None
    live_reads: int = 0

    def list_inbox(self) -> list[str]:
        crash = self.crashes.before()
        found = sorted(self.keys)
        self.crashes.after(crash, "listing")
        return found

    def archive(self, keys: list[str], generation: int) -> list[str]:
        crash = self.crashes.before()
        targets = [f"archive/gen-{generation}/{k.rsplit('/', 1)[-1]}" for k in keys]
        self.archived.update(zip(targets, keys, strict=True))
        self.crashes.after(crash, "archiving")
        return targets

    def delete(self, keys: list[str]) -> None:
        crash = self.crashes.before()
        self.keys = [k for k in self.keys if k not in set(keys)]
        self.crashes.after(crash, "deleting")

    def read_manifest(self, generation: int) -> SnapshotManifest | None:
        crash = self.crashes.before()
        found = copy.deepcopy(self.manifests.get(generation))
        self.crashes.after(crash, "reading a manifest")
        return found

    def write_manifest(self, manifest: SnapshotManifest) -> None:
        crash = self.crashes.before()
        self.manifests[manifest.generation] = copy.deepcopy(manifest)
        self.crashes.after(crash, "writing the manifest")

    def live_accuracy(self) -> LiveAccuracy | None:
        crash = self.crashes.before()
        self.live_reads += 1
        self.crashes.after(crash, "reading live accuracy")
        return self.live


@dataclass
class MemoryStores:
    store: MemoryStore

    def open(self, namespace: str, storage: Storage) -> FeedbackStore:
        return self.store


@dataclass
class MemoryTrainer:
    """Trainers by TrainingJob name: the state a test sets, and what was started."""

    crashes: Crashes
    states: dict[str, TrainerState] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)

    looks: int = 0
    """How many observations looked at a trainer (Kubernetes: a GET of the Job)."""

    def observe(self, body: Body, *, recorded: bool = True) -> TrainerObservation:
        name = body["metadata"]["name"]
        if not recorded:  # as on Kubernetes: no look, `start` finds any trainer
            return TrainerObservation(name, None)
        crash = self.crashes.before()
        self.looks += 1
        seen = TrainerObservation(name, self.states.get(name))
        self.crashes.after(crash, "observing the trainer")
        return seen

    def start(self, tj: TrainingJob, body: Body) -> bool:
        crash = self.crashes.before()
        name = tj.metadata.name
        new = name not in self.states
        if new:
            self.states[name] = TrainerState("Pending")
            self.started.append(name)
        self.crashes.after(crash, "starting the trainer")
        return new


@dataclass
class MemoryPredictor:
    crashes: Crashes
    deployed: list[Deploy] = field(default_factory=list)
    ready: bool = True

    def problem(self, sm: ServedModel) -> tuple[str, str] | None:
        return None

    def apply(
        self,
        sm: ServedModel,
        body: Body,
        deploy: Deploy,
        feedback: FeedbackRef | None,
        spec_changed: bool,
    ) -> ServingState:
        crash = self.crashes.before()
        self.deployed.append(deploy)
        self.crashes.after(crash, "deploying")
        return ServingState(self.ready, "http://predictor")


@dataclass
class MemoryRegistry:
    crashes: Crashes
    versions: dict[str, Metrics] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    """Alias -> the ServedModel (namespace/name) that claimed it."""
    tags: dict[tuple[str, str], str] = field(default_factory=dict)
    """(version, key) -> value."""

    def alias_version(self, name: str, alias: str) -> str | None:
        crash = self.crashes.before()
        found = self.aliases.get(alias)
        self.crashes.after(crash, "reading the alias")
        return found

    def latest_version_number(self, name: str) -> str | None:
        crash = self.crashes.before()
        found = max(self.versions, key=int, default=None)
        self.crashes.after(crash, "reading the latest version")
        return found

    def version_metrics(self, name: str, version: str, metric: str) -> Metrics:
        crash = self.crashes.before()
        found = self.versions.get(version, Metrics())
        self.crashes.after(crash, "reading metrics")
        return found

    def set_alias(self, name: str, alias: str, version: str) -> None:
        crash = self.crashes.before()
        self.aliases[alias] = version
        self.crashes.after(crash, "moving the alias")

    def alias_owner(self, name: str, alias: str) -> str | None:
        return self.owners.get(alias)

    def claim_alias(self, name: str, alias: str, owner: str) -> None:
        self.owners[alias] = owner

    def tag_version(self, name: str, version: str, key: str, value: str) -> None:
        crash = self.crashes.before()
        self.tags[(version, key)] = value
        self.crashes.after(crash, "tagging a version")

    def version_tag(self, name: str, version: str, key: str) -> str | None:
        return self.tags.get((version, key))


@dataclass
class Memory:
    """Every port in memory, sharing one crash counter."""

    crashes: Crashes = field(default_factory=Crashes)

    def __post_init__(self) -> None:
        self.objects = MemoryObjects(self.crashes)
        self.store = MemoryStore(self.crashes)
        self.trainer = MemoryTrainer(self.crashes)
        self.predictor = MemoryPredictor(self.crashes)
        self.registry = MemoryRegistry(self.crashes)
        self.ports = Ports(
            objects=self.objects,
            trainer=self.trainer,
            predictor=self.predictor,
            registry=self.registry,
            feedback=MemoryStores(self.store),
        )
