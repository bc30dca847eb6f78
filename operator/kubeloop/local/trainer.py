"""TrainingJobs on one machine: the trainer entrypoint as a process, retried as a Job would be.

The files of TrainingJob NAME, under `<state>/trainingjobs/NAME/`:

    trainingjob.yaml      the manifest the trainer reads (the pod's annotation, on a cluster)
    job.json              the attempts: number, start time, pid
    attempt-N.log         the trainer's output
    attempt-N.result      its result, or its failure (kubeloop.api.training_result)

The process of the running attempt is the process table's role `trainer/NAME`, so a restarted
`kubeloop up` follows a trainer its killed predecessor started instead of starting another.
Like the Job controller, this port starts a failed attempt again while spec.backoffLimit
allows, except after an invalid spec (exit code 2: no retry can help). A retried attempt never
registers a second version: the trainer first looks for one tagged with the TrainingJob's uid.

Once a trainer has ended and none runs, a standby (kubeloop.training.standby, role
standby/trainer-ID) is started, its imports done while nothing trains, and the next
single-process attempt is handed to it rather than to a new process: the trainer's imports
then stay out of the next TrainingJob's time.
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubeloop.api.times import format_time, utc_now
from kubeloop.api.training_result import TrainingFailure, TrainingResult
from kubeloop.api.trainingjob import TrainingJob, processes_per_node
from kubeloop.local import files
from kubeloop.local.objects import path_inside
from kubeloop.local.processes import ProcessTable
from kubeloop.local.services import log_tail
from kubeloop.reconcile import builders, observations, trainingjob
from kubeloop.reconcile.observations import PROGRESS_LOG_LINES
from kubeloop.reconcile.ports import Body, TrainerObservation, TrainerState


class LocalTrainer:
    """The trainer port of the local runtime."""

    def __init__(
        self,
        state_dir: Path,
        processes: ProcessTable,
        env: dict[str, str],
        say: Callable[[str], None] = print,
    ) -> None:
        self._root = state_dir / "trainingjobs"
        self._processes = processes
        self._env = env
        self._say = say
        processes.stop_all(STANDBY)  # an earlier `up`'s, if still there: it ends on its own

    def observe(self, body: Body, *, recorded: bool = True) -> TrainerObservation:
        name = body["metadata"]["name"]  # a look is a file read: taken even when not recorded
        job = self._job(name)
        if job is None or job.get("uid") != body["metadata"].get("uid"):
            return TrainerObservation(name, None)  # none yet, or an earlier object's of that name
        attempt = job["attempts"][-1]
        number, started = int(attempt["n"]), str(attempt["startTime"])
        log = self._dir(name) / f"attempt-{number}.log"
        if self._processes.alive(_role(name)):
            progress = observations.progress_from_log(log_tail(log, PROGRESS_LOG_LINES))
            running = TrainerState("Running", start_time=started, progress=progress)
            return TrainerObservation(name, running)
        if "pid" not in attempt or attempt.get("interrupted"):
            # Never started (killed before), or stopped by `kubeloop up` closing: not a failure.
            self._spawn(name, number)
            return TrainerObservation(name, TrainerState("Running", start_time=started))
        result_file = self._dir(name) / f"attempt-{number}.result"
        text = result_file.read_text() if result_file.exists() else ""
        finished = (
            format_time(datetime.fromtimestamp(result_file.stat().st_mtime, UTC))
            if result_file.exists()
            else format_time(utc_now())
        )
        try:
            TrainingResult.parse(text)
        except ValueError:
            pass
        else:
            self._processes.forget(_role(name))
            self._start_standby()
            progress = observations.progress_from_log(log_tail(log, PROGRESS_LOG_LINES))
            return TrainerObservation(
                name, TrainerState("Succeeded", started, finished, result=text, progress=progress)
            )
        failure = TrainingFailure.parse(text)
        code = failure.exit_code if failure else self._processes.exit_code(_role(name))
        self._processes.forget(_role(name))
        retries = int(body.get("spec", {}).get("backoffLimit", 1))
        if number <= retries and code != trainingjob.INVALID_SPEC_EXIT_CODE:
            self._say(
                f"- TrainingJob/{name}: attempt {number} failed; starting attempt {number + 1}"
            )
            self._start_attempt(name, number + 1)
            return TrainerObservation(name, TrainerState("Running", start_time=started))
        self._start_standby()
        how = f"with code {code}" if code is not None else "(it was stopped or crashed)"
        detail = failure.describe() if failure else f"log tail ({log}):\n{log_tail(log, 8)}"
        message = f"the trainer exited {how} after {number} attempt(s): {detail}"
        return TrainerObservation(
            name, TrainerState("Failed", started, finished, "TrainerFailed", message)
        )

    def start(self, tj: TrainingJob, body: Body) -> bool:
        name = tj.metadata.name
        directory = self._dir(name)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "trainingjob.yaml").write_text(builders.manifest_text(tj))
        job = self._job(name)
        if job is not None and job.get("uid") == body["metadata"].get("uid"):
            return False
        distributed = tj.spec.distributed
        processes = distributed.num_nodes * processes_per_node(tj.spec)
        if distributed.num_nodes > 1:
            self._say(
                f"- TrainingJob/{name}: numNodes {distributed.num_nodes} runs here as one node "
                f"with all {processes} processes"
            )
        uid = body["metadata"].get("uid")
        self._write_job(name, {"uid": uid, "processes": processes, "attempts": []})
        self._start_attempt(name, 1)
        return True

    def stop_all(self) -> list[str]:
        """Stop every running trainer; the next `kubeloop up` runs the attempt again (it does
        not count as a failure: the trainer first looks for a version it registered)."""
        stopped = []
        for role in self._processes.roles("trainer/"):
            if not self._processes.alive(role):
                continue
            name = role.removeprefix("trainer/")
            job = self._job(name)
            if job is not None and job["attempts"]:
                job["attempts"][-1]["interrupted"] = True
                self._write_job(name, job)
            self._processes.stop(role)
            stopped.append(name)
        self._processes.stop_all(STANDBY)
        return stopped

    def _start_attempt(self, name: str, number: int) -> None:
        job = self._job(name) or {"attempts": []}
        job["attempts"].append({"n": number, "startTime": format_time(utc_now())})
        self._write_job(name, job)
        self._spawn(name, number)

    def _spawn(self, name: str, number: int) -> None:
        directory = self._dir(name)
        result = directory / f"attempt-{number}.result"
        result.unlink(missing_ok=True)
        processes = int((self._job(name) or {}).get("processes") or 1)
        args = trainingjob.trainer_args(str(directory / "trainingjob.yaml"), str(result))
        log = directory / f"attempt-{number}.log"
        standby = self._standby()
        if processes == 1 and standby is not None:
            orders = {"argv": args, "log": str(log)}
            pid = self._processes.hand_over(standby, _role(name), orders, log).pid
            how = "in the standby trainer"
        else:
            command = trainingjob.trainer_command(processes, sys.executable) + args
            env = dict(self._env)
            if processes > 1 and LOOPBACK.exists():
                env["GLOO_SOCKET_IFNAME"] = LOOPBACK.name  # the ranks talk over 127.0.0.1 only
            pid = self._processes.spawn(_role(name), command, "", log, self._root, env).process.pid
            how = "in a subprocess"
        job = self._job(name) or {"attempts": [{"n": number, "startTime": format_time(utc_now())}]}
        job["attempts"][-1]["pid"] = pid
        job["attempts"][-1].pop("interrupted", None)
        self._write_job(name, job)
        self._say(f"- TrainingJob/{name}: training {how} (log: {log})")

    def _standby(self) -> str | None:
        """The role of the live standby, if one runs (one that ended is forgotten)."""
        for role in self._processes.roles(STANDBY):
            if self._processes.alive(role):
                return role
            self._processes.forget(role)
        return None

    def _start_standby(self) -> None:
        """Start a standby for the next TrainingJob, unless one runs, or a trainer does (its
        imports would slow that trainer down)."""
        if any(self._processes.alive(r) for r in self._processes.roles("trainer/")):
            return
        if self._standby() is not None:
            return
        role = f"{STANDBY}{secrets.token_hex(4)}"  # its own orders file: its own name
        orders = str(self._processes.orders_file(role))
        command = [*trainingjob.trainer_command(1, sys.executable), "--standby", orders]
        log = self._root / "standby.log"
        self._processes.spawn(role, command, "", log, self._root, dict(self._env))

    def _dir(self, name: str) -> Path:
        return path_inside(self._root, name)

    def _job(self, name: str) -> dict[str, Any] | None:
        path = self._dir(name) / "job.json"
        return dict(json.loads(path.read_text())) if path.exists() else None

    def _write_job(self, name: str, job: dict[str, Any]) -> None:
        files.write_json(self._dir(name) / "job.json", job)


LOOPBACK = Path("/sys/class/net/lo")
"""Linux's loopback interface, where a local trainer's ranks meet (gloo binds to the
hostname's address otherwise)."""


STANDBY = "standby/trainer-"
"""The start of a standby trainer's role in the process table."""


def _role(name: str) -> str:
    return f"trainer/{name}"
