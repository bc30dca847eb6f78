"""FeedbackDataset decisions as pure functions, and the trigger's order under a crash at every
step (in-memory ports standing in for S3 and the API; the real ones run in tests/api)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubeloop.api import conditions
from kubeloop.api.feedbackdataset import FeedbackDataset, FeedbackDatasetStatus, Kpi
from kubeloop.api.samples import LiveAccuracy, SnapshotManifest, VersionAccuracy
from kubeloop.reconcile import feedbackdataset
from kubeloop.reconcile.common import Owner
from kubeloop.reconcile.feedbackdataset import LiveKpi

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PREFIX = "fb/"


def dataset(
    threshold: int = 3, status: FeedbackDatasetStatus | None = None, **retrain: Any
) -> FeedbackDataset:
    return FeedbackDataset.model_validate(
        {
            "metadata": {"name": "ds", "namespace": "team", "generation": 2},
            "spec": {
                "storage": {"bucket": "bkt", "prefix": PREFIX},
                "classes": ["a", "b"],
                "retrain": {
                    "threshold": threshold,
                    "trainingTemplate": {
                        "plugin": {"name": "p"},
                        "datasets": [{"name": "base", "uri": "builtin://digits"}],
                        "registeredModel": "m",
                    },
                    **retrain,
                },
            },
            "status": status.to_wire() if status else None,
        }
    )


def keys(*ids: int) -> list[str]:
    return [f"{PREFIX}samples/{i:026d}.json" for i in ids]


def test_count_new_counts_only_sample_keys_after_the_last() -> None:
    status = FeedbackDatasetStatus(samples=2, samples_since_snapshot=1, last_key=keys(2)[0])
    counted = feedbackdataset.count_new(status, [*keys(1, 2, 3, 4), f"{PREFIX}samples/x.tmp"])
    assert (counted.samples, counted.samples_since_snapshot, counted.last_key) == (4, 3, keys(4)[0])
    assert feedbackdataset.count_new(status, []) is status


def test_threshold_cooldown_and_kpi() -> None:
    spec = dataset(threshold=3, cooldownSeconds=60).spec
    below = FeedbackDatasetStatus(samples_since_snapshot=2)
    assert feedbackdataset.decide_trigger(spec, below, NOW).reason == "BelowThreshold"
    reached = FeedbackDatasetStatus(samples_since_snapshot=3)
    assert feedbackdataset.decide_trigger(spec, reached, NOW).trigger
    recent = reached.model_copy(update={"last_trigger_time": "2026-01-01T11:59:30Z"})
    cooling = feedbackdataset.decide_trigger(spec, recent, NOW)
    assert (cooling.trigger, cooling.reason) == (False, "Cooldown")
    assert "until 2026-01-01T12:00:30Z" in cooling.message
    assert feedbackdataset.decide_trigger(spec, recent, NOW + timedelta(seconds=31)).trigger

    kpi = {"servedModel": "sm", "minAccuracy": 0.9, "minSamples": 10}
    spec = dataset(threshold=3, kpi=kpi).spec
    met = feedbackdataset.decide_trigger(spec, reached, NOW, LiveKpi("4", 0.95, 10))
    assert (met.trigger, met.reason) == (False, "KpiMet")
    missed = feedbackdataset.decide_trigger(spec, reached, NOW, LiveKpi("4", 0.5, 10))
    assert missed.trigger
    assert "below 0.9" in missed.message
    # Too few judged predictions, or no reading at all: no evidence, so retrain.
    assert feedbackdataset.decide_trigger(spec, reached, NOW, LiveKpi("4", 0.99, 9)).trigger
    assert feedbackdataset.decide_trigger(spec, reached, NOW, None).trigger
    assert feedbackdataset.decide_trigger(spec, reached, NOW, LiveKpi(None, None)).trigger


def test_live_kpi_reads_the_serving_version() -> None:
    live = LiveAccuracy(versions={"3": VersionAccuracy(judged=4, correct=3)})
    assert feedbackdataset.live_kpi(live, "3") == LiveKpi("3", 0.75, 4)
    assert feedbackdataset.live_kpi(live, "9") == LiveKpi("9", None, 0)


def test_build_training_job_names_labels_owns_and_adds_the_snapshot() -> None:
    owner = Owner("kubeloop.io/v1alpha1", "FeedbackDataset", "ds", "uid-1")
    manifest = feedbackdataset.build_training_job(
        dataset(), 4, "s3://bkt/fb/snapshots/gen-00004.json", owner
    )
    assert manifest["metadata"]["name"] == "ds-gen-4"
    assert manifest["metadata"]["namespace"] == "team"
    assert manifest["metadata"]["labels"]["kubeloop.io/generation"] == "4"
    assert manifest["metadata"]["ownerReferences"] == [owner.reference()]
    assert manifest["spec"]["datasets"][-1] == {
        "name": "feedback",
        "feedbackDataset": "ds",
        "generation": 4,
        "manifest": "s3://bkt/fb/snapshots/gen-00004.json",
    }
    assert feedbackdataset.is_own_training_job(manifest, "ds", 4)
    assert not feedbackdataset.is_own_training_job(manifest, "ds", 5)


def test_a_template_dataset_referencing_the_dataset_is_pinned_not_duplicated() -> None:
    ds = dataset()
    assert ds.spec.retrain is not None
    template = ds.spec.retrain.training_template
    template.datasets.append(type(template.datasets[0])(name="users", feedback_dataset="ds"))
    manifest = feedbackdataset.build_training_job(ds, 2, "s3://m")
    assert [d["name"] for d in manifest["spec"]["datasets"]] == ["base", "users"]
    assert manifest["spec"]["datasets"][1]["generation"] == 2


def test_spec_problems() -> None:
    ds = dataset()
    assert feedbackdataset.spec_problems(ds.spec, "ds") == []
    assert ds.spec.retrain is not None
    template = ds.spec.retrain.training_template
    template.datasets.append(type(template.datasets[0])(name="feedback", uri="s3://x/y"))
    template.template.labels = {"bad key": "v"}
    problems = "\n".join(feedbackdataset.spec_problems(ds.spec, "ds"))
    assert "retrain.trainingTemplate.template.labels" in problems
    assert "'feedback' is taken" in problems


class Crash(Exception):
    pass


class MemoryPorts:
    """S3 and the API in memory; `crash_at` makes the n-th call fail, before or after it acts."""

    def __init__(self, sample_keys: list[str]) -> None:
        self.keys = sample_keys
        self.manifests: dict[int, SnapshotManifest] = {}
        self.training_jobs: dict[str, dict[str, Any]] = {}
        self.live: LiveKpi | None = None
        self.calls = 0
        self.crash_at: tuple[int, bool] | None = None
        self.creations = 0

    def _call(self) -> bool:
        """Count a call; True when it must crash after acting."""
        self.calls += 1
        if self.crash_at is not None and self.crash_at[0] == self.calls:
            if not self.crash_at[1]:
                raise Crash(f"crash before call {self.calls}")
            return True
        return False

    def list_sample_keys(self, start_after: str | None) -> list[str]:
        crash = self._call()
        found = [k for k in self.keys if start_after is None or k > start_after]
        if crash:
            raise Crash("crash after listing")
        return found

    def read_manifest(self, generation: int) -> SnapshotManifest | None:
        crash = self._call()
        found = copy.deepcopy(self.manifests.get(generation))
        if crash:
            raise Crash("crash after reading")
        return found

    def write_manifest(self, manifest: SnapshotManifest) -> None:
        crash = self._call()
        self.manifests[manifest.generation] = copy.deepcopy(manifest)
        if crash:
            raise Crash("crash after writing the manifest")

    def get_training_job(self, name: str) -> dict[str, Any] | None:
        crash = self._call()
        found = copy.deepcopy(self.training_jobs.get(name))
        if crash:
            raise Crash("crash after reading a TrainingJob")
        return found

    def create_training_job(self, manifest: dict[str, Any]) -> bool:
        crash = self._call()
        name = manifest["metadata"]["name"]
        created = name not in self.training_jobs
        if created:
            self.training_jobs[name] = copy.deepcopy(manifest)
            self.creations += 1
        if crash:
            raise Crash("crash after creating the TrainingJob (the answer is lost)")
        return created

    def live_kpi(self, kpi: Kpi) -> LiveKpi | None:
        crash = self._call()
        if crash:
            raise Crash("crash after reading the KPI")
        return self.live


def run_until_done(
    ports: MemoryPorts, status: FeedbackDatasetStatus | None
) -> FeedbackDatasetStatus:
    """Reconcile as the operator's timer would: a crash loses everything not yet written."""
    for _ in range(5):
        try:
            outcome = feedbackdataset.reconcile(dataset(status=status), ports, NOW)
        except Crash:
            ports.crash_at = None
            continue
        status = outcome.status  # the runtime writes the status last
        if status.snapshots:
            return status
    raise AssertionError("the trigger never completed")


def test_uninterrupted_trigger() -> None:
    ports = MemoryPorts(keys(1, 2, 3))
    outcome = feedbackdataset.reconcile(dataset(), ports, NOW)
    assert ports.calls == CALLS_IN_A_TRIGGER
    assert outcome.created == "ds-gen-1"
    assert outcome.new_samples == 3
    status = outcome.status
    assert (status.samples, status.samples_since_snapshot, status.last_training_job) == (
        3,
        0,
        "ds-gen-1",
    )
    assert status.snapshots[0].manifest == "s3://bkt/fb/snapshots/gen-00001.json"
    assert status.observed_generation == 2
    retraining = conditions.get_condition(status.conditions, "Retraining")
    assert retraining is not None
    assert (retraining.status, retraining.reason) == ("True", "Triggered")
    assert [e.reason for e in outcome.events] == ["RetrainTriggered"]

    # Next poll: nothing new, nothing created; new samples count toward the next snapshot.
    ports.keys += keys(4)
    again = feedbackdataset.reconcile(dataset(status=status), ports, NOW)
    assert (again.created, again.adopted, again.status.samples_since_snapshot) == (None, None, 1)
    ports.keys += keys(5, 6)
    second = feedbackdataset.reconcile(dataset(status=again.status), ports, NOW)
    assert second.created == "ds-gen-2"
    assert ports.manifests[2].keys == keys(1, 2, 3, 4, 5, 6)


CALLS_IN_A_TRIGGER = 5  # list keys, get TrainingJob, list keys since the cut, write, create


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("call", range(1, CALLS_IN_A_TRIGGER + 1))
def test_a_crash_at_any_step_neither_duplicates_nor_loses_the_trigger(
    call: int, after: bool
) -> None:
    ports = MemoryPorts(keys(1, 2, 3, 4))
    ports.crash_at = (call, after)
    status = run_until_done(ports, None)
    assert list(ports.training_jobs) == ["ds-gen-1"]
    assert ports.creations == 1
    assert [s.generation for s in status.snapshots] == [1]
    assert ports.manifests[1].keys == keys(1, 2, 3, 4)
    assert status.snapshots[0].samples == 4
    assert (status.samples, status.samples_since_snapshot) == (4, 0)
    assert status.last_training_job == "ds-gen-1"


def test_samples_arriving_between_a_crash_and_the_retry_stay_new() -> None:
    ports = MemoryPorts(keys(1, 2, 3))
    ports.crash_at = (5, True)  # the TrainingJob is created; its answer and the status are lost
    with pytest.raises(Crash):
        feedbackdataset.reconcile(dataset(), ports, NOW)
    ports.keys += keys(4, 5)
    outcome = feedbackdataset.reconcile(dataset(), ports, NOW)
    assert outcome.adopted == "ds-gen-1"
    assert [e.reason for e in outcome.events] == ["RetrainAdopted"]
    assert ports.creations == 1
    # The TrainingJob trains on the snapshot it was created with: never rewritten.
    assert ports.manifests[1].keys == keys(1, 2, 3)
    assert (outcome.status.samples, outcome.status.samples_since_snapshot) == (5, 2)


def test_a_foreign_training_job_with_the_name_is_not_adopted() -> None:
    ports = MemoryPorts(keys(1, 2, 3))
    ports.training_jobs["ds-gen-1"] = {"metadata": {"name": "ds-gen-1", "labels": {}}}
    outcome = feedbackdataset.reconcile(dataset(), ports, NOW)
    ready = conditions.get_condition(outcome.status.conditions, "Ready")
    assert ready is not None
    assert (ready.status, ready.reason) == ("False", "NameConflict")
    assert outcome.status.snapshots == []
    assert [e.reason for e in outcome.events] == ["NameConflict"]


def test_the_kpi_is_read_only_when_the_threshold_is_reached() -> None:
    kpi = {"servedModel": "sm", "minAccuracy": 0.9}
    ports = MemoryPorts(keys(1))
    ports.live = LiveKpi("1", 0.99, 100)
    below = feedbackdataset.reconcile(dataset(kpi=kpi), ports, NOW)
    assert ports.calls == 2  # listing and the TrainingJob lookup: no KPI read
    ports.keys += keys(2, 3)
    held = feedbackdataset.reconcile(dataset(status=below.status, kpi=kpi), ports, NOW)
    assert held.created is None
    retraining = conditions.get_condition(held.status.conditions, "Retraining")
    assert retraining is not None
    assert retraining.reason == "KpiMet"
