"""Examples validate against the generated CRD schemas; invalid specs are refused readably."""

import copy
from pathlib import Path
from typing import Any

import pytest

from kubeloop import cli, manifests
from kubeloop.api import validation

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ALL = [doc for path in sorted(EXAMPLES.iterdir()) for _, doc in manifests.load(path)]


def _example(kind: str) -> dict[str, Any]:
    return copy.deepcopy(next(doc for doc in ALL if doc["kind"] == kind))


def test_the_digits_example_has_all_three_kinds() -> None:
    kinds = {doc["kind"] for _, doc in manifests.load(EXAMPLES / "digits")}
    assert kinds == {"TrainingJob", "FeedbackDataset", "ServedModel"}


@pytest.mark.parametrize("manifest", ALL, ids=lambda m: f"{m['kind']}/{m['metadata']['name']}")
def test_example_is_valid(manifest: dict[str, Any]) -> None:
    assert validation.schema_errors(manifest) == []
    assert validation.model_errors(manifest) == []


def test_trainingjob_without_plugin_is_refused() -> None:
    job = _example("TrainingJob")
    del job["spec"]["plugin"]
    assert validation.schema_errors(job) == ["spec: 'plugin' is a required property"]


def test_negative_threshold_is_refused() -> None:
    dataset = _example("FeedbackDataset")
    dataset["spec"]["retrain"]["threshold"] = -5
    assert validation.schema_errors(dataset) == [
        "spec.retrain.threshold: -5 is less than the minimum of 1"
    ]


def test_unknown_runtime_is_refused() -> None:
    served = _example("ServedModel")
    served["spec"]["runtime"] = "knative"
    assert validation.schema_errors(served) == [
        "spec.runtime: 'knative' is not one of ['kserve', 'deployment']"
    ]


@pytest.mark.parametrize("gpu", [1.5, "two"])
def test_gpu_count_must_be_an_integer(gpu: object) -> None:
    job = _example("TrainingJob")
    job["spec"]["resources"]["gpu"] = gpu
    assert validation.schema_errors(job) == [
        f"spec.resources.gpu: {gpu!r} is not of type 'integer'"
    ]


def test_several_problems_are_all_named() -> None:
    job = _example("TrainingJob")
    job["spec"]["resources"]["gpu"] = -1
    job["spec"]["backoffLimit"] = "many"
    assert validation.schema_errors(job) == [
        "spec.backoffLimit: 'many' is not of type 'integer'",
        "spec.resources.gpu: -1 is less than the minimum of 0",
    ]


def test_rules_beyond_the_schema_come_from_the_models() -> None:
    job = _example("TrainingJob")
    job["spec"]["datasets"][0]["feedbackDataset"] = "digits-feedback"
    job["spec"]["registredModel"] = "typo"
    assert validation.schema_errors(job) == []
    errors = validation.model_errors(job)
    assert "spec.datasets[0]: dataset 'base': set exactly one of uri or feedbackDataset" in errors
    assert any(e.startswith("spec.registredModel: unknown field") for e in errors)


def test_served_model_replica_range() -> None:
    served = _example("ServedModel")
    served["spec"].update(minReplicas=3, maxReplicas=2)
    assert validation.manifest_errors(served) == ["spec: minReplicas (3) is above maxReplicas (2)"]


def test_not_a_kubeloop_resource() -> None:
    (error,) = validation.schema_errors({"apiVersion": "v1", "kind": "Pod"})
    assert error.startswith("not a kubeloop resource")


def test_validate_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", "-f", str(EXAMPLES / "digits")]) == 0
    bad = tmp_path / "bad.yaml"
    served = _example("ServedModel")
    served["spec"]["runtime"] = "knative"
    import yaml

    bad.write_text(yaml.safe_dump(served))
    assert cli.main(["validate", "-f", str(bad)]) == 1
    assert "spec.runtime: 'knative' is not one of" in capsys.readouterr().out
