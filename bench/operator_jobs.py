"""Benchmark 4, the operator: time and peak memory to reconcile N TrainingJobs to Jobs.

Against kmock's Kubernetes emulator (real HTTP, in this process), N TrainingJobs are
created at once; the clock runs from the first create until every TrainingJob has its
Job and, for kubeloop, its status (phase and jobName). Memory is the operator process's
peak resident set (VmHWM), and its growth over the idle operator before the load.

Subject: `kubeloop operator --all-namespaces --standalone` (the Job, status,
events, a re-reconcile on every Job change).
Baseline, run alternately with it, each on a fresh emulator: bench/minimal_operator.py,
a kopf operator that only creates the same Jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import kmock

from bench.common import ROOT, Result, compare, interleaved, log
from kubeloop.local import services
from tests.emulator import API, Emulator, declare, write_kubeconfig

NAMESPACE = "default"
SETTLE_SECONDS = 1.0
SUBJECT = "kubeloop operator: Job, status, events per TrainingJob"
BASELINE = "minimal kopf operator creating the same Jobs only (bench/minimal_operator.py)"


HANDLED: dict[str, int] = {}
"""Requests the emulator answered, by action and resource ('list jobs'), since the last reset."""


class _Emulator(Emulator):
    """kubeloop's emulator (tests/emulator.py) without kmock's request history.

    kmock keeps every request (for test assertions) and matches each new one against that
    whole history, so N requests cost O(N^2): with 200 TrainingJobs the emulator, not the
    operator, would set the pace. Here a request leaves the history once it is answered.
    """

    async def _handle(self, request: Any) -> Any:
        action = str(getattr(request.action, "value", None) or request.method.value).lower()
        kind = request.resource.plural if request.resource is not None else "-"
        key = f"{action} {kind}"
        HANDLED[key] = HANDLED.get(key, 0) + 1
        try:
            return await super()._handle(request)
        finally:
            with contextlib.suppress(ValueError):
                self._requests.remove(request)


@dataclass(frozen=True)
class Settings:
    jobs: int
    rounds: int
    timeout: float = 240.0

    @classmethod
    def of(cls, quick: bool) -> Settings:
        return cls(40, 1) if quick else cls(200, 2)


@dataclass(frozen=True)
class Measured:
    jobs_seconds: float
    """First create until every TrainingJob has its Job."""
    done_seconds: float
    """... and (kubeloop) its status."""
    peak_rss_mib: float
    idle_rss_mib: float
    operator_cpu_s: float
    """CPU time the operator process used during the run."""
    emulator_cpu_s: float
    """CPU time of this process (the emulator, the creates and the polls) during the run."""
    requests: dict[str, int]
    """API requests the operator made, by action and resource, until it settled."""


def run(stack: object, quick: bool) -> list[Result]:
    del stack
    settings = Settings.of(quick)
    log(f"operator: {settings.jobs} TrainingJobs, {settings.rounds} round(s)")
    with tempfile.TemporaryDirectory(prefix="kubeloop-bench-operator-") as tmp:
        workdir = Path(tmp)
        measured = interleaved(
            {
                "kubeloop": lambda: asyncio.run(_once("kubeloop", settings, workdir)),
                "minimal": lambda: asyncio.run(_once("minimal", settings, workdir)),
            },
            settings.rounds,
        )
    ours = min(measured["kubeloop"], key=lambda m: m.done_seconds)
    base = min(measured["minimal"], key=lambda m: m.jobs_seconds)
    peak_ours = max(m.peak_rss_mib for m in measured["kubeloop"])
    peak_base = max(m.peak_rss_mib for m in measured["minimal"])
    growth_ours = max(m.peak_rss_mib - m.idle_rss_mib for m in measured["kubeloop"])
    growth_base = max(m.peak_rss_mib - m.idle_rss_mib for m in measured["minimal"])
    return [
        Result(
            "operator.reconcile.vs_minimal_kopf",
            "time to reconcile N TrainingJobs",
            "s",
            ours.done_seconds,
            base.jobs_seconds,
            SUBJECT,
            BASELINE,
            higher_is_better=False,
            details={
                "jobs_created_s": compare(ours.jobs_seconds, base.jobs_seconds),
                "per_trainingjob_ms": compare(
                    1000 * ours.done_seconds / settings.jobs,
                    1000 * base.jobs_seconds / settings.jobs,
                ),
                "peak_rss_mib": compare(peak_ours, peak_base),
                "rss_growth_mib": compare(growth_ours, growth_base),
                "operator_cpu_s": compare(
                    min(m.operator_cpu_s for m in measured["kubeloop"]),
                    min(m.operator_cpu_s for m in measured["minimal"]),
                ),
                "emulator_cpu_s": compare(
                    min(m.emulator_cpu_s for m in measured["kubeloop"]),
                    min(m.emulator_cpu_s for m in measured["minimal"]),
                ),
                "api_requests_per_trainingjob": compare(
                    sum(measured["kubeloop"][0].requests.values()) / settings.jobs,
                    sum(measured["minimal"][0].requests.values()) / settings.jobs,
                ),
                "api_requests": {
                    "figure": measured["kubeloop"][0].requests,
                    "baseline": measured["minimal"][0].requests,
                },
                "all_rounds_s": {
                    "figure": [m.done_seconds for m in measured["kubeloop"]],
                    "baseline": [m.jobs_seconds for m in measured["minimal"]],
                },
            },
            config={
                "trainingjobs": settings.jobs,
                "rounds": settings.rounds,
                "statistic": "best round for time, worst round for memory",
                "api": "kmock KubernetesEmulator over HTTP on 127.0.0.1 (in the bench process)",
            },
        )
    ]


async def _once(which: str, settings: Settings, workdir: Path) -> Measured:
    async with _Emulator() as emulator, kmock.Server(emulator):
        declare(emulator)
        kubeconfig = write_kubeconfig(workdir / f"kubeconfig-{which}", str(emulator.url), "bench")
        process, health = await _start(which, kubeconfig, workdir)
        try:
            await _wait_healthy(process, health, workdir / f"operator-{which}.log")
            await asyncio.sleep(1.0)  # let the watches settle before the load
            idle = _memory(process.pid)["VmRSS"]
            cpu_before, own_before = _cpu_seconds(process.pid), time.process_time()
            HANDLED.clear()
            polls = 0
            started = time.perf_counter()
            for i in range(settings.jobs):
                await _create(emulator, f"bench-{i:04d}")
            jobs_at: float | None = None
            jobs_polls = 0
            deadline = started + settings.timeout
            while time.perf_counter() < deadline:
                if process.returncode is not None:
                    break
                jobs = await _list(emulator, "/apis/batch/v1/namespaces/default/jobs")
                polls += 1
                if jobs_at is None and len(jobs) >= settings.jobs:
                    jobs_at, jobs_polls = time.perf_counter(), polls
                if jobs_at is not None and (
                    which == "minimal" or await _statuses_done(emulator, settings.jobs)
                ):
                    status_polls = 0 if which == "minimal" else polls - jobs_polls + 1
                    done = time.perf_counter()
                    memory = _memory(process.pid)
                    cpu = _cpu_seconds(process.pid) - cpu_before
                    own = time.process_time() - own_before
                    await asyncio.sleep(SETTLE_SECONDS)  # what the last changes still cause
                    requests = dict(HANDLED)
                    requests["create trainingjobs"] -= settings.jobs  # the bench's
                    requests["list jobs"] -= polls
                    requests["list trainingjobs"] = (
                        requests.get("list trainingjobs", 0) - status_polls
                    )
                    return Measured(
                        jobs_at - started,
                        done - started,
                        memory["VmHWM"],
                        idle,
                        cpu,
                        own,
                        {k: v for k, v in sorted(requests.items()) if v > 0},
                    )
                await asyncio.sleep(0.1)
            raise RuntimeError(
                f"{which} operator did not reconcile {settings.jobs} TrainingJobs within "
                f"{settings.timeout:.0f}s; log tail:\n"
                + services.log_tail(workdir / f"operator-{which}.log", 30)
            )
        finally:
            await _stop(process)


async def _start(
    which: str, kubeconfig: Path, workdir: Path
) -> tuple[asyncio.subprocess.Process, str]:
    health = f"http://127.0.0.1:{services.free_port()}/healthz"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KUBELOOP_")},
        "KUBECONFIG": str(kubeconfig),
        "KUBELOOP_METRICS_HOST": "127.0.0.1",
        "KUBELOOP_METRICS_PORT": str(services.free_port()),
        "KUBELOOP_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{services.free_port()}",
        "KUBELOOP_S3_SECRET_NAME": "kubeloop-s3",
    }
    if which == "kubeloop":
        args = ["-m", "kubeloop.cli", "operator", "--all-namespaces", "--standalone"]
    else:
        script = str(ROOT / "bench" / "minimal_operator.py")
        args = ["-m", "kopf", "run", "--standalone", "--all-namespaces", script]
    with (workdir / f"operator-{which}.log").open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            "--liveness",
            health,
            env=env,
            cwd=ROOT,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
        )
    return process, health


async def _wait_healthy(process: asyncio.subprocess.Process, url: str, log_path: Path) -> None:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                break
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the operator did not start:\n{services.log_tail(log_path, 30)}")


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _create(emulator: Any, name: str) -> None:
    body = {
        "apiVersion": API,
        "kind": "TrainingJob",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": f"uid-{name}",
            "generation": 1,
            "resourceVersion": "1",
        },
        "spec": {
            "plugin": {"name": "image-classifier"},
            "datasets": [{"name": "base", "uri": "builtin://digits"}],
            "registeredModel": "digits",
        },
    }
    response = await emulator.post(f"/apis/{API}/namespaces/{NAMESPACE}/trainingjobs", json=body)
    if response.status >= 300:
        raise RuntimeError(f"creating {name}: {response.status} {await response.text()}")


async def _list(emulator: Any, path: str) -> list[dict[str, Any]]:
    response = await emulator.get(path)
    if response.status == 404:
        return []
    return list((await response.json())["items"])


async def _statuses_done(emulator: Any, count: int) -> bool:
    items = await _list(emulator, f"/apis/{API}/namespaces/{NAMESPACE}/trainingjobs")
    done = [t for t in items if (t.get("status") or {}).get("jobName") and t["status"].get("phase")]
    return len(done) >= count


def _memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak resident set) of a process, in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
