"""A trainer started ahead of its TrainingJob, its imports done: the local runtime's warm one.

    python -m kubeloop.training --standby ORDERS

imports what a trainer imports (MLflow and its ONNX flavour, onnxruntime, the installed
plugins, torch), then waits for ORDERS: a JSON object {"argv": [...], "log": PATH}
written whole when `kubeloop up` hands the process a TrainingJob. From then on the process
writes to that log and is the trainer `python -m kubeloop.training ARGV` would have been,
exit code included. Those imports took ~4 s of CPU in every TrainingJob on this machine.

A standby whose parent (the `kubeloop up` that started it) is gone before it got its orders
ends: nobody would hand it any. Orders written before the parent died are still followed.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kubeloop import plugins

POLL_SECONDS = 0.02
"""How often a standby looks for its orders: a stat, 50 times a second."""
WARM_MODULES = ("mlflow", "mlflow.onnx", "onnx", "onnxruntime", "kubeloop.training.entrypoint")
FRAMEWORKS = ("torch",)
"""What plugins import when they train rather than when they load: imported too, if installed."""


@dataclass(frozen=True)
class Orders:
    """The TrainingJob a standby is handed: the trainer's arguments and its log."""

    argv: list[str]
    log: Path


def warm_up() -> None:
    """Import what the trainer and the installed plugins need; a plugin that fails to load
    fails again, with its message, in the trainer that runs it."""
    for module in WARM_MODULES:
        importlib.import_module(module)
    for module in FRAMEWORKS:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
    for entry_point in plugins.installed().values():
        with contextlib.suppress(Exception):
            entry_point.load()
    with contextlib.suppress(Exception):  # MLflow internals: without them, only slower
        _fill_mlflow_caches()


def _fill_mlflow_caches() -> None:
    """What MLflow computes once per process on a trainer's first run and model: which
    module each installed distribution provides (its check of a model's requirements
    against this environment: 0.42 s here) and the run context's tags (the git commit of
    the trainer's checkout: 0.26 s)."""
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils.requirements_utils import _init_modules_to_packages_map

    _init_modules_to_packages_map()  # type: ignore[no-untyped-call]
    resolve_tags()


def wait_for_orders(path: Path, parent: int, poll: float = POLL_SECONDS) -> Orders | None:
    """The orders at `path` once they are there; None when process `parent` (this one's
    parent at its start) is gone without writing any."""
    while True:
        orphaned = os.getppid() != parent  # before the look: orders written before death count
        if path.exists():
            raw = json.loads(path.read_text())
            return Orders([str(a) for a in raw["argv"]], Path(raw["log"]))
        if orphaned:
            return None
        time.sleep(poll)


def run(argv: Sequence[str]) -> int:
    """`--standby ORDERS`: warm up, wait, then train as ordered; the trainer's exit code."""
    parent = os.getppid()
    path = Path(argv[1]) if len(argv) == 2 and argv[0] == "--standby" else None
    if path is None:
        print("usage: python -m kubeloop.training --standby ORDERS", file=sys.stderr)
        return 2
    warm_up()
    orders = wait_for_orders(path, parent)
    if orders is None:
        return 0
    sys.stdout.flush()
    sys.stderr.flush()
    log = os.open(orders.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    from kubeloop.training.entrypoint import main

    return main(orders.argv)
