"""TrainingJob on a real API server: the owned Job, the status and Events, the
garbage collector removing the children with their TrainingJob, and a whole run with the
tests playing the node: the Job controller's pod runs the trainer here against the real S3 and
MLflow servers, and its termination message brings the model version into the status."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from kubeloop.api.training_result import TrainingResult
from kubeloop.local import services
from kubeloop.registry import Registry
from tests.envtest import kubelet
from tests.feedback_samples import s3_secret
from tests.operator_harness import (
    API,
    TJ,
    Cluster,
    Operators,
    condition,
    eventually,
    status_of,
    training_job,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]
TRAINING_TIMEOUT = 300.0
"""Seconds one epoch on the digits, the ONNX export and the registration may take (2 loaded
cores)."""


async def test_children_status_events_and_garbage_collection(
    cluster: Cluster, operators: Operators
) -> None:
    await operators.start()
    created = await cluster.create(TJ, training_job("digits-base"))
    uid = created["metadata"]["uid"]
    job = await eventually(lambda: cluster.get("batch/v1/jobs", "digits-base"), "the Job")
    (owner,) = job["metadata"]["ownerReferences"]
    assert (owner["apiVersion"], owner["kind"], owner["name"], owner["uid"]) == (
        API,
        "TrainingJob",
        "digits-base",
        uid,
    )
    assert owner["controller"] is True
    status = await eventually(lambda: _phase_is(cluster, "digits-base", "Pending"), "Pending")
    assert status["jobName"] == "digits-base"
    assert condition(status, "Ready")["observedGeneration"] == 1
    events = await eventually(lambda: cluster.events("digits-base"), "the Started event")
    started = next(e for e in events if e["reason"] == "Started")
    involved = started["involvedObject"]
    assert (involved["kind"], involved["uid"], involved["namespace"]) == (
        "TrainingJob",
        uid,
        cluster.namespace,
    )
    # The real Job controller makes the pod; with no scheduler it stays Pending.
    pod = await eventually(lambda: kubelet.job_pod(cluster, "digits-base"), "the Job's pod")
    assert pod["status"]["phase"] == "Pending"

    await cluster.delete(TJ, "digits-base")

    async def collected() -> bool:
        children = [
            await cluster.get("batch/v1/jobs", "digits-base"),
            await kubelet.job_pod(cluster, "digits-base"),
        ]
        return children == [None, None]

    await eventually(collected, "the garbage collector removing Job and pod", 60)


async def test_the_trainer_runs_in_the_pod_and_its_version_reaches_the_status(
    cluster: Cluster,
    operators: Operators,
    mlflow_server: services.Service,
    s3_server: services.Service,
    tmp_path: Path,
) -> None:
    await cluster.create("v1/secrets", s3_secret("kubeloop-s3"))  # KUBELOOP_S3_SECRET_NAME
    await operators.start(
        KUBELOOP_MLFLOW_TRACKING_URI=mlflow_server.url, KUBELOOP_S3_ENDPOINT=s3_server.url
    )
    model = f"envtest-{uuid.uuid4().hex[:8]}"
    quick = training_job("digits-quick", registeredModel=model, args={"epochs": 1})
    created = await cluster.create(TJ, quick)
    pod = await eventually(lambda: kubelet.job_pod(cluster, "digits-quick"), "the Job's pod")

    await kubelet.report_running(cluster, pod)
    await eventually(lambda: _phase_is(cluster, "digits-quick", "Running"), "phase Running")
    exited = await kubelet.run_container(
        cluster, pod, "trainer", tmp_path / "node", TRAINING_TIMEOUT
    )
    assert exited.code == 0, exited.output[-4000:]
    await kubelet.report_terminated(cluster, pod, "trainer", exited)

    status = await eventually(
        lambda: _phase_is(cluster, "digits-quick", "Succeeded"), "phase Succeeded", 60
    )
    result = TrainingResult.parse(exited.message)
    assert (status["modelVersion"], status["mlflowRunId"]) == (
        result.model_version,
        result.mlflow_run_id,
    )
    assert status["metrics"]["overall"] == pytest.approx(result.metrics.overall)
    assert condition(status, "Succeeded")["status"] == "True"
    job = await cluster.get("batch/v1/jobs", "digits-quick")
    assert job is not None
    assert condition(job["status"], "Complete")["status"] == "True", "the Job controller's"
    version = await asyncio.to_thread(
        Registry(mlflow_server.url).get_version, model, result.model_version
    )
    assert version.tags["kubeloop.trainingJob"] == "digits-quick"
    await cluster.said("digits-quick", "Started", "Running", "Succeeded")
    # The trainer read the TrainingJob's uid (a retried pod finds its version by it).
    assert version.tags["kubeloop.trainingJobUid"] == created["metadata"]["uid"]


async def _phase_is(cluster: Cluster, name: str, phase: str) -> dict[str, Any] | None:
    status = await status_of(cluster, TJ, name)
    return status if status.get("phase") == phase else None
