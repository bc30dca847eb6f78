"""One `kubeloop up` (or demo) per state directory at a time, and `kubeloop down`'s way to it.

The lock is an flock on `<state>/up.lock`, which holds the pid of the process that has it:
the kernel releases it when that process ends, however it ends, so a killed `up` never leaves
a stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

LOCK = "up.lock"


class StateBusy(RuntimeError):
    """Another process runs this state directory."""


@contextlib.contextmanager
def holding(state_dir: Path) -> Iterator[None]:
    """Hold the state directory's lock; StateBusy naming the holder when another has it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateBusy(
                f"another kubeloop (pid {holder(state_dir) or '?'}) runs {state_dir}: stop it "
                "(`kubeloop down`), or give this one another --state-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def holder(state_dir: Path) -> int | None:
    """The pid holding the lock, or None when nobody does."""
    path = state_dir / LOCK
    if not path.exists():
        return None
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            text = handle.read().strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def stop_holder(state_dir: Path, timeout: float = 60.0) -> int | None:
    """SIGTERM the process holding the lock and wait until it let go; its pid, or None."""
    pid = holder(state_dir)
    if pid is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while holder(state_dir) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    if holder(state_dir) is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pid
