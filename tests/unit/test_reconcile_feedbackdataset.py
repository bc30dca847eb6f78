"""FeedbackDataset decisions as pure functions, and the trigger's order under a crash at every
step (in-memory ports standing in for S3 and the objects of either runtime; the real ones run
in tests/api, tests/envtest and tests/e2e)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubeloop.api import conditions
from kubeloop.api.feedbackdataset import FeedbackDataset, FeedbackDatasetStatus, Snapshot
from kubeloop.api.samples import LiveAccuracy, VersionAccuracy
from kubeloop.reconcile import feedbackdataset
from kubeloop.reconcile.feedbackdataset import LiveKpi
from tests.memory_ports import Crash, Memory

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PREFIX = "fb/"


def body(threshold: int = 3, **retrain: Any) -> dict[str, Any]:
    """The FeedbackDataset as a runtime stores it."""
    return {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "FeedbackDataset",
        "metadata": {"name": "ds", "namespace": "default", "generation": 2, "uid": "uid-ds"},
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
    }


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


def test_the_inbox_is_counted_from_its_listing_alone() -> None:
    status = FeedbackDatasetStatus(samples=7, samples_since_snapshot=9)
    snapshot = Snapshot(generation=1, manifest="s3://m", samples=5, created_at="T")
    status.snapshots = [snapshot]
    inbox = [*keys(1, 2), f"{PREFIX}inbox/01J-16.jsonl", f"{PREFIX}samples/x.tmp"]
    counted = feedbackdataset.count_inbox(status, inbox)
    assert (counted.samples, counted.samples_since_snapshot) == (5 + 2 + 16, 18)
    assert feedbackdataset.count_inbox(FeedbackDatasetStatus(), []).samples == 0


def test_threshold_cooldown_and_kpi() -> None:
    spec = dataset(threshold=3, cooldownSeconds=60).spec
    below = FeedbackDatasetStatus(samples_since_snapshot=2)
    assert feedbackdataset.decide(spec, below, NOW).reason == "BelowThreshold"
    reached = FeedbackDatasetStatus(samples_since_snapshot=3)
    assert feedbackdataset.decide(spec, reached, NOW).trigger
    recent = reached.model_copy(update={"last_trigger_time": "2026-01-01T11:59:30Z"})
    cooling = feedbackdataset.decide(spec, recent, NOW)
    assert (cooling.trigger, cooling.reason) == (False, "Cooldown")
    assert "until 2026-01-01T12:00:30Z" in cooling.message
    assert feedbackdataset.decide(spec, recent, NOW + timedelta(seconds=31)).trigger

    kpi = {"servedModel": "sm", "minAccuracy": 0.9, "minSamples": 10}
    spec = dataset(threshold=3, kpi=kpi).spec
    met = feedbackdataset.decide(spec, reached, NOW, LiveKpi("4", 0.95, 10))
    assert (met.trigger, met.reason) == (False, "KpiMet")
    missed = feedbackdataset.decide(spec, reached, NOW, LiveKpi("4", 0.5, 10))
    assert missed.trigger
    assert "below 0.9" in missed.message
    # Too few judged predictions, or no reading at all: no evidence, so retrain.
    assert feedbackdataset.decide(spec, reached, NOW, LiveKpi("4", 0.99, 9)).trigger
    assert feedbackdataset.decide(spec, reached, NOW, None).trigger
    assert feedbackdataset.decide(spec, reached, NOW, LiveKpi(None, None)).trigger


def test_live_kpi_reads_the_serving_version() -> None:
    live = LiveAccuracy(versions={"3": VersionAccuracy(judged=4, correct=3)})
    assert feedbackdataset.live_kpi(live, "3") == LiveKpi("3", 0.75, 4)
    assert feedbackdataset.live_kpi(live, "9") == LiveKpi("9", None, 0)


def test_build_training_job_names_labels_and_adds_the_snapshot() -> None:
    manifest = feedbackdataset.build_training_job(
        dataset(), 4, "s3://bkt/fb/snapshots/gen-00004.json"
    )
    assert manifest["metadata"]["name"] == "ds-gen-4"
    assert manifest["metadata"]["namespace"] == "team"
    assert manifest["metadata"]["labels"]["kubeloop.io/generation"] == "4"
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


def memory(*ids: int, threshold: int = 3, **retrain: Any) -> Memory:
    """In-memory ports holding the dataset and sample keys `ids`."""
    ports = Memory()
    ports.store.keys = keys(*ids)
    ports.objects.put(body(threshold, **retrain))
    return ports


def reconcile(ports: Memory) -> feedbackdataset.FeedbackOutcome:
    stored = ports.objects.items[("FeedbackDataset", "default", "ds")]
    return feedbackdataset.reconcile(stored, ports.ports, NOW)


def status(ports: Memory) -> FeedbackDatasetStatus:
    return FeedbackDatasetStatus.model_validate(ports.objects.status("FeedbackDataset", "ds"))


def run_until_done(ports: Memory) -> FeedbackDatasetStatus:
    """Reconcile as the operator's poll would: a crash loses everything not yet written."""
    for _ in range(5):
        try:
            reconcile(ports)
        except Crash:
            ports.crashes.at = None
            continue
        if status(ports).snapshots:
            return status(ports)
    raise AssertionError("the trigger never completed")


def test_uninterrupted_trigger() -> None:
    ports = memory(1, 2, 3)
    outcome = reconcile(ports)
    assert ports.crashes.calls == CALLS_IN_A_TRIGGER
    assert outcome.created == "ds-gen-1"
    assert outcome.new_samples == 3
    written = status(ports)
    assert written == outcome.status
    assert (written.samples, written.samples_since_snapshot, written.last_training_job) == (
        3,
        0,
        "ds-gen-1",
    )
    assert written.snapshots[0].manifest == "s3://bkt/fb/snapshots/gen-00001.json"
    assert written.observed_generation == 2
    retraining = conditions.get_condition(written.conditions, "Retraining")
    assert retraining is not None
    assert (retraining.status, retraining.reason) == ("True", "Triggered")
    assert [e.reason for e in outcome.events] == ["RetrainTriggered"]
    created = ports.objects.items[("TrainingJob", "default", "ds-gen-1")]
    assert created["metadata"]["labels"]["kubeloop.io/feedbackdataset"] == "ds"
    assert ports.objects.owners == {"ds-gen-1": "uid-ds"}  # the runtime makes it owned

    first = ports.store.manifests[1]
    assert (first.moved, first.samples, first.total, first.previous) == (keys(1, 2, 3), 3, 3, None)
    assert sorted(ports.store.archived.values()) == keys(1, 2, 3)
    assert first.segments == sorted(ports.store.archived)

    # Next poll: the snapshot's samples leave the inbox (archived), nothing is created; new
    # samples count toward the next snapshot.
    ports.store.keys += keys(4)
    again = reconcile(ports)
    assert (again.created, again.adopted, again.status.samples_since_snapshot) == (None, None, 1)
    assert ports.store.keys == keys(4)
    assert (again.status.samples, again.status.archived_generation) == (4, 1)
    ports.store.keys += keys(5, 6)
    second = reconcile(ports)
    assert second.created == "ds-gen-2"
    manifest = ports.store.manifests[2]
    assert (manifest.moved, manifest.total) == (keys(4, 5, 6), 6)  # only its own: incremental
    assert manifest.previous == "s3://bkt/fb/snapshots/gen-00001.json"  # the chain
    assert [s.samples for s in second.status.snapshots] == [3, 6]


CALLS_IN_A_TRIGGER = 6  # list the inbox, get TrainingJob, archive, write, create, status


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("call", range(1, CALLS_IN_A_TRIGGER + 1))
def test_a_crash_at_any_step_neither_duplicates_nor_loses_the_trigger(
    call: int, after: bool
) -> None:
    ports = memory(1, 2, 3, 4)
    ports.crashes.at = (call, after)
    done = run_until_done(ports)
    assert [k[2] for k in ports.objects.items if k[0] == "TrainingJob"] == ["ds-gen-1"]
    assert ports.objects.creations == 1
    assert [s.generation for s in done.snapshots] == [1]
    assert ports.store.manifests[1].moved == keys(1, 2, 3, 4)
    assert done.snapshots[0].samples == 4
    assert (done.samples, done.samples_since_snapshot) == (4, 0)
    assert done.last_training_job == "ds-gen-1"


def test_samples_arriving_between_a_crash_and_the_retry_stay_new() -> None:
    ports = memory(1, 2, 3)
    ports.crashes.at = (5, True)  # the TrainingJob is created; its answer and the status are lost
    with pytest.raises(Crash):
        reconcile(ports)
    ports.store.keys += keys(4, 5)
    outcome = reconcile(ports)
    assert outcome.adopted == "ds-gen-1"
    assert [e.reason for e in outcome.events] == ["RetrainAdopted"]
    assert ports.objects.creations == 1
    # The TrainingJob trains on the snapshot it was created with: never rewritten.
    assert ports.store.manifests[1].moved == keys(1, 2, 3)
    assert (outcome.status.samples, outcome.status.samples_since_snapshot) == (5, 2)


def test_a_foreign_training_job_with_the_name_is_not_adopted() -> None:
    ports = memory(1, 2, 3)
    ports.objects.put(
        {"kind": "TrainingJob", "metadata": {"name": "ds-gen-1", "labels": {}}, "spec": {}}
    )
    outcome = reconcile(ports)
    ready = conditions.get_condition(outcome.status.conditions, "Ready")
    assert ready is not None
    assert (ready.status, ready.reason) == ("False", "NameConflict")
    assert outcome.status.snapshots == []
    assert [e.reason for e in outcome.events] == ["NameConflict"]


def test_the_kpi_is_read_only_when_the_threshold_is_reached() -> None:
    kpi = {"servedModel": "sm", "minAccuracy": 0.9}
    ports = memory(1, kpi=kpi)
    ports.objects.put(
        {
            "kind": "ServedModel",
            "metadata": {"name": "sm"},
            "spec": {},
            "status": {"servingVersion": "1"},
        }
    )
    ports.store.live = LiveAccuracy(versions={"1": VersionAccuracy(judged=100, correct=99)})
    below = reconcile(ports)
    assert below.created is None
    assert ports.store.live_reads == 0  # below the threshold: no KPI read
    ports.store.keys += keys(2, 3)
    held = reconcile(ports)
    assert held.created is None
    assert ports.store.live_reads == 1
    retraining = conditions.get_condition(held.status.conditions, "Retraining")
    assert retraining is not None
    assert retraining.reason == "KpiMet"


def test_a_moved_storage_is_refused_and_nothing_is_counted() -> None:
    ports = memory(1)
    reconcile(ports)
    assert status(ports).storage == "s3://bkt/fb/"
    moved = ports.objects.items[("FeedbackDataset", "default", "ds")]
    moved["spec"]["storage"]["prefix"] = "other/"
    moved["metadata"]["generation"] = 3
    ports.store.keys += keys(2, 3, 4, 5)
    outcome = reconcile(ports)
    ready = conditions.get_condition(outcome.status.conditions, "Ready")
    assert ready is not None
    assert (ready.status, ready.reason) == ("False", "StorageChanged")
    assert "s3://bkt/fb/" in ready.message
    assert "s3://bkt/other/" in ready.message
    assert status(ports).samples == 1
    assert [e.reason for e in outcome.events] == ["StorageChanged"]
    assert not [k for k in ports.objects.items if k[0] == "TrainingJob"]
