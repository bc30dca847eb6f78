"""ServedModel on a real API server with the real MLflow registry: the InferenceService the
operator writes is accepted by KServe's own CRD (v0.20.0, tests/vendor/kserve) and kept whole,
nothing pruned; `runtime: deployment` gives a Deployment and a Service that the real
Deployment and ReplicaSet controllers run, and the ServedModel is Ready once its pod is."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kubeloop.local import services
from tests.envtest import audit, kubelet
from tests.envtest.releases import Release
from tests.model_versions import registered, served_model, unique
from tests.operator_harness import (
    ISVC,
    SM,
    Cluster,
    Operators,
    condition,
    eventually,
    not_kept,
    status_of,
)

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
    await eventually(lambda: cluster.get(ISVC, "digits"), "the InferenceService", 30)
    # What the operator last wrote of it (create, update or patch: however it writes).
    writes = [
        r.body
        for r in audit_log.read(since, {chart_releases["cluster"].user})
        if (r.group, r.resource, r.subresource) == ("serving.kserve.io", "inferenceservices", "")
        and r.verb in ("create", "update", "patch")
        and r.namespace == cluster.namespace
        and 200 <= r.code < 300
        and isinstance(r.body, dict)
        and "spec" in r.body
    ]
    assert writes, "no write of the InferenceService's spec in the audit log"
    isvc = await cluster.get(ISVC, "digits")
    assert isvc is not None
    assert not_kept(writes[-1]["spec"], isvc["spec"]) == [], "KServe's schema dropped these"
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


async def _ready(cluster: Cluster, name: str) -> dict[str, Any] | None:
    status = await status_of(cluster, SM, name)
    return status if condition(status, "Ready").get("status") == "True" else None


async def _pod_of(deployment: dict[str, Any], cluster: Cluster) -> dict[str, Any] | None:
    selector = deployment["spec"]["selector"]["matchLabels"]
    for pod in await cluster.list_objects("v1/pods"):
        if selector.items() <= (pod["metadata"].get("labels") or {}).items():
            return pod
    return None


async def test_a_servedmodel_deleted_during_its_poll_goes_at_once(
    cluster: Cluster, operators: Operators
) -> None:
    """No finalizer holds it: the operator's poll is its own loop, not kopf's timers (which
    put a finalizer on every object they tick for and kept a deleted one Terminating for up to
    a minute while a poll was in flight)."""
    async with Stall() as registry:  # MLflow that answers nothing: each poll waits on it
        await operators.start(
            KUBELOOP_MLFLOW_TRACKING_URI=registry.url, MLFLOW_HTTP_REQUEST_TIMEOUT="4"
        )
        await cluster.create(SM, served_model("slow", "digits"))
        await eventually(registry.waiting, "a reconcile waiting on the registry", 30)
        found = await cluster.get(SM, "slow")
        assert found is not None
        assert not found["metadata"].get("finalizers")
        await cluster.delete(SM, "slow")

        async def released() -> bool:
            return await cluster.get(SM, "slow") is None

        await eventually(released, "the deleted ServedModel released", 5)


class Stall:
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""

    def __init__(self) -> None:
        self.open: dict[asyncio.StreamWriter, float] = {}
        """Each open connection, and when it was accepted (loop time)."""
        self.url = ""

    async def __aenter__(self) -> Stall:
        self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_: object) -> None:
        for writer in self.open:
            writer.close()
        self._server.close()
        await self._server.wait_closed()

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open[writer] = asyncio.get_running_loop().time()
        try:
            while await reader.read(4096):
                pass
        finally:
            self.open.pop(writer, None)
            writer.close()

    async def waiting(self, for_seconds: float = 0.5) -> bool:
        """Whether a client has waited `for_seconds` already for an answer (and waits on)."""
        now = asyncio.get_running_loop().time()
        return any(now - since >= for_seconds for since in self.open.values())
