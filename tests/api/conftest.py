"""The real operator (`kubeloop operator`, kopf, real HTTP) against kmock's Kubernetes emulator.

`cluster` is the emulator with kubeloop's, batch, core and apps resources declared (KServe's
too unless a test says otherwise); `operator` starts the operator as a subprocess with a
kubeconfig pointing at it. Tests act as the controllers the emulator lacks (the Job
controller, KServe) by writing children's status through the same HTTP API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kmock
import pytest
import pytest_asyncio

from tests import emulator, operator_harness
from tests.operator_harness import OperatorFactory


class Cluster(operator_harness.Cluster):
    """The emulator plus the kubeconfig that points at it."""

    def __init__(self, emulator: kmock.KubernetesEmulator, kubeconfig: Path) -> None:
        super().__init__(emulator, kubeconfig)
        self.kmock = emulator

    def prepare(self, body: dict[str, Any]) -> None:
        # The emulator assigns nothing: give objects what the API server would.
        body["metadata"].setdefault("uid", f"uid-{body['metadata']['name']}")
        body["metadata"].setdefault("generation", 1)
        body["metadata"].setdefault("resourceVersion", "1")


@pytest.fixture
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    """kmock's pytest fixture builds kubeloop's emulator (versioned writes)."""
    return {**kmock_options, "cls": emulator.Emulator}


@pytest_asyncio.fixture
async def cluster(
    kmock: kmock.KubernetesEmulator, tmp_path: Path, request: pytest.FixtureRequest
) -> Cluster:
    emulator.declare(
        kmock,
        kserve=not request.node.get_closest_marker("without_kserve"),
        trainer=not request.node.get_closest_marker("without_trainer"),
    )
    kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url), "test")
    return Cluster(kmock, kubeconfig)


@pytest_asyncio.fixture
async def operator(cluster: Cluster, tmp_path: Path) -> AsyncIterator[OperatorFactory]:
    """Start operators (several in turn: restarts); all are stopped at teardown."""
    operators = operator_harness.Operators(cluster.kubeconfig, tmp_path)
    yield operators.start
    await operators.stop_all()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "without_kserve: the emulated cluster has no KServe CRD")
    config.addinivalue_line(
        "markers", "without_trainer: the emulated cluster has neither Kubeflow Trainer nor JobSet"
    )
