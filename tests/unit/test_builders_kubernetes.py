"""Every child manifest the builders produce, validated against the real Kubernetes schemas
(kubernetes-validate, 1.25 and the newest bundled, strict), and the InferenceService against
KServe's v1beta1 API models; plus the properties the operator relies on."""

from __future__ import annotations

import re
from typing import Any

import kserve.models
import kubernetes.client.models  # type: ignore[import-untyped]  # the client ships no type hints
import kubernetes_validate
import pytest
import yaml

from kubeloop.api import predictor, validation
from kubeloop.api.feedbackdataset import FeedbackDatasetSpec
from kubeloop.api.servedmodel import ServedModel
from kubeloop.api.trainingjob import TrainingJob
from kubeloop.kube import ports
from kubeloop.reconcile import builders, servedmodel
from kubeloop.reconcile.common import child_name
from kubeloop.settings import Settings

VERSIONS = ["1.25.0", kubernetes_validate.latest_version()]
DEFAULTS = Settings(
    s3_secret_name="kubeloop-s3", s3_access_key="literal-ak", s3_secret_key="literal-sk"
)
TJ_OWNER = {
    "apiVersion": "kubeloop.io/v1alpha1",
    "kind": "TrainingJob",
    "metadata": {"name": "digits-base", "namespace": "ml", "uid": "uid-tj"},
}
FEEDBACK = (
    "digits-fb",
    FeedbackDatasetSpec.model_validate(
        {
            "storage": {
                "bucket": "kubeloop",
                "prefix": "fb/",
                "secretRef": "fb-s3",
                "endpoint": "https://s3.example.com",
            },
            "classes": ["0", "1"],
            "inputShape": [8, 8],
        }
    ),
)


def training_job(**spec: Any) -> TrainingJob:
    return TrainingJob.model_validate(
        {
            "metadata": {"name": "digits-base", "namespace": "ml", "uid": "uid-tj"},
            "spec": {
                "plugin": {"name": "image-classifier"},
                "datasets": [{"name": "base", "uri": "builtin://digits"}],
                "registeredModel": "digits",
                **spec,
            },
        }
    )


RICH = training_job(
    resources={"cpu": "4", "memory": "16Gi", "gpu": 2},
    distributed={"numProcPerNode": 1},  # both GPUs to one process (auto: one each)
    backoffLimit=3,
    ttlSecondsAfterFinished=3600,
    image="registry.example.com/trainer:1.0",
    credentials=[
        {"name": "hf", "key": "HF_TOKEN"},
        {"name": "ns-s3", "key": "KUBELOOP_S3_ACCESS_KEY"},
    ],
    template={
        "labels": {"kueue.x-k8s.io/queue-name": "gpu", "team": "vision"},
        "annotations": {"example.com/cost-center": "42"},
        "nodeSelector": {"nvidia.com/gpu.product": "A100"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "serviceAccountName": "trainer",
    },
)


def served_model(**spec: Any) -> ServedModel:
    return ServedModel.model_validate(
        {
            "metadata": {"name": "digits", "namespace": "ml", "uid": "uid-sm"},
            "spec": {"registeredModel": "digits", "minReplicas": 1, "maxReplicas": 4, **spec},
        }
    )


def validate(manifest: dict[str, Any]) -> None:
    for version in VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)


def as_pod(pod_spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": pod_spec}


def test_job_is_valid_and_carries_the_spec() -> None:
    job = ports.owned(builders.build_job(RICH, DEFAULTS), TJ_OWNER)
    validate(job)
    assert job["metadata"]["name"] == "digits-base"
    assert job["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "kubeloop.io/v1alpha1",
            "kind": "TrainingJob",
            "name": "digits-base",
            "uid": "uid-tj",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu"
    assert job["metadata"]["annotations"] == {"example.com/cost-center": "42"}
    template = job["spec"]["template"]
    assert template["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu"
    annotations = template["metadata"]["annotations"]
    assert annotations.pop("example.com/cost-center") == "42"
    assert list(annotations) == [builders.MANIFEST_ANNOTATION]
    assert (job["spec"]["backoffLimit"], job["spec"]["ttlSecondsAfterFinished"]) == (3, 3600)
    pod = template["spec"]
    assert pod["restartPolicy"] == "Never"
    assert (pod["serviceAccountName"], pod["nodeSelector"]) == (
        "trainer",
        {"nvidia.com/gpu.product": "A100"},
    )
    assert pod["volumes"] == [
        {"name": "tmp", "emptyDir": {}},
        {
            "name": "spec",
            "downwardAPI": {
                "items": [
                    {
                        "path": "trainingjob.yaml",
                        "fieldRef": {
                            "fieldPath": "metadata.annotations['kubeloop.io/trainingjob-manifest']"
                        },
                    }
                ]
            },
        },
    ]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/trainer:1.0"
    assert container["command"] + container["args"] == [
        "python",
        "-m",
        "kubeloop.training",
        "--spec",
        "/etc/kubeloop/trainingjob.yaml",
        "--result",
        "/dev/termination-log",
    ]
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": 2}
    assert "nvidia.com/gpu" not in container["resources"]["requests"]
    assert container["terminationMessagePath"] == "/dev/termination-log"


def test_no_gpu_requested_without_gpus() -> None:
    job = builders.build_job(training_job(), DEFAULTS)
    validate(job)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert container["image"] == DEFAULTS.trainer_image
    assert "ttlSecondsAfterFinished" not in job["spec"]


def test_several_processes_run_under_torchrun_with_shared_memory() -> None:
    one = builders.build_job(training_job(), DEFAULTS)
    (container,) = one["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "kubeloop.training"]
    assert "shm" not in {v["name"] for v in one["spec"]["template"]["spec"]["volumes"]}

    cases = [
        (training_job(resources={"gpu": 4}), 4),  # auto: one per GPU
        (training_job(distributed={"numProcPerNode": 3}), 3),  # on the CPU: gloo
        (training_job(resources={"gpu": 8}, distributed={"numProcPerNode": 2}), 2),
    ]
    for tj, processes in cases:
        job = builders.build_job(tj, DEFAULTS)
        validate(job)
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"] == [
            "python",
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={processes}",
            "-m",
            "kubeloop.training",
        ]
        assert {"name": "shm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
        assert {"name": "shm", "mountPath": "/dev/shm"} in container["volumeMounts"]


def test_a_queue_name_is_kueues_label_on_the_job_and_its_pod() -> None:
    job = builders.build_job(training_job(queueName="team-gpus"), DEFAULTS)
    validate(job)
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert labels["kueue.x-k8s.io/queue-name"] == "team-gpus"
    assert (
        "kueue.x-k8s.io/queue-name"
        not in builders.build_job(training_job(), DEFAULTS)["metadata"]["labels"]
    )


def test_credentials_are_references_never_values() -> None:
    job = builders.build_job(RICH, DEFAULTS)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert len(env) == len(container["env"]), "an environment variable is set twice"
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN"}},
    }
    # spec.credentials win over the operator's Secret for the same variable.
    assert env["KUBELOOP_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "ns-s3"
    assert env["KUBELOOP_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "kubeloop-s3",
        "key": "AWS_SECRET_ACCESS_KEY",
    }
    assert env["KUBELOOP_MLFLOW_TRACKING_URI"]["value"] == DEFAULTS.mlflow_tracking_uri
    everything = yaml.safe_dump(job)
    assert "literal-ak" not in everything and "literal-sk" not in everything  # noqa: PT018


def test_the_trainer_pod_carries_a_valid_trainingjob_manifest() -> None:
    job = builders.build_job(RICH, DEFAULTS)
    annotations = job["spec"]["template"]["metadata"]["annotations"]
    manifest = yaml.safe_load(annotations[builders.MANIFEST_ANNOTATION])
    assert validation.manifest_errors(manifest) == []
    assert manifest["metadata"] == {"name": "digits-base", "namespace": "ml", "uid": "uid-tj"}
    assert manifest["spec"]["resources"]["gpu"] == 2


def test_long_names_give_valid_deterministic_children() -> None:
    name = "a-really-long-training-job-name-" * 4
    assert len(builders.job_name(name)) <= 63
    assert builders.job_name(name) == builders.job_name(name)
    assert builders.job_name(name) != builders.job_name(name + "x")
    assert child_name("Weird.Name_1") != "Weird.Name_1"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", child_name("Weird.Name_1"))
    tj = training_job()
    tj.metadata.name = name
    validate(builders.build_job(tj, DEFAULTS))


def _check_model(value: Any, type_name: str, where: str) -> list[str]:
    """Problems of `value` against a KServe / Kubernetes client model type, recursively."""
    primitives: dict[str, type | tuple[type, ...]] = {
        "str": str,
        "int": int,
        "bool": bool,
        "float": (int, float),
    }
    if type_name in primitives:
        ok = isinstance(value, primitives[type_name])
        return [] if ok else [f"{where}: {value!r} is not {type_name}"]
    if type_name.startswith("list["):
        if not isinstance(value, list):
            return [f"{where}: not a list"]
        inner = type_name[5:-1]
        return [p for i, v in enumerate(value) for p in _check_model(v, inner, f"{where}[{i}]")]
    if type_name.startswith("dict("):
        inner = type_name[5:-1].split(", ", 1)[1]
        return [p for k, v in value.items() for p in _check_model(v, inner, f"{where}.{k}")]
    model = getattr(kserve.models, type_name, None) or getattr(
        kubernetes.client.models, type_name, None
    )
    if model is None:
        return []  # free-form (object, ResourceQuantity, IntOrString)
    if not isinstance(value, dict):
        return [f"{where}: {value!r} is not a {type_name} object"]
    fields = {wire: attr for attr, wire in model.attribute_map.items()}
    problems = []
    for key, item in value.items():
        if key not in fields:
            problems.append(f"{where}.{key}: not a field of {type_name}")
        else:
            problems += _check_model(item, model.openapi_types[fields[key]], f"{where}.{key}")
    return problems


def test_a_kserve_canary_needs_a_mode_that_splits_traffic() -> None:
    canary = {"canary": {"steps": [10, 50]}}
    assert builders.kserve_canary_problem(served_model(**canary), DEFAULTS) is None
    raw = DEFAULTS.model_copy(update={"kserve_deployment_mode": "RawDeployment"})
    problem = builders.kserve_canary_problem(served_model(**canary), raw)
    assert problem is not None
    assert problem.startswith("KServe in RawDeployment mode ignores canaryTrafficPercent")
    assert builders.kserve_canary_problem(served_model(), raw) is None  # no canary asked
    annotated = {"template": {"annotations": {builders.KSERVE_MODE_ANNOTATION: "Serverless"}}}
    assert builders.kserve_canary_problem(served_model(**canary, **annotated), raw) is None
    standard = {"template": {"annotations": {builders.KSERVE_MODE_ANNOTATION: "Standard"}}}
    assert builders.kserve_canary_problem(served_model(**canary, **standard), DEFAULTS)


@pytest.mark.parametrize(
    "deploy",
    [
        servedmodel.Deploy("models:/digits@champion"),
        servedmodel.Deploy("models:/digits@champion", "models:/digits/7", 20),
    ],
    ids=["stable", "canary"],
)
def test_inference_service_matches_kserve_and_its_pod_is_valid(deploy: servedmodel.Deploy) -> None:
    sm = served_model(batching={"maxBatchSize": 64, "maxLatencyMs": 10})
    isvc = builders.build_inference_service(sm, DEFAULTS, deploy, FEEDBACK)
    assert _check_model(isvc, "V1beta1InferenceService", "isvc") == []
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    predictor = isvc["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    validate(as_pod({"containers": predictor["containers"]}))
    args = container["args"]
    if deploy.canary_uri:
        assert predictor["canaryTrafficPercent"] == 20
        assert args[args.index("--model-uri") + 1] == "models:/digits/7"
    else:
        assert "canaryTrafficPercent" not in predictor
        assert args[args.index("--model-uri") + 1] == "models:/digits@champion"
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 4)
    env = {e["name"]: e for e in container["env"]}
    assert env["KUBELOOP_S3_ENDPOINT"]["value"] == "https://s3.example.com"
    assert env["KUBELOOP_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "fb-s3",
        "key": "AWS_ACCESS_KEY_ID",
    }
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


def test_kserve_model_check_catches_a_wrong_field() -> None:
    isvc = builders.build_inference_service(
        served_model(), DEFAULTS, servedmodel.Deploy("models:/d@c")
    )
    isvc["spec"]["predictor"]["canaryPercent"] = 10
    assert _check_model(isvc, "V1beta1InferenceService", "isvc") == [
        "isvc.spec.predictor.canaryPercent: not a field of V1beta1PredictorSpec"
    ]


def test_deployments_and_service_are_valid_and_select_each_other() -> None:
    sm = served_model(runtime="deployment", minReplicas=3)
    stable = builders.build_deployment(sm, DEFAULTS, "models:/digits@champion", replicas=3)
    canary = builders.build_deployment(
        sm, DEFAULTS, "models:/digits/7", "canary", builders.canary_replicas(3, 25)
    )
    service = builders.build_service(sm)
    for manifest in (stable, canary, service):
        validate(manifest)
    assert (stable["spec"]["replicas"], canary["spec"]["replicas"]) == (3, 1)
    assert stable["metadata"]["name"] != canary["metadata"]["name"]
    selector = service["spec"]["selector"].items()
    for deployment in (stable, canary):
        assert selector <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert builders.canary_replicas(1, 50) == 1
    assert builders.canary_replicas(4, 50) == 4
    assert builders.canary_replicas(4, 0) == 0


def test_an_autoscaled_deployment_runtime_gets_a_valid_autoscaler_and_no_replica_count() -> None:
    sm = served_model(runtime="deployment", minReplicas=2, maxReplicas=6, scaleTarget=60)
    assert builders.autoscaled(sm)
    stable = builders.build_deployment(sm, DEFAULTS, "models:/digits@champion", replicas=None)
    hpa = builders.build_autoscaler(sm)
    for manifest in (stable, hpa):
        validate(manifest)
    assert "replicas" not in stable["spec"], "the autoscaler's to set"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", stable["metadata"]["name"])
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 60},
    }
    older = builders.build_autoscaler(served_model(scaleMetric="memory"), "autoscaling/v2beta2")
    kubernetes_validate.validate(older, "1.25.0", strict=True)  # the last release serving it
    assert older["spec"]["metrics"][0]["resource"]["name"] == "memory"
    assert older["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 80
    # One replica count (min 0 or 1 up to 1, or min equal to max): a fixed Deployment.
    for low, high in ((0, 1), (1, 1), (3, 3)):
        assert not builders.autoscaled(served_model(minReplicas=low, maxReplicas=high))


def test_kserve_scales_on_the_same_fields() -> None:
    sm = served_model(scaleMetric="memory", scaleTarget=70)
    isvc = builders.build_inference_service(
        sm, DEFAULTS, servedmodel.Deploy("models:/digits@champion", version="1")
    )
    predictor_spec = isvc["spec"]["predictor"]
    assert (predictor_spec["scaleMetric"], predictor_spec["scaleTarget"]) == ("memory", 70)
    assert _check_model(isvc, "V1beta1InferenceService", "isvc") == []
    plain = builders.build_inference_service(
        served_model(), DEFAULTS, servedmodel.Deploy("models:/digits@champion", version="1")
    )
    assert "scaleMetric" not in plain["spec"]["predictor"], "KServe's default"


def test_pods_are_hardened_by_default_and_the_spec_can_say_otherwise() -> None:
    job = builders.build_job(training_job(), DEFAULTS)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"] == DEFAULTS.child_pod_security_context
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "HOME", "value": "/tmp"} in container["env"]
    assert "activeDeadlineSeconds" not in job["spec"]

    custom = training_job(
        activeDeadlineSeconds=7200,
        template={
            "securityContext": {"runAsUser": 1234, "runAsNonRoot": True},
            "containerSecurityContext": {"readOnlyRootFilesystem": False},
        },
    )
    job = builders.build_job(custom, DEFAULTS)
    validate(job)
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsUser": 1234, "runAsNonRoot": True}
    assert pod["containers"][0]["securityContext"] == {"readOnlyRootFilesystem": False}
    assert job["spec"]["activeDeadlineSeconds"] == 7200
    chart = Settings(trainer_active_deadline_seconds=600)
    assert builders.build_job(training_job(), chart)["spec"]["activeDeadlineSeconds"] == 600


def test_predictors_have_resources_and_the_same_hardening() -> None:
    deploy = servedmodel.Deploy("models:/digits@champion")
    isvc = builders.build_inference_service(served_model(), DEFAULTS, deploy)
    predictor = isvc["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    assert predictor["securityContext"] == DEFAULTS.child_pod_security_context
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert _check_model(isvc, "V1beta1InferenceService", "isvc") == []
    sm = served_model(
        runtime="deployment",
        resources={"cpu": "2", "memory": "3Gi", "gpu": 1},
        template={"nodeSelector": {"pool": "gpu"}, "labels": {"team": "vision"}},
    )
    deployment = builders.build_deployment(sm, DEFAULTS, "models:/digits@champion")
    validate(deployment)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {
        "cpu": "2",
        "memory": "3Gi",
        "nvidia.com/gpu": 1,
    }
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert deployment["spec"]["template"]["metadata"]["labels"]["team"] == "vision"


def test_a_gpu_predictor_runs_on_cuda_and_pulls_from_private_registries() -> None:
    template = {"imagePullSecrets": ["regcred"], "nodeSelector": {"gpu": "a100"}}
    resources = {"cpu": "2", "memory": "4Gi", "gpu": 1}
    sm = served_model(resources=resources, template=template)
    deploy = servedmodel.Deploy("models:/digits@champion")
    isvc = builders.build_inference_service(sm, DEFAULTS, deploy)
    assert _check_model(isvc, "V1beta1InferenceService", "isvc") == []
    deployment = builders.build_deployment(sm, DEFAULTS, "models:/digits@champion")
    validate(deployment)
    pods = [isvc["spec"]["predictor"], deployment["spec"]["template"]["spec"]]
    for pod in pods:
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        (container,) = pod["containers"]
        args = container["args"]
        assert args[args.index("--device") + 1] == "cuda"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        predictor.parse_command_line(args)  # the predictor takes what the operator renders
    on_cpu = builders.build_deployment(served_model(), DEFAULTS, "models:/digits@champion")
    (container,) = on_cpu["spec"]["template"]["spec"]["containers"]
    assert "--device" not in container["args"]
    assert "imagePullSecrets" not in on_cpu["spec"]["template"]["spec"]
    job = builders.build_job(training_job(template={"imagePullSecrets": ["regcred"]}), DEFAULTS)
    validate(job)
    assert job["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
