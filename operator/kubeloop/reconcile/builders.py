"""The Kubernetes children of kubeloop's resources, as plain manifests; no side effects.

Only the operator (kubeloop.kube) creates these; the local mode runs the same entrypoints
(trainer_args, predictor_args) as processes. Every child has a deterministic name, so creating
it twice is harmless; the operator adds the controller ownerReference at the edge (kopf's
append_owner_reference), so the builders do not know their owner.

Credentials never appear literally: training and predictor pods read S3 keys through
secretKeyRef, from the operator's configured Secret, a FeedbackDataset's storage.secretRef or
a TrainingJob's spec.credentials.
"""

from __future__ import annotations

from typing import Any

from kubeloop.api.feedbackdataset import FeedbackDatasetSpec
from kubeloop.api.servedmodel import ServedModel
from kubeloop.api.trainingjob import PodTemplate, Resources, TrainingJob, processes_per_node
from kubeloop.reconcile import common, servedmodel, trainingjob
from kubeloop.reconcile.common import (
    COMPLETION_INDEX,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_SERVEDMODEL,
    LABEL_TRACK,
    LABEL_TRAININGJOB,
    MANAGED_BY,
    child_name,
)
from kubeloop.settings import Settings

SPEC_FILE = "trainingjob.yaml"
SPEC_DIR = "/etc/kubeloop"
MANIFEST_ANNOTATION = "kubeloop.io/trainingjob-manifest"
"""The trainer pod's annotation holding the TrainingJob manifest, which the downward API
mounts as SPEC_DIR/SPEC_FILE: the Job carries its input, no other object is written."""
GPU_RESOURCE = "nvidia.com/gpu"
TRAINJOB_API_VERSION = "trainer.kubeflow.org/v1alpha1"
TRAINJOB_RUNTIME = "torch-distributed"
"""Kubeflow Trainer's ClusterTrainingRuntime for PyTorch, installed with it."""
TRAINJOB_NODE = "node"
"""The torch-distributed runtime's replicated job and container."""
TRAINJOB_PATCH_MANAGER = "kubeloop.io/operator"
_TRAINJOB_POD_FIELDS = (
    "imagePullSecrets",
    "nodeSelector",
    "securityContext",
    "serviceAccountName",
    "tolerations",
    "volumes",
)
"""What of the trainer's pod spec a TrainJob's runtime patch may set (besides containers)."""
JOBSET_API_VERSION = "jobset.x-k8s.io/v1alpha2"
JOBSET_NODE = "node"
RENDEZVOUS_PORT = 29500
KSERVE_API_VERSION = "serving.kserve.io/v1beta1"
KSERVE_CONTAINER = "kserve-container"
INFERENCE_SERVICE_NAME_MAX = 45
"""KServe appends -predictor-... to the InferenceService's name; keep room for it."""


def _metadata(
    name: str,
    namespace: str,
    labels: dict[str, str],
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if annotations:
        metadata["annotations"] = annotations
    return metadata


TMP = "/tmp"


def _resources(resources: Resources) -> dict[str, Any]:
    """Requests and limits; GPUs (nvidia.com/gpu) as limits only, as Kubernetes wants."""
    limits: dict[str, Any] = {"cpu": resources.cpu, "memory": resources.memory}
    if resources.gpu > 0:
        limits[GPU_RESOURCE] = resources.gpu
    return {"requests": {"cpu": resources.cpu, "memory": resources.memory}, "limits": limits}


def _hardened(container: dict[str, Any], template: PodTemplate, defaults: Settings) -> None:
    """The container's securityContext (the template's, else the operator's default) and a
    writable /tmp, with HOME in it, for a read-only root filesystem."""
    container["securityContext"] = dict(
        template.container_security_context or defaults.child_security_context
    )
    container.setdefault("volumeMounts", []).append({"name": "tmp", "mountPath": TMP})
    container["env"] = [*container.get("env", []), {"name": "HOME", "value": TMP}]


def _pod_fields(template: PodTemplate, defaults: Settings) -> dict[str, Any]:
    """What the template passes to a PodSpec: scheduling, account, the pod securityContext
    (the operator's default unless set) and the /tmp emptyDir."""
    pod: dict[str, Any] = {
        "securityContext": dict(template.security_context or defaults.child_pod_security_context),
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    if template.service_account_name:
        pod["serviceAccountName"] = template.service_account_name
    if template.node_selector:
        pod["nodeSelector"] = dict(template.node_selector)
    if template.tolerations:
        pod["tolerations"] = [dict(t) for t in template.tolerations]
    if template.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in template.image_pull_secrets]
    return pod


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _s3_env(defaults: Settings, secret: str | None, endpoint: str | None) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "KUBELOOP_MLFLOW_TRACKING_URI", "value": defaults.mlflow_tracking_uri},
        {"name": "KUBELOOP_S3_ENDPOINT", "value": endpoint or defaults.s3_endpoint},
        {"name": "KUBELOOP_S3_REGION", "value": defaults.s3_region},
    ]
    if secret is not None:
        env += [
            _secret_env("KUBELOOP_S3_ACCESS_KEY", secret, defaults.s3_secret_access_key_field),
            _secret_env("KUBELOOP_S3_SECRET_KEY", secret, defaults.s3_secret_secret_key_field),
        ]
    return env


# --- TrainingJob ----------------------------------------------------------------------


def job_name(training_job: str) -> str:
    """Name of the batch Job of a TrainingJob: at most 63 characters."""
    return child_name(training_job)


def trainer_labels(tj: TrainingJob) -> dict[str, str]:
    """The TrainingJob's template labels, its queue's (Kueue), then kubeloop's (which win)."""
    queue = {trainingjob.QUEUE_LABEL: tj.spec.queue_name} if tj.spec.queue_name else {}
    return {
        **tj.spec.template.labels,
        **queue,
        LABEL_NAME: "kubeloop-trainer",
        LABEL_COMPONENT: "trainer",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_TRAININGJOB: child_name(tj.metadata.name),
    }


def trainingjob_manifest(tj: TrainingJob) -> dict[str, Any]:
    """The TrainingJob as the trainer reads it: apiVersion, kind, metadata and spec."""
    metadata: dict[str, Any] = {"name": tj.metadata.name, "namespace": tj.metadata.namespace}
    extra = tj.metadata.model_extra or {}
    if extra.get("uid"):
        metadata["uid"] = extra["uid"]
    if tj.metadata.labels:
        metadata["labels"] = dict(tj.metadata.labels)
    return {
        "apiVersion": tj.api_version,
        "kind": tj.kind,
        "metadata": metadata,
        "spec": tj.spec.to_wire(),
    }


def manifest_text(tj: TrainingJob) -> str:
    """The TrainingJob manifest as the trainer reads it from SPEC_DIR/SPEC_FILE."""
    return common.yaml_text(trainingjob_manifest(tj), sort_keys=False)


def trainer_env(tj: TrainingJob, defaults: Settings) -> list[dict[str, Any]]:
    """Endpoints as values; S3 keys and spec.credentials by secretKeyRef (which win)."""
    env = _s3_env(defaults, defaults.s3_secret_name, None)
    own = {ref.key for ref in tj.spec.credentials}
    env = [e for e in env if e["name"] not in own]
    env += [_secret_env(ref.key, ref.name, ref.key) for ref in tj.spec.credentials]
    return env


def _trainer_pod(
    tj: TrainingJob, defaults: Settings, command: list[str], container_name: str = "trainer"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The trainer pod's (metadata, spec): the manifest in an annotation, mounted by the
    downward API; a memory-backed /dev/shm for several processes (gloo and NCCL exchange
    tensors through it)."""
    spec, template = tj.spec, tj.spec.template
    several = processes_per_node(spec) > 1 or spec.distributed.num_nodes > 1
    mounts = [{"name": "spec", "mountPath": SPEC_DIR, "readOnly": True}]
    if several:
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    container = {
        "name": container_name,
        "image": spec.image or defaults.trainer_image,
        "command": command,
        "args": trainingjob.trainer_args(f"{SPEC_DIR}/{SPEC_FILE}", trainingjob.RESULT_PATH),
        "env": trainer_env(tj, defaults),
        "resources": _resources(spec.resources),
        "volumeMounts": mounts,
        "terminationMessagePath": trainingjob.RESULT_PATH,
        # A trainer that dies before writing its failure (OOM-killed, say) leaves its log tail.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    _hardened(container, template, defaults)
    pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    pod |= _pod_fields(template, defaults)
    field_path = f"metadata.annotations['{MANIFEST_ANNOTATION}']"
    items = [{"path": SPEC_FILE, "fieldRef": {"fieldPath": field_path}}]
    pod["volumes"].append({"name": "spec", "downwardAPI": {"items": items}})
    if several:
        pod["volumes"].append({"name": "shm", "emptyDir": {"medium": "Memory"}})
    metadata: dict[str, Any] = {
        "labels": trainer_labels(tj),
        "annotations": {**template.annotations, MANIFEST_ANNOTATION: manifest_text(tj)},
    }
    return metadata, pod


def _trainer_metadata(tj: TrainingJob) -> dict[str, Any]:
    annotations = dict(tj.spec.template.annotations) or None
    return _metadata(
        job_name(tj.metadata.name), tj.metadata.namespace, trainer_labels(tj), annotations
    )


def build_job(tj: TrainingJob, defaults: Settings) -> dict[str, Any]:
    """The batch/v1 Job running the trainer once on the TrainingJob's spec: one pod, with
    numProcPerNode processes under torchrun when there are several.

    Template labels and annotations go to the Job and its pod, so a queueing system (Kueue's
    kueue.x-k8s.io/queue-name) can admit it; GPUs are requested as nvidia.com/gpu limits.
    """
    spec = tj.spec
    command = trainingjob.trainer_command(processes_per_node(spec))
    pod_metadata, pod = _trainer_pod(tj, defaults, command)
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "template": {"metadata": pod_metadata, "spec": pod},
    }
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    deadline = spec.active_deadline_seconds or defaults.trainer_active_deadline_seconds
    if deadline is not None:
        job_spec["activeDeadlineSeconds"] = deadline
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _trainer_metadata(tj),
        "spec": job_spec,
    }


def build_train_job(tj: TrainingJob, defaults: Settings) -> dict[str, Any]:
    """Kubeflow Trainer's TrainJob for several nodes, on its torch-distributed runtime.

    The runtime starts numNodes pods and gives torchrun its rendezvous (PET_NNODES,
    PET_NODE_RANK, PET_MASTER_ADDR, ...); the trainer part carries image, command, env and
    resources per node, and a runtime patch (manager kubeloop.io/operator) the pods' labels,
    the manifest annotation, volumes, scheduling and security contexts.
    """
    spec = tj.spec
    command = trainingjob.trainer_command(processes_per_node(spec), torchrun=[])
    metadata, pod = _trainer_pod(tj, defaults, command, TRAINJOB_NODE)
    (container,) = pod["containers"]
    patched_pod = {
        "containers": [
            {
                "name": TRAINJOB_NODE,
                "volumeMounts": container["volumeMounts"],
                "securityContext": container["securityContext"],
            }
        ],
        **{key: pod[key] for key in _TRAINJOB_POD_FIELDS if key in pod},
    }
    replicated = {"name": TRAINJOB_NODE, "template": {"spec": {"template": {
        "metadata": metadata, "spec": patched_pod
    }}}}  # fmt: skip
    body: dict[str, Any] = {
        "runtimeRef": {"name": TRAINJOB_RUNTIME},
        "trainer": {
            "image": container["image"],
            "command": command,
            "args": container["args"],
            "env": container["env"],
            "numNodes": spec.distributed.num_nodes,
            "numProcPerNode": processes_per_node(spec),
            "resourcesPerNode": container["resources"],
        },
        "runtimePatches": [
            {
                "manager": TRAINJOB_PATCH_MANAGER,
                "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [replicated]}}},
            }
        ],
    }
    deadline = spec.active_deadline_seconds or defaults.trainer_active_deadline_seconds
    if deadline is not None:
        body["activeDeadlineSeconds"] = deadline
    return {
        "apiVersion": TRAINJOB_API_VERSION,
        "kind": "TrainJob",
        "metadata": _trainer_metadata(tj),
        "spec": body,
    }


def build_jobset(tj: TrainingJob, defaults: Settings) -> dict[str, Any]:
    """A JobSet for several nodes where Kubeflow Trainer is not installed: one Indexed Job of
    numNodes pods, torchrun's rendezvous at pod 0 by its JobSet DNS name, each pod's node
    rank its completion index."""
    spec = tj.spec
    name = job_name(tj.metadata.name)
    nodes = spec.distributed.num_nodes
    torchrun = [
        f"--nnodes={nodes}",
        f"--nproc-per-node={processes_per_node(spec)}",
        "--node-rank=$(JOB_COMPLETION_INDEX)",
        f"--master-addr={name}-{JOBSET_NODE}-0-0.{name}",
        f"--master-port={RENDEZVOUS_PORT}",
    ]
    command = trainingjob.trainer_command(processes_per_node(spec), torchrun=torchrun)
    pod_metadata, pod = _trainer_pod(tj, defaults, command)
    index = {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}
    pod["containers"][0]["env"].append({"name": "JOB_COMPLETION_INDEX", "valueFrom": index})
    job_spec: dict[str, Any] = {
        "parallelism": nodes,
        "completions": nodes,
        "completionMode": "Indexed",
        "backoffLimit": 0,  # a lost node restarts the whole JobSet (failurePolicy)
        "template": {"metadata": pod_metadata, "spec": pod},
    }
    deadline = spec.active_deadline_seconds or defaults.trainer_active_deadline_seconds
    if deadline is not None:
        job_spec["activeDeadlineSeconds"] = deadline
    body: dict[str, Any] = {
        "network": {"enableDNSHostnames": True},
        "failurePolicy": {"maxRestarts": spec.backoff_limit},
        "replicatedJobs": [{"name": JOBSET_NODE, "replicas": 1, "template": {"spec": job_spec}}],
    }
    if spec.ttl_seconds_after_finished is not None:
        body["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    return {
        "apiVersion": JOBSET_API_VERSION,
        "kind": "JobSet",
        "metadata": _trainer_metadata(tj),
        "spec": body,
    }


# --- ServedModel ----------------------------------------------------------------------


def inference_service_name(served_model: str) -> str:
    return child_name(served_model, max_length=INFERENCE_SERVICE_NAME_MAX)


def predictor_name(served_model: str, track: str = "stable") -> str:
    """Deployment name of the predictor (runtime: deployment)."""
    return child_name(served_model, "-predictor" + ("" if track == "stable" else f"-{track}"))


def service_name(served_model: str) -> str:
    """Service in front of the predictor Deployments (runtime: deployment)."""
    return child_name(served_model)


def predictor_labels(sm: ServedModel, track: str | None = None) -> dict[str, str]:
    labels = {
        LABEL_NAME: "kubeloop-predictor",
        LABEL_COMPONENT: "predictor",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_SERVEDMODEL: child_name(sm.metadata.name),
    }
    if track is not None:
        labels[LABEL_TRACK] = track
    return labels


def predictor_env(defaults: Settings, feedback: FeedbackDatasetSpec | None) -> list[dict[str, Any]]:
    """Endpoints as values; the feedback dataset's storage.secretRef, else the operator's
    Secret, by secretKeyRef."""
    if feedback is not None and feedback.storage.secret_ref:
        return _s3_env(defaults, feedback.storage.secret_ref, feedback.storage.endpoint)
    endpoint = feedback.storage.endpoint if feedback is not None else None
    return _s3_env(defaults, defaults.s3_secret_name, endpoint)


def predictor_container(
    sm: ServedModel,
    uri: str,
    defaults: Settings,
    feedback: tuple[str, FeedbackDatasetSpec] | None,
    name: str = KSERVE_CONTAINER,
) -> dict[str, Any]:
    """The predictor container running `uri`, ready when the model is loaded."""
    port = servedmodel.PREDICTOR_PORT
    resources = sm.spec.resources or Resources(
        cpu=defaults.predictor_cpu, memory=defaults.predictor_memory
    )
    container = {
        "name": name,
        "image": sm.spec.image or defaults.predictor_image,
        "command": list(servedmodel.PREDICTOR_COMMAND),
        "args": servedmodel.predictor_args(
            sm.metadata.name,
            uri,
            sm.spec.batching,
            feedback,
            device="cuda" if resources.gpu > 0 else "cpu",
        ),
        "env": predictor_env(defaults, feedback[1] if feedback else None),
        "resources": _resources(resources),
        "ports": [{"name": "http1", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": servedmodel.READINESS_PATH, "port": port},
            "periodSeconds": 5,
        },
    }
    _hardened(container, sm.spec.template, defaults)
    return container


KSERVE_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
HPA_API_VERSION = "autoscaling/v2"
DEFAULT_SCALE_TARGET = 80
"""Percent of the requested cpu (or memory) an autoscaled Deployment's pods are kept at."""
KSERVE_CANARY_MODES = ("Serverless",)
"""KServe modes that honour canaryTrafficPercent: RawDeployment ("Standard" in newer KServe)
ignores it, and a canary step would send all traffic to the candidate (kserve/kserve#5335)."""


def kserve_mode(sm: ServedModel, defaults: Settings) -> str:
    """The KServe deployment mode of the ServedModel's InferenceService: its template's
    annotation, else the cluster's default (settings)."""
    return sm.spec.template.annotations.get(KSERVE_MODE_ANNOTATION) or (
        defaults.kserve_deployment_mode
    )


def kserve_canary_problem(sm: ServedModel, defaults: Settings) -> str | None:
    """Why KServe cannot run the ServedModel's canary, or None (no canary, or a mode that
    splits traffic)."""
    mode = kserve_mode(sm, defaults)
    if sm.spec.canary is None or not sm.spec.canary.steps or mode in KSERVE_CANARY_MODES:
        return None
    return (
        f"KServe in {mode} mode ignores canaryTrafficPercent, so each canary step would send "
        f"all traffic to the candidate: set spec.runtime: deployment (a canary by replica "
        f"share), run the InferenceService Serverless ({KSERVE_MODE_ANNOTATION} in "
        f"spec.template.annotations, or the chart's kserve.deploymentMode), or remove "
        f"spec.canary"
    )


def build_inference_service(
    sm: ServedModel,
    defaults: Settings,
    deploy: servedmodel.Deploy,
    feedback: tuple[str, FeedbackDatasetSpec] | None = None,
) -> dict[str, Any]:
    """The KServe InferenceService: a custom predictor container following the alias.

    During a canary the predictor runs the pinned candidate and canaryTrafficPercent sends it
    that share; KServe keeps the previous revision (the alias URI) for the rest.
    """
    uri = deploy.canary_uri if deploy.canary_uri else deploy.stable_uri
    predictor: dict[str, Any] = {
        "minReplicas": sm.spec.min_replicas,
        "maxReplicas": sm.spec.max_replicas,
        "containers": [predictor_container(sm, uri, defaults, feedback)],
        **_pod_fields(sm.spec.template, defaults),  # KServe's predictor is a PodSpec inline
    }
    if sm.spec.scale_metric is not None:
        predictor["scaleMetric"] = sm.spec.scale_metric
    if sm.spec.scale_target is not None:
        predictor["scaleTarget"] = sm.spec.scale_target
    if deploy.canary_uri:
        predictor["canaryTrafficPercent"] = deploy.canary_percent
    template = sm.spec.template
    return {
        "apiVersion": KSERVE_API_VERSION,
        "kind": "InferenceService",
        "metadata": _metadata(
            inference_service_name(sm.metadata.name),
            sm.metadata.namespace,
            {**template.labels, **predictor_labels(sm)},
            dict(template.annotations) or None,
        ),
        "spec": {"predictor": predictor},
    }


def build_deployment(
    sm: ServedModel,
    defaults: Settings,
    uri: str,
    track: str = "stable",
    replicas: int | None = None,
    feedback: tuple[str, FeedbackDatasetSpec] | None = None,
) -> dict[str, Any]:
    """A predictor Deployment (runtime: deployment) for clusters without KServe.

    `replicas` None: the stable Deployment of an autoscaled ServedModel, whose replica count
    is its HorizontalPodAutoscaler's, so the operator does not set one.
    """
    labels = predictor_labels(sm, track)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(
            predictor_name(sm.metadata.name, track), sm.metadata.namespace, labels
        ),
        "spec": {
            **({"replicas": replicas} if replicas is not None else {}),
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": _pod_metadata(labels, sm.spec.template),
                "spec": {
                    "containers": [
                        predictor_container(sm, uri, defaults, feedback, name="predictor")
                    ],
                    **_pod_fields(sm.spec.template, defaults),
                },
            },
        },
    }


def _pod_metadata(labels: dict[str, str], template: PodTemplate) -> dict[str, Any]:
    """A pod template's metadata: the template's labels under kubeloop's, its annotations."""
    metadata: dict[str, Any] = {"labels": {**template.labels, **labels}}
    if template.annotations:
        metadata["annotations"] = dict(template.annotations)
    return metadata


def autoscaled(sm: ServedModel) -> bool:
    """Whether the predictor scales between minReplicas and maxReplicas (more than one count)."""
    return sm.spec.max_replicas > max(sm.spec.min_replicas, 1)


def build_autoscaler(sm: ServedModel, api_version: str = HPA_API_VERSION) -> dict[str, Any]:
    """The HorizontalPodAutoscaler of an autoscaled runtime: deployment's stable Deployment.

    It keeps the pods' average use of their requested scaleMetric at scaleTarget percent
    (KServe's fields and, for cpu, its default), so the two runtimes scale on the same spec.
    `api_version` autoscaling/v2beta2 for API servers before 1.23: the fields are the same.
    """
    resource = sm.spec.scale_metric or "cpu"
    target = sm.spec.scale_target or DEFAULT_SCALE_TARGET
    return {
        "apiVersion": api_version,
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(
            predictor_name(sm.metadata.name), sm.metadata.namespace, predictor_labels(sm)
        ),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": predictor_name(sm.metadata.name),
            },
            "minReplicas": max(sm.spec.min_replicas, 1),
            "maxReplicas": sm.spec.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": resource,
                        "target": {"type": "Utilization", "averageUtilization": target},
                    },
                }
            ],
        },
    }


def canary_replicas(stable_replicas: int, percent: int) -> int:
    """Canary replicas whose share of all replicas is closest to `percent` (at least 1)."""
    if percent <= 0:
        return 0
    return max(1, round(stable_replicas * percent / max(1, 100 - percent)))


def build_service(sm: ServedModel) -> dict[str, Any]:
    """The Service in front of the stable and canary predictor Deployments."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(
            service_name(sm.metadata.name), sm.metadata.namespace, predictor_labels(sm)
        ),
        "spec": {
            "selector": predictor_labels(sm),
            "ports": [
                {
                    "name": "http",
                    "port": 80,
                    "targetPort": servedmodel.PREDICTOR_PORT,
                    "protocol": "TCP",
                }
            ],
        },
    }


def service_url(sm: ServedModel) -> str:
    return f"http://{service_name(sm.metadata.name)}.{sm.metadata.namespace}.svc.cluster.local"
