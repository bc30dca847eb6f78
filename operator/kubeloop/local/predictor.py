"""ServedModels on one machine: the predictor entrypoint as a process on 127.0.0.1.

Role `predictor/NAME` of the process table, on a port that stays the same across restarts
when it can. A predictor whose arguments no longer match what the ServedModel asks is
replaced; one a killed `kubeloop up` left running with the right arguments keeps serving. When
the plan names the version the alias now points to, the predictor is asked to swap at once
(POST .../reload) instead of at its next registry poll.

During a canary the candidate runs as role `predictor/NAME-canary` on a port of its own, and
the stable predictor forwards `canaryPercent` of the inference requests to it
(serving.canary): the URL people use stays the stable one, and the split is real.
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
        self._splits: dict[str, tuple[str | None, int]] = {}
        """The canary split each stable predictor was last told."""

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
        name = sm.metadata.name
        role = f"predictor/{name}"
        preferred = self._base_port + len(self._processes.roles("predictor/"))
        port = self._processes.port(role, preferred)
        args = servedmodel.predictor_args(
            name, deploy.stable_uri, sm.spec.batching, feedback, host=services.HOST, port=port
        )
        url = self._ensure(name, role, args, port)
        if not services.is_healthy(f"{url}/v2/health/ready"):
            return ServingState(False, url, "PredictorStarting", "loading the model")
        if deploy.version is not None and self._serving.get(name) != deploy.version:
            self._swap(name, url, deploy.version)
        self._split(sm, deploy, url)
        return ServingState(True, url)

    def _split(self, sm: ServedModel, deploy: Deploy, stable_url: str) -> None:
        """Run the canary predictor while the plan has one, and tell the stable predictor
        its share; without a canary, stop it and end the split."""
        name = sm.metadata.name
        role = f"predictor/{name}-canary"
        wanted: tuple[str | None, int] = (None, 0)
        if deploy.canary_uri is not None:
            port = self._processes.port(role, None)
            args = servedmodel.predictor_args(
                name, deploy.canary_uri, sm.spec.batching, host=services.HOST, port=port
            )
            url = self._ensure(name, role, args, port)
            if services.is_healthy(f"{url}/v2/health/ready"):
                wanted = (url, deploy.canary_percent)
        elif self._processes.get(role) is not None:
            self._processes.stop(role)
        if self._splits.get(name, (None, 0)) != wanted:
            self._tell(name, stable_url, wanted)

    def _ensure(self, name: str, role: str, args: list[str], port: int) -> str:
        """Role `role` running with `args` (replaced when it runs with others); its URL."""
        running = self._processes.get(role)
        if running is not None and running.extra.get("args") != args:
            self._processes.stop(role)
            running = None
        if running is None:
            self._start(name, role, args, port)
        return f"http://{services.HOST}:{port}"

    def _tell(self, name: str, url: str, split: tuple[str | None, int]) -> None:
        body = {"url": split[0], "percent": split[1]}
        try:
            services.post(f"{url}/v1/models/{name}/canary", body, headers=self._auth())
        except (urllib.error.URLError, OSError) as error:
            self._say(f"! ServedModel/{name}: setting the canary split failed ({error})")
            return
        self._splits[name] = split
        if split[1]:
            self._say(f"- ServedModel/{name}: {split[1]}% of inference goes to the canary")

    def _auth(self) -> dict[str, str]:
        token = self._env.get(TOKEN_ENV) or os.environ.get(TOKEN_ENV)
        return {"Authorization": f"Bearer {token}"} if token else {}

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
        label = role.removeprefix("predictor/")
        log = path_inside(self._root, f"{label}.log")
        url = f"http://{services.HOST}:{port}"
        self._processes.spawn(role, command, url, log, self._root, self._env, {"args": args})
        if label == name:  # a new stable predictor serves nothing yet and splits nothing
            self._serving.pop(name, None)
            self._splits.pop(name, None)
        self._say(f"- ServedModel/{name}: predictor {label} starting at {url} (log: {log})")

    def _swap(self, name: str, url: str, version: str) -> None:
        """Ask the predictor to follow the alias now; it polls the registry anyway."""
        try:
            answer = services.post(f"{url}/v1/models/{name}/reload", {}, headers=self._auth())
        except (urllib.error.URLError, OSError) as error:
            self._say(f"! ServedModel/{name}: reload request failed ({error}); it will poll")
            return
        if str(answer.get("model_version")) == version:
            self._serving[name] = version
