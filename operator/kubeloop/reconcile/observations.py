"""Read Kubernetes children's status into the runtime-neutral observations decisions take.

A batch Job and its pods become a `TrainerState`, as do a TrainJob or a JobSet and theirs; an
InferenceService or a Deployment becomes a `ServingState`. No side effects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from kubeloop.api.training_result import TrainingFailure
from kubeloop.api.trainingjob import TrainingProgress
from kubeloop.reconcile.common import COMPLETION_INDEX
from kubeloop.reconcile.ports import ServingState, TrainerState

TRAINER_CONTAINER = "trainer"
_WAITING_IS_NEWS = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
}


def _true_conditions(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {
        str(c.get("type")): c for c in status.get("conditions") or [] if c.get("status") == "True"
    }


def _trainer_status(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for container in statuses:
        if container.get("name") == TRAINER_CONTAINER:
            return dict(container)
    return dict(statuses[0]) if statuses else {}


def _newest_first(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(
        pods,
        key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""),
        reverse=True,
    )


def job_fingerprint(job: Mapping[str, Any]) -> str:
    """What of a batch Job a TrainingJob's status depends on: its status and suspension.

    Job events that leave it unchanged (metadata, labels, finalizers, the event for the Job
    the operator just created) need no reconcile.
    """
    suspended = bool((job.get("spec") or {}).get("suspend"))
    return json.dumps([job.get("status") or {}, suspended], sort_keys=True)


def pod_fingerprint(pod: Mapping[str, Any]) -> str:
    """What of a trainer's pod a TrainingJob's status depends on: its phase and the trainer
    container's state (waiting for what, running, how it ended)."""
    state = _trainer_status(pod).get("state") or {}
    kinds = {kind: (value or {}).get("reason") for kind, value in state.items()}
    return json.dumps([(pod.get("status") or {}).get("phase"), kinds], sort_keys=True)


def trainer_state(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> TrainerState:
    """The trainer's state from its batch Job and the Job's pods.

    Success and failure come from the Job's conditions; the result and the failure's details
    from the pods' trainer containers (their termination message); Pending reasons from
    waiting containers, unschedulable pods, or a suspended Job (waiting for admission by a
    queue such as Kueue).
    """
    status = job.get("status") or {}
    true = _true_conditions(status)
    start = status.get("startTime")
    newest = _newest_first(pods)
    if "Complete" in true:
        result = None
        for pod in newest:
            terminated = (_trainer_status(pod).get("state") or {}).get("terminated") or {}
            if terminated.get("exitCode") == 0:
                result = terminated.get("message")
                break
        completed = status.get("completionTime") or true["Complete"].get("lastTransitionTime")
        return TrainerState("Succeeded", start, completed, result=result)
    if "Failed" in true:
        condition = true["Failed"]
        reason = str(condition.get("reason") or "Failed")
        message = str(condition.get("message") or "the Job failed")
        for pod in newest:
            terminated = (_trainer_status(pod).get("state") or {}).get("terminated") or {}
            if terminated and terminated.get("exitCode") != 0:
                name = (pod.get("metadata") or {}).get("name")
                detail = failure_detail(str(terminated.get("message") or ""))
                message += (
                    f"; pod {name}: the trainer exited with code {terminated.get('exitCode')} "
                    f"({terminated.get('reason') or 'Error'})" + (f": {detail}" if detail else "")
                )
                break
        return TrainerState("Failed", start, condition.get("lastTransitionTime"), reason, message)
    if (job.get("spec") or {}).get("suspend") or "Suspended" in true:
        return TrainerState(
            "Pending",
            start,
            reason="Suspended",
            message="the Job is suspended, e.g. waiting for admission by a queue (Kueue)",
        )
    for pod in newest:
        if (pod.get("status") or {}).get("phase") == "Running":
            return TrainerState("Running", start)
    for pod in newest:
        pod_status = pod.get("status") or {}
        waiting = (_trainer_status(pod).get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _WAITING_IS_NEWS:
            return TrainerState(
                "Pending",
                start,
                reason=str(waiting["reason"]),
                message=str(waiting.get("message") or ""),
            )
        for condition in pod_status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                return TrainerState(
                    "Pending",
                    start,
                    reason=str(condition.get("reason") or "Unschedulable"),
                    message=str(condition.get("message") or ""),
                )
    if int(status.get("ready") or 0) > 0:
        return TrainerState("Running", start)
    return TrainerState("Pending", start)


def nodes_state(engine: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> TrainerState:
    """The trainer's state on several nodes, from a TrainJob's or a JobSet's conditions
    (Complete or Completed, Failed, Suspended) and the nodes' pods: the result from the first
    node's (node rank 0, whose rank 0 writes it), a failure's details from any."""
    status = engine.get("status") or {}
    conditions = [
        {**c, "type": "Complete"} if c.get("type") == "Completed" else c
        for c in status.get("conditions") or []
    ]
    starts = [str(s) for p in pods if (s := (p.get("status") or {}).get("startTime"))]
    job_like = {
        "spec": {"suspend": (engine.get("spec") or {}).get("suspend")},
        "status": {"conditions": conditions, "startTime": min(starts, default=None)},
    }
    first = [
        p
        for p in pods
        if ((p.get("metadata") or {}).get("annotations") or {}).get(COMPLETION_INDEX) == "0"
    ]
    done = "Complete" in _true_conditions(job_like["status"])
    return trainer_state(job_like, first if done else pods)


PROGRESS_LOG_LINES = 50
"""Lines of the trainer's log tail read for its last epoch line."""
_EPOCH_LINE = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) INFO epoch (?P<epoch>\d+)/(?P<epochs>\d+)"
    r"(?P<metrics>( \S+=\S+)*)$"
)


def progress_from_log(text: str) -> TrainingProgress | None:
    """The trainer's progress from its log: the last `epoch N/M name=value ...` line the
    trainer entrypoint writes after each epoch (rank 0 alone); None before the first."""
    for line in reversed(text.splitlines()):
        found = _EPOCH_LINE.search(line.strip())  # after a prefix torchrun may add
        if found is None:
            continue
        epoch, epochs = int(found["epoch"]), int(found["epochs"])
        metrics = {}
        for pair in found["metrics"].split():
            name, _, value = pair.partition("=")
            try:
                metrics[name] = float(value)
            except ValueError:
                continue
        return TrainingProgress(
            epoch=epoch,
            epochs=epochs,
            percent=min(100, 100 * epoch // max(epochs, 1)),
            metrics=metrics,
            update_time=found["time"],
        )
    return None


def failure_detail(message: str, limit: int = 1500) -> str:
    """A failed trainer's termination message for a person: its TrainingFailure described
    (error, message, last log lines), or the text as it is (a crash's log tail)."""
    failure = TrainingFailure.parse(message)
    text = failure.describe() if failure is not None else message.strip()
    return text[:limit]


def inference_service_state(isvc: Mapping[str, Any]) -> ServingState:
    """Readiness and URL of a KServe InferenceService, from its Ready condition."""
    status = isvc.get("status") or {}
    url = status.get("url") or (status.get("address") or {}).get("url")
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is not None and ready.get("status") == "True":
        return ServingState(True, url)
    reason = str((ready or {}).get("reason") or "PredictorNotReady")
    message = str(
        (ready or {}).get("message") or "waiting for KServe to roll out the InferenceService"
    )
    return ServingState(False, url, reason, message)


def deployment_state(deployment: Mapping[str, Any], url: str) -> ServingState:
    """Readiness of a predictor Deployment: at least one available replica."""
    status = deployment.get("status") or {}
    if int(status.get("availableReplicas") or 0) > 0:
        return ServingState(True, url)
    for condition in status.get("conditions") or []:
        if condition.get("status") == "False" and condition.get("type") in (
            "Progressing",
            "ReplicaFailure",
            "Available",
        ):
            return ServingState(
                False,
                url,
                str(condition.get("reason") or "PredictorNotReady"),
                str(condition.get("message") or ""),
            )
    return ServingState(False, url, "PredictorNotReady", "no predictor replica is available yet")
