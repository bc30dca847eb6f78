"""The local runtime: manifests refused before anything starts, and a crashing trainer
reported with its log tail instead of a stack trace."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from kubeloop import cli, manifests
from kubeloop.local import processes, services
from kubeloop.local.loop import InvalidManifest, LocalLoop

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "digits"


def _example(kind: str) -> dict[str, Any]:
    docs = [doc for _, doc in manifests.load(EXAMPLES)]
    return copy.deepcopy(next(doc for doc in docs if doc["kind"] == kind))


def test_up_refuses_invalid_manifests_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = _example("ServedModel")
    served["spec"]["runtime"] = "knative"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(served))
    state = tmp_path / "state"
    assert cli.main(["up", "-f", str(bad), "--state-dir", str(state)]) == 2
    out = capsys.readouterr().out
    assert "spec.runtime: 'knative' is not one of" in out
    assert "nothing was started" in out
    assert not (state / "servers.json").exists()


def test_trainer_crash_is_reported_with_its_log_tail(
    tmp_path: Path, s3_server: services.Service, mlflow_server: services.Service
) -> None:
    said: list[str] = []
    loop = LocalLoop(tmp_path, s3_server.url, mlflow_server.url, say=said.append)
    job = _example("TrainingJob")
    job["metadata"]["name"] = "crashes"
    job["spec"]["plugin"]["name"] = "no-such-plugin"
    status = _run_to_the_end(loop, job, said, timeout=120)
    assert status["phase"] == "Failed"
    message = " ".join(c["message"] for c in status["conditions"])
    assert "exited with code 2" in message
    assert "no-such-plugin" in message  # the trainer's own words, from its log tail
    assert not any("Traceback" in line for line in said)


def test_several_nodes_train_here_as_one_under_torchrun(
    tmp_path: Path, s3_server: services.Service, mlflow_server: services.Service
) -> None:
    said: list[str] = []
    loop = LocalLoop(tmp_path, s3_server.url, mlflow_server.url, say=said.append)
    job = _example("TrainingJob")
    job["metadata"]["name"] = "nodes"
    job["spec"]["registeredModel"] = "local-nodes"
    job["spec"]["args"]["epochs"] = 3
    job["spec"]["distributed"] = {"numNodes": 2, "numProcPerNode": 1}
    status = _run_to_the_end(loop, job, said, timeout=240)
    assert status["phase"] == "Succeeded", status
    assert "- TrainingJob/nodes: numNodes 2 runs here as one node with all 2 processes" in said
    assert status["progress"]["epoch"] == status["progress"]["epochs"] == 3
    log = (tmp_path / "trainingjobs" / "nodes" / "attempt-1.log").read_text()
    assert "rank 1 of 2: training its shard" in log
    versions = MlflowClient(mlflow_server.url).search_model_versions("name = 'local-nodes'")
    assert [v.version for v in versions] == [status["modelVersion"]]


def test_the_next_training_job_runs_in_the_standby_the_last_one_left(
    tmp_path: Path, s3_server: services.Service, mlflow_server: services.Service
) -> None:
    said: list[str] = []
    loop = LocalLoop(tmp_path, s3_server.url, mlflow_server.url, say=said.append)
    jobs = []
    for name in ("first", "second"):
        job = _example("TrainingJob")
        job["metadata"]["name"] = name
        job["spec"]["registeredModel"] = "local-standby"
        job["spec"]["args"]["epochs"] = 2
        jobs.append(job)
    try:
        assert _trained(loop, jobs[0], said, timeout=240)["phase"] == "Succeeded"
        assert any("first: training in a subprocess" in line for line in said)  # none yet
        loop.step()
        standby = loop.processes.roles("standby/")
        assert len(standby) == 1, standby
        assert loop.processes.alive(standby[0])
        pid = _pid(loop, standby[0])
        status = _trained(loop, jobs[1], said, timeout=240)
        assert status["phase"] == "Succeeded", status
        log = tmp_path / "trainingjobs" / "second" / "attempt-1.log"
        assert f"- TrainingJob/second: training in the standby trainer (log: {log})" in said
        job = json.loads((log.parent / "job.json").read_text())
        assert job["attempts"][-1]["pid"] == pid
        assert status["progress"]["epoch"] == 2  # read from the log the standby wrote
        assert not (tmp_path / "orders").exists() or not list((tmp_path / "orders").iterdir())
    finally:
        loop.close()
    assert not list(processes.marked(tmp_path)), "left running"
    versions = MlflowClient(mlflow_server.url).search_model_versions("name = 'local-standby'")
    assert sorted(v.version for v in versions) == ["1", "2"]


def _pid(loop: LocalLoop, role: str) -> int:
    record = loop.processes.record(role)
    assert record is not None
    return record.pid


def _run_to_the_end(
    loop: LocalLoop, job: dict[str, Any], said: list[str], timeout: float
) -> dict[str, Any]:
    """Apply the TrainingJob `job` and step the loop until it failed or succeeded; its status.
    The loop is closed afterwards."""
    try:
        return _trained(loop, job, said, timeout)
    finally:
        loop.close()


def _trained(
    loop: LocalLoop, job: dict[str, Any], said: list[str], timeout: float
) -> dict[str, Any]:
    """Apply the TrainingJob `job` and step the loop until it failed or succeeded; its status."""
    name = job["metadata"]["name"]
    assert loop.apply(job) == "created"
    deadline = time.monotonic() + timeout
    while loop.status("TrainingJob", name).get("phase") not in ("Failed", "Succeeded"):
        assert time.monotonic() < deadline, said
        loop.step()
        time.sleep(0.5)
    return loop.status("TrainingJob", name)


def test_apply_refuses_what_the_api_server_would(
    tmp_path: Path, s3_server: services.Service, mlflow_server: services.Service
) -> None:
    loop = LocalLoop(tmp_path, s3_server.url, mlflow_server.url, say=lambda _: None)
    dataset = _example("FeedbackDataset")
    dataset["spec"]["retrain"]["threshold"] = -1
    with pytest.raises(InvalidManifest, match="threshold: -1 is less than the minimum of 1"):
        loop.apply(dataset)
    assert loop.objects.items == {}
