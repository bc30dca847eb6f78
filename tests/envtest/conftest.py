"""The operator against a real Kubernetes control plane (etcd, kube-apiserver and
kube-controller-manager v1.20.2, started once per session; see control_plane.py).

Without the binaries (KUBEBUILDER_ASSETS, or the cache .ci/run fills) every test here skips,
saying so. kubeloop's CRDs (crds/), kopf's peering CRDs and KServe's InferenceService CRD are
installed before the controller-manager starts. The chart's RBAC is installed twice: release
`kubeloop` (all namespaces, a ClusterRole) and release `kubeloop-ns` (watchNamespaces: a Role
in each); the operator always runs with a release's ServiceAccount token, never as admin, and
`operators` fails a test whose operator was refused any request (audit log, 403).

The tests play the missing node (tests/envtest/kubelet.py) and KServe. test_chart_rbac.py's
last test reads what the operators asked for in all of them; the hooks below run it last and
record which envtest tests ran and how they ended, so it can tell whether that is complete.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests import operator_harness
from tests.envtest import audit, control_plane, releases, runs

ROOT = Path(__file__).resolve().parents[2]
ASSETS, NO_ASSETS = control_plane.find_assets()
KSERVE_CRD = ROOT / "tests" / "vendor" / "kserve" / "serving.kserve.io_inferenceservices.yaml"
JOBSET_CRD = ROOT / "tests" / "vendor" / "jobset" / "jobset.x-k8s.io_jobsets.yaml"
TRAINJOB_CRD = (
    ROOT / "tests" / "vendor" / "kubeflow-trainer" / "trainer.kubeflow.org_trainjobs.yaml"
)
"""Installed by the tests that need it (tests/envtest/test_chart_rbac.py), removed after."""
MODES: dict[str, tuple[str, dict[str, Any]]] = {
    "cluster": ("kubeloop", {}),
    "namespaces": ("kubeloop-ns", {"watchNamespaces": ["team-a", "team-b"]}),
}
"""Chart installs: mode -> (release name, values)."""
WATCHED = MODES["namespaces"][1]["watchNamespaces"]


def crd_files() -> list[Path]:
    return [
        *sorted((ROOT / "crds").glob("*.yaml")),
        ROOT / "helm" / "kubeloop" / "crds" / "kopf.dev_peerings.yaml",
        KSERVE_CRD,
        JOBSET_CRD,
    ]


@pytest.fixture(scope="session")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[control_plane.ControlPlane]:
    if ASSETS is None:
        pytest.skip(NO_ASSETS)
    folder = tmp_path_factory.mktemp("envtest")
    started = control_plane.start(ASSETS, folder, control_plane.load_crds(crd_files()))
    yield started
    started.stop()


@pytest.fixture(scope="session")
def audit_log(plane: control_plane.ControlPlane) -> audit.AuditLog:
    return audit.AuditLog(plane.audit_log)


@pytest.fixture(scope="session")
def chart_releases(
    plane: control_plane.ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, releases.Release]:
    """mode ("cluster", "namespaces") -> the chart installed that way."""
    folder = tmp_path_factory.mktemp("releases")
    return {
        mode: releases.install(plane, name, values, folder)
        for mode, (name, values) in MODES.items()
    }


@pytest_asyncio.fixture
async def cluster(
    plane: control_plane.ControlPlane, request: pytest.FixtureRequest
) -> AsyncIterator[operator_harness.Cluster]:
    """The admin's REST client, in a new namespace (deleted afterwards) whose `default`
    ServiceAccount has its token already, so that the Job controller can create pods."""
    connector = aiohttp.TCPConnector(ssl=plane.admin_tls())
    async with aiohttp.ClientSession(plane.server, connector=connector) as session:
        cluster = operator_harness.Cluster(session, plane.admin_kubeconfig)
        words = re.sub("[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_"))
        cluster.namespace = f"{words[:40].strip('-')}-{uuid.uuid4().hex[:6]}"
        await new_namespace(cluster, cluster.namespace)
        yield cluster
        for namespace in (cluster.namespace, *WATCHED):
            await clear_namespace(cluster, namespace)
        await cluster.call("DELETE", f"/api/v1/namespaces/{cluster.namespace}")


async def new_namespace(cluster: operator_harness.Cluster, name: str) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    await cluster.create_cluster_scoped("v1/namespaces", body)

    async def token() -> bool:
        found = await cluster.get("v1/serviceaccounts", "default", name)
        return bool(found and found.get("secrets"))

    await operator_harness.eventually(token, f"namespace {name}'s default ServiceAccount token")


async def clear_namespace(cluster: operator_harness.Cluster, namespace: str) -> None:
    """Delete kubeloop's objects in `namespace`, releasing kopf's finalizers first (the
    operators are stopped by then): nothing is left for the next test's operators."""
    for resource in (operator_harness.TJ, operator_harness.FD, operator_harness.SM):
        for found in await cluster.list_objects(resource, namespace):
            name = found["metadata"]["name"]
            if found["metadata"].get("finalizers"):
                release = {"metadata": {"finalizers": None}}
                await cluster.patch(resource, name, release, namespace=namespace)
            await cluster.delete(resource, name, namespace)


@pytest_asyncio.fixture
async def operators(
    cluster: operator_harness.Cluster,
    chart_releases: dict[str, releases.Release],
    audit_log: audit.AuditLog,
    tmp_path: Path,
) -> AsyncIterator[operator_harness.Operators]:
    """Start operators with the cluster-mode release's token (`kubeconfig=` for another);
    at teardown, fail if the API server refused any of their requests."""
    since = audit_log.mark()
    started = operator_harness.Operators(chart_releases["cluster"].kubeconfig, tmp_path)
    yield started
    await started.stop_all()
    users = {r.user for r in chart_releases.values()}
    denied = [r for r in audit_log.read(since, users) if r.code == 403]
    assert not denied, "the API server refused the operator:\n" + "\n".join(map(str, denied))


# --- which envtest tests ran: for the check that reads them all ----------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{runs.SUMMARY_MARKER}: runs after every other envtest test, reading what they did",
    )
    config.stash[runs.OUTCOMES] = {}
    config.stash[runs.DESELECTED] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The summary tests last (a stable sort keeps the others' order)."""
    items.sort(key=lambda item: item.get_closest_marker(runs.SUMMARY_MARKER) is not None)


def pytest_deselected(items: list[pytest.Item]) -> None:
    for item in items:
        if runs.is_envtest(item.path):
            item.config.stash[runs.DESELECTED].append(item.nodeid)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if runs.is_envtest(item.path):
        runs.record(item, report)
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say once, even without -rs, why the envtest tests did not run."""
    skipped = [
        r
        for r in terminalreporter.stats.get("skipped", [])
        if NO_ASSETS and NO_ASSETS in str(getattr(r, "longrepr", ""))
    ]
    if skipped:
        terminalreporter.write_line(f"tests/envtest: {len(skipped)} tests skipped: {NO_ASSETS}")
