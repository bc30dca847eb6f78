"""TrainingJob on Kubernetes: a batch Job (with its spec in a ConfigMap) runs the trainer.

The status follows the Job and its pods, through kubeloop.reconcile.trainingjob.decide.
"""

from __future__ import annotations

import threading
from typing import Any

from kubeloop import metrics
from kubeloop.api.trainingjob import Phase, TrainingJob, TrainingJobStatus
from kubeloop.kube.client import CONFIGMAPS, JOBS, PODS, TRAININGJOBS, Conflict
from kubeloop.kube.runtime import Runtime, is_owned_by
from kubeloop.reconcile import builders, observations, trainingjob
from kubeloop.reconcile.common import (
    LABEL_TRAININGJOB,
    Owner,
    format_time,
    generation,
    parse,
    parse_time,
    read_status,
)

KIND = "TrainingJob"
_PHASES: tuple[Phase, ...] = ("Pending", "Running", "Succeeded", "Failed")
_phases: dict[str, Phase] = {}
_phases_lock = threading.Lock()


def reconcile(rt: Runtime, namespace: str, name: str) -> None:
    """Start the trainer if it is not running and the job has not finished; follow it."""
    body = rt.client.get(TRAININGJOBS, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        forget(namespace, name)
        rt.saw_job(namespace, builders.job_name(name), None)
        return
    old = read_status(TrainingJobStatus, body)
    tj, problems = parse(TrainingJob, body, lambda tj: trainingjob.spec_problems(tj.spec))

    job_name = builders.job_name(name)
    job = rt.client.get(JOBS, namespace, job_name)
    trainer = None
    if job is not None and not is_owned_by(job, body):
        problems = [
            *problems,
            f"a Job named {job_name} exists and does not belong to this TrainingJob; delete it "
            "or rename the TrainingJob",
        ]
        job = None
    if job is not None:
        pods = rt.client.list_objects(PODS, namespace, {LABEL_TRAININGJOB: job_name})
        pods = [p for p in pods if is_owned_by(p, job) or not job["metadata"].get("uid")]
        trainer = observations.trainer_state(job, pods)

    now = rt.now()
    plan = trainingjob.decide(old, generation(body), trainer, job_name, problems, format_time(now))
    if plan.start_trainer and tj is not None:
        job = _start(rt, tj, body)
    rt.write_status(TRAININGJOBS, body, plan.status)
    rt.emit(body, plan.events)
    _observe(namespace, name, plan)
    rt.saw_job(namespace, job_name, job)


def _start(rt: Runtime, tj: TrainingJob, body: dict[str, object]) -> dict[str, Any] | None:
    """Create the ConfigMap (refreshed if a crash left an old one) and then the Job.

    Returns the created Job, or None when an earlier, interrupted reconcile had created it.
    """
    owner = Owner.of(body)
    namespace = tj.metadata.namespace
    configmap = builders.build_configmap(tj, owner)
    try:
        rt.client.create(CONFIGMAPS, namespace, configmap)
    except Conflict:
        # No Job reads it yet (the Job is created next): bring it up to date.
        rt.client.patch(CONFIGMAPS, namespace, configmap["metadata"]["name"], configmap)
    try:
        return rt.client.create(JOBS, namespace, builders.build_job(tj, owner, rt.defaults))
    except Conflict:
        return None  # an earlier, interrupted reconcile created it: the next one follows it


def forget(namespace: str, name: str) -> None:
    """Drop a deleted TrainingJob from the phase gauge."""
    with _phases_lock:
        _phases.pop(f"{namespace}/{name}", None)
        _export_phases()


def _observe(namespace: str, name: str, plan: trainingjob.TrainingJobPlan) -> None:
    status = plan.status
    with _phases_lock:
        _phases[f"{namespace}/{name}"] = status.phase
        _export_phases()
    if plan.finished:
        start, end = parse_time(status.start_time), parse_time(status.completion_time)
        if start is not None and end is not None:
            metrics.TRAININGJOB_SECONDS.labels(status.phase).observe(
                max(0.0, (end - start).total_seconds())
            )


def _export_phases() -> None:
    for phase in _PHASES:
        metrics.TRAININGJOBS.labels(phase).set(sum(1 for p in _phases.values() if p == phase))
