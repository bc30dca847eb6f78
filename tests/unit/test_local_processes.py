"""The local runtime's process table: a standby process handed its role is found under that
role after a kill at any point of the hand-over; a standby that lost its parent before its
orders came ends instead of waiting; a wait ends when a watched process does. Real
processes, carrying the table's marker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubeloop.local.processes import ProcessTable
from kubeloop.training import standby

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


@pytest.mark.parametrize("record_saved", [False, True], ids=["killed-before-record", "after"])
def test_a_handed_over_process_is_found_under_its_new_role(
    tmp_path: Path, record_saved: bool
) -> None:
    table = ProcessTable(tmp_path)
    table.spawn("standby/a", SLEEPER, "", tmp_path / "standby.log", tmp_path)
    before = (tmp_path / "processes.json").read_text()
    try:
        pid = table.hand_over("standby/a", "trainer/job", {"argv": []}, tmp_path / "job.log").pid
        if not record_saved:  # `up` killed after the orders were written, before the record
            (tmp_path / "processes.json").write_text(before)
        again = ProcessTable(tmp_path)
        assert again.roles() == ["trainer/job"]
        found = again.get("trainer/job")
        assert found is not None
        assert found.pid == pid
        orders = table.orders_file("standby/a")
        assert json.loads(orders.read_text())["role"] == "trainer/job"
        again.stop("trainer/job")
        assert not orders.exists(), "the orders outlived the process's record"
    finally:
        table.stop_all()
    assert ProcessTable(tmp_path).roles() == []


def test_a_standby_takes_orders_written_before_its_parent_went(tmp_path: Path) -> None:
    orders = tmp_path / "orders.json"
    gone = os.getppid() + 1_000_000  # a parent that is not this process's: it is gone
    assert standby.wait_for_orders(orders, gone, poll=0.001) is None
    orders.write_text(json.dumps({"argv": ["--spec", "x"], "log": str(tmp_path / "a.log")}))
    found = standby.wait_for_orders(orders, gone, poll=0.001)
    assert found == standby.Orders(["--spec", "x"], tmp_path / "a.log")


def test_a_wait_ends_when_a_watched_process_ends(tmp_path: Path) -> None:
    table = ProcessTable(tmp_path)
    short = [sys.executable, "-c", "import time; time.sleep(0.5)"]
    table.spawn("trainer/short", short, "", tmp_path / "short.log", tmp_path)
    table.spawn("predictor/long", SLEEPER, "", tmp_path / "long.log", tmp_path)
    try:
        started = time.monotonic()
        table.wait(300, "trainer/")
        assert time.monotonic() - started < 120, "not woken by the trainer's exit"
        assert not table.alive("trainer/short")
        started = time.monotonic()
        table.wait(0.2, "trainer/")  # nothing left to watch: the whole wait
        assert time.monotonic() - started >= 0.2
    finally:
        table.stop_all()


def test_a_standby_warms_up_what_a_trainer_would_do_first() -> None:
    check = (
        "import sys\n"
        "from kubeloop.training import standby\n"
        "standby.warm_up()\n"
        "from mlflow.utils import requirements_utils\n"
        "from mlflow.tracking.context import registry\n"
        "git = [p for p in registry._run_context_provider_registry if 'Git' in type(p).__name__]\n"
        "print('torch' in sys.modules, requirements_utils._MODULES_TO_PACKAGES is not None,\n"
        "      all('git_info' in p._cache for p in git))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "True", "True"]
