"""The training-plugin contract: what a plugin declares, the lifecycle it implements, discovery.

A plugin is a distribution that registers a `Plugin` subclass in the `kubeloop.plugins`
entry-point group; the trainer finds it by name and never branches on plugin names. The
lifecycle is small: `info()` declares arguments and datasets, `train()` fits a model,
`predict()` gives the outputs the ONNX export must reproduce, `evaluate()` scores slices,
`export()` returns the ONNX bytes and `checkpoint()` what a later fine-tune starts from.

A plugin declares its arguments as a pydantic model, a subclass of `Arguments` named in
`PluginInfo.arguments`: field types, defaults, constraints and docstrings. From that one
model come the checks of a TrainingJob's `args` (`check_args`: every problem, each naming
`args.<name>`), the defaults, the JSON Schema of `kubeloop plugins list --json`, and the
typed object `train()` gets as `context.args`.

Data reaches a plugin as `Examples`: images in memory (`LabelledImages`: float32 in [0, 1],
(N, H, W) grayscale or (N, C, H, W)) or encoded PNG/JPEG files read on demand
(`ImageFiles`, e.g. an image folder in S3, too large to hold in memory), or a mix
(`ExampleParts`). Each example has a class label and a slice tag.

Every exported model has the same interface, which the predictor relies on:
one float32 input named `input` of shape [batch, C, H, W] (C = 1 grayscale or 3 RGB; a
model exported before channels were a choice has [batch, 1, H, W] or [batch, H, W]) holding
images in [0, 1], and two outputs, `probabilities` [batch, classes] (softmax inside the
graph) and `embedding` [batch, D] (penultimate-layer features, for uncertainty and
similar-case search). How a PNG or JPEG of any size becomes that input is the model's
`TrainedModel.preprocessing` (kubeloop.imaging.Preprocessing): the trainer stores it as the
model-version tag `kubeloop.preprocessing` (its JSON is in kubeloop.images) and in the model
card; normalisation by mean and std is inside the graph when it says `normalizeInModel`.
"""

from __future__ import annotations

import abc
import importlib.metadata
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

import numpy as np
import pydantic
from numpy.typing import NDArray
from pydantic import ConfigDict, ValidationInfo

from kubeloop import images as imaging
from kubeloop.api.common import ApiModel
from kubeloop.api.validation import field_path

ENTRY_POINT_GROUP = "kubeloop.plugins"
INPUT = "input"
PROBABILITIES = "probabilities"
EMBEDDING = "embedding"
OUTPUTS = (PROBABILITIES, EMBEDDING)
LABELLED_IMAGES = "labelled-images"
"""Dataset kind: images (in memory or files) with a class label and a slice tag each."""

Metric = Literal["accuracy", "macro_f1"]
M = TypeVar("M")


class PluginError(RuntimeError):
    """A plugin could not be found or loaded, or refused its input."""


class InvalidArguments(PluginError):
    """The job's arguments or data do not fit the plugin; the message names every problem."""


class Arguments(ApiModel):
    """Base of a plugin's arguments model: one field per argument of a TrainingJob's `args`.

    Fields are snake_case in Python and camelCase in `args`; a field's docstring is its
    description. Types are strict, as the JSON of a manifest is: 2.5 is no int and "yes" no
    bool, though an int is a float. Names the model does not declare are refused. A rule
    across fields is a validator; one that needs the job's baseModel reads `job_of(info)`.
    """

    model_config = ConfigDict(strict=True, frozen=True)


A = TypeVar("A", bound=Arguments)


@dataclass(frozen=True)
class JobContext:
    """What the validators of an Arguments model may know of the job beyond its `args`."""

    base_model: str | None
    """The TrainingJob's spec.baseModel: the version a fine-tune starts from, if any."""


def job_of(info: ValidationInfo) -> JobContext | None:
    """The job whose `args` are being checked; None when the model is built in Python."""
    return info.context if isinstance(info.context, JobContext) else None


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
    arguments: type[Arguments]
    """The model of the plugin's `args`."""
    datasets: tuple[DatasetRequirement, ...]
    model_format: Literal["onnx"] = "onnx"

    def arguments_schema(self) -> dict[str, Any]:
        """JSON Schema of `args`, as a TrainingJob writes them (camelCase)."""
        return self.arguments.model_json_schema(by_alias=True, mode="validation")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "modelFormat": self.model_format,
            "datasets": [{"kind": d.kind, "description": d.description} for d in self.datasets],
            "arguments": self.arguments_schema(),
        }


@dataclass(frozen=True)
class LabelledImages:
    """Images float32 in [0, 1], (N, H, W) grayscale or (N, C, H, W), with a class label and a
    slice tag ('' if none) each."""

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

    def subset(self, index: NDArray[Any]) -> LabelledImages:
        """The examples at `index` (integers or a boolean mask), in that order."""
        return LabelledImages(self.images[index], self.labels[index], self.slices[index])

    def load(self, index: NDArray[np.intp], preprocessing: imaging.Preprocessing | None) -> Batch:
        """Images at `index` as model inputs [n, C, H, W] (as stored when no preprocessing)."""
        picked = self.images[index]
        if preprocessing is None:
            return np.asarray(picked, dtype=np.float32)
        out = np.zeros((len(picked), *preprocessing.input_shape), np.float32)
        for row, image in enumerate(picked):
            out[row] = imaging.fit_array(image, preprocessing)
        return out


class ImageReader(Protocol):
    """Reads one encoded image by key; picklable, so DataLoader workers can use it."""

    def read(self, key: str) -> bytes: ...

    def where(self, key: str) -> str:
        """The key as a person finds it, e.g. s3://bucket/key."""
        ...


@dataclass(frozen=True, eq=False)
class ImageFiles:
    """Encoded images (PNG or JPEG, any size) read one by one through `reader` on demand,
    with a class label and a slice tag each; nothing is held in memory but the keys."""

    keys: NDArray[np.str_]
    labels: NDArray[np.str_]
    slices: NDArray[np.str_]
    reader: ImageReader

    def __post_init__(self) -> None:
        if not len(self.keys) == len(self.labels) == len(self.slices):
            raise ValueError(
                f"{len(self.keys)} keys, {len(self.labels)} labels and {len(self.slices)} "
                "slice tags: each image needs one of each"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: NDArray[Any]) -> ImageFiles:
        return ImageFiles(self.keys[index], self.labels[index], self.slices[index], self.reader)

    def item(self, position: int, preprocessing: imaging.Preprocessing) -> NDArray[np.float32]:
        """One image as a model input [C, H, W]; ImageUnreadable names the file."""
        key = str(self.keys[position])
        try:
            return imaging.decode(self.reader.read(key), preprocessing)
        except imaging.ImageError as error:
            raise ImageUnreadable(f"{self.reader.where(key)}: {error}") from None

    def load(self, index: NDArray[np.intp], preprocessing: imaging.Preprocessing | None) -> Batch:
        if preprocessing is None:
            raise PluginError("image files need the model's preprocessing to become inputs")
        with ThreadPoolExecutor(max_workers=8) as pool:  # reads wait on the network
            loaded = list(pool.map(lambda i: self.item(int(i), preprocessing), index))
        if not loaded:
            return np.zeros((0, *preprocessing.input_shape), np.float32)
        return np.stack(loaded).astype(np.float32)


class ImageUnreadable(PluginError):
    """An image file cannot be decoded; the message names it."""


Part = LabelledImages | ImageFiles


@dataclass(frozen=True, eq=False)
class ExampleParts:
    """Several parts (images in memory, image files) as one sequence of examples."""

    parts: tuple[Part, ...]

    @property
    def labels(self) -> NDArray[np.str_]:
        return _joined([p.labels for p in self.parts])

    @property
    def slices(self) -> NDArray[np.str_]:
        return _joined([p.slices for p in self.parts])

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def subset(self, index: NDArray[Any]) -> Examples:
        positions = np.arange(len(self))[index]
        picked: list[Part] = []
        start = 0
        for part in self.parts:
            inside = positions[(positions >= start) & (positions < start + len(part))]
            if len(inside):
                picked.append(part.subset(inside - start))
            start += len(part)
        return concat(picked)

    def load(self, index: NDArray[np.intp], preprocessing: imaging.Preprocessing | None) -> Batch:
        if preprocessing is None:
            raise PluginError("examples of several parts need the model's preprocessing")
        out = np.zeros((len(index), *preprocessing.input_shape), np.float32)
        start = 0
        index = np.asarray(index, dtype=np.intp)
        for part in self.parts:
            inside = np.flatnonzero((index >= start) & (index < start + len(part)))
            if len(inside):
                out[inside] = part.load(index[inside] - start, preprocessing)
            start += len(part)
        return out


Examples = LabelledImages | ImageFiles | ExampleParts
"""Labelled examples as a plugin gets them; `parts(examples)` gives the stored pieces."""
Batch = NDArray[np.float32]


def parts(examples: Examples) -> tuple[Part, ...]:
    """The pieces `examples` are stored as, empty ones left out."""
    found = examples.parts if isinstance(examples, ExampleParts) else (examples,)
    return tuple(p for p in found if len(p))


def concat(pieces: Sequence[Examples]) -> Examples:
    """All `pieces` in order as one Examples; images in memory of one shape are merged into
    one LabelledImages, so data that fits in memory stays a plain array."""
    flat = [p for piece in pieces for p in parts(piece)]
    merged: list[Part] = []
    for piece in flat:
        last = merged[-1] if merged else None
        if (
            isinstance(piece, LabelledImages)
            and isinstance(last, LabelledImages)
            and last.images.shape[1:] == piece.images.shape[1:]
        ):
            merged[-1] = LabelledImages.concat([last, piece])
        else:
            merged.append(piece)
    if not merged:
        return LabelledImages.concat([])
    if len(merged) == 1:
        return merged[0]
    return ExampleParts(tuple(merged))


def _joined(arrays: Sequence[NDArray[np.str_]]) -> NDArray[np.str_]:
    return np.concatenate(arrays).astype(np.str_) if arrays else np.zeros(0, np.str_)


@dataclass(frozen=True)
class Dataset:
    """One TrainingJob dataset, loaded and split by the trainer."""

    name: str
    """Name in the TrainingJob, e.g. base or feedback."""
    feedback: bool
    """A FeedbackDataset snapshot, as opposed to reference data such as builtin://digits."""
    train: Examples
    validation: Examples
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
class Ranks:
    """This process among the processes training one model together (torchrun's RANK,
    LOCAL_RANK and WORLD_SIZE); one process alone is rank 0 of 1.

    A plugin trains its shard of every epoch with the others (DistributedDataParallel, say);
    only rank 0's model is evaluated, exported and registered, by the trainer.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Ranks:
        values = os.environ if env is None else env
        return cls(
            int(values.get("RANK", "0")),
            int(values.get("LOCAL_RANK", "0")),
            int(values.get("WORLD_SIZE", "1")),
        )

    @property
    def leader(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class TrainingContext(Generic[A]):
    """Everything `Plugin.train` gets: checked arguments, data, base model, reporting."""

    args: A
    """The job's `args` as the plugin's Arguments model, defaults filled in."""
    datasets: tuple[Dataset, ...]
    """Training and validation data of every dataset; the plugin decides the mix."""
    metric: Metric
    base_model: BaseModel | None
    logger: logging.Logger
    progress: Callable[[Progress], None]
    """Called once per epoch; the trainer logs the metrics (train_loss, val_<metric>, and
    what else the plugin reports, e.g. images_per_second) to MLflow with step = epoch."""
    fetch: Callable[[str], bytes] = field(default=lambda uri: _no_fetch(uri))
    """Reads a file that `args` name by URI (pretrained weights): s3://bucket/key, or
    models:/name/version (that version's checkpoint); the trainer's stores do the I/O."""
    ranks: Ranks = field(default_factory=Ranks)
    """Which of the processes training together this is; the plugin starts their process
    group (gloo on the CPU, NCCL on GPUs) when there are several."""


@dataclass
class TrainedModel(Generic[M]):
    """A trained model and what the trainer needs to know about it."""

    model: M
    """The plugin's own model object."""
    classes: tuple[str, ...]
    """Class names in output order."""
    input_shape: tuple[int, ...]
    """Shape of one input without the batch axis, e.g. (1, 8, 8) or (3, 32, 32)."""
    device: str
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    preprocessing: imaging.Preprocessing | None = None
    """How an image of any size becomes an input; recorded as the version's tag. None: the
    model takes its inputs as they are stored, and image files cannot be fed to it."""
    architecture: dict[str, str] = field(default_factory=dict)
    """What the model card says of the model, e.g. {"backbone": "resnet18", "stem": "cifar"}."""


@dataclass(frozen=True)
class Evaluation:
    """A metric over all evaluation data and per slice."""

    overall: float
    slices: dict[str, float]


class Plugin(abc.ABC, Generic[M, A]):
    """A training plugin: declare, train, predict, evaluate, export.

    M is the plugin's own model type, A its Arguments model (`info().arguments`).
    """

    @abc.abstractmethod
    def info(self) -> PluginInfo:
        """Name, version, arguments and datasets; cheap, imports no framework."""

    @abc.abstractmethod
    def train(self, context: TrainingContext[A]) -> TrainedModel[M]:
        """Fit a model, keeping the best epoch on `context.validation`."""

    @abc.abstractmethod
    def predict(self, model: TrainedModel[M], images: NDArray[np.float32]) -> dict[str, Any]:
        """The reference outputs (PROBABILITIES, EMBEDDING) for a batch of inputs (N,
        *input_shape) in [0, 1], as numpy; what the ONNX export must compute."""

    def evaluate(
        self, model: TrainedModel[M], slices: Mapping[str, Examples], metric: Metric
    ) -> Evaluation:
        """`metric` per slice and over all slices together, from `predict`'s argmax."""
        classes = np.asarray(model.classes, dtype=np.str_)
        truth: list[NDArray[np.str_]] = []
        predicted: list[NDArray[np.str_]] = []
        scores = {}
        for name, data in slices.items():
            probabilities = (
                np.concatenate(
                    [
                        np.asarray(self.predict(model, batch)[PROBABILITIES])
                        for batch in batches(data, model.preprocessing)
                    ]
                )
                if len(data)
                else np.zeros((0, len(classes)), np.float32)
            )
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


EVALUATION_BATCH = 256


def batches(
    data: Examples, preprocessing: imaging.Preprocessing | None, size: int = EVALUATION_BATCH
) -> Iterator[Batch]:
    """`data` as model inputs, `size` at a time, in order."""
    for start in range(0, len(data), size):
        yield data.load(np.arange(start, min(start + size, len(data))), preprocessing)


def _no_fetch(uri: str) -> bytes:
    raise PluginError(f"{uri}: this TrainingContext reads no files")


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


def check_args(
    info: PluginInfo, args: Mapping[str, Any], base_model: str | None = None
) -> tuple[Arguments | None, list[str]]:
    """(`args` as the plugin's model with defaults filled in, or None; every problem, each
    starting `args.<name>:`) for a job fine-tuning `base_model`; no side effects."""
    try:
        parsed = info.arguments.model_validate(
            dict(args), context=JobContext(base_model), by_alias=True, by_name=False
        )
    except pydantic.ValidationError as error:
        return None, [_argument_problem(info, e) for e in error.errors()]
    return parsed, []


def parse_args(
    info: PluginInfo, args: Mapping[str, Any], base_model: str | None = None
) -> Arguments:
    """`args` as the plugin's model (an instance of `info.arguments`); InvalidArguments names
    every problem."""
    parsed, problems = check_args(info, args, base_model)
    if parsed is None:
        raise InvalidArguments(f"arguments of plugin {info.name!r}: " + "; ".join(problems))
    return parsed


def _argument_problem(info: PluginInfo, error: Any) -> str:
    where = f"args.{field_path(error['loc'])}" if error["loc"] else "args"
    fields = info.arguments.model_fields
    if error["type"] == "extra_forbidden":
        names = sorted(f.alias or name for name, f in fields.items())
        return (
            f"{where}: unknown argument of plugin {info.name!r} (it takes "
            f"{', '.join(names) or 'no arguments'})"
        )
    if error["type"] == "missing":
        described = {f.alias or name: f.description for name, f in fields.items()}
        about = described.get(field_path(error["loc"]))
        return f"{where}: required argument is missing" + (f" ({about})" if about else "")
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] not in ("value_error", "assertion_error"):
        value = error["input"]
        message += f", got {type(value).__name__} {value!r}"
    return f"{where}: {message}"


def describe(infos: Sequence[PluginInfo]) -> str:
    """Plugins and their arguments as text for a terminal; no side effects."""
    if not infos:
        return f"no plugins installed (entry-point group {ENTRY_POINT_GROUP})"
    blocks = []
    for info in infos:
        kinds = ", ".join(d.kind for d in info.datasets)
        schema = info.arguments_schema()
        required = set(schema.get("required", []))
        lines = [
            f"{info.name} {info.version}: {info.description}",
            f"  datasets: {kinds}; model format: {info.model_format}",
            "  arguments:",
        ]
        for name, argument in schema.get("properties", {}).items():
            facts = ", ".join(_facts(argument, name in required))
            description = " ".join(str(argument.get("description", "")).split())
            lines.append(f"    {name} ({facts}): {description}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


_TYPE_NAMES = {"integer": "int", "number": "float", "string": "str", "boolean": "bool"}
_BOUNDS = (
    ("minimum", ">="),
    ("exclusiveMinimum", ">"),
    ("maximum", "<="),
    ("exclusiveMaximum", "<"),
)


def _facts(schema: dict[str, Any], required: bool) -> list[str]:
    """An argument's JSON Schema in a few words: type, default, choices, bounds."""
    variants = [v for v in schema.get("anyOf", [schema]) if v.get("type") != "null"]
    types = "|".join(_TYPE_NAMES.get(v.get("type", ""), v.get("type", "any")) for v in variants)
    default = schema.get("default")
    facts = [
        types,
        "required" if required else "optional" if default is None else f"default {default!r}",
    ]
    for variant in variants:
        if "enum" in variant:
            facts.append("one of " + "|".join(map(str, variant["enum"])))
        facts += [f"{sign} {_number(variant[key])}" for key, sign in _BOUNDS if key in variant]
    return facts


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def installed() -> dict[str, importlib.metadata.EntryPoint]:
    """Installed plugins by name, from the `kubeloop.plugins` entry-point group."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def load(name: str) -> Plugin[Any, Any]:
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
