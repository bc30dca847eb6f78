"""The operator process itself: kopf peering for leader election, /metrics and the health
endpoint, finalizers only where kopf's timers need them, and watching listed namespaces."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.api.conftest import Cluster
from tests.operator_harness import API, OperatorFactory, eventually, status_of, training_job

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
    await cluster.create_cluster_scoped(PEERINGS, peering)
    running = await operator("--all-namespaces", "--peering", "kubeloop", "--priority", "7")

    async def peers() -> dict[str, Any] | None:
        found = await cluster.kmock.get("/apis/kopf.dev/v1/clusterkopfpeerings/kubeloop")
        status = (await found.json()).get("status") or {}
        return status or None

    status = await eventually(peers, "the operator's presence in the peering")
    (identity,) = status.values()
    assert identity["priority"] == 7

    await cluster.create(f"{API}/trainingjobs", training_job("led"))
    await eventually(lambda: cluster.get("batch/v1/jobs", "led"), "the leader's reconcile")
    created = await cluster.get(f"{API}/trainingjobs", "led")
    assert created is not None
    assert not created["metadata"].get("finalizers"), "TrainingJobs need no finalizer"
    exported = await running.metrics()
    assert 'kubeloop_reconcile_total{kind="TrainingJob",result="ok"}' in exported
    assert "kubeloop_reconcile_seconds_bucket" in exported


async def test_a_listed_namespace_is_watched_and_no_other(
    cluster: Cluster, operator: OperatorFactory
) -> None:
    for namespace in ("team-a", "team-b"):
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        await cluster.create_cluster_scoped("v1/namespaces", body)
    await operator("--namespace", "team-a", "--standalone")
    for namespace in ("team-b", "team-a"):  # the unwatched one first
        await cluster.create(f"{API}/trainingjobs", training_job("tj"), namespace=namespace)
    await eventually(
        lambda: cluster.get("batch/v1/jobs", "tj", namespace="team-a"), "team-a's Job", 20
    )
    await asyncio.sleep(1.0)  # team-b's TrainingJob came first: it would have its Job by now
    assert await cluster.get("batch/v1/jobs", "tj", namespace="team-b") is None
    unwatched = await cluster.get(f"{API}/trainingjobs", "tj", namespace="team-b")
    assert unwatched is not None
    assert "status" not in unwatched


async def test_no_finalizers_so_a_deletion_needs_no_running_operator(
    cluster: Cluster, operator: OperatorFactory
) -> None:
    running = await operator()
    dataset = {
        "apiVersion": API,
        "kind": "FeedbackDataset",
        "metadata": {"name": "fd"},
        "spec": {"storage": {"bucket": "kubeloop", "prefix": "fb/"}, "classes": ["a", "b"]},
    }
    served = {
        "apiVersion": API,
        "kind": "ServedModel",
        "metadata": {"name": "sm"},
        "spec": {"registeredModel": "digits"},
    }
    await cluster.create(f"{API}/feedbackdatasets", dataset)
    await cluster.create(f"{API}/servedmodels", served)
    for plural, name in (("feedbackdatasets", "fd"), ("servedmodels", "sm")):
        await eventually(
            lambda plural=plural, name=name: status_of(cluster, f"{API}/{plural}", name),
            f"the operator's status of {name}",
        )
    for kind in ("FeedbackDataset", "ServedModel"):  # time for kopf to put a finalizer
        await running.polled(kind)
    await running.stop()
    for plural, name in (("feedbackdatasets", "fd"), ("servedmodels", "sm")):
        found = await cluster.get(f"{API}/{plural}", name)
        assert found is not None
        assert not found["metadata"].get("finalizers"), f"{name} has a finalizer"
        await cluster.delete(f"{API}/{plural}", name)
        assert await cluster.get(f"{API}/{plural}", name) is None, f"{name} waits for an operator"
