"""ServedModel on Kubernetes: a KServe InferenceService (or Deployment + Service) running the
predictor, and the registry poll that gates, canaries and promotes new versions."""

from __future__ import annotations

import contextlib
from typing import Any

from kubeloop import metrics
from kubeloop.api import conditions, validation
from kubeloop.api.feedbackdataset import FeedbackDataset, FeedbackDatasetSpec
from kubeloop.api.servedmodel import Gate, ServedModel, ServedModelStatus
from kubeloop.kube.client import (
    DEPLOYMENTS,
    FEEDBACKDATASETS,
    INFERENCESERVICES,
    SERVEDMODELS,
    SERVICES,
    Conflict,
    Resource,
)
from kubeloop.kube.runtime import Retry, Runtime, is_owned_by
from kubeloop.reconcile import builders, observations, servedmodel
from kubeloop.reconcile.common import (
    Event,
    Owner,
    generation,
    is_subset,
    parse,
    read_status,
    spec_body,
    without_nulls,
)
from kubeloop.registry import RegistryUnavailable

KIND = "ServedModel"


def reconcile(rt: Runtime, namespace: str, name: str) -> None:
    """Serve the version behind the alias; judge, canary and promote newer versions."""
    body = rt.client.get(SERVEDMODELS, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    old = read_status(ServedModelStatus, body)
    now = rt.now()
    sm, problems = parse(ServedModel, body, lambda sm: servedmodel.spec_problems(sm.spec))
    if sm is None or problems:
        _stop(rt, body, old, "InvalidSpec", "; ".join(problems))
        return
    spec = sm.spec
    if spec.runtime == "kserve" and not rt.serves(INFERENCESERVICES):
        _stop(
            rt,
            body,
            old,
            "KServeNotInstalled",
            "KServe's InferenceService CRD (serving.kserve.io/v1beta1) is not installed in this "
            "cluster: install KServe, or set spec.runtime: deployment to serve with a plain "
            "Deployment and Service",
        )
        return
    feedback, events = _feedback(rt, sm, old)

    try:
        plan = servedmodel.roll_out(spec, old, generation(body), rt.registry(), now)
    except RegistryUnavailable as error:
        status = servedmodel.registry_unavailable(old, generation(body), str(error), now)
        rt.write_status(SERVEDMODELS, body, status)
        rolled = conditions.get_condition(old.conditions, "RolledOut")
        if rolled is None or rolled.reason != "RegistryUnavailable":
            rt.emit(body, [Event("Warning", "RegistryUnavailable", str(error))])
        raise Retry(str(error)) from error

    state = None
    if plan.deploy is not None:
        if spec.runtime == "kserve":
            state = _apply_inference_service(rt, sm, body, plan.deploy, feedback)
        else:
            state = _apply_deployments(rt, sm, Owner.of(body), plan.deploy, feedback)
    if old.observed_generation != generation(body):
        _remove_other_runtime(rt, sm, body)
    status = servedmodel.decide_ready(plan, state, generation(body), now)
    rt.write_status(SERVEDMODELS, body, status)
    rt.emit(body, [*events, *plan.events])
    _observe(namespace, name, status, plan.new_verdict)


def _feedback(
    rt: Runtime, sm: ServedModel, old: ServedModelStatus
) -> tuple[tuple[str, FeedbackDatasetSpec] | None, list[Event]]:
    """The referenced FeedbackDataset's spec for the predictor's feedback arguments.

    A missing or invalid one does not stop serving; it is said in a Warning event, once.
    """
    name = sm.spec.feedback_dataset
    if name is None:
        return None, []
    body = rt.client.get(FEEDBACKDATASETS, sm.metadata.namespace, name)
    if body is not None and not validation.model_errors(body):
        dataset = FeedbackDataset.model_validate(spec_body(body))
        return (name, dataset.spec), []
    if old.observed_generation == sm.metadata.generation and old.conditions:
        return None, []  # said when this generation was first reconciled
    return None, [
        Event(
            "Warning",
            "FeedbackDatasetNotFound",
            f"FeedbackDataset {name} is missing or invalid: serving without collecting feedback",
        )
    ]


def _apply(rt: Runtime, resource: Resource, desired: dict[str, Any]) -> dict[str, Any]:
    """Create `desired`, or merge-patch the existing object when it differs; return it."""
    namespace, name = desired["metadata"]["namespace"], desired["metadata"]["name"]
    current = rt.client.get(resource, namespace, name)
    if current is None:
        try:
            return rt.client.create(resource, namespace, without_nulls(desired))
        except Conflict:
            current = rt.client.get(resource, namespace, name) or {}
    labels = desired["metadata"]["labels"]
    if is_subset(desired["spec"], current.get("spec")) and is_subset(
        labels, current.get("metadata", {}).get("labels") or {}
    ):
        return current
    patch = {"metadata": {"labels": labels}, "spec": desired["spec"]}
    return rt.client.patch(resource, namespace, name, patch)


def _apply_inference_service(
    rt: Runtime,
    sm: ServedModel,
    body: dict[str, Any],
    deploy: servedmodel.Deploy,
    feedback: tuple[str, FeedbackDatasetSpec] | None,
) -> servedmodel.ServingState:
    desired = builders.build_inference_service(sm, Owner.of(body), rt.defaults, deploy, feedback)
    if deploy.canary_uri is None:
        # The merge patch must remove a finished canary's traffic split, not keep it.
        desired["spec"]["predictor"]["canaryTrafficPercent"] = None
    name = desired["metadata"]["name"]
    current = rt.client.get(INFERENCESERVICES, sm.metadata.namespace, name)
    if current is not None and not is_owned_by(current, body):
        return servedmodel.ServingState(
            False,
            None,
            "NameConflict",
            f"InferenceService {name} exists and does not belong to this ServedModel",
        )
    return observations.inference_service_state(_apply(rt, INFERENCESERVICES, desired))


def _apply_deployments(
    rt: Runtime,
    sm: ServedModel,
    owner: Owner,
    deploy: servedmodel.Deploy,
    feedback: tuple[str, FeedbackDatasetSpec] | None,
) -> servedmodel.ServingState:
    stable_replicas = max(sm.spec.min_replicas, 1)
    stable = _apply(
        rt,
        DEPLOYMENTS,
        builders.build_deployment(
            sm, owner, rt.defaults, deploy.stable_uri, "stable", stable_replicas, feedback
        ),
    )
    canary_name = builders.predictor_name(sm.metadata.name, "canary")
    if deploy.canary_uri is not None:
        replicas = builders.canary_replicas(stable_replicas, deploy.canary_percent)
        _apply(
            rt,
            DEPLOYMENTS,
            builders.build_deployment(
                sm, owner, rt.defaults, deploy.canary_uri, "canary", replicas, feedback
            ),
        )
    else:
        rt.client.delete(DEPLOYMENTS, sm.metadata.namespace, canary_name)
    _apply(rt, SERVICES, builders.build_service(sm, owner))
    return observations.deployment_state(stable, builders.service_url(sm))


def _remove_other_runtime(rt: Runtime, sm: ServedModel, body: dict[str, Any]) -> None:
    """After a spec change, delete the children of the runtime no longer chosen."""
    namespace, name = sm.metadata.namespace, sm.metadata.name
    if sm.spec.runtime == "kserve":
        others = [
            (DEPLOYMENTS, builders.predictor_name(name)),
            (DEPLOYMENTS, builders.predictor_name(name, "canary")),
            (SERVICES, builders.service_name(name)),
        ]
    elif rt.serves(INFERENCESERVICES):
        others = [(INFERENCESERVICES, builders.inference_service_name(name))]
    else:
        others = []
    for resource, child in others:
        found = rt.client.get(resource, namespace, child)
        if found is not None and is_owned_by(found, body):
            rt.client.delete(resource, namespace, child)


def _stop(
    rt: Runtime,
    body: dict[str, Any],
    old: ServedModelStatus,
    reason: str,
    message: str,
) -> None:
    """Write Ready=False with `reason`; a Warning event when the reason is new."""
    previous = conditions.get_condition(old.conditions, "Ready")
    status = servedmodel.not_servable(old, generation(body), reason, message, rt.now())
    rt.write_status(SERVEDMODELS, body, status)
    if previous is None or previous.reason != reason:
        rt.emit(body, [Event("Warning", reason, message)])


_exported: dict[tuple[str, str], str] = {}
"""The serving version each ServedModel's info metric carries, to drop it when it changes."""


def _observe(namespace: str, name: str, new: ServedModelStatus, verdict: Gate | None) -> None:
    if new.serving_version != _exported.get((namespace, name)):
        forget(namespace, name)
    if new.serving_version is not None:
        metrics.SERVING_VERSION.labels(namespace, name, new.serving_version).set(1)
        _exported[(namespace, name)] = new.serving_version
    if verdict is not None:
        metrics.GATE_VERDICTS.labels(verdict.verdict).inc()
        for slice_name, delta in verdict.slice_deltas.items():
            metrics.GATE_SLICE_DELTA.labels(namespace, name, slice_name).set(delta)


def forget(namespace: str, name: str) -> None:
    """Stop exporting the serving version of a ServedModel (deleted, or serving another)."""
    version = _exported.pop((namespace, name), None)
    if version is not None:
        with contextlib.suppress(KeyError):
            metrics.SERVING_VERSION.remove(namespace, name, version)
