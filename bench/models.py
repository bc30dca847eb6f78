"""The model and data the benchmarks run on: the image-classifier plugin on the digits.

Models are trained in-process through the plugin interface, exactly as the trainer calls it
(kubeloop.training.splits assembles the data), but without MLflow. A trained model is kept
in bench/results/cache/ under a key of its arguments, so later runs skip the training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.common import RESULTS, ROOT
from kubeloop import digits, manifests, plugins
from kubeloop.api.trainingjob import DatasetSource
from kubeloop.training import datasets, splits

PLUGIN = "image-classifier"
SLICES = ["base", "new-user"]
EXAMPLES = ROOT / "examples"
CACHE = RESULTS / "cache"


@dataclass(frozen=True)
class Trained:
    """A trained model's ONNX export and checkpoint, its accuracy per slice and its cost."""

    onnx: bytes
    checkpoint: bytes
    accuracy: dict[str, float]
    train_seconds: float


def example_args(example: str = "digits") -> tuple[dict[str, Any], dict[str, Any]]:
    """Plugin arguments of the example's base TrainingJob and of its retrain template."""
    base: dict[str, Any] = {}
    tune: dict[str, Any] = {}
    for _, manifest in manifests.load(EXAMPLES / example):
        if manifest["kind"] == "TrainingJob":
            base = dict(manifest["spec"]["args"])
        if manifest["kind"] == "FeedbackDataset":
            tune = dict(manifest["spec"]["retrain"]["trainingTemplate"]["args"])
    return base, tune


def reference() -> splits.Reference:
    """builtin://digits, with its base and new-user slices."""
    return datasets.load_reference(DatasetSource(name="base", uri="builtin://digits"))


def feedback(images: NDArray[np.float32], labels: NDArray[np.str_], tag: str) -> splits.Feedback:
    """Labelled samples as a feedback snapshot, split by the trainer's rules."""
    count = len(labels)
    return splits.Feedback(
        name="feedback",
        source=f"{count} samples",
        ids=tuple(f"sample-{i:05d}" for i in range(count)),
        samples=plugins.LabelledImages.of(images, labels, tag),
    )


def train(
    args: dict[str, Any],
    references: list[splits.Reference],
    snapshots: list[splits.Feedback],
    parent: plugins.BaseModel | None = None,
) -> tuple[plugins.TrainedModel[Any], plugins.Evaluation, float]:
    """Train through the plugin as the trainer does; (model, per-slice accuracy, seconds)."""
    plugin = plugins.load(PLUGIN)
    resolved = plugins.parse_args(plugin.info(), args, parent.uri if parent else None)
    assembled = splits.assemble(references, snapshots, SLICES)
    context = plugins.TrainingContext(
        resolved, assembled.datasets, "accuracy", parent, logging.getLogger("bench"), _quiet
    )
    started = time.perf_counter()
    model = plugin.train(context)
    seconds = time.perf_counter() - started
    return model, plugin.evaluate(model, assembled.evaluation, "accuracy"), seconds


def digits_model(epochs: int | None = None, seed: int = 0) -> Trained:
    """The example base model (epochs from the example unless given), cached on disk.

    `epochs=0` exports the untrained network: same graph and cost, no training (smoke tests).
    """
    args, _ = example_args()
    args = {**args, "seed": seed, **({"epochs": epochs} if epochs else {})}
    key = hashlib.sha256(json.dumps([args, epochs == 0], sort_keys=True).encode()).hexdigest()[:12]
    folder = CACHE / f"digits-{key}"
    if (folder / "meta.json").exists():
        meta = json.loads((folder / "meta.json").read_text())
        return Trained(
            (folder / "model.onnx").read_bytes(),
            (folder / "model.pt").read_bytes(),
            meta["accuracy"],
            meta["train_seconds"],
        )
    plugin = plugins.load(PLUGIN)
    if epochs == 0:
        trained = _untrained(args)
        accuracy: dict[str, float] = {}
        seconds = 0.0
    else:
        trained, evaluation, seconds = train(args, [reference()], [])
        accuracy = evaluation.slices
    result = Trained(plugin.export(trained), plugin.checkpoint(trained), accuracy, seconds)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(result.onnx)
    (folder / "model.pt").write_bytes(result.checkpoint)
    meta = {"args": args, "accuracy": accuracy, "train_seconds": seconds}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    return result


def _untrained(args: dict[str, Any]) -> plugins.TrainedModel[Any]:
    import torch

    from kubeloop_image_classifier import backbones

    torch.manual_seed(int(args["seed"]))
    shape = backbones.Shape(int(args["height"]), int(args["width"]), digits.CLASSES)
    return plugins.TrainedModel(backbones.build(shape).eval(), digits.CLASSES, (1, 8, 8), "cpu")


def image_pool(size: int, seed: int = 0) -> NDArray[np.uint8]:
    """`size` 8 x 8 grayscale images as stored (uint8), made from all 1797 digits.

    Each is a digit moved by up to a pixel each way, a quarter of them mirrored as the
    new user writes, with Gaussian noise (sigma 0.05): a pool with easy and hard cases.
    """
    rng = np.random.default_rng(seed)
    images = np.concatenate([digits.load_split(name)[0] for name in digits.SPLITS])
    picked = images[rng.integers(len(images), size=size)]
    mirrored = rng.random(size) < 0.25
    picked[mirrored] = digits.new_user(picked[mirrored])
    padded = np.pad(picked, ((0, 0), (1, 1), (1, 1)))
    rows, cols = rng.integers(0, 3, size), rng.integers(0, 3, size)
    index = np.arange(8)
    shifted = padded[
        np.arange(size)[:, None, None],
        (rows[:, None] + index)[:, :, None],
        (cols[:, None] + index)[:, None, :],
    ]
    noisy = shifted + rng.normal(0.0, 0.05, shifted.shape).astype(np.float32)
    stored: NDArray[np.uint8] = np.round(np.clip(noisy, 0.0, 1.0) * 255).astype(np.uint8)
    return stored


def save_pool(pool: NDArray[np.uint8], path: Path) -> Path:
    """The pool as a .npy file, read back memory-mapped as an image store would be."""
    np.save(path, pool)
    return path


def _quiet(progress: plugins.Progress) -> None:
    del progress
