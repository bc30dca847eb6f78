"""`kubeloop up` as a person runs it: a relative state directory, the URLs it prints, `down`;
and SIGKILLed around every step of a retrain, restarted each time, without a duplicate
version, a lost trigger or a process left running.

Everything is real: the `kubeloop up` process with its S3 and MLflow servers, trainers and a
predictor; the test reads what `up` keeps in its state directory, as a person's tools would.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient
from ulid import ULID

from kubeloop import digits, manifests
from kubeloop.api.samples import FeedbackSample, sample_key
from kubeloop.local import processes, services
from kubeloop.local.processes import ProcessTable
from kubeloop.storage import ObjectStore

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "digits"
KUBELOOP = str(Path(sys.executable).with_name("kubeloop"))
PREFIX = "feedback/digits/"
RECONCILING = "reconciling; Ctrl-C stops"


@pytest.fixture
def stopped_after(tmp_path: Path) -> Iterator[list[Path]]:
    """State directories whose processes are stopped when the test ends, however it ends (a
    killed `up` leaves its servers running, by design: the next `up` adopts them)."""
    states: list[Path] = []
    yield states
    for state in states:
        if state.exists():
            ProcessTable(state).stop_all()


@contextlib.contextmanager
def up(cwd: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A `kubeloop up` process; SIGKILLed at the end if the test did not stop it."""
    log = (cwd / "up.log").open("a")
    process = subprocess.Popen(
        [KUBELOOP, "up", *args], cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)
        log.close()


def wait_for(
    what: str,
    probe: Callable[[], Any],
    process: subprocess.Popen[str],
    cwd: Path,
    timeout: float = 240.0,
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        if process.poll() is not None:
            raise AssertionError(f"kubeloop up exited while waiting for {what}:\n{tail(cwd)}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}:\n{tail(cwd)}")


def tail(cwd: Path) -> str:
    return services.log_tail(cwd / "up.log", 40)


def objects(state: Path) -> dict[tuple[str, str], dict[str, Any]]:
    path = state / "objects.json"
    if not path.exists():
        return {}
    return {(o["kind"], o["metadata"]["name"]): o for o in json.loads(path.read_text())}


def status(state: Path, kind: str, name: str) -> dict[str, Any]:
    return dict(objects(state).get((kind, name), {}).get("status") or {})


def ready(state: Path) -> bool:
    conditions = status(state, "ServedModel", "digits").get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def roles(state: Path) -> list[str]:
    """The roles of the live processes that carry the state directory's marker."""
    return sorted(role for _, role in processes.marked(state))


def test_up_with_a_relative_state_dir_prints_every_url_and_down_stops_it(
    tmp_path: Path, stopped_after: list[Path]
) -> None:
    state = tmp_path / "rel-state"
    stopped_after.append(state)
    with up(tmp_path, "-f", str(EXAMPLES), "--state-dir", "rel-state") as process:
        wait_for(
            "the base model", lambda: status(state, "TrainingJob", "digits-base").get("phase")
            == "Succeeded", process, tmp_path,
        )  # fmt: skip
        wait_for("the predictor serving it", lambda: ready(state), process, tmp_path)
        served = status(state, "ServedModel", "digits")["url"]
        printed = wait_for(
            "the URLs", lambda: "review" in tail(tmp_path) and tail(tmp_path), process, tmp_path
        )
        expected = [
            "MLflow UI: http://127.0.0.1:",
            f"POST {served}/v2/models/digits/infer",
            f"POST {served}/v1/feedback/digits-feedback",
            f"GET  {served}/v1/review/digits-feedback",
            f"GET  {served}/metrics",
        ]
        for line in expected:
            assert line in printed
        assert (state / "trainingjobs" / "digits-base" / "attempt-1.log").exists()
        answer = services.post(
            f"{served}/v1/models/digits:predict", {"instances": [[[0.0] * 8] * 8]}
        )
        assert answer["model_version"] == "1"
        assert "predictor/digits" in roles(state)
        down = subprocess.run(
            [KUBELOOP, "down", "--state-dir", "rel-state"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert down.returncode == 0, down.stderr
        assert process.wait(60) == 0, tail(tmp_path)
    assert roles(state) == []


def quick_manifests(directory: Path) -> Path:
    """The digits example with few epochs and a threshold of 5 samples."""
    documents = {doc["kind"]: copy.deepcopy(doc) for _, doc in manifests.load(EXAMPLES)}
    documents["TrainingJob"]["spec"]["args"]["epochs"] = 2
    retrain = documents["FeedbackDataset"]["spec"]["retrain"]
    retrain.update(threshold=5, cooldownSeconds=0)
    retrain["trainingTemplate"]["args"]["epochs"] = 2
    directory.mkdir()
    for kind, document in documents.items():
        (directory / f"{kind.lower()}.yaml").write_text(yaml.safe_dump(document))
    return directory


def put_feedback(store: ObjectStore, count: int, seed: int) -> None:
    images, labels = digits.new_user_feedback(count, seed=seed)
    for image, label in zip(images, labels, strict=True):
        sample = FeedbackSample(
            id=str(ULID()),
            input=image.reshape(-1).tolist(),
            shape=[8, 8],
            label=str(label),
            slice=digits.NEW_USER,
            received_at="2026-01-01T00:00:00Z",
        )
        store.put_json("kubeloop", sample_key(PREFIX, sample.id), sample.to_wire())


def judged(state: Path, version: str) -> bool:
    """Whether the ServedModel serves `version`, or keeps it out after a failed gate."""
    served = status(state, "ServedModel", "digits")
    gate = served.get("gate") or {}
    failed = gate.get("candidateVersion") == version and gate.get("verdict") == "Failed"
    return served.get("servingVersion") == version or failed


def test_sigkills_around_every_step_of_a_retrain_lose_and_duplicate_nothing(
    tmp_path: Path, stopped_after: list[Path]
) -> None:
    state = tmp_path / "state"
    stopped_after.append(state)
    ports = {name: services.free_port() for name in ("s3", "mlflow", "predictor")}
    args = [
        "-f", str(quick_manifests(tmp_path / "manifests")), "--state-dir", str(state),
        "--s3-port", str(ports["s3"]), "--mlflow-port", str(ports["mlflow"]),
        "--port", str(ports["predictor"]), "--poll-seconds", "0.5",
    ]  # fmt: skip
    store = ObjectStore(f"http://127.0.0.1:{ports['s3']}", "kubeloop", "kubeloop", retries=2)
    kills = 0

    def run_until(what: str, probe: Callable[[], Any]) -> None:
        """Start `up`, wait for `probe`, SIGKILL it; no process runs twice for a role."""
        nonlocal kills
        with up(tmp_path, *args) as process:
            wait_for(what, probe, process, tmp_path)
            running = roles(state)
            assert len(running) == len(set(running)), f"a role runs twice: {running}"
            os.kill(process.pid, signal.SIGKILL)
            process.wait(30)
            kills += 1

    def phase(name: str, wanted: str) -> Callable[[], bool]:
        return lambda: status(state, "TrainingJob", name).get("phase") == wanted

    run_until("the base model trained", phase("digits-base", "Succeeded"))
    for generation in (1, 2, 3):
        job = f"digits-feedback-gen-{generation}"
        put_feedback(store, 5, seed=generation)
        run_until(f"trigger {generation}", lambda job=job: ("TrainingJob", job) in objects(state))
        run_until(f"{job} pending", lambda job=job: status(state, "TrainingJob", job))
        run_until(f"{job} running", phase(job, "Running"))
        run_until(f"{job} done", phase(job, "Succeeded"))
    assert kills >= 10

    # Once more, to the end: the last version is judged and served.
    started = (tmp_path / "up.log").read_text().count(RECONCILING)
    with up(tmp_path, *args) as process:
        wait_for(
            "the last up reconciling",
            lambda: (tmp_path / "up.log").read_text().count(RECONCILING) > started,
            process,
            tmp_path,
        )
        wait_for("the last version judged", lambda: judged(state, "4"), process, tmp_path)
        dataset = status(state, "FeedbackDataset", "digits-feedback")
        assert [s["generation"] for s in dataset["snapshots"]] == [1, 2, 3]
        assert [s["samples"] for s in dataset["snapshots"]] == [5, 10, 15]
        tracking = f"http://127.0.0.1:{ports['mlflow']}"
        versions = MlflowClient(tracking, registry_uri=tracking).search_model_versions(
            "name = 'digits'"
        )
        jobs = sorted(v.tags.get("kubeloop.trainingJob") for v in versions)
        assert jobs == ["digits-base", *[f"digits-feedback-gen-{g}" for g in (1, 2, 3)]], jobs
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, tail(tmp_path)
    assert roles(state) == [], "a process outlived kubeloop up"
