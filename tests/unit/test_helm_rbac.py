"""The chart's RBAC and the operator it starts, as rendered: the Deployment's arguments and env
reach `kubeloop operator` as the values say, peering objects exist where kopf looks for them,
and turning peering or RBAC off removes exactly their objects and grants.

Whether the grants are exactly what the operator uses is checked against a real API server:
tests/envtest/test_chart_rbac.py derives the rules from the requests the operator's
ServiceAccount made in all envtest tests (the audit log) and compares them with the chart's.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
import prometheus_client
import pytest

from kubeloop import cli
from kubeloop.kube import client
from tests.helm_chart import RELEASE_NAMESPACE, by_kind, granted, render

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class OperatorRun:
    """What `kubeloop operator` hands to kopf.run, as the chart's Deployment starts it."""

    clusterwide: bool
    namespaces: list[str]
    peering_name: str | None
    standalone: bool
    metrics: tuple[int, str]
    liveness: str | None


def start_operator(deployment: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> OperatorRun:
    """Run the image's ENTRYPOINT with the Deployment's args and env, up to kopf.run."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "command" not in container, "the image's ENTRYPOINT starts the operator"
    dockerfile = (ROOT / "images" / "operator" / "Dockerfile").read_text()
    (line,) = [x for x in dockerfile.splitlines() if x.startswith("ENTRYPOINT")]
    entrypoint = json.loads(line.removeprefix("ENTRYPOINT"))
    assert entrypoint[0] == "kubeloop", "the console script of kubeloop.cli:main"

    for name in [n for n in os.environ if n.startswith("KUBELOOP_")]:
        monkeypatch.delenv(name)
    for env in container["env"]:
        monkeypatch.setenv(env["name"], env.get("value", "from-a-secret"))

    captured: dict[str, Any] = {}
    metrics: list[tuple[int, str]] = []
    monkeypatch.setattr(kopf, "run", lambda **kwargs: captured.update(kwargs))
    monkeypatch.setattr(kopf, "configure", lambda **_: None)
    monkeypatch.setattr(
        prometheus_client, "start_http_server", lambda port, addr: metrics.append((port, addr))
    )
    monkeypatch.setattr(
        client.KubeClient, "from_environment", classmethod(lambda cls: cls(api=None))
    )
    loggers = [logging.getLogger(n) for n in ("kubeloop", "kopf.objects", "aiohttp.access")]
    levels = [logger.level for logger in loggers]
    try:
        assert cli.main([*entrypoint[1:], *container["args"]]) == 0
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    (served,) = metrics
    return OperatorRun(
        clusterwide=captured["clusterwide"],
        namespaces=list(captured["namespaces"]),
        peering_name=captured["peering_name"],
        standalone=bool(captured["standalone"]),
        metrics=served,
        liveness=captured["liveness_endpoint"],
    )


MODES = {
    "all-namespaces": {},
    "all-namespaces-standalone": {"peering": {"enabled": False}},
    "namespaces": {"watchNamespaces": ["team-a", "team-b"], "serviceAccount": {"name": "robot"}},
    "namespaces-standalone": {"watchNamespaces": ["team-a"], "peering": {"enabled": False}},
}


@pytest.mark.parametrize("values", MODES.values(), ids=MODES.keys())
def test_peering_objects_are_where_the_operator_looks(
    values: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    documents = render(values)
    (deployment,) = by_kind(documents, "Deployment")
    run = start_operator(deployment, monkeypatch)
    peerings = {
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
        for d in documents
        if d["apiVersion"].startswith("kopf.dev/")
    }
    if run.standalone:
        assert peerings == set()
    elif run.clusterwide:
        assert peerings == {("ClusterKopfPeering", None, run.peering_name)}
    else:
        assert peerings == {("KopfPeering", n, run.peering_name) for n in run.namespaces}


@pytest.mark.parametrize("watch", [[], ["team-a", "team-b"]], ids=["all-namespaces", "namespaces"])
def test_standalone_drops_the_peering_grants_and_nothing_else(watch: list[str]) -> None:
    def grants(values: dict[str, Any]) -> dict[str, set[tuple[str, str, str]]]:
        documents = render({"watchNamespaces": watch, **values})
        (deployment,) = by_kind(documents, "Deployment")
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        return granted(documents, account, RELEASE_NAMESPACE)

    peered, standalone = grants({}), grants({"peering": {"enabled": False}})
    assert set(peered) == set(standalone)
    for scope, rules in peered.items():
        assert rules - standalone[scope] == {r for r in rules if r[0] == "kopf.dev"}
        assert standalone[scope] <= rules


def test_no_rbac_without_rbac_create() -> None:
    kinds = {d["kind"] for d in render({"rbac": {"create": False}})}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def test_deployment_starts_the_operator_as_the_values_say(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = {
        "watchNamespaces": ["team-a"],
        "peering": {"name": "loop"},
        "metrics": {"host": "::", "port": 9090, "healthPort": 9091},
    }
    (deployment,) = by_kind(render(values), "Deployment")
    run = start_operator(deployment, monkeypatch)
    assert (run.clusterwide, run.namespaces, run.peering_name) == (False, ["team-a"], "loop")
    assert run.metrics == (9090, "::")
    assert run.liveness == "http://[::]:9091/healthz"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 9090, "health": 9091}
