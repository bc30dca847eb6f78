"""The Helm chart lints strictly, renders valid objects, configures the operator through real
Settings fields (credentials only from a Secret) and refuses wrong values."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from pydantic import SecretStr

from kubeloop.settings import Settings
from tests.helm_chart import CHART, by_kind, render

K8S_VERSIONS = ["1.25.0", kubernetes_validate.latest_version()]
# Kinds of other projects' CRDs: not in the Kubernetes schemas, checked by shape below.
FOREIGN = {"ServiceMonitor", "ClusterKopfPeering", "KopfPeering"}

CUSTOM: dict[str, Any] = {
    "image": {"repository": "registry.example.com/kubeloop/operator", "tag": "1.2.3"},
    "imagePullSecrets": [{"name": "regcred"}],
    "watchNamespaces": ["team-a", "team-b"],
    "replicaCount": 2,
    "s3": {
        "endpoint": "https://s3.example.com",
        "existingSecret": "kubeloop-s3",
        "accessKeyKey": "access",
        "secretKeyKey": "secret",
    },
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "grafanaDashboard": {"enabled": True},
    "kserve": {"deploymentMode": "RawDeployment"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
}


def settings_env(field: str) -> str:
    prefix = Settings.model_config.get("env_prefix") or ""
    return f"{prefix}{field}".upper()


CREDENTIALS = {
    settings_env(n) for n, f in Settings.model_fields.items() if f.annotation is SecretStr
}


@pytest.mark.parametrize("values", [{}, CUSTOM], ids=["default", "custom"])
def test_lints_strictly(values: dict[str, Any]) -> None:
    report = helm.lint(CHART, values, strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("values", [{}, CUSTOM], ids=["default", "custom"])
def test_rendered_objects_are_valid(values: dict[str, Any], version: str) -> None:
    documents = render(values)
    assert by_kind(documents, "Deployment")
    for document in documents:
        if document["kind"] in FOREIGN:
            assert document["apiVersion"] in ("monitoring.coreos.com/v1", "kopf.dev/v1")
            continue
        kubernetes_validate.validate(document, version, strict=True)


def test_chart_crds_are_valid_and_include_kubeloops() -> None:
    names = set()
    for path in sorted((CHART / "crds").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(document, version, strict=True)
            names.add(document["metadata"]["name"])
    assert {"trainingjobs.kubeloop.io", "feedbackdatasets.kubeloop.io"} <= names
    assert {"servedmodels.kubeloop.io", "clusterkopfpeerings.kopf.dev"} <= names


def test_operator_pod_is_locked_down() -> None:
    (deployment,) = by_kind(render({}), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["limits"]
    assert container["resources"]["requests"]
    assert container["livenessProbe"]["httpGet"]["port"] == "health"
    assert container["readinessProbe"]["httpGet"]["port"] == "health"
    assert "--all-namespaces" in container["args"]
    assert {"KUBELOOP_S3_ACCESS_KEY", "KUBELOOP_S3_SECRET_KEY"} == CREDENTIALS
    assert not [e for e in container["env"] if e["name"] in CREDENTIALS]


@pytest.mark.parametrize("values", [{}, CUSTOM], ids=["default", "custom"])
def test_operator_env_names_settings_fields(values: dict[str, Any]) -> None:
    """Settings ignores unknown KUBELOOP_* variables: a misspelt one would do nothing."""
    (deployment,) = by_kind(render(values), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names))
    assert set(names) <= {settings_env(field) for field in Settings.model_fields}
    for env in container["env"]:
        if env["name"] in CREDENTIALS:
            assert set(env) == {"name", "valueFrom"}, "credentials only by secretKeyRef"


def test_custom_values_reach_the_pod() -> None:
    documents = render(CUSTOM)
    (deployment,) = by_kind(documents, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/kubeloop/operator:1.2.3"
    namespaces = [a for a in container["args"] if a.startswith("--namespace")]
    assert namespaces == ["--namespace=team-a", "--namespace=team-b"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["tolerations"] == CUSTOM["tolerations"]
    secret_env = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e
    }
    assert secret_env["KUBELOOP_S3_ACCESS_KEY"] == {"name": "kubeloop-s3", "key": "access"}
    assert secret_env["KUBELOOP_S3_SECRET_KEY"] == {"name": "kubeloop-s3", "key": "secret"}
    plain = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert plain["KUBELOOP_S3_SECRET_NAME"] == "kubeloop-s3"
    assert plain["KUBELOOP_KSERVE_DEPLOYMENT_MODE"] == "RawDeployment"
    assert plain["KUBELOOP_S3_SECRET_ACCESS_KEY_FIELD"] == "access"
    assert plain["KUBELOOP_S3_SECRET_SECRET_KEY_FIELD"] == "secret"
    assert by_kind(documents, "ServiceMonitor")[0]["metadata"]["labels"]["release"] == "prom"
    (dashboard,) = [d for d in by_kind(documents, "ConfigMap") if "kubeloop.json" in d["data"]]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert {p["metadata"]["namespace"] for p in by_kind(documents, "KopfPeering")} == {
        "team-a",
        "team-b",
    }


def test_metrics_and_health_ports_must_differ() -> None:
    with pytest.raises(helm.HelmRenderError, match="must differ"):
        render({"metrics": {"port": 8080, "healthPort": 8080}})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"logLevel": "LOUD"}, "/logLevel"),
        ({"replicaCount": -1}, "/replicaCount"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "/watchNamespaces/0"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"s3": {"endpoint": "minio:9000"}}, "/s3/endpoint"),
        ({"metrcis": {}}, "metrcis"),
    ],
)
def test_wrong_values_fail_with_a_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=message):
        helm.Chart.load(CHART).validate_schema(values)


def test_child_pod_defaults_reach_the_operators_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "childPodSecurityContext": {"runAsNonRoot": True, "runAsUser": 2000},
        "predictorResources": {"cpu": "500m", "memory": "2Gi"},
        "trainerActiveDeadlineSeconds": 3600,
    }
    (deployment,) = by_kind(render(values), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    for env in container["env"]:
        if "value" in env:
            monkeypatch.setenv(env["name"], env["value"])
    settings = Settings()  # as the operator reads its environment
    assert settings.child_pod_security_context["runAsUser"] == 2000
    assert settings.child_pod_security_context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert settings.child_security_context["readOnlyRootFilesystem"] is True
    assert (settings.predictor_cpu, settings.predictor_memory) == ("500m", "2Gi")
    assert settings.trainer_active_deadline_seconds == 3600
