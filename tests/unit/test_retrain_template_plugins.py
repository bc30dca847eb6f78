"""A FeedbackDataset's retrain template is checked against its plugin up front, as the trainer
will check the TrainingJob it creates; without plugins installed (the operator's image), a
plugin that is not installed is no problem and its arguments are left to the trainer."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeloop import admission, cli, manifests

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "digits"
WHERE = "spec.retrain.trainingTemplate"


def _dataset(**template: Any) -> dict[str, Any]:
    for _, manifest in manifests.load(EXAMPLES):
        if manifest["kind"] == "FeedbackDataset":
            dataset = copy.deepcopy(manifest)
            dataset["spec"]["retrain"]["trainingTemplate"].update(template)
            return dataset
    raise AssertionError("no FeedbackDataset example")


def test_an_unknown_plugin_is_refused_by_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dataset.yaml"
    path.write_text(yaml.safe_dump(_dataset(plugin={"name": "text-classifier"})))
    assert cli.main(["validate", "-f", str(path)]) == 1
    out = capsys.readouterr().out
    assert "FeedbackDataset/digits-feedback invalid" in out
    assert f"{WHERE}.plugin.name: plugin 'text-classifier' is not installed" in out


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ({"args": {"epochs": 0}}, f"{WHERE}.args.epochs: Input should be greater than or equal"),
        ({"args": {"fineTune": "full"}, "baseModel": None}, f"{WHERE}.args.fineTune: 'full' needs"),
        ({"plugin": {"name": "image-classifier", "version": "9"}}, f"{WHERE}.plugin.version"),
        (
            {"datasets": [{"name": "base", "uri": "builtin://mnist"}]},
            f"{WHERE}.datasets[base].uri: unknown builtin dataset",
        ),
        (
            {"datasets": [{"name": "other", "feedbackDataset": "someone-else"}]},
            f"{WHERE}.datasets[other]: feedbackDataset 'someone-else' has no manifest",
        ),
    ],
)
def test_the_template_is_checked_as_the_trainer_will_check_its_job(
    template: dict[str, Any], problem: str
) -> None:
    dataset = _dataset(**template)
    if template.get("baseModel", "") is None:
        del dataset["spec"]["retrain"]["trainingTemplate"]["baseModel"]
    found = admission.problems(dataset)
    assert any(p.startswith(problem) for p in found), found


def test_what_the_controller_fills_in_is_no_problem() -> None:
    own = {"name": "users", "feedbackDataset": "digits-feedback"}
    dataset = _dataset(datasets=[{"name": "base", "uri": "builtin://digits"}, own])
    assert admission.problems(dataset) == []


def test_without_the_plugin_installed_its_arguments_are_left_to_the_trainer() -> None:
    unknown = _dataset(plugin={"name": "text-classifier"}, args={"anything": 1})
    assert admission.problems(unknown, require_plugins=False) == []
    installed = _dataset(args={"epochs": 0})
    (problem,) = admission.problems(installed, require_plugins=False)
    assert problem.startswith(f"{WHERE}.args.epochs")
