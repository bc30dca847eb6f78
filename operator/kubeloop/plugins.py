"""The training-plugin contract: what a plugin declares, the lifecycle it implements, discovery.

A plugin is a distribution that registers a `Plugin` subclass in the `kubeloop.plugins`
entry-point group; the trainer finds it by name and never branches on plugin names. The
lifecycle is small: `info()` declares arguments and datasets, `train()` fits a model,
`predict()` gives the outputs the ONNX export must reproduce, `evaluate()` scores slices,
`export()` returns the ONNX bytes and `checkpoint()` what a later fine-tune starts from.

Every exported model has the same interface, which the predictor relies on:
one float32 input named `input` of shape [batch, *input_shape] and two outputs,
`probabilities` [batch, classes] (softmax inside the graph) and `embedding` [batch, D]
(penultimate-layer features, for uncertainty and similar-case search).
"""

from __future__ import annotations

import abc
import importlib.metadata
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import numpy as np
from numpy.typing import NDArray

ENTRY_POINT_GROUP = "kubeloop.plugins"
INPUT = "input"
PROBABILITIES = "probabilities"
EMBEDDING = "embedding"
OUTPUTS = (PROBABILITIES, EMBEDDING)
LABELLED_IMAGES = "labelled-images"
"""Dataset kind: grayscale images (N, H, W) in [0, 1], a class label and a slice tag each."""

ArgumentType = Literal["int", "float", "str", "bool"]
Metric = Literal["accuracy", "macro_f1"]
M = TypeVar("M")


class PluginError(RuntimeError):
    """A plugin could not be found or loaded, or refused its input."""


class InvalidArguments(PluginError):
    """The job's arguments or data do not fit the plugin; the message names every problem."""


@dataclass(frozen=True)
class Argument:
    """One argument a plugin accepts in a TrainingJob's `args`."""

    name: str
    type: ArgumentType
    description: str
    required: bool = False
    default: Any = None
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class DatasetRequirement:
    """A kind of dataset the plugin trains on; the trainer loads TrainingJob datasets as it."""

    kind: str
    description: str


@dataclass(frozen=True)
class PluginInfo:
    """What a plugin declares before anything runs; `kubeloop plugins list` shows it."""

    name: str
    version: str
    description: str
    arguments: tuple[Argument, ...]
    datasets: tuple[DatasetRequirement, ...]
    model_format: Literal["onnx"] = "onnx"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "modelFormat": self.model_format,
            "datasets": [{"kind": d.kind, "description": d.description} for d in self.datasets],
            "arguments": [
                {
                    "name": a.name,
                    "type": a.type,
                    "description": a.description,
                    "required": a.required,
                    **({"default": a.default} if a.default is not None else {}),
                    **({"choices": list(a.choices)} if a.choices else {}),
                    **({"minimum": a.minimum} if a.minimum is not None else {}),
                    **({"maximum": a.maximum} if a.maximum is not None else {}),
                }
                for a in self.arguments
            ],
        }


@dataclass(frozen=True)
class LabelledImages:
    """Images (N, H, W) float32 in [0, 1] with a class label and a slice tag ('' if none) each."""

    images: NDArray[np.float32]
    labels: NDArray[np.str_]
    slices: NDArray[np.str_]

    def __post_init__(self) -> None:
        if not len(self.images) == len(self.labels) == len(self.slices):
            raise ValueError(
                f"{len(self.images)} images, {len(self.labels)} labels and "
                f"{len(self.slices)} slice tags: each image needs one of each"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def of(
        cls, images: NDArray[np.float32], labels: Sequence[str] | NDArray[np.str_], slice_: str
    ) -> LabelledImages:
        """Images that all carry the slice tag `slice_`."""
        return cls(
            np.asarray(images, dtype=np.float32),
            np.asarray(labels, dtype=np.str_),
            np.asarray([slice_] * len(labels), dtype=np.str_),  # np.full would cut it to U1
        )

    @classmethod
    def concat(cls, parts: Sequence[LabelledImages]) -> LabelledImages:
        """All `parts` in order; shapes must agree."""
        if not parts:
            return cls(np.zeros((0, 0, 0), np.float32), np.zeros(0, np.str_), np.zeros(0, np.str_))
        return cls(
            np.concatenate([p.images for p in parts]).astype(np.float32),
            np.concatenate([p.labels for p in parts]).astype(np.str_),
            np.concatenate([p.slices for p in parts]).astype(np.str_),
        )


@dataclass(frozen=True)
class Dataset:
    """One TrainingJob dataset, loaded and split by the trainer."""

    name: str
    """Name in the TrainingJob, e.g. base or feedback."""
    feedback: bool
    """A FeedbackDataset snapshot, as opposed to reference data such as builtin://digits."""
    train: LabelledImages
    validation: LabelledImages
    """Held out for model selection; never trained on."""


@dataclass(frozen=True)
class BaseModel:
    """The registered version a fine-tune starts from."""

    uri: str
    version: str
    checkpoint: bytes


@dataclass(frozen=True)
class Progress:
    """One finished epoch, as the plugin reports it."""

    epoch: int
    epochs: int
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class TrainingContext:
    """Everything `Plugin.train` gets: checked arguments, data, base model, reporting."""

    args: Mapping[str, Any]
    """Arguments, checked against PluginInfo, with defaults filled in."""
    datasets: tuple[Dataset, ...]
    """Training and validation data of every dataset; the plugin decides the mix."""
    metric: Metric
    base_model: BaseModel | None
    logger: logging.Logger
    progress: Callable[[Progress], None]
    """Called once per epoch; the trainer logs the metrics (train_loss, val_<metric>)."""


@dataclass
class TrainedModel(Generic[M]):
    """A trained model and what the trainer needs to know about it."""

    model: M
    """The plugin's own model object."""
    classes: tuple[str, ...]
    """Class names in output order."""
    input_shape: tuple[int, ...]
    """Shape of one input without the batch axis, e.g. (1, 8, 8)."""
    device: str
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Evaluation:
    """A metric over all evaluation data and per slice."""

    overall: float
    slices: dict[str, float]


class Plugin(abc.ABC, Generic[M]):
    """A training plugin: declare, train, predict, evaluate, export."""

    @abc.abstractmethod
    def info(self) -> PluginInfo:
        """Name, version, arguments and datasets; cheap, imports no framework."""

    def check(self, args: Mapping[str, Any], base_model: str | None) -> list[str]:
        """Problems across arguments (e.g. a fine-tune mode without a base model).

        Each problem starts with its field under spec, e.g. `args.fineTune: ...`.
        """
        del args, base_model
        return []

    @abc.abstractmethod
    def train(self, context: TrainingContext) -> TrainedModel[M]:
        """Fit a model, keeping the best epoch on `context.validation`."""

    @abc.abstractmethod
    def predict(self, model: TrainedModel[M], images: NDArray[np.float32]) -> dict[str, Any]:
        """The reference outputs (PROBABILITIES, EMBEDDING) for images (N, H, W), as numpy."""

    def evaluate(
        self, model: TrainedModel[M], slices: Mapping[str, LabelledImages], metric: Metric
    ) -> Evaluation:
        """`metric` per slice and over all slices together, from `predict`'s argmax."""
        classes = np.asarray(model.classes, dtype=np.str_)
        truth: list[NDArray[np.str_]] = []
        predicted: list[NDArray[np.str_]] = []
        scores = {}
        for name, data in slices.items():
            probabilities = self.predict(model, data.images)[PROBABILITIES]
            guess = classes[np.asarray(probabilities).argmax(axis=1)]
            scores[name] = score(metric, data.labels, guess)
            truth.append(data.labels)
            predicted.append(guess)
        overall = score(metric, np.concatenate(truth), np.concatenate(predicted)) if truth else 0.0
        return Evaluation(overall, scores)

    @abc.abstractmethod
    def export(self, model: TrainedModel[M]) -> bytes:
        """The model as one ONNX file with the interface in this module's docstring."""

    @abc.abstractmethod
    def checkpoint(self, model: TrainedModel[M]) -> bytes:
        """What `BaseModel.checkpoint` holds when a later job fine-tunes from this model."""


def score(metric: Metric, truth: NDArray[np.str_], predicted: NDArray[np.str_]) -> float:
    """Accuracy, or the unweighted mean F1 over the classes in `truth`; no side effects."""
    if len(truth) == 0:
        return 0.0
    if metric == "accuracy":
        return float(np.mean(truth == predicted))
    f1s = []
    for label in np.unique(truth):
        true_positive = float(np.sum((truth == label) & (predicted == label)))
        positives = float(np.sum(predicted == label))
        actual = float(np.sum(truth == label))
        f1s.append(2 * true_positive / (positives + actual) if positives + actual else 0.0)
    return float(np.mean(f1s))


def check_args(info: PluginInfo, args: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(arguments with defaults filled in, every problem found); no side effects.

    Problems: an argument the plugin does not declare, a missing required one, a value of
    the wrong type, out of range, or not among the choices.
    """
    declared = {a.name: a for a in info.arguments}
    problems = [
        f"args.{name}: unknown argument of plugin {info.name!r} (it takes "
        f"{', '.join(sorted(declared)) or 'no arguments'})"
        for name in args
        if name not in declared
    ]
    resolved: dict[str, Any] = {}
    for argument in info.arguments:
        if argument.name not in args:
            if argument.required:
                problems.append(
                    f"args.{argument.name}: required argument is missing ({argument.description})"
                )
            resolved[argument.name] = argument.default
            continue
        value = args[argument.name]
        problem = _argument_problem(argument, value)
        if problem:
            problems.append(f"args.{argument.name}: {problem}")
        resolved[argument.name] = (
            float(value) if argument.type == "float" and not problem else value
        )
    return resolved, problems


def _argument_problem(argument: Argument, value: Any) -> str | None:
    expected: dict[str, tuple[type, ...]] = {
        "int": (int,),
        "float": (int, float),
        "str": (str,),
        "bool": (bool,),
    }
    wrong_bool = isinstance(value, bool) and argument.type != "bool"
    if wrong_bool or not isinstance(value, expected[argument.type]):
        return f"expected {argument.type}, got {type(value).__name__} {value!r}"
    if argument.choices and value not in argument.choices:
        return f"{value!r} is not one of {list(argument.choices)}"
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    if argument.minimum is not None and value < argument.minimum:
        return f"{value!r} is below the minimum {argument.minimum:g}"
    if argument.maximum is not None and value > argument.maximum:
        return f"{value!r} is above the maximum {argument.maximum:g}"
    return None


def describe(infos: Sequence[PluginInfo]) -> str:
    """Plugins and their arguments as text for a terminal; no side effects."""
    if not infos:
        return f"no plugins installed (entry-point group {ENTRY_POINT_GROUP})"
    blocks = []
    for info in infos:
        kinds = ", ".join(d.kind for d in info.datasets)
        lines = [
            f"{info.name} {info.version}: {info.description}",
            f"  datasets: {kinds}; model format: {info.model_format}",
            "  arguments:",
        ]
        for a in info.arguments:
            default = "optional" if a.default is None else f"default {a.default!r}"
            facts = [a.type, "required" if a.required else default]
            if a.choices:
                facts.append("one of " + "|".join(map(str, a.choices)))
            if a.minimum is not None:
                facts.append(f">= {a.minimum:g}")
            if a.maximum is not None:
                facts.append(f"<= {a.maximum:g}")
            lines.append(f"    {a.name} ({', '.join(facts)}): {a.description}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def installed() -> dict[str, importlib.metadata.EntryPoint]:
    """Installed plugins by name, from the `kubeloop.plugins` entry-point group."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def load(name: str) -> Plugin[Any]:
    """An instance of the installed plugin `name`; PluginError names those installed."""
    entry_points = installed()
    if name not in entry_points:
        raise PluginError(
            f"plugin {name!r} is not installed (installed: "
            f"{', '.join(sorted(entry_points)) or 'none'}); `kubeloop plugins list` shows them"
        )
    try:
        factory = entry_points[name].load()
        plugin = factory()
    except Exception as error:  # a broken plugin must not look like a missing one
        raise PluginError(
            f"plugin {name!r} ({entry_points[name].value}) failed to load: "
            f"{type(error).__name__}: {error}"
        ) from error
    if not isinstance(plugin, Plugin):
        raise PluginError(
            f"plugin {name!r} ({entry_points[name].value}) is not a kubeloop.plugins.Plugin"
        )
    return plugin
