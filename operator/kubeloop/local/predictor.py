"""ServedModels on one machine: the predictor entrypoint as a process on 127.0.0.1.

Role `predictor/NAME` of the process table, on a port that stays the same across restarts
when it can. A predictor whose arguments no longer match what the ServedModel asks is
replaced; one a killed `kubeloop up` left running with the right arguments keeps serving. When
the plan names the version the alias now points to, the predictor is asked to swap at once
(POST .../reload) instead of at its next registry poll.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from kubeloop.api.servedmodel import ServedModel
from kubeloop.local import services
from kubeloop.local.objects import path_inside
from kubeloop.local.processes import ProcessTable
from kubeloop.reconcile import servedmodel
from kubeloop.reconcile.ports import Body, Deploy, FeedbackRef, ServingState

TOKEN_ENV = "KUBELOOP_FEEDBACK_TOKEN"
"""The predictor's bearer token, which its reload route asks for when one is set."""
PREDICTOR_PORT = 8080
"""The first ServedModel's preferred port; others take the next free ones."""


class LocalPredictor:
    """The predictor port of the local runtime."""

    def __init__(
        self,
        state_dir: Path,
        processes: ProcessTable,
        env: dict[str, str],
        say: Callable[[str], None] = print,
        base_port: int | None = None,
    ) -> None:
        self._root = state_dir / "predictors"
        self._processes = processes
        self._env = env
        self._say = say
        self._base_port = base_port or PREDICTOR_PORT
        self._serving: dict[str, str] = {}
        """The version each predictor was last seen serving."""

    def problem(self, sm: ServedModel) -> tuple[str, str] | None:
        return None  # both runtimes run as one local process

    def apply(
        self,
        sm: ServedModel,
        body: Body,
        deploy: Deploy,
        feedback: FeedbackRef | None,
        spec_changed: bool,
    ) -> ServingState:
        # Locally the stable predictor takes all traffic; a canary is only reported.
        name = sm.metadata.name
        role = f"predictor/{name}"
        preferred = self._base_port + len(self._processes.roles("predictor/"))
        port = self._processes.port(role, preferred)
        args = servedmodel.predictor_args(
            name, deploy.stable_uri, sm.spec.batching, feedback, host=services.HOST, port=port
        )
        running = self._processes.get(role)
        if running is not None and running.extra.get("args") != args:
            self._processes.stop(role)
            running = None
        if running is None:
            self._start(name, role, args, port)
        url = f"http://{services.HOST}:{port}"
        if not services.is_healthy(f"{url}/v2/health/ready"):
            return ServingState(False, url, "PredictorStarting", "loading the model")
        if deploy.version is not None and self._serving.get(name) != deploy.version:
            self._swap(name, url, deploy.version)
        return ServingState(True, url)

    def _start(self, name: str, role: str, args: list[str], port: int) -> None:
        ended = self._processes.record(role)
        if ended is not None:
            code = self._processes.exit_code(role)
            self._say(
                f"! ServedModel/{name}: the predictor exited with code {code}; restarting it. "
                f"Log tail:\n{services.log_tail(Path(ended.log), 8)}"
            )
            self._processes.forget(role)
        command = [sys.executable, "-m", "kubeloop.serving", *args]
        log = path_inside(self._root, f"{name}.log")
        url = f"http://{services.HOST}:{port}"
        self._processes.spawn(role, command, url, log, self._root, self._env, {"args": args})
        self._serving.pop(name, None)
        self._say(f"- ServedModel/{name}: predictor starting at {url} (log: {log})")

    def _swap(self, name: str, url: str, version: str) -> None:
        """Ask the predictor to follow the alias now; it polls the registry anyway."""
        token = self._env.get(TOKEN_ENV) or os.environ.get(TOKEN_ENV)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            answer = services.post(f"{url}/v1/models/{name}/reload", {}, headers=headers)
        except (urllib.error.URLError, OSError) as error:
            self._say(f"! ServedModel/{name}: reload request failed ({error}); it will poll")
            return
        if str(answer.get("model_version")) == version:
            self._serving[name] = version
