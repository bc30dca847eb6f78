"""TrainingJob through the real operator: the Job, status following the Job, failure
reasons, InvalidSpec, and a finished job never restarted when its Job goes (TTL)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import yaml

from tests.api.conftest import Cluster
from tests.operator_harness import (
    TJ,
    Operator,
    OperatorFactory,
    condition,
    eventually,
    status_of,
    training_job,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]
RESULT = {
    "trainingJob": "digits-base",
    "registeredModel": "digits",
    "modelVersion": "3",
    "mlflowRunId": "abc123",
    "metrics": {"overall": 0.97, "slices": {"base": 0.98, "new-user": 0.91}},
    "onnxMaxAbsDiff": 1e-6,
    "trainSeconds": 42.0,
    "device": "cuda:0",
}


def pod(job: dict[str, Any], name: str, state: dict[str, Any], phase: str) -> dict[str, Any]:
    """A pod of `job`, as the Job controller and the kubelet would report it."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": job["spec"]["template"]["metadata"]["labels"],
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": job["metadata"]["name"],
                    "uid": job["metadata"].get("uid", ""),
                    "controller": True,
                }
            ],
        },
        "spec": job["spec"]["template"]["spec"],
        "status": {"phase": phase, "containerStatuses": [{"name": "trainer", "state": state}]},
    }


async def test_job_runs_the_trainer_and_status_follows_it(
    cluster: Cluster, operator: OperatorFactory
) -> None:
    running = await operator()
    spec = {
        "resources": {"cpu": "2", "memory": "4Gi", "gpu": 1},
        "backoffLimit": 2,
        "ttlSecondsAfterFinished": 600,
        "credentials": [{"name": "hf-token", "key": "HF_TOKEN"}],
        "template": {
            "labels": {"kueue.x-k8s.io/queue-name": "gpu-queue"},
            "annotations": {"team": "vision"},
            "nodeSelector": {"accelerator": "a100"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "serviceAccountName": "trainer",
        },
    }
    await cluster.create(TJ, training_job("digits-base", **spec))
    job = await eventually(lambda: cluster.get("batch/v1/jobs", "digits-base"), "the Job")
    annotations = job["spec"]["template"]["metadata"]["annotations"]
    mounted = yaml.safe_load(annotations["kubeloop.io/trainingjob-manifest"])
    assert mounted["kind"] == "TrainingJob"
    assert mounted["spec"]["resources"]["gpu"] == 1

    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "TrainingJob",
        "digits-base",
        "uid-digits-base",
        True,
    )
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    template = job["spec"]["template"]
    assert template["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert template["metadata"]["annotations"]["team"] == "vision"
    assert (job["spec"]["backoffLimit"], job["spec"]["ttlSecondsAfterFinished"]) == (2, 600)
    pod_spec = template["spec"]
    assert pod_spec["nodeSelector"] == {"accelerator": "a100"}
    assert pod_spec["serviceAccountName"] == "trainer"
    (container,) = pod_spec["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "HF_TOKEN"}
    assert env["KUBELOOP_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "kubeloop-s3"
    assert all("value" not in e for n, e in env.items() if "KEY" in n or "TOKEN" in n)
    status = await eventually(
        lambda: status_of(cluster, TJ, "digits-base"), "the TrainingJob's first status"
    )
    assert (status["phase"], status["jobName"]) == ("Pending", "digits-base")

    # The Job controller starts the pod; the trainer runs, then writes its result and exits.
    job = await cluster.patch(
        "batch/v1/jobs",
        "digits-base",
        {"status": {"active": 1, "startTime": "2026-01-01T10:00:00Z"}},
        "status",
    )
    await cluster.create("v1/pods", pod(job, "digits-base-abcde", {"running": {}}, "Running"))
    await cluster.patch("batch/v1/jobs", "digits-base", {"status": {"ready": 1}}, "status")
    await eventually(
        lambda: _phase_is(cluster, "digits-base", "Running"), "phase Running", timeout=15
    )
    terminated = {
        "terminated": {"exitCode": 0, "reason": "Completed", "message": json.dumps(RESULT)}
    }
    await cluster.patch(
        "v1/pods",
        "digits-base-abcde",
        {
            "status": {
                "phase": "Succeeded",
                "containerStatuses": [{"name": "trainer", "state": terminated}],
            }
        },
        "status",
    )
    await cluster.patch(
        "batch/v1/jobs",
        "digits-base",
        {
            "status": {
                "active": 0,
                "succeeded": 1,
                "completionTime": "2026-01-01T10:05:00Z",
                "conditions": [{"type": "Complete", "status": "True"}],
            }
        },
        "status",
    )
    status = await eventually(lambda: _phase_is(cluster, "digits-base", "Succeeded"), "Succeeded")
    assert (status["mlflowRunId"], status["modelVersion"]) == ("abc123", "3")
    assert status["metrics"] == {"overall": 0.97, "slices": {"base": 0.98, "new-user": 0.91}}
    assert (status["startTime"], status["completionTime"]) == (
        "2026-01-01T10:00:00Z",
        "2026-01-01T10:05:00Z",
    )
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Succeeded")["observedGeneration"] == 1
    reasons = await eventually(
        lambda: _has(cluster, "digits-base", {"Started", "Running", "Succeeded"}), "the events"
    )
    assert reasons.count("Started") == 1

    # ttlSecondsAfterFinished removes the Job: the finished TrainingJob must not run again.
    await cluster.delete("batch/v1/jobs", "digits-base")
    await cluster.patch(TJ, "digits-base", {"metadata": {"labels": {"touched": "yes"}}})
    exported = await eventually(
        lambda: _metric_line(running, 'kubeloop_trainingjobs{phase="Succeeded"} 1.0'),
        "the phase gauge",
    )
    assert "kubeloop_trainingjob_duration_seconds_count" in exported
    assert await cluster.get("batch/v1/jobs", "digits-base") is None
    assert (await status_of(cluster, TJ, "digits-base"))["phase"] == "Succeeded"


async def test_only_a_change_of_the_jobs_status_reconciles(
    cluster: Cluster, operator: OperatorFactory
) -> None:
    running = await operator()
    await cluster.create(TJ, training_job("quiet"))
    await eventually(lambda: _phase_is(cluster, "quiet", "Pending"), "the first status")
    # One reconcile: the Job's own creation event is what that reconcile already saw.
    assert await eventually(lambda: _reconciles(running, at_least=1), "the count") == 1

    # A metadata-only change of the Job (the Job controller's labels): nothing to do.
    await cluster.patch("batch/v1/jobs", "quiet", {"metadata": {"labels": {"extra": "yes"}}})
    await asyncio.sleep(1.0)  # longer than kopf's batching window, so it is not merged
    started = {"active": 1, "startTime": "2026-01-01T10:00:00Z"}
    await cluster.patch("batch/v1/jobs", "quiet", {"status": started}, "status")
    await eventually(
        lambda: _status_has(cluster, "quiet", startTime="2026-01-01T10:00:00Z"), "the start time"
    )
    assert await eventually(lambda: _reconciles(running, at_least=2), "the count") == 2


async def test_failed_job_reports_the_reason(cluster: Cluster, operator: OperatorFactory) -> None:
    await operator()
    await cluster.create(TJ, training_job("broken"))
    job = await eventually(lambda: cluster.get("batch/v1/jobs", "broken"), "the Job")
    crashed = {"terminated": {"exitCode": 1, "reason": "Error", "message": "CUDA out of memory"}}
    await cluster.create("v1/pods", pod(job, "broken-xyz", crashed, "Failed"))
    failed = {
        "type": "Failed",
        "status": "True",
        "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit",
        "lastTransitionTime": "2026-01-01T11:00:00Z",
    }
    await cluster.patch("batch/v1/jobs", "broken", {"status": {"conditions": [failed]}}, "status")
    status = await eventually(lambda: _phase_is(cluster, "broken", "Failed"), "phase Failed")
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "BackoffLimitExceeded")
    assert "CUDA out of memory" in ready["message"]
    assert condition(status, "Succeeded")["status"] == "False"
    events = await eventually(lambda: _warnings(cluster, "broken"), "a Warning event")
    assert "BackoffLimitExceeded" in events[0]["message"]


@pytest.mark.without_trainer
async def test_invalid_spec_is_reported_and_nothing_runs(
    cluster: Cluster, operator: OperatorFactory
) -> None:
    await operator()
    bad_label = training_job("bad-label", template={"labels": {"not a key!": "x"}})
    both = training_job(
        "bad-dataset", datasets=[{"name": "d", "uri": "s3://b/k", "feedbackDataset": "fd"}]
    )
    nodes = training_job("nodes", distributed={"numNodes": 2, "numProcPerNode": 4})
    for body in (bad_label, both, nodes):
        await cluster.create(TJ, body)
    for name, words in (
        ("bad-label", "template.labels"),
        ("bad-dataset", "exactly one of"),
        ("nodes", "numNodes: 2 needs a multi-node engine, Kubeflow Trainer's TrainJob (v2,"),
    ):
        status = await eventually(lambda n=name: status_of(cluster, TJ, n), f"{name}'s status")  # type: ignore[misc]  # default binds the loop variable
        ready = condition(status, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
        assert words in ready["message"]
        await cluster.said(name, "InvalidSpec")
    assert await cluster.list_objects("batch/v1/jobs") == []


async def test_a_trainjob_name_kubeflow_trainer_refuses_is_said(
    cluster: Cluster, operator: OperatorFactory
) -> None:
    await operator()
    await cluster.create(TJ, training_job("2-nodes", distributed={"numNodes": 2}))
    status = await eventually(lambda: status_of(cluster, TJ, "2-nodes"), "its status")
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "starts with a letter, and 2-nodes does not: rename the TrainingJob" in ready["message"]
    assert await cluster.list_objects("trainer.kubeflow.org/v1alpha1/trainjobs") == []


def node_pod(
    trainjob: dict[str, Any], index: int, state: dict[str, Any], phase: str
) -> dict[str, Any]:
    """Node `index`'s pod of a TrainJob, as Kubeflow Trainer (through JobSet) makes it from
    the runtime patch: kubeloop's labels, the completion index the Job controller adds."""
    patch = trainjob["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]
    template = patch["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    annotations = {"batch.kubernetes.io/job-completion-index": str(index)}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{trainjob['metadata']['name']}-node-0-{index}-x",
            "labels": template["metadata"]["labels"],
            "annotations": annotations,
        },
        "status": {"phase": phase, "containerStatuses": [{"name": "node", "state": state}]},
    }


async def test_several_nodes_run_as_a_trainjob_whose_first_node_reports(
    cluster: Cluster, operator: OperatorFactory
) -> None:
    await operator()
    await cluster.create(
        TJ, training_job("nodes", distributed={"numNodes": 2, "numProcPerNode": 4})
    )
    trainjob = await eventually(
        lambda: cluster.get("trainer.kubeflow.org/v1alpha1/trainjobs", "nodes"), "the TrainJob"
    )
    assert trainjob["metadata"]["ownerReferences"][0]["kind"] == "TrainingJob"
    assert (
        trainjob["spec"]["trainer"]["numNodes"],
        trainjob["spec"]["trainer"]["numProcPerNode"],
    ) == (2, 4)
    assert await cluster.list_objects("batch/v1/jobs") == []

    for index in (0, 1):
        await cluster.create("v1/pods", node_pod(trainjob, index, {"running": {}}, "Running"))
    await eventually(lambda: _phase_is(cluster, "nodes", "Running"), "Running from the nodes")

    result = json.dumps({**RESULT, "trainingJob": "nodes"})
    finished = {"terminated": {"exitCode": 0, "reason": "Completed", "message": result}}
    quiet = {"terminated": {"exitCode": 0, "reason": "Completed"}}  # node 1 writes nothing
    for index, state in ((1, quiet), (0, finished)):
        done = node_pod(trainjob, index, state, "Succeeded")
        await cluster.patch(
            "v1/pods", done["metadata"]["name"], {"status": done["status"]}, "status"
        )
    complete = {"conditions": [{"type": "Complete", "status": "True", "reason": "JobsCompleted"}]}
    await cluster.patch(
        "trainer.kubeflow.org/v1alpha1/trainjobs", "nodes", {"status": complete}, "status"
    )
    status = await eventually(lambda: _phase_is(cluster, "nodes", "Succeeded"), "Succeeded")
    assert (status["modelVersion"], status["mlflowRunId"]) == ("3", "abc123")


async def _phase_is(cluster: Cluster, name: str, phase: str) -> dict[str, Any] | None:
    status = await status_of(cluster, TJ, name)
    return status if status.get("phase") == phase else None


async def _has(cluster: Cluster, name: str, reasons: set[str]) -> list[str] | None:
    found = await cluster.reasons(name)
    return found if reasons <= set(found) else None


async def _warnings(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    return [e for e in await cluster.events(name) if e["type"] == "Warning"]


async def _status_has(cluster: Cluster, name: str, **expected: Any) -> dict[str, Any] | None:
    status = await status_of(cluster, TJ, name)
    return status if all(status.get(k) == v for k, v in expected.items()) else None


async def _reconciles(running: Operator, at_least: int) -> float | None:
    """TrainingJob reconciles the operator counted, once there are `at_least`."""
    found = await running.reconciles("TrainingJob")
    return found if found >= at_least else None


async def _metric_line(running: Any, line: str) -> str | None:
    text: str = await running.metrics()
    return text if line in text else None
