"""`kubeloop validate` refuses what the API server, the operator or the trainer would refuse,
and names every problem at once; where the CRD schema can say it, `kubectl apply` (the CRD's
schema) refuses it too."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeloop import admission, cli, manifests
from kubeloop.api import validation

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "digits"
TEMPLATE = ("spec", "retrain", "trainingTemplate")
NOT_A_NAME = "is not an object name"

# (kind, field, value, what validate says, whether the CRD schema refuses it on apply)
CASES: list[tuple[str, tuple[str, ...], Any, str, bool]] = [
    *[
        (kind, ("metadata", "name"), name, f"metadata.name: {name!r} {NOT_A_NAME}", True)
        for kind in ("TrainingJob", "FeedbackDataset", "ServedModel")
        for name in ("../../x", "UPPER_case")
    ],
    *[
        (kind, ("metadata", "name"), "a" * 300, "metadata.name: 'aaaa", True)
        for kind in ("TrainingJob", "FeedbackDataset", "ServedModel")
    ],
    ("TrainingJob", ("metadata", "namespace"), "../x", "metadata.namespace: String should", False),
    ("TrainingJob", ("spec", "evaluation", "slices"), ["base", "base"], "repeated", True),
    ("FeedbackDataset", ("spec", "slices"), ["a", "a"], "spec.slices: items must be unique", True),
    ("FeedbackDataset", (*TEMPLATE, "evaluation", "slices"), ["b", "b"], "repeated", True),
    ("TrainingJob", ("spec", "image"), "has space", "spec.image: 'has space' is not", True),
    ("ServedModel", ("spec", "image"), "has space", "spec.image: 'has space' is not", True),
    ("FeedbackDataset", (*TEMPLATE, "image"), "a b", "trainingTemplate.image: 'a b'", True),
    ("FeedbackDataset", ("spec", "retrain", "threshold"), 10**30, "the maximum of", True),
    ("FeedbackDataset", ("spec", "retrain", "cooldownSeconds"), 10**12, "maximum of 21", True),
    ("TrainingJob", ("spec", "resources", "gpu"), 2**63, "spec.resources.gpu: 922", True),
    ("ServedModel", ("spec", "maxReplicas"), 2**40, "spec.maxReplicas: 1099511627776", True),
    ("TrainingJob", ("spec", "plugin", "name"), "nope", "plugin 'nope' is not installed", False),
    ("FeedbackDataset", (*TEMPLATE, "plugin", "name"), "nope", "'nope' is not installed", False),
    ("TrainingJob", ("spec", "args", "epochs"), "abc", "spec.args.epochs: Input should", False),
    ("TrainingJob", ("spec", "args", "epochs"), -5, "spec.args.epochs: Input should", False),
    ("TrainingJob", ("spec", "args", "colour"), 1, "spec.args.colour: unknown argument", False),
    (
        "FeedbackDataset",
        (*TEMPLATE, "args", "epochs"),
        "abc",
        "trainingTemplate.args.epochs",
        False,
    ),
    ("FeedbackDataset", (*TEMPLATE, "args", "epochs"), -5, "trainingTemplate.args.epochs", False),
    ("FeedbackDataset", (*TEMPLATE, "args", "x"), 1, "trainingTemplate.args.x: unknown", False),
    ("FeedbackDataset", ("spec", "inputShape"), [0, 0], "spec.inputShape[0]: 0 is less", True),
    ("FeedbackDataset", ("spec", "inputShape"), [-1], "spec.inputShape[0]: -1 is less", True),
    ("FeedbackDataset", ("spec", "storage", "prefix"), "../../", "spec.storage.prefix", True),
    ("FeedbackDataset", ("spec", "storage", "prefix"), "a/./b/", "spec.storage.prefix", True),
    ("ServedModel", ("spec", "alias"), "bad alias!", "spec.alias: 'bad alias!' is not", True),
    ("ServedModel", ("spec", "alias"), "latest", "spec.alias: 'latest': 'latest' and v", False),
    ("ServedModel", ("spec", "feedbackDataset"), "Not_A_Name", "spec.feedbackDataset", True),
]


def _example(kind: str) -> dict[str, Any]:
    for _, manifest in manifests.load(EXAMPLES):
        if manifest["kind"] == kind:
            return copy.deepcopy(manifest)
    raise AssertionError(kind)


def _with(kind: str, field: tuple[str, ...], value: Any) -> dict[str, Any]:
    manifest = _example(kind)
    node = manifest
    for key in field[:-1]:
        node = node.setdefault(key, {})
    node[field[-1]] = value
    return manifest


def _validate(tmp_path: Path, capsys: pytest.CaptureFixture[str], *docs: dict[str, Any]) -> str:
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    assert cli.main(["validate", "-f", str(path)]) == 1
    return capsys.readouterr().out


@pytest.mark.parametrize(
    ("kind", "field", "value", "said", "on_apply"),
    CASES,
    ids=[f"{c[0]}-{'.'.join(c[1])}={str(c[2])[:12]}" for c in CASES],
)
def test_what_would_be_refused_is_refused(
    kind: str,
    field: tuple[str, ...],
    value: Any,
    said: str,
    on_apply: bool,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = _with(kind, field, value)
    out = _validate(tmp_path, capsys, manifest)
    assert " invalid\n" in out
    assert said in out
    assert bool(validation.schema_errors(manifest)) == on_apply


def test_the_examples_stay_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", "-f", str(EXAMPLES)]) == 0
    assert capsys.readouterr().out.count(" valid\n") == 3


def test_every_kind_of_problem_is_named_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = _with("TrainingJob", ("metadata", "name"), "Bad_Name")  # the CRD schema
    job["sepc"] = {}  # the models
    job["spec"]["template"] = {"labels": {"bad key": "v"}}  # the operator's spec problems
    job["spec"]["args"] = {"epochs": 0}  # the plugin's arguments
    job["spec"]["datasets"][0]["uri"] = "builtin://mnist"  # the trainer's datasets
    out = _validate(tmp_path, capsys, job)
    for said in (
        "metadata.name: 'Bad_Name' is not an object name",
        "sepc: unknown field",
        "spec.template.labels: key 'bad key'",
        "spec.args.epochs: Input should be greater than or equal to 1, got int 0",
        "spec.datasets[base].uri: unknown builtin dataset 'builtin://mnist'",
    ):
        assert said in out


def test_plugin_arguments_are_checked_even_when_the_spec_is_wrong_elsewhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = _with("TrainingJob", ("spec", "evaluation", "slices"), ["a", "a"])
    job["spec"]["args"]["epochs"] = "abc"
    dataset = _with("FeedbackDataset", ("spec", "inputShape"), [0])
    dataset["spec"]["retrain"]["trainingTemplate"]["args"]["epochs"] = "abc"
    out = _validate(tmp_path, capsys, job, dataset)
    assert "spec.args.epochs: Input should be a valid integer, got str 'abc'" in out
    assert "spec.retrain.trainingTemplate.args.epochs: Input should be a valid integer" in out


def test_a_problem_the_schema_and_the_models_both_see_is_named_once() -> None:
    dataset = _with("FeedbackDataset", ("spec", "retrain", "threshold"), -5)
    del dataset["spec"]["classes"]
    assert admission.problems(dataset) == [
        "spec: 'classes' is a required property",
        "spec.retrain.threshold: -5 is less than the minimum of 1",
    ]
