"""The processes the local runtime starts, found again after `kubeloop up` itself was killed.

Each process is recorded in `<state>/processes.json` under a role (server/s3, trainer/<name>,
predictor/<name>) with its pid and start time, and carries KUBELOOP_LOCAL_OWNER=<state>|<role>
in its environment. A pid alone may name another process by now; pid and start time cannot.
A later `kubeloop up` adopts what a killed one left running (it keeps serving and training,
and is stopped by whoever holds the table when it closes); `kubeloop down` stops every process
a state directory started. The environment marker finds a process started in the instant
before a kill let its record be written.

A process started ahead of its work (a warm trainer, role standby/...) is handed its role
later (`hand_over`): its orders, a file naming the new role, are written whole before its
record moves, so a process found by its marker after a kill between the two is found under
the role it has taken.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from kubeloop.local import files, services

OWNER_ENV = "KUBELOOP_LOCAL_OWNER"


@dataclass
class Tracked:
    """One process of the state directory."""

    role: str
    pid: int
    started: float
    """The process's start time (seconds since the epoch), as the kernel reports it."""
    command: list[str]
    url: str = ""
    log: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    """What the role needs to know again after a restart (a predictor's arguments, ...)."""


class ProcessTable:
    """The processes of one state directory, persisted as they start and stop."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._file = state_dir / "processes.json"
        self._ports_file = state_dir / "ports.json"
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._tracked: dict[str, Tracked] = {}
        if self._file.exists():
            for raw in json.loads(self._file.read_text()):
                tracked = Tracked(**raw)
                self._tracked[tracked.role] = tracked
        self._adopt_unrecorded()
        self._drop_dead()

    def spawn(
        self,
        name: str,
        command: list[str],
        url: str,
        log_path: Path,
        cwd: Path,
        env: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> services.Service:
        """Start `command` as role `name` (services.spawn: its own session) and record it."""
        marker = {OWNER_ENV: f"{self.state_dir}|{name}"}
        service = services.spawn(name, command, url, log_path, cwd, {**(env or {}), **marker})
        process = service.process
        self._children[name] = process
        started = _start_time(process.pid) or time.time()
        self._tracked[name] = Tracked(
            name, process.pid, started, command, url, str(log_path), dict(extra or {})
        )
        self._save()
        return service

    def orders_file(self, role: str) -> Path:
        """Where the process started as `role` finds its orders when it is handed another."""
        return self.state_dir / "orders" / f"{role.replace('/', '-')}.json"

    def hand_over(self, role: str, new_role: str, orders: dict[str, Any], log: Path) -> Tracked:
        """Give the live process of `role` the role `new_role`: write its orders (with the new
        role in them) where it waits for them, then move its record; the moved record."""
        path = self.orders_file(role)
        files.write_json(path, {**orders, "role": new_role})
        moved = self._tracked.pop(role)
        moved.role, moved.log = new_role, str(log)
        moved.extra["orders"] = str(path)
        self._tracked[new_role] = moved
        child = self._children.pop(role, None)
        if child is not None:
            self._children[new_role] = child
        self._save()
        return moved

    def record(self, role: str) -> Tracked | None:
        """The record of `role`, alive or not (until it is forgotten)."""
        return self._tracked.get(role)

    def port(self, role: str, preferred: int | None) -> int:
        """A port for `role` to listen on, the same across restarts when it can be: the one it
        had, else `preferred`, else any free one; remembered in ports.json."""
        known = json.loads(self._ports_file.read_text()) if self._ports_file.exists() else {}
        running = self.get(role)
        for candidate in (known.get(role), preferred):
            if candidate and (running is not None or services.port_is_free(int(candidate))):
                chosen = int(candidate)
                break
        else:
            chosen = services.free_port()
        if known.get(role) != chosen:
            known[role] = chosen
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._ports_file.write_text(json.dumps(known))
        return chosen

    def get(self, role: str) -> Tracked | None:
        """The live process of `role`, or None."""
        tracked = self._tracked.get(role)
        return tracked if tracked is not None and self.alive(role) else None

    def roles(self, prefix: str = "") -> list[str]:
        return [role for role in self._tracked if role.startswith(prefix)]

    def alive(self, role: str) -> bool:
        """Whether the recorded process of `role` still runs (and is that process)."""
        child = self._children.get(role)
        if child is not None:
            return child.poll() is None
        tracked = self._tracked.get(role)
        return tracked is not None and _is_running(tracked.pid, tracked.started)

    def wait(self, timeout: float, prefix: str = "") -> None:
        """Sleep up to `timeout` seconds, less when a live process whose role starts with
        `prefix` ends meanwhile (it is watched through a pidfd: woken by its exit, not by
        a poll)."""
        watched: list[int] = []
        try:
            for role in self.roles(prefix):
                tracked = self._tracked[role]
                if self.alive(role):  # a child that ended is reaped here, so it is not watched
                    with contextlib.suppress(OSError):
                        watched.append(os.pidfd_open(tracked.pid))
            if watched:
                select.select(watched, [], [], timeout)
            else:
                time.sleep(timeout)
        finally:
            for descriptor in watched:
                os.close(descriptor)

    def exit_code(self, role: str) -> int | None:
        """The exit code of a process this table started and saw end; None otherwise."""
        child = self._children.get(role)
        code = child.poll() if child is not None else None
        return int(code) if code is not None else None

    def stop(self, role: str, timeout: float = 10.0) -> None:
        """SIGTERM the process group of `role`, then SIGKILL after `timeout`; forget it."""
        tracked = self._tracked.pop(role, None)
        child = self._children.pop(role, None)
        if tracked is not None and (child is not None or self._matches(tracked)):
            _stop_group(tracked.pid, timeout)
        _drop_orders(tracked)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout)
        self._save()

    def stop_all(self, prefix: str = "") -> list[str]:
        """Stop every process whose role starts with `prefix`; the roles stopped."""
        stopped = self.roles(prefix)
        for role in stopped:
            self.stop(role)
        return stopped

    def forget(self, role: str) -> None:
        """Drop the record of a process that has ended."""
        _drop_orders(self._tracked.pop(role, None))
        self._children.pop(role, None)
        self._save()

    def _matches(self, tracked: Tracked) -> bool:
        return _is_running(tracked.pid, tracked.started)

    def _drop_dead(self) -> None:
        dead = [
            r for r, t in self._tracked.items() if r not in self._children and not self._matches(t)
        ]
        for role in dead:
            _drop_orders(self._tracked.pop(role))
        if dead:
            self._save()

    def _adopt_unrecorded(self) -> None:
        """Record processes that carry this state directory's marker but no record (or their
        record under a role they were handed over from)."""
        for process, marker_role in marked(self.state_dir):
            role, orders = marker_role, self.orders_file(marker_role)
            with contextlib.suppress(OSError, ValueError, KeyError):
                role = str(json.loads(orders.read_text())["role"])
            if role in self._tracked and self._tracked[role].pid == process.pid:
                continue
            for other in [r for r, t in self._tracked.items() if t.pid == process.pid]:
                del self._tracked[other]  # its record from before the hand-over
            with contextlib.suppress(psutil.Error):
                extra = {"orders": str(orders)} if role != marker_role else {}
                self._tracked[role] = Tracked(
                    role, process.pid, process.create_time(), process.cmdline(), extra=extra
                )
        self._save()

    def _save(self) -> None:
        files.write_json(self._file, [asdict(t) for t in self._tracked.values()], indent=1)


def _drop_orders(tracked: Tracked | None) -> None:
    """Remove the orders a process was handed over with, once its record goes."""
    if tracked is not None and tracked.extra.get("orders"):
        Path(tracked.extra["orders"]).unlink(missing_ok=True)


def _start_time(pid: int) -> float | None:
    with contextlib.suppress(psutil.Error):
        return float(psutil.Process(pid).create_time())
    return None


def _is_running(pid: int, started: float) -> bool:
    try:
        process = psutil.Process(pid)
        return (
            abs(process.create_time() - started) < 0.5 and process.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.Error:
        return False


def marked(state_dir: Path) -> Iterator[tuple[psutil.Process, str]]:
    """Live processes whose environment names `state_dir` as their owner, with their role:
    the leaders of their process groups (a server's workers inherit the marker too)."""
    prefix = f"{state_dir.resolve()}|"
    for process in psutil.process_iter():
        try:
            owner = process.environ().get(OWNER_ENV, "")
            leads = os.getpgid(process.pid) == process.pid
            if owner.startswith(prefix) and leads and process.status() != psutil.STATUS_ZOMBIE:
                yield process, owner.removeprefix(prefix)
        except (OSError, psutil.Error):
            continue


def _stop_group(pid: int, timeout: float) -> None:
    """SIGTERM the process group `pid` leads, SIGKILL it after `timeout` if it lingers."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _group_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # A zombie leader keeps the group "alive" for killpg; it has ended all the same.
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                return True
        except (OSError, psutil.Error):
            continue
    return False
