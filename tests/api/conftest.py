"""The real operator (`kubeloop operator`, kopf, real HTTP) against kmock's Kubernetes emulator.

`cluster` is the emulator with kubeloop's, batch, core and apps resources declared (KServe's
too unless a test says otherwise); `operator` starts the operator as a subprocess with a
kubeconfig pointing at it. Tests act as the controllers the emulator lacks (the Job
controller, KServe) by writing children's status through the same HTTP API.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import kmock
import pytest
import pytest_asyncio

from kubeloop.local import services
from tests import emulator

T = TypeVar("T")
NAMESPACE = "default"
API = emulator.API


def path(resource: str, name: str | None = None, namespace: str | None = NAMESPACE) -> str:
    """REST path of `resource` ('group/version/plural' or 'v1/plural') and an object."""
    group_version, _, plural = resource.rpartition("/")
    base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
    if namespace is not None:
        base += f"/namespaces/{namespace}"
    base += f"/{plural}"
    return f"{base}/{name}" if name else base


@dataclass
class Cluster:
    """The emulator plus the kubeconfig that points at it."""

    kmock: kmock.KubernetesEmulator
    kubeconfig: Path

    async def create(
        self, resource: str, body: dict[str, Any], namespace: str | None = NAMESPACE
    ) -> dict[str, Any]:
        """Create an object (cluster-scoped with `namespace` None)."""
        if namespace is not None:
            namespace = body["metadata"].setdefault("namespace", namespace)
        # The emulator assigns nothing: give objects what the API server would.
        body["metadata"].setdefault("uid", f"uid-{body['metadata']['name']}")
        body["metadata"].setdefault("generation", 1)
        body["metadata"].setdefault("resourceVersion", "1")
        response = await self.kmock.post(path(resource, namespace=namespace), json=body)
        assert response.status < 300, await response.text()
        return dict(await response.json())

    async def get(
        self, resource: str, name: str, namespace: str = NAMESPACE
    ) -> dict[str, Any] | None:
        response = await self.kmock.get(path(resource, name, namespace))
        return dict(await response.json()) if response.status == 200 else None

    async def list_objects(self, resource: str, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
        response = await self.kmock.get(path(resource, namespace=namespace))
        if response.status == 404:
            return []
        return list((await response.json())["items"])

    async def patch(
        self, resource: str, name: str, patch: dict[str, Any], subresource: str | None = None
    ) -> dict[str, Any]:
        url = path(resource, name) + (f"/{subresource}" if subresource else "")
        response = await self.kmock.patch(
            url, json=patch, headers={"Content-Type": "application/merge-patch+json"}
        )
        assert response.status < 300, await response.text()
        return dict(await response.json())

    async def delete(self, resource: str, name: str) -> None:
        await self.kmock.delete(path(resource, name))

    async def events(self, name: str) -> list[dict[str, Any]]:
        """Events about the object called `name`."""
        return [
            e
            for e in await self.list_objects("v1/events")
            if e.get("involvedObject", {}).get("name") == name
        ]

    async def reasons(self, name: str) -> list[str]:
        return [e["reason"] for e in await self.events(name)]


def training_job(name: str, **spec: Any) -> dict[str, Any]:
    """A TrainingJob of the digits base model, with `spec` fields added or replaced."""
    return {
        "apiVersion": API,
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "plugin": {"name": "image-classifier"},
            "datasets": [{"name": "base", "uri": "builtin://digits"}],
            "registeredModel": "digits",
            **spec,
        },
    }


async def eventually(
    probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 20.0
) -> T:
    """Await `probe` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


async def status_of(cluster: Cluster, resource: str, name: str) -> dict[str, Any]:
    found = await cluster.get(resource, name)
    return dict((found or {}).get("status") or {})


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


@pytest.fixture
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    """kmock's pytest fixture builds kubeloop's emulator (versioned writes)."""
    return {**kmock_options, "cls": emulator.Emulator}


@pytest_asyncio.fixture
async def cluster(
    kmock: kmock.KubernetesEmulator, tmp_path: Path, request: pytest.FixtureRequest
) -> Cluster:
    emulator.declare(kmock, kserve=not request.node.get_closest_marker("without_kserve"))
    kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url), "test")
    return Cluster(kmock, kubeconfig)


@dataclass
class Operator:
    """A `kubeloop operator` process."""

    process: asyncio.subprocess.Process
    log: Path
    metrics_url: str
    health_url: str
    env: dict[str, str] = field(default_factory=dict)

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as session, session.get(self.metrics_url) as response:
            return await response.text()

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    async def kill(self) -> None:
        """SIGKILL: a crash, with no chance to finish anything."""
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    def tail(self, lines: int = 60) -> str:
        return services.log_tail(self.log, lines)


OperatorFactory = Callable[..., Awaitable[Operator]]


@pytest_asyncio.fixture
async def operator(cluster: Cluster, tmp_path: Path) -> AsyncIterator[OperatorFactory]:
    """Start operators (several in turn: restarts); all are stopped at teardown."""
    started: list[Operator] = []

    async def start(*args: str, **env: str) -> Operator:
        metrics_port, health_port = services.free_port(), services.free_port()
        health = f"http://127.0.0.1:{health_port}/healthz"
        log = tmp_path / f"operator-{len(started)}.log"
        environment = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "KUBELOOP_METRICS_HOST": "127.0.0.1",
            "KUBELOOP_METRICS_PORT": str(metrics_port),
            "KUBELOOP_POLL_SECONDS": "0.5",
            "KUBELOOP_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{services.free_port()}",
            "KUBELOOP_S3_SECRET_NAME": "kubeloop-s3",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            **env,
        }
        command = args or ("--all-namespaces", "--standalone")
        with log.open("wb") as output:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "kubeloop.cli",
                "operator",
                *command,
                "--liveness",
                health,
                env=environment,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
            )
        running = Operator(process, log, f"http://127.0.0.1:{metrics_port}/metrics", health, env)
        started.append(running)

        async def healthy() -> bool:
            if process.returncode is not None:
                raise AssertionError(f"the operator exited: {running.tail()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with aiohttp.ClientSession() as session, session.get(health) as response:
                    return response.status == 200
            return False

        await eventually(healthy, "the operator's liveness endpoint", timeout=30)
        return running

    yield start
    for running in started:
        await running.stop()
        print(f"--- {running.log.name} (shown when a test fails)\n{running.tail(80)}")
    failed = [r for r in started if r.process.returncode not in (0, -signal.SIGKILL, None)]
    assert not failed, f"an operator exited with an error: {failed[0].tail()}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "without_kserve: the emulated cluster has no KServe CRD")
