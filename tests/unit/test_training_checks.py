"""Checks before training: the spec file, the plugin, its arguments and datasets, exit codes."""

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeloop import plugins, registry, storage
from kubeloop.api.training_result import TrainingFailure, TrainingResult
from kubeloop.training import checks, datasets, entrypoint
from tests.conftest import unused_url

JOB: dict[str, Any] = {
    "apiVersion": "kubeloop.io/v1alpha1",
    "kind": "TrainingJob",
    "metadata": {"name": "check-me"},
    "spec": {
        "plugin": {"name": "image-classifier"},
        "args": {"epochs": 2},
        "datasets": [{"name": "base", "uri": "builtin://digits"}],
        "registeredModel": "digits",
        "evaluation": {"slices": ["base"]},
    },
}


def _job(**spec: Any) -> dict[str, Any]:
    job = copy.deepcopy(JOB)
    job["spec"].update(spec)
    return job


def _write(tmp_path: Path, job: dict[str, Any], name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(job) if name.endswith(".json") else yaml.safe_dump(job))
    return path


@pytest.mark.parametrize("name", ["job.yaml", "job.json"])
def test_a_valid_job_passes(tmp_path: Path, name: str) -> None:
    job = checks.load_job(_write(tmp_path, JOB, name))
    plugin, args = checks.check_job(job)
    assert plugin.info().name == "image-classifier"
    assert isinstance(args, plugin.info().arguments)
    assert args.to_wire()["epochs"] == 2
    assert args.to_wire()["learningRate"] == pytest.approx(0.003)


def test_every_problem_is_named_in_one_message(tmp_path: Path) -> None:
    job = _job(
        args={"epochs": "many", "fineTune": "head", "colour": True, "learningRate": -1},
        datasets=[
            {"name": "base", "uri": "builtin://mnist"},
            {"name": "feedback", "feedbackDataset": "digits-feedback"},
            {"name": "other", "uri": "https://example.org/data"},
        ],
    )
    with pytest.raises(checks.InvalidSpec) as raised:
        checks.check_job(checks.load_job(_write(tmp_path, job)))
    problems = raised.value.problems
    assert len(problems) == 7, problems
    message = str(raised.value)
    for fragment in [
        "spec.args.colour: unknown argument",
        "spec.args.epochs: Input should be a valid integer, got str 'many'",
        "spec.args.learningRate: Input should be greater than or equal to 0.000001, got int -1",
        "spec.args.fineTune: 'head' needs spec.baseModel",
        "unknown builtin dataset 'builtin://mnist'",
        "feedbackDataset 'digits-feedback' has no manifest",
        "'https://example.org/data' is neither builtin://NAME",
    ]:
        assert fragment in message


def test_unknown_plugin_and_bad_base_model(tmp_path: Path) -> None:
    job = _job(plugin={"name": "text-classifier"}, baseModel="runs:/abc/model")
    with pytest.raises(checks.InvalidSpec) as raised:
        checks.check_job(checks.load_job(_write(tmp_path, job)))
    assert "spec.plugin.name: plugin 'text-classifier' is not installed" in str(raised.value)
    assert "spec.baseModel: not a registered-model URI" in str(raised.value)


def test_plugin_version_must_match(tmp_path: Path) -> None:
    job = _job(plugin={"name": "image-classifier", "version": "9.9"})
    with pytest.raises(checks.InvalidSpec, match=r"'9.9' is required but image-classifier"):
        checks.check_job(checks.load_job(_write(tmp_path, job)))


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("kind: ServedModel\n", "kind is 'ServedModel', not TrainingJob"),
        ("[1, 2]\n", "expected one TrainingJob manifest"),
        ("a: [b\n", "spec file"),
    ],
)
def test_unreadable_spec_files(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(content)
    with pytest.raises(checks.InvalidSpec, match=fragment):
        checks.load_job(path)


def test_schema_problems_come_from_the_crd(tmp_path: Path) -> None:
    job = _job(registeredModel="")
    del job["spec"]["plugin"]
    with pytest.raises(checks.InvalidSpec) as raised:
        checks.load_job(_write(tmp_path, job))
    assert "spec: 'plugin' is a required property" in str(raised.value)


def test_trainer_exits_2_before_touching_any_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBELOOP_MLFLOW_TRACKING_URI", unused_url())
    job = _job(args={"epochs": 0, "batchSize": 1.5})
    result = tmp_path / "result.json"
    code = entrypoint.main(["--spec", str(_write(tmp_path, job)), "--result", str(result)])
    assert code == entrypoint.INVALID
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = [line for line in err.splitlines() if line.startswith("kubeloop trainer:")]
    assert "TrainingJob default/check-me failed" in line
    assert "spec.args.epochs: Input should be greater than or equal to 1, got int 0" in line
    assert "spec.args.batchSize: Input should be a valid integer, got float 1.5" in line
    # The reason goes where the result would (the pod's termination message), for the status.
    failure = TrainingFailure.parse(result.read_text())
    assert failure is not None
    assert (failure.error, failure.exit_code) == ("InvalidSpec", entrypoint.INVALID)
    assert "spec.args.epochs: Input should be greater than or equal to 1" in failure.message
    # A failure is never taken for a result.
    with pytest.raises(ValueError, match="no training result"):
        TrainingResult.parse(result.read_text())


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (checks.InvalidSpec("x", ["y"]), entrypoint.INVALID),
        (plugins.InvalidArguments("x"), entrypoint.INVALID),
        (registry.ModelNotFound("x"), entrypoint.INVALID),
        (registry.RegistryUnavailable("x"), entrypoint.UNREACHABLE),
        (storage.StorageUnavailable("x"), entrypoint.UNREACHABLE),
        (datasets.DatasetError("x"), entrypoint.FAILED),
        (plugins.PluginError("x"), entrypoint.FAILED),
        (KeyError("x"), entrypoint.FAILED),
    ],
)
def test_exit_codes(error: Exception, code: int) -> None:
    assert entrypoint.exit_code(error) == code
