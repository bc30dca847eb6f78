"""`kubeloop up -f DIR`: run the manifests a user would `kubectl apply`, on this machine;
`kubeloop down`: stop everything a state directory runs."""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from rich.console import Console

from kubeloop import admission, manifests
from kubeloop.local import lock, servers
from kubeloop.local.loop import LocalLoop
from kubeloop.local.objects import key_of
from kubeloop.local.processes import ProcessTable
from kubeloop.reconcile.ports import Body


@dataclass(frozen=True)
class Addresses:
    """Ports a person asked for; free defaults otherwise, kept across restarts."""

    predictor_port: int | None = None
    mlflow_port: int | None = None
    s3_port: int | None = None


def run(
    state_dir: Path,
    paths: list[Path],
    console: Console,
    poll_seconds: float = 2.0,
    addresses: Addresses | None = None,
) -> int:
    """Start or reuse the servers, apply `paths` and reconcile until Ctrl-C or SIGTERM; the
    exit code. Whatever was started is stopped on the way out, however far it got."""
    with _stopped_by_sigterm():
        try:
            return _run(state_dir.resolve(), paths, console, poll_seconds, addresses or Addresses())
        except KeyboardInterrupt:
            console.print("stopped; the state stays in " + str(state_dir.resolve()))
            return 0


def _run(
    state_dir: Path, paths: list[Path], console: Console, poll_seconds: float, addresses: Addresses
) -> int:
    documents = [doc for path in paths for _, doc in manifests.load(path)]
    # Everything the API server, the operator and the trainer would refuse, before anything
    # starts or any file is written (a name is a path here).
    refused = [
        f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}: {error}"
        for doc in documents
        for error in admission.problems(doc)
    ]
    if refused:
        for line in refused:
            console.print(f"refused {line}", markup=False)
        console.print("nothing was started; fix the manifests and run `kubeloop up` again")
        return 2
    with lock.holding(state_dir):
        table = ProcessTable(state_dir)
        say = _printer(console)
        loop: LocalLoop | None = None
        try:
            found = servers.ensure_servers(table, say, addresses.s3_port, addresses.mlflow_port)
            loop = LocalLoop(
                state_dir,
                found.s3_url,
                found.mlflow_url,
                say=say,
                processes=table,
                predictor_port=addresses.predictor_port,
            )
            for document in documents:
                outcome = loop.apply(document)
                kind, name = document["kind"].lower(), document["metadata"]["name"]
                console.print(f"{kind}.kubeloop.io/{name} {outcome}")
            console.print(
                f"MLflow UI: {found.mlflow_url}   S3: {found.s3_url}   state: {state_dir}"
            )
            console.print("reconciling; Ctrl-C stops every process and keeps the state")
            _reconcile_forever(loop, console, poll_seconds)
        finally:
            console.print("stopping the processes of " + str(state_dir))
            if loop is not None:
                loop.close()
            servers.stop_servers(table)
    return 0


def _reconcile_forever(loop: LocalLoop, console: Console, poll_seconds: float) -> None:
    announced: set[str] = set()
    while True:
        loop.step()
        for body in loop.objects.of_kind("ServedModel"):
            name = body["metadata"]["name"]
            if name not in announced and (body.get("status") or {}).get("url"):
                announced.add(name)
                for line in urls(body):
                    console.print(line, markup=False)
        loop.wait(poll_seconds)


def down(state_dir: Path, console: Console) -> int:
    """Stop the `kubeloop up` running `state_dir` and every process the directory started."""
    state_dir = state_dir.resolve()
    if not state_dir.is_dir():
        console.print(f"nothing runs: {state_dir} does not exist")
        return 0
    pid = lock.stop_holder(state_dir)
    if pid is not None:
        console.print(f"stopped kubeloop (pid {pid})")
    with lock.holding(state_dir):
        stopped = ProcessTable(state_dir).stop_all()
    for role in stopped:
        console.print(f"stopped {role}")
    if pid is None and not stopped:
        console.print(f"nothing was running in {state_dir}")
    return 0


def registry_of(state_dir: Path, namespace: str, name: str) -> tuple[str, str, str]:
    """(registered model, alias, MLflow URL) of ServedModel `name` in `state_dir`, read
    without taking the directory from the `kubeloop up` running it; ValueError saying what
    is missing."""
    objects = state_dir / "objects.json"
    found = [
        body
        for body in (json.loads(objects.read_text()) if objects.is_file() else [])
        if key_of(body) == ("ServedModel", namespace, name)
    ]
    if not found:
        raise ValueError(f"{state_dir} holds no ServedModel {namespace}/{name}")
    processes = state_dir / "processes.json"
    roles = {r["role"]: r for r in json.loads(processes.read_text())} if processes.is_file() else {}
    mlflow = roles.get(servers.MLFLOW_ROLE)
    if mlflow is None:
        raise ValueError(f"no MLflow runs for {state_dir}: start `kubeloop up` on it first")
    spec = found[0]["spec"]
    return spec["registeredModel"], spec.get("alias", "champion"), mlflow["url"]


def urls(served_model: Body) -> list[str]:
    """Every URL a person needs for a serving ServedModel: inference, feedback, review, metrics."""
    name = served_model["metadata"]["name"]
    url = served_model["status"]["url"]
    lines = [
        f"ServedModel/{name}: predictor at {url}",
        f"  inference  POST {url}/v2/models/{name}/infer",
        f"             POST {url}/v1/models/{name}:predict   (KServe V1)",
        f"  version    GET  {url}/v1/models/{name}/version",
        f"  metrics    GET  {url}/metrics",
    ]
    dataset = served_model["spec"].get("feedbackDataset")
    if dataset:
        lines += [
            f"  review page     {url}/review/{dataset}   (label in the browser)",
            f"  feedback   POST {url}/v1/feedback/{dataset}",
            f"  review     GET  {url}/v1/review/{dataset}",
        ]
    return lines


def _printer(console: Console) -> Callable[[str], None]:
    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False)

    return say


@contextlib.contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    """SIGTERM (`kubeloop down`) stops like Ctrl-C: processes stopped, state kept."""

    def interrupt(number: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
