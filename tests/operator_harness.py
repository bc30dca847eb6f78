"""What the operator tests share, whichever API server they run against (tests/api: kmock's
emulator; tests/envtest: a real kube-apiserver): REST calls with objects as dicts, waiting on a
condition, and `kubeloop operator` processes started with a kubeconfig."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from kubeloop.local import services

T = TypeVar("T")
API = "kubeloop.io/v1alpha1"
NAMESPACE = "default"
TJ = f"{API}/trainingjobs"
FD = f"{API}/feedbackdatasets"
SM = f"{API}/servedmodels"
ISVC = "serving.kserve.io/v1beta1/inferenceservices"


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
    """An API server's REST API with objects as dicts, in `namespace` unless told otherwise."""

    http: Any
    """aiohttp.ClientSession or kmock's emulator: what `call` needs is their `request`."""
    kubeconfig: Path
    namespace: str = NAMESPACE

    def prepare(self, body: dict[str, Any]) -> None:
        """Fill in what the server would assign before a create (nothing for a real one)."""

    async def call(
        self,
        method: str,
        url: str,
        body: Any = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        """Send one request; the status and the decoded body (text when it is not JSON)."""
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        async with self.http.request(method, url, json=body, headers=headers) as response:
            text = await response.text()
            status = int(response.status)
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text

    async def create(
        self, resource: str, body: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        """Create a namespaced object (in `namespace`, else the body's or the cluster's)."""
        namespace = body["metadata"].setdefault("namespace", namespace or self.namespace)
        return await self._create(path(resource, namespace=namespace), body)

    async def create_cluster_scoped(self, resource: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._create(path(resource, namespace=None), body)

    async def _create(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        self.prepare(body)
        status, data = await self.call("POST", url, body)
        assert status < 300, data
        return dict(data)

    async def get(
        self, resource: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        status, data = await self.call("GET", path(resource, name, namespace or self.namespace))
        return dict(data) if status == 200 else None

    async def list_objects(
        self, resource: str, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        status, data = await self.call("GET", path(resource, namespace=namespace or self.namespace))
        if status == 404:
            return []
        assert status == 200, data
        return list(data["items"])

    async def patch(
        self,
        resource: str,
        name: str,
        patch: dict[str, Any],
        subresource: str | None = None,
        namespace: str | None = None,
    ) -> dict[str, Any]:
        """A JSON merge patch of the object or its subresource."""
        url = path(resource, name, namespace or self.namespace)
        url += f"/{subresource}" if subresource else ""
        status, data = await self.call("PATCH", url, patch, "application/merge-patch+json")
        assert status < 300, data
        return dict(data)

    async def delete(self, resource: str, name: str, namespace: str | None = None) -> None:
        await self.call("DELETE", path(resource, name, namespace or self.namespace))

    async def events(self, name: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Events about the object called `name`."""
        return [
            e
            for e in await self.list_objects("v1/events", namespace)
            if e.get("involvedObject", {}).get("name") == name
        ]

    async def reasons(self, name: str, namespace: str | None = None) -> list[str]:
        return [e["reason"] for e in await self.events(name, namespace)]

    async def said(self, name: str, *reasons: str, namespace: str | None = None) -> list[str]:
        """The reasons of the Events about `name` once they hold `reasons` (each as often as
        it is named): kopf posts Events from a queue, after the handler that wrote a status."""

        async def held() -> list[str] | None:
            found = await self.reasons(name, namespace)
            return found if all(found.count(r) >= reasons.count(r) for r in reasons) else None

        return await eventually(held, f"Events {', '.join(reasons)} about {name}")


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


async def status_of(
    cluster: Cluster, resource: str, name: str, namespace: str | None = None
) -> dict[str, Any]:
    found = await cluster.get(resource, name, namespace)
    return dict((found or {}).get("status") or {})


def not_kept(sent: Any, stored: Any, where: str = "") -> list[str]:
    """Paths of `sent` that `stored` lacks or holds differently (what a schema pruned or a
    server changed); what `stored` has beyond `sent` does not count."""
    if isinstance(sent, dict) and isinstance(stored, dict):
        return [p for k, v in sent.items() for p in not_kept(v, stored.get(k), f"{where}.{k}")]
    if isinstance(sent, list) and isinstance(stored, list) and len(sent) == len(stored):
        pairs = enumerate(zip(sent, stored, strict=True))
        return [p for i, (a, b) in pairs for p in not_kept(a, b, f"{where}[{i}]")]
    return [] if sent == stored else [f"{where or '.'}: sent {sent!r}, kept {stored!r}"]


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


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

    async def reconciles(self, kind: str, result: str = "ok") -> float:
        """How many reconciles of `kind` ended with `result` (kubeloop_reconcile_total)."""
        prefix = f'kubeloop_reconcile_total{{kind="{kind}",result="{result}"}} '
        text = await self.metrics()
        return sum(float(x[len(prefix) :]) for x in text.splitlines() if x.startswith(prefix))

    async def polled(self, kind: str, times: int = 3) -> None:
        """Wait for `times` more reconciles of `kind` (polls, mostly): for checking that
        something does not happen."""

        async def count() -> float:
            return sum([await self.reconciles(kind, r) for r in ("ok", "retry", "error")])

        wanted = await count() + times

        async def done() -> bool:
            return await count() >= wanted

        await eventually(done, f"{times} more {kind} reconciles", 60)

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

    async def healthy(self) -> bool:
        if self.process.returncode is not None:
            raise AssertionError(f"the operator exited: {self.tail()}")
        with contextlib.suppress(aiohttp.ClientError):
            async with (
                aiohttp.ClientSession() as session,
                session.get(self.health_url) as response,
            ):
                return response.status == 200
        return False


OperatorFactory = Callable[..., Awaitable[Operator]]


@dataclass
class Operators:
    """Starts `kubeloop operator` processes against `kubeconfig` (several in turn: restarts),
    with `env` (KUBELOOP_* settings) under what each start adds."""

    kubeconfig: Path
    logs: Path
    env: dict[str, str] = field(default_factory=dict)
    started: list[Operator] = field(default_factory=list)

    async def spawn(self, *args: str, kubeconfig: Path | None = None, **env: str) -> Operator:
        """Start an operator without waiting for it (args default: all namespaces, standalone)."""
        metrics_port, health_port = services.free_port(), services.free_port()
        health = f"http://127.0.0.1:{health_port}/healthz"
        log = self.logs / f"operator-{len(self.started)}.log"
        environment = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig or self.kubeconfig),
            "KUBELOOP_METRICS_HOST": "127.0.0.1",
            "KUBELOOP_METRICS_PORT": str(metrics_port),
            "KUBELOOP_POLL_SECONDS": "0.5",
            "KUBELOOP_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{services.free_port()}",
            "KUBELOOP_S3_SECRET_NAME": "kubeloop-s3",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            **self.env,
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
        self.started.append(running)
        return running

    async def start(self, *args: str, kubeconfig: Path | None = None, **env: str) -> Operator:
        """Start an operator and wait until its liveness endpoint answers."""
        running = await self.spawn(*args, kubeconfig=kubeconfig, **env)
        await eventually(running.healthy, "the operator's liveness endpoint", timeout=30)
        return running

    async def stop_all(self) -> None:
        """Stop every operator, print their logs' tails, fail if one exited with an error."""
        for running in self.started:
            await running.stop()
            print(f"--- {running.log.name} (shown when a test fails)\n{running.tail(80)}")
        failed = [r for r in self.started if r.process.returncode not in (0, -signal.SIGKILL)]
        assert not failed, f"an operator exited with an error: {failed[0].tail()}"
