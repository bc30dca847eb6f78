"""The operator process itself: kopf peering for leader election, /metrics and the health
endpoint, and finalizers only where kopf's timers need them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import API, Cluster, OperatorFactory, eventually

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]
PEERINGS = "kopf.dev/v1/clusterkopfpeerings"


async def test_peering_registers_the_operator_and_it_reconciles(
    cluster: Cluster, operator: OperatorFactory
) -> None:
    peering = {
        "apiVersion": "kopf.dev/v1",
        "kind": "ClusterKopfPeering",
        "metadata": {"name": "kubeloop"},
    }
    await cluster.create(PEERINGS, peering, namespace=None)
    running = await operator("--all-namespaces", "--peering", "kubeloop", "--priority", "7")

    async def peers() -> dict[str, Any] | None:
        found = await cluster.kmock.get("/apis/kopf.dev/v1/clusterkopfpeerings/kubeloop")
        status = (await found.json()).get("status") or {}
        return status or None

    status = await eventually(peers, "the operator's presence in the peering")
    (identity,) = status.values()
    assert identity["priority"] == 7

    tj = {
        "apiVersion": API,
        "kind": "TrainingJob",
        "metadata": {"name": "led"},
        "spec": {
            "plugin": {"name": "p"},
            "datasets": [{"name": "base", "uri": "builtin://digits"}],
            "registeredModel": "m",
        },
    }
    await cluster.create(f"{API}/trainingjobs", tj)
    await eventually(lambda: cluster.get("batch/v1/jobs", "led"), "the leader's reconcile")
    created = await cluster.get(f"{API}/trainingjobs", "led")
    assert created is not None
    assert not created["metadata"].get("finalizers"), "TrainingJobs need no finalizer"
    exported = await running.metrics()
    assert 'kubeloop_reconcile_total{kind="TrainingJob",result="ok"}' in exported
    assert "kubeloop_reconcile_seconds_bucket" in exported
