"""The plugin contract: arguments as a pydantic model (checks, defaults, JSON Schema), scoring,
discovery and `kubeloop plugins list`."""

import json
from typing import Any, Literal

import jsonschema
import numpy as np
import pytest
from pydantic import Field
from sklearn.metrics import f1_score

from kubeloop import cli, plugins


class ToyArgs(plugins.Arguments):
    """Arguments of a plugin for tests."""

    epochs: int = Field(ge=1)
    """passes"""
    rate: float = Field(default=0.1, le=1.0)
    """step size"""
    mode: Literal["a", "b"] = "a"
    """how"""
    augment: bool = False
    """shift"""


INFO = plugins.PluginInfo(
    name="toy",
    version="1.0",
    description="a plugin for tests",
    arguments=ToyArgs,
    datasets=(plugins.DatasetRequirement(plugins.LABELLED_IMAGES, "images"),),
)


def test_defaults_fill_in_and_ints_pass_as_floats() -> None:
    resolved, problems = plugins.check_args(INFO, {"epochs": 3, "rate": 1})
    assert problems == []
    assert resolved == ToyArgs(epochs=3, rate=1.0, mode="a", augment=False)
    assert isinstance(resolved, ToyArgs)
    assert isinstance(resolved.rate, float)
    assert resolved.to_wire() == {"epochs": 3, "rate": 1.0, "mode": "a", "augment": False}


def test_every_problem_is_named_at_once() -> None:
    resolved, problems = plugins.check_args(
        INFO, {"rate": "fast", "mode": "c", "augment": "yes", "epochz": 3}
    )
    assert resolved is None
    assert len(problems) == 5
    text = "\n".join(problems)
    assert "args.epochz: unknown argument of plugin 'toy' (it takes augment, epochs" in text
    assert "args.epochs: required argument is missing (passes)" in text
    assert "args.rate: Input should be a valid number, got str 'fast'" in text
    assert "args.mode: Input should be 'a' or 'b', got str 'c'" in text
    assert "args.augment: Input should be a valid boolean, got str 'yes'" in text


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"epochs": True}, "args.epochs: Input should be a valid integer, got bool True"),
        ({"epochs": 2.5}, "args.epochs: Input should be a valid integer, got float 2.5"),
        ({"epochs": "3"}, "args.epochs: Input should be a valid integer, got str '3'"),
        ({"epochs": 0}, "args.epochs: Input should be greater than or equal to 1, got int 0"),
        ({"epochs": 1, "rate": 2}, "args.rate: Input should be less than or equal to 1, got int 2"),
        ({"epochs": 1, "augment": 1}, "args.augment: Input should be a valid boolean, got int 1"),
    ],
)
def test_types_and_ranges(args: dict[str, object], problem: str) -> None:
    assert plugins.check_args(INFO, args)[1] == [problem]


def test_args_are_camel_case_only() -> None:
    class Named(plugins.Arguments):
        learning_rate: float = 0.1
        """step size"""

    info = plugins.PluginInfo("named", "1", "d", Named, ())
    assert plugins.parse_args(info, {"learningRate": 0.5}) == Named(learning_rate=0.5)
    (problem,) = plugins.check_args(info, {"learning_rate": 0.5})[1]
    assert problem.startswith("args.learning_rate: unknown argument of plugin 'named'")
    with pytest.raises(plugins.InvalidArguments, match=r"args\.learning_rate: unknown argument"):
        plugins.parse_args(info, {"learning_rate": 0.5})


@pytest.mark.parametrize(
    "args",
    [
        {"epochs": 3},
        {"epochs": 3, "rate": 1, "mode": "b", "augment": True},
        {},
        {"epochs": 0},
        {"epochs": 2.5},
        {"epochs": 1, "rate": "fast"},
        {"epochs": 1, "mode": "c"},
        {"epochs": 1, "colour": "red"},
    ],
)
def test_the_published_schema_agrees_with_the_checks(args: dict[str, Any]) -> None:
    schema = INFO.to_json()["arguments"]
    published = list(jsonschema.Draft202012Validator(schema).iter_errors(args))
    assert (published == []) == (plugins.check_args(INFO, args)[1] == [])


def test_scores_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    truth = rng.choice(np.array(["a", "b", "c"]), 200)
    predicted = np.where(rng.random(200) < 0.7, truth, rng.choice(np.array(["a", "b", "c"]), 200))
    assert plugins.score("accuracy", truth, predicted) == pytest.approx(
        float(np.mean(truth == predicted))
    )
    assert plugins.score("macro_f1", truth, predicted) == pytest.approx(
        f1_score(truth, predicted, average="macro")
    )
    assert plugins.score("accuracy", truth[:0], predicted[:0]) == 0.0


def test_labelled_images_refuse_ragged_parts() -> None:
    with pytest.raises(ValueError, match="3 images, 2 labels"):
        plugins.LabelledImages(
            np.zeros((3, 2, 2), np.float32), np.array(["a", "b"]), np.array(["", "", ""])
        )


def test_the_image_classifier_is_found_through_its_entry_point() -> None:
    assert "image-classifier" in plugins.installed()
    plugin = plugins.load("image-classifier")
    info = plugin.info()
    assert info.name == "image-classifier"
    assert info.model_format == "onnx"
    names = set(info.arguments_schema()["properties"])
    assert {"height", "width", "epochs", "learningRate", "batchSize", "seed", "fineTune"} <= names


def test_an_unknown_plugin_names_the_installed_ones() -> None:
    with pytest.raises(plugins.PluginError, match=r"'nope' is not installed.*image-classifier"):
        plugins.load("nope")


def test_plugins_list_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plugins", "list", "--json"]) == 0
    listed = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    arguments = listed["image-classifier"]["arguments"]["properties"]
    (mode, _) = arguments["fineTune"]["anyOf"]
    assert mode["enum"] == ["none", "full", "head"]
    assert (arguments["epochs"]["type"], arguments["epochs"]["minimum"]) == ("integer", 1)
    assert arguments["epochs"]["description"] == "Passes over the training data."
    assert cli.main(["plugins", "list"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("image-classifier ")
    assert "learningRate (float, default 0.003" in text
