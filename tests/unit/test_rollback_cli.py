"""`kubeloop rollback` against a real MLflow server: from a `kubeloop up` state directory and
with the registered model named (a cluster's registry); refusals are one line, exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from kubeloop import cli
from kubeloop.local import services


def two_versions(tracking_uri: str, name: str) -> mlflow.MlflowClient:
    """Versions 1 and 2 of `name`, 2 promoted over 1 as a ServedModel promotes."""
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    client.create_registered_model(name)
    with mlflow.start_run() as run:
        mlflow.log_metric("accuracy", 0.9)
    for _ in range(2):
        client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias(name, "champion-previous", "1")
    client.set_registered_model_alias(name, "champion", "2")
    return client


def state_dir(root: Path, model: str, mlflow_url: str) -> Path:
    """A state directory as `kubeloop up` leaves it: the ServedModel and the MLflow process."""
    root.mkdir()
    served = {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "ServedModel",
        "metadata": {"name": "digits", "namespace": "default"},
        "spec": {"registeredModel": model},
    }
    (root / "objects.json").write_text(json.dumps([served]))
    (root / "processes.json").write_text(json.dumps([{"role": "server/mlflow", "url": mlflow_url}]))
    return root


def test_rollback_moves_the_alias_back_once(
    mlflow_server: services.Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = two_versions(mlflow_server.url, "rollback-cli")
    state = state_dir(tmp_path / "state", "rollback-cli", mlflow_server.url)

    assert cli.main(["rollback", "digits", "--state-dir", str(state)]) == 0
    assert "moved back from version 2 to 1" in capsys.readouterr().out
    assert client.get_model_version_by_alias("rollback-cli", "champion").version == "1"
    tag = client.get_model_version("rollback-cli", "2").tags["kubeloop.rolledBack.champion"]
    assert json.loads(tag)["to"] == "1"

    named = ["rollback", "--model", "rollback-cli", "--tracking-uri", mlflow_server.url]
    assert cli.main(named) == 1
    error = capsys.readouterr().err
    assert error.startswith("kubeloop rollback: @champion of rollback-cli serves version 1")
    assert "nothing to go back to" in error
    assert "Traceback" not in error


def test_rollback_refusals_say_what_is_missing(
    mlflow_server: services.Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = state_dir(tmp_path / "state", "rollback-none", mlflow_server.url)
    assert cli.main(["rollback", "other", "--state-dir", str(state)]) == 1
    assert "holds no ServedModel default/other" in capsys.readouterr().err
    assert cli.main(["rollback", "digits", "--state-dir", str(state)]) == 1
    assert "@champion of rollback-none names no version" in capsys.readouterr().err
    assert cli.main(["rollback", "digits", "--state-dir", str(tmp_path / "absent")]) == 1
    assert "holds no ServedModel" in capsys.readouterr().err
    assert cli.main(["rollback"]) == 1
    assert "name the ServedModel" in capsys.readouterr().err
