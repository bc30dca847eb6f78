"""FeedbackDataset through the real operator and a real S3 server: counting new samples,
the threshold trigger creating exactly one TrainingJob, the KPI holding retraining back, and
an operator killed in the middle of a trigger (no duplicate TrainingJob, no lost trigger)."""

from __future__ import annotations

import asyncio
from typing import Any

import kmock
import pytest

from kubeloop.api.samples import LIVE_ACCURACY, snapshot_key
from kubeloop.storage import ObjectStore
from tests.api.conftest import Cluster
from tests.feedback_samples import PREFIX, feedback_dataset, new_bucket, put_samples, s3_settings
from tests.operator_harness import (
    API,
    FD,
    TJ,
    Operator,
    OperatorFactory,
    condition,
    eventually,
    status_of,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def training_jobs(cluster: Cluster) -> list[str]:
    return sorted(tj["metadata"]["name"] for tj in await cluster.list_objects(TJ))


async def test_threshold_creates_exactly_one_training_job(
    cluster: Cluster, operator: OperatorFactory, object_store: ObjectStore
) -> None:
    bucket = new_bucket(object_store)
    running = await operator(**s3_settings(object_store))
    first = await put_samples(object_store, bucket, 3)
    await cluster.create(FD, feedback_dataset("digits-fb", bucket, threshold=5))

    async def counted(samples: int) -> dict[str, Any] | None:
        status = await status_of(cluster, FD, "digits-fb")
        return status if status.get("samples") == samples else None

    status = await eventually(lambda: counted(3), "3 samples counted")
    retraining = condition(status, "Retraining")
    assert (retraining["status"], retraining["reason"]) == ("False", "BelowThreshold")
    assert await training_jobs(cluster) == []

    second = await put_samples(object_store, bucket, 2)
    status = await eventually(
        lambda: _recorded(cluster, "digits-fb", 1), "the trigger recorded", timeout=20
    )
    assert (status["samples"], status["samplesSinceSnapshot"]) == (5, 0)
    uri = f"s3://{bucket}/{snapshot_key(PREFIX, 1)}"
    assert status["snapshots"][0]["manifest"] == uri
    manifest = object_store.get_json(bucket, snapshot_key(PREFIX, 1))
    assert (manifest["moved"], manifest["total"]) == ([*first, *second], 5)
    archived = object_store.list_keys(bucket, f"{PREFIX}archive/gen-00001/")
    assert manifest["segments"] == archived
    await eventually(  # recorded, the snapshot's samples leave the inbox
        lambda: asyncio.to_thread(lambda: not object_store.list_keys(bucket, f"{PREFIX}samples/")),
        "the inbox emptied",
    )
    tj = await cluster.get(TJ, "digits-fb-gen-1")
    assert tj is not None
    assert tj["metadata"]["labels"]["kubeloop.io/feedbackdataset"] == "digits-fb"
    owner = tj["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == (
        "FeedbackDataset",
        "uid-digits-fb",
        True,
    )
    datasets = tj["spec"]["datasets"]
    assert datasets[0] == {"name": "base", "uri": "builtin://digits"}
    assert datasets[1] == {
        "name": "feedback",
        "feedbackDataset": "digits-fb",
        "generation": 1,
        "manifest": uri,
    }
    await cluster.said("digits-fb", "RetrainTriggered")

    # Polls and repeated events go on; the threshold is not reached again yet.
    await running.polled("FeedbackDataset")
    await put_samples(object_store, bucket, 2)
    status = await eventually(lambda: counted(7), "7 samples counted")
    assert status["samplesSinceSnapshot"] == 2
    assert await training_jobs(cluster) == ["digits-fb-gen-1"]
    exported = await running.metrics()
    assert 'kubeloop_feedback_samples{dataset="digits-fb",namespace="default"} 7.0' in exported
    assert (
        'kubeloop_retrain_triggers_total{dataset="digits-fb",namespace="default"} 1.0' in exported
    )

    # No finalizer: the dataset goes at once.
    found = await cluster.get(FD, "digits-fb")
    assert found is not None
    assert not found["metadata"].get("finalizers")
    await cluster.delete(FD, "digits-fb")

    async def gone() -> bool:
        return await cluster.get(FD, "digits-fb") is None

    await eventually(gone, "the deleted dataset released")


async def test_kpi_holds_retraining_back_while_it_is_met(
    cluster: Cluster, operator: OperatorFactory, object_store: ObjectStore
) -> None:
    bucket = new_bucket(object_store)
    running = await operator(**s3_settings(object_store))
    served = {
        "apiVersion": API,
        "kind": "ServedModel",
        "metadata": {"name": "digits"},
        "spec": {"registeredModel": "digits", "runtime": "deployment"},
    }
    await cluster.create(f"{API}/servedmodels", served)
    await cluster.patch(
        f"{API}/servedmodels", "digits", {"status": {"servingVersion": "3"}}, "status"
    )
    live = {"versions": {"3": {"judged": 20, "correct": 19}, "2": {"judged": 50, "correct": 10}}}
    object_store.put_json(bucket, f"{PREFIX}{LIVE_ACCURACY}", live)
    await put_samples(object_store, bucket, 4)
    kpi = {"servedModel": "digits", "minAccuracy": 0.9, "minSamples": 10}
    await cluster.create(FD, feedback_dataset("kpi-fb", bucket, threshold=3, kpi=kpi))

    async def reason_is(reason: str) -> dict[str, Any] | None:
        status = await status_of(cluster, FD, "kpi-fb")
        return status if condition(status, "Retraining").get("reason") == reason else None

    status = await eventually(lambda: reason_is("KpiMet"), "the KPI holding retraining back")
    assert "0.950" in condition(status, "Retraining")["message"]
    await running.polled("FeedbackDataset")
    assert await training_jobs(cluster) == []

    live["versions"]["3"] = {"judged": 40, "correct": 20}
    object_store.put_json(bucket, f"{PREFIX}{LIVE_ACCURACY}", live)
    await eventually(lambda: _recorded(cluster, "kpi-fb", 1), "a retrain once the KPI is missed")
    assert await training_jobs(cluster) == ["kpi-fb-gen-1"]


async def test_operator_killed_mid_trigger_neither_duplicates_nor_loses_it(
    cluster: Cluster, operator: OperatorFactory, object_store: ObjectStore
) -> None:
    bucket = new_bucket(object_store)
    release = asyncio.Event()

    async def stall(request: kmock.Request) -> dict[str, Any]:
        # The emulator has stored the TrainingJob; the operator never hears back.
        await release.wait()
        return {}

    creating = cluster.kmock["post"][kmock.resource(TJ)]
    creating[:1] << stall
    first = await running_with_samples(operator, object_store, bucket, 5)
    await cluster.create(FD, feedback_dataset("crash-fb", bucket, threshold=5))
    await eventually(lambda: cluster.get(TJ, "crash-fb-gen-1"), "the TrainingJob's creation")
    await first.kill()
    release.set()
    status = await status_of(cluster, FD, "crash-fb")
    assert status.get("snapshots") in (None, []), "the status was written before the crash"
    assert status.get("lastTrainingJob") is None

    restarted = await operator(**s3_settings(object_store))
    status = await eventually(lambda: _recorded(cluster, "crash-fb", 1), "the trigger adopted")
    assert (status["lastTrainingJob"], status["samplesSinceSnapshot"]) == ("crash-fb-gen-1", 0)
    await cluster.said("crash-fb", "RetrainAdopted")
    await restarted.polled("FeedbackDataset")  # more polls: still one TrainingJob
    assert await training_jobs(cluster) == ["crash-fb-gen-1"]
    assert len(creating) == 1, "the restarted operator tried to create the TrainingJob again"

    # The next threshold still triggers: nothing was lost or stuck.
    await put_samples(object_store, bucket, 5)
    status = await eventually(lambda: _recorded(cluster, "crash-fb", 2), "the next trigger")
    assert await training_jobs(cluster) == ["crash-fb-gen-1", "crash-fb-gen-2"]
    assert [s["samples"] for s in status["snapshots"]] == [5, 10]
    counted = 'kubeloop_retrain_triggers_total{dataset="crash-fb",namespace="default"} 2.0'
    assert counted in await restarted.metrics()


async def running_with_samples(
    operator: OperatorFactory, store: ObjectStore, bucket: str, count: int
) -> Operator:
    await put_samples(store, bucket, count)
    return await operator(**s3_settings(store))


async def _recorded(cluster: Cluster, name: str, generation: int) -> dict[str, Any] | None:
    status = await status_of(cluster, FD, name)
    snapshots = status.get("snapshots") or []
    return status if len(snapshots) == generation else None
