"""The reconciles' ports on Kubernetes: objects and Events through the API server, trainers
as batch Jobs, predictors as InferenceServices (or Deployments and a Service), feedback in S3.

Children are written with server-side apply (field manager `kubeloop`, forced), so no code
guesses which fields the server defaulted; the controller ownerReference is added here, at
the edge, with kopf's helper, and Events go through kopf's poster. A batch Job is created
once rather than applied: its pod template cannot change, and "already exists" is success.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

import kopf

from kubeloop.api.common import ApiModel
from kubeloop.api.errors import Unavailable
from kubeloop.api.feedbackdataset import Storage
from kubeloop.api.servedmodel import ServedModel
from kubeloop.api.trainingjob import TrainingJob, TrainingProgress
from kubeloop.feedback_store import DatasetStore
from kubeloop.kube.client import (
    AUTOSCALERS,
    AUTOSCALERS_V2BETA2,
    DEPLOYMENTS,
    ENGINES,
    FEEDBACKDATASETS,
    INFERENCESERVICES,
    JOBS,
    JOBSETS,
    PODS,
    SERVEDMODELS,
    SERVICES,
    TRAININGJOBS,
    TRAINJOBS,
    ApiError,
    Conflict,
    Resource,
)
from kubeloop.kube.runtime import Runtime
from kubeloop.reconcile import builders, common, observations, trainingjob
from kubeloop.reconcile.common import COMPLETION_INDEX, LABEL_TRAININGJOB
from kubeloop.reconcile.ports import (
    Body,
    Deploy,
    Event,
    FeedbackRef,
    FeedbackStore,
    Ports,
    ServingState,
    TrainerObservation,
)

logger = logging.getLogger("kubeloop.operator")

RESOURCES: dict[str, Resource] = {
    "TrainingJob": TRAININGJOBS,
    "FeedbackDataset": FEEDBACKDATASETS,
    "ServedModel": SERVEDMODELS,
}


def ports(rt: Runtime) -> tuple[Ports, KubeTrainer]:
    """The ports of one reconcile, and its trainer port (which remembers the Job it saw)."""
    trainer = KubeTrainer(rt)
    return (
        Ports(
            objects=KubeObjects(rt),
            trainer=trainer,
            predictor=KubePredictor(rt),
            registry=rt.registry(),
            feedback=KubeFeedbackStores(rt),
        ),
        trainer,
    )


def owned(child: Body, owner: Body) -> Body:
    """`child` with the controller ownerReference to `owner`: deleted with it."""
    kopf.append_owner_reference(child, owner=kopf.Body(cast(kopf.RawBody, owner)))
    return child


class KubeObjects:
    """kubeloop's custom objects, their status subresource and Events."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    def get(self, kind: str, namespace: str, name: str) -> Body | None:
        try:
            return self._rt.client.get(RESOURCES[kind], namespace, name)
        except ApiError as error:
            if error.status != 403:
                raise
            raise Unavailable(
                f"the operator may not read {kind} {namespace}/{name} ({error.message})",
                reason="Forbidden",
            ) from error

    def create(self, manifest: Body, owner: Body) -> bool:
        namespace = manifest["metadata"]["namespace"]
        try:
            self._rt.client.create(RESOURCES[manifest["kind"]], namespace, owned(manifest, owner))
        except Conflict:
            return False
        return True

    def write_status(self, body: Body, status: ApiModel) -> None:
        """Merge-patch the status subresource from what `body` holds to `status`.

        Only the model's fields are compared: keys others keep in the status stay.
        """
        known = common.field_names(type(status))
        stored = {k: v for k, v in (body.get("status") or {}).items() if k in known}
        patch = merge_patch(stored, status.to_wire())
        if not patch:
            return
        namespace, name, kind = *common.name_of(body), body["kind"]
        self._rt.saw_version(kind, namespace, name, None)  # until the write is known to land
        try:
            written = self._rt.client.patch(
                RESOURCES[kind], namespace, name, {"status": patch}, "status"
            )
        except ApiError as error:
            if error.status != 404:  # 404: deleted meanwhile
                raise
            return
        self._rt.saw_version(kind, namespace, name, written["metadata"].get("resourceVersion"))

    def emit(self, body: Body, events: Sequence[Event]) -> None:
        namespace, name = common.name_of(body)
        for event in events:
            log = logger.warning if event.type == "Warning" else logger.info
            log("%s %s/%s: %s: %s", body.get("kind"), namespace, name, event.reason, event.message)
            # Outside kopf's handlers (tests, tools) there is no poster: logged only.
            with contextlib.suppress(LookupError):
                kopf.event(
                    kopf.Body(cast(kopf.RawBody, body)),
                    type=event.type,
                    reason=event.reason,
                    message=event.message,
                )


class KubeTrainer:
    """A TrainingJob's trainer as a batch Job, the TrainingJob manifest in its pod's
    annotation (mounted by the downward API); several nodes as Kubeflow Trainer's TrainJob,
    or a JobSet where only JobSet is installed."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self.job: Body | None = None
        """The Job (TrainJob, JobSet) this reconcile saw or created; the event filters
        remember it, and whose its pods are."""

    def observe(self, body: Body, *, recorded: bool = True) -> TrainerObservation:
        namespace, name = common.name_of(body)
        job_name = builders.job_name(name)
        nodes = _num_nodes(body)
        engine = self._kind(nodes)
        if engine is None:
            return TrainerObservation(job_name, None, trainingjob.multi_node_problem(nodes))
        if engine == TRAINJOBS and not job_name[:1].isalpha():
            problem = (
                f"Kubeflow Trainer names a TrainJob as an RFC 1035 label, which starts with a "
                f"letter, and {job_name} does not: rename the TrainingJob"
            )
            return TrainerObservation(job_name, None, problem)
        if not recorded:
            return TrainerObservation(job_name, None)  # a GET saved: `start` finds any Job
        job = self._rt.client.get(engine, namespace, job_name)
        if job is not None and not is_owned_by(job, body):
            problem = (
                f"a {job.get('kind') or 'Job'} named {job_name} exists and does not belong to "
                "this TrainingJob; delete it or rename the TrainingJob"
            )
            return TrainerObservation(job_name, None, problem)
        self.job = job
        if job is None:
            return TrainerObservation(job_name, None)
        pods = self._rt.client.list_objects(PODS, namespace, {LABEL_TRAININGJOB: job_name})
        if engine == JOBS:
            pods = [p for p in pods if is_owned_by(p, job) or not job["metadata"].get("uid")]
            state = observations.trainer_state(job, pods)
        else:
            state = observations.nodes_state(job, pods)
        if state.phase == "Running":
            state = dataclasses.replace(state, progress=self._progress(namespace, pods))
        return TrainerObservation(job_name, state)

    def _progress(self, namespace: str, pods: list[Body]) -> TrainingProgress | None:
        """The last epoch report in the log of the running pod of rank 0 (the first node's);
        None when there is none yet or the log cannot be read (no kubelet answering, say)."""
        for pod in pods:
            metadata, status = pod.get("metadata") or {}, pod.get("status") or {}
            index = (metadata.get("annotations") or {}).get(COMPLETION_INDEX, "0")
            if status.get("phase") != "Running" or index != "0":
                continue
            containers = (pod.get("spec") or {}).get("containers") or [{}]
            container = str(containers[0].get("name") or observations.TRAINER_CONTAINER)
            try:
                log = self._rt.client.pod_log(
                    namespace, metadata["name"], container, observations.PROGRESS_LOG_LINES
                )
            except ApiError as error:
                logger.debug("no progress from pod %s/%s: %s", namespace, metadata["name"], error)
                return None
            return observations.progress_from_log(log)
        return None

    def start(self, tj: TrainingJob, body: Body) -> bool:
        engine = self._kind(tj.spec.distributed.num_nodes)
        if engine == JOBS:
            child = builders.build_job(tj, self._rt.settings)
        elif engine == TRAINJOBS:
            child = builders.build_train_job(tj, self._rt.settings)
        elif engine == JOBSETS:
            child = builders.build_jobset(tj, self._rt.settings)
        else:
            return False  # neither is installed any more: `observe` says so
        try:
            created = self._rt.client.create(engine, tj.metadata.namespace, owned(child, body))
        except Conflict:
            return False
        self.job = created
        return True

    def _kind(self, nodes: int) -> Resource | None:
        """What runs the trainer: a batch Job on one node; on several Kubeflow Trainer's
        TrainJob, else a JobSet (ENGINES); None when the cluster has neither."""
        if nodes == 1:
            return JOBS
        return next((r for r in ENGINES if self._rt.serves(r)), None)


def _num_nodes(body: Body) -> int:
    """The spec's distributed.numNodes, when the API server typed it (else 1)."""
    nodes = ((body.get("spec") or {}).get("distributed") or {}).get("numNodes")
    return nodes if isinstance(nodes, int) and nodes > 1 else 1


class KubePredictor:
    """A ServedModel's predictor: a KServe InferenceService, or a Deployment and a Service."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    def problem(self, sm: ServedModel) -> tuple[str, str] | None:
        if sm.spec.runtime == "kserve" and not self._rt.serves(INFERENCESERVICES):
            return (
                "KServeNotInstalled",
                "KServe's InferenceService CRD (serving.kserve.io/v1beta1) is not installed in "
                "this cluster: install KServe, or set spec.runtime: deployment to serve with a "
                "plain Deployment and Service",
            )
        if sm.spec.runtime == "kserve":
            problem = builders.kserve_canary_problem(sm, self._rt.settings)
            if problem is not None:
                return ("CanaryUnsupported", problem)
        return None

    def apply(
        self,
        sm: ServedModel,
        body: Body,
        deploy: Deploy,
        feedback: FeedbackRef | None,
        spec_changed: bool,
    ) -> ServingState:
        if sm.spec.runtime == "kserve":
            state = self._inference_service(sm, body, deploy, feedback)
        else:
            state = self._deployments(sm, body, deploy, feedback, spec_changed)
        if spec_changed:
            self._remove_other_runtime(sm, body)
        return state

    def _inference_service(
        self, sm: ServedModel, body: Body, deploy: Deploy, feedback: FeedbackRef | None
    ) -> ServingState:
        desired = builders.build_inference_service(sm, self._rt.settings, deploy, feedback)
        name = desired["metadata"]["name"]
        current = self._rt.client.get(INFERENCESERVICES, sm.metadata.namespace, name)
        if current is not None and not is_owned_by(current, body):
            return ServingState(
                False,
                None,
                "NameConflict",
                f"InferenceService {name} exists and does not belong to this ServedModel",
            )
        applied = self._rt.client.apply(
            INFERENCESERVICES, sm.metadata.namespace, owned(desired, body)
        )
        return observations.inference_service_state(applied)

    def _deployments(
        self,
        sm: ServedModel,
        body: Body,
        deploy: Deploy,
        feedback: FeedbackRef | None,
        spec_changed: bool,
    ) -> ServingState:
        """The stable Deployment (autoscaled when the spec says so), the candidate's during a
        canary, with replicas in proportion to the stable ones now, and the Service."""
        client, namespace, defaults = self._rt.client, sm.metadata.namespace, self._rt.settings
        autoscaled = builders.autoscaled(sm)
        fixed = None if autoscaled else max(sm.spec.min_replicas, 1)
        stable = builders.build_deployment(
            sm, defaults, deploy.stable_uri, "stable", fixed, feedback
        )
        applied = client.apply(DEPLOYMENTS, namespace, owned(stable, body))
        if autoscaled:
            autoscalers = self._autoscalers()
            hpa = builders.build_autoscaler(sm, autoscalers.api_version)
            client.apply(autoscalers, namespace, owned(hpa, body))
        elif spec_changed:
            client.delete(self._autoscalers(), namespace, builders.predictor_name(sm.metadata.name))
        if deploy.canary_uri is not None:
            running = fixed or int(applied.get("spec", {}).get("replicas") or 1)
            replicas = builders.canary_replicas(running, deploy.canary_percent)
            canary = builders.build_deployment(
                sm, defaults, deploy.canary_uri, "canary", replicas, feedback
            )
            client.apply(DEPLOYMENTS, namespace, owned(canary, body))
        else:
            client.delete(
                DEPLOYMENTS, namespace, builders.predictor_name(sm.metadata.name, "canary")
            )
        client.apply(SERVICES, namespace, owned(builders.build_service(sm), body))
        return observations.deployment_state(applied, builders.service_url(sm))

    def _autoscalers(self) -> Resource:
        """autoscaling/v2's HorizontalPodAutoscalers, or v2beta2's where only those are served."""
        return AUTOSCALERS if self._rt.serves(AUTOSCALERS) else AUTOSCALERS_V2BETA2

    def _remove_other_runtime(self, sm: ServedModel, body: Body) -> None:
        """After a spec change, delete the children of the runtime no longer chosen."""
        namespace, name = sm.metadata.namespace, sm.metadata.name
        if sm.spec.runtime == "kserve":
            others = [
                (DEPLOYMENTS, builders.predictor_name(name)),
                (DEPLOYMENTS, builders.predictor_name(name, "canary")),
                (SERVICES, builders.service_name(name)),
                (self._autoscalers(), builders.predictor_name(name)),
            ]
        elif self._rt.serves(INFERENCESERVICES):
            others = [(INFERENCESERVICES, builders.inference_service_name(name))]
        else:
            others = []
        for resource, child in others:
            found = self._rt.client.get(resource, namespace, child)
            if found is not None and is_owned_by(found, body):
                self._rt.client.delete(resource, namespace, child)


class KubeFeedbackStores:
    """A FeedbackDataset's S3 prefix, with the keys of its storage.secretRef or the operator's."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    def open(self, namespace: str, storage: Storage) -> FeedbackStore:
        settings = self._rt.settings
        secret = storage.secret_ref
        if secret is None:
            access = settings.s3_access_key.get_secret_value()
            key = settings.s3_secret_key.get_secret_value()
            return DatasetStore(self._rt.store(storage.endpoint, access, key), storage)
        fields = (settings.s3_secret_access_key_field, settings.s3_secret_secret_key_field)
        values = [self._rt.client.secret_value(namespace, secret, f) for f in fields]
        if values[0] is None or values[1] is None:
            raise Unavailable(
                f"Secret {secret} (storage.secretRef) is missing or lacks the keys {fields[0]} "
                f"and {fields[1]} in namespace {namespace}",
                reason="SecretNotFound",
            )
        return DatasetStore(self._rt.store(storage.endpoint, values[0], values[1]), storage)


def is_owned_by(child: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    """Whether `child` names `owner` as its controller (by uid when the owner has one)."""
    uid = owner.get("metadata", {}).get("uid")
    for reference in child.get("metadata", {}).get("ownerReferences") or []:
        if not reference.get("controller"):
            continue
        if uid and reference.get("uid") == uid:
            return True
        if not uid and (reference.get("kind"), reference.get("name")) == (
            owner.get("kind"),
            owner.get("metadata", {}).get("name"),
        ):
            return True
    return False


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`; empty when they are equal."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        previous = old.get(key)
        if isinstance(value, Mapping) and isinstance(previous, Mapping):
            nested = merge_patch(previous, value)
            if nested:
                patch[key] = nested
        elif key not in old or previous != value:
            patch[key] = value
    return patch
