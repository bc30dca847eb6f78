"""ServedModel on a real API server with the real MLflow registry: the InferenceService the
operator writes is accepted by KServe's own CRD (v0.20.0, tests/vendor/kserve) and kept whole,
nothing pruned; `runtime: deployment` gives a Deployment and a Service that the real
Deployment and ReplicaSet controllers run, and the ServedModel is Ready once its pod is."""

from __future__ import annotations

from typing import Any

import pytest

from kubeloop.local import services
from tests.envtest import audit, kubelet
from tests.envtest.releases import Release
from tests.model_versions import registered, served_model, unique
from tests.operator_harness import ISVC, SM, Cluster, Operators, condition, eventually, status_of

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def test_kserves_crd_accepts_the_inference_service_whole(
    cluster: Cluster,
    operators: Operators,
    mlflow_server: services.Service,
    audit_log: audit.AuditLog,
    chart_releases: dict[str, Release],
) -> None:
    model = unique("isvc")
    await registered(mlflow_server.url, model, {"accuracy": 0.9})
    since = audit_log.mark()
    await operators.start(KUBELOOP_MLFLOW_TRACKING_URI=mlflow_server.url)
    created = await cluster.create(SM, served_model("digits", model, minReplicas=1, maxReplicas=3))
    isvc = await eventually(lambda: cluster.get(ISVC, "digits"), "the InferenceService", 30)
    (sent,) = [
        r.body
        for r in audit_log.read(since, {chart_releases["cluster"].user})
        if r.rule == ("serving.kserve.io", "inferenceservices", "create") and r.code == 201
    ]
    assert pruned(sent["spec"], isvc["spec"]) == [], "KServe's schema dropped or changed these"
    (owner,) = isvc["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("ServedModel", created["metadata"]["uid"])

    # KServe's controller reports the predictor ready; its status schema takes it.
    ready = {
        "url": f"http://digits.{cluster.namespace}.example.com",
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ],
    }
    await cluster.patch(ISVC, "digits", {"status": ready}, "status")
    status = await eventually(lambda: _ready(cluster, "digits"), "the ServedModel Ready")
    assert status["url"] == ready["url"]
    assert status["servingVersion"] == "1"


async def test_deployment_runtime_is_run_by_the_real_controllers(
    cluster: Cluster, operators: Operators, mlflow_server: services.Service
) -> None:
    model = unique("plain")
    await registered(mlflow_server.url, model, {"accuracy": 0.9})
    await operators.start(KUBELOOP_MLFLOW_TRACKING_URI=mlflow_server.url)
    await cluster.create(SM, served_model("plain", model, runtime="deployment"))
    deployment = await eventually(
        lambda: cluster.get("apps/v1/deployments", "plain-predictor"), "the Deployment", 30
    )
    service = await eventually(lambda: cluster.get("v1/services", "plain"), "the Service")
    assert service["spec"]["clusterIP"].startswith("10.0.0."), "allocated by the API server"
    assert await cluster.get(ISVC, "plain") is None

    # The ReplicaSet controller makes the pod; playing its node, the container becomes ready.
    pod = await eventually(lambda: _pod_of(deployment, cluster), "the predictor's pod", 30)
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    await kubelet.report_running(cluster, pod, ready=True)
    status = await eventually(lambda: _ready(cluster, "plain"), "Ready from the Deployment", 30)
    assert status["url"] == f"http://plain.{cluster.namespace}.svc.cluster.local"
    found = await cluster.get("apps/v1/deployments", "plain-predictor")
    assert found is not None
    assert found["status"]["availableReplicas"] == 1


def pruned(sent: Any, stored: Any, where: str = "spec") -> list[str]:
    """Paths of `sent` that `stored` lacks or holds differently (what a schema pruned)."""
    if isinstance(sent, dict) and isinstance(stored, dict):
        return [p for k, v in sent.items() for p in pruned(v, stored.get(k), f"{where}.{k}")]
    if isinstance(sent, list) and isinstance(stored, list) and len(sent) == len(stored):
        return [
            p
            for i, (a, b) in enumerate(zip(sent, stored, strict=True))
            for p in pruned(a, b, f"{where}[{i}]")
        ]
    return [] if sent == stored else [f"{where}: sent {sent!r}, kept {stored!r}"]


async def _ready(cluster: Cluster, name: str) -> dict[str, Any] | None:
    status = await status_of(cluster, SM, name)
    return status if condition(status, "Ready").get("status") == "True" else None


async def _pod_of(deployment: dict[str, Any], cluster: Cluster) -> dict[str, Any] | None:
    selector = deployment["spec"]["selector"]["matchLabels"]
    for pod in await cluster.list_objects("v1/pods"):
        if selector.items() <= (pod["metadata"].get("labels") or {}).items():
            return pod
    return None
