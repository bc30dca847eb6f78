"""The plugin contract: argument checking, scoring, discovery and `kubeloop plugins list`."""

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from kubeloop import cli, plugins

INFO = plugins.PluginInfo(
    name="toy",
    version="1.0",
    description="a plugin for tests",
    arguments=(
        plugins.Argument("epochs", "int", "passes", required=True, minimum=1),
        plugins.Argument("rate", "float", "step size", default=0.1, maximum=1.0),
        plugins.Argument("mode", "str", "how", default="a", choices=("a", "b")),
        plugins.Argument("augment", "bool", "shift", default=False),
    ),
    datasets=(plugins.DatasetRequirement(plugins.LABELLED_IMAGES, "images"),),
)


def test_defaults_fill_in_and_ints_pass_as_floats() -> None:
    resolved, problems = plugins.check_args(INFO, {"epochs": 3, "rate": 1})
    assert problems == []
    assert resolved == {"epochs": 3, "rate": 1.0, "mode": "a", "augment": False}
    assert isinstance(resolved["rate"], float)


def test_every_problem_is_named_at_once() -> None:
    _, problems = plugins.check_args(
        INFO, {"rate": "fast", "mode": "c", "augment": "yes", "epochz": 3}
    )
    assert len(problems) == 5
    text = "\n".join(problems)
    assert "args.epochz: unknown argument of plugin 'toy'" in text
    assert "args.epochs: required argument is missing" in text
    assert "args.rate: expected float, got str 'fast'" in text
    assert "args.mode: 'c' is not one of ['a', 'b']" in text
    assert "args.augment: expected bool, got str 'yes'" in text


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"epochs": True}, "args.epochs: expected int, got bool True"),
        ({"epochs": 2.5}, "args.epochs: expected int, got float 2.5"),
        ({"epochs": 0}, "args.epochs: 0 is below the minimum 1"),
        ({"epochs": 1, "rate": 2}, "args.rate: 2 is above the maximum 1"),
        ({"epochs": 1, "augment": 1}, "args.augment: expected bool, got int 1"),
    ],
)
def test_types_and_ranges(args: dict[str, object], problem: str) -> None:
    assert plugins.check_args(INFO, args)[1] == [problem]


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
    names = {a.name for a in info.arguments}
    assert {"height", "width", "epochs", "learningRate", "batchSize", "seed", "fineTune"} <= names


def test_an_unknown_plugin_names_the_installed_ones() -> None:
    with pytest.raises(plugins.PluginError, match=r"'nope' is not installed.*image-classifier"):
        plugins.load("nope")


def test_plugins_list_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plugins", "list", "--json"]) == 0
    listed = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    arguments = {a["name"]: a for a in listed["image-classifier"]["arguments"]}
    assert arguments["fineTune"]["choices"] == ["none", "full", "head"]
    assert arguments["epochs"]["type"] == "int"
    assert cli.main(["plugins", "list"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("image-classifier ")
    assert "learningRate (float, default 0.003" in text
