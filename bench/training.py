"""Benchmark 7, training throughput: what the plugin's loop and its data path cost.

- `training.plugin.vs_bare_torch`: images/s of the image-classifier's training steps (its own
  `images_per_second`, one epoch) against a bare torch loop on the same ResNet-18 (CIFAR stem,
  the objects example's width), the same in-memory RGB 32 x 32 images, batch size and Adam;
  neither augments. Goal: ratio >= 0.9.
- `training.s3.vs_local_files`: images/s of one pass of the plugin's DataLoader (workers
  decoding PNG files, the transform) reading an image folder from the S3 server against
  the same files read from local disk.

Rounds interleave subject and baseline (A B, B A); the best of each is reported.
"""

from __future__ import annotations

import io
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench import models
from bench.common import Result, Side, best_rates, interleaved, log
from bench.servers import ACCESS_KEY, SECRET_KEY, Stack
from kubeloop import images, objects, plugins
from kubeloop.storage import ObjectStore
from kubeloop.training import datasets

BUCKET = "bench-images"


@dataclass(frozen=True)
class Settings:
    images: int
    rounds: int
    files: int
    workers: int = 2
    batch_size: int = 64

    @classmethod
    def of(cls, quick: bool) -> Settings:
        return cls(images=256, rounds=1, files=128) if quick else cls(1500, 2, 600)


def run(stack: Stack, quick: bool) -> list[Result]:
    settings = Settings.of(quick)
    return [plugin_vs_bare_torch(settings), s3_vs_local_files(stack, settings)]


def example_args() -> dict[str, Any]:
    """The objects example's base arguments, one epoch, no augmentation."""
    args, _ = models.example_args("objects")
    return {**args, "epochs": 1, "augment": False}


def plugin_vs_bare_torch(settings: Settings) -> Result:
    import torch

    train, labels = objects.load_split("train")
    train, labels = train[: settings.images], labels[: settings.images]
    args = {**example_args(), "batchSize": settings.batch_size}
    plugin = plugins.load(models.PLUGIN)
    data = plugins.LabelledImages.of(train, labels, "base")
    dataset = plugins.Dataset("base", False, data, data.subset(np.arange(32)))
    parsed = plugins.parse_args(plugin.info(), args)

    def subject() -> float:
        trained = plugin.train(
            plugins.TrainingContext(
                parsed, (dataset,), "accuracy", None, logging.getLogger("bench"), lambda _: None
            )
        )
        return float(trained.history[0]["images_per_second"])

    def baseline() -> float:
        from kubeloop_image_classifier import backbones, fit

        torch.manual_seed(0)
        torch.set_num_threads(fit.cpu_threads(32, 32))
        classes = sorted(set(labels.tolist()))
        net = backbones.build(
            backbones.Shape(
                32,
                32,
                tuple(classes),
                backbone="resnet18",
                input_channels=3,
                stem="cifar",
                base_width=int(args["baseWidth"]),
            )
        )
        inputs = torch.from_numpy(train)
        targets = torch.tensor([classes.index(label) for label in labels])
        optimizer = torch.optim.Adam(net.parameters(), lr=float(args["learningRate"]))
        net.train()
        started = time.perf_counter()
        order = torch.randperm(len(targets))
        for start in range(0, len(order), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(inputs[batch])[0], targets[batch])
            loss.backward()
            optimizer.step()
        return len(targets) / (time.perf_counter() - started)

    log("training: plugin vs bare torch loop")
    rates = interleaved({"plugin": subject, "torch": baseline}, settings.rounds)
    return best_rates(
        "training.plugin.vs_bare_torch",
        "training throughput",
        rates,
        Side(
            "plugin", "image-classifier train steps (its images_per_second), ResNet-18 CIFAR stem"
        ),
        Side("torch", "bare torch loop: same network, data, batch size and Adam"),
        {"images": settings.images, "batch_size": settings.batch_size, **args},
    )


@dataclass(frozen=True)
class LocalImages:
    """Reads images from a local folder: the baseline's reader."""

    root: str

    def read(self, key: str) -> bytes:
        return (Path(self.root) / key).read_bytes()

    def where(self, key: str) -> str:
        return str(Path(self.root) / key)


def s3_vs_local_files(stack: Stack, settings: Settings) -> Result:
    import functools

    pictures, labels = objects.load_split("val")
    store = ObjectStore(stack.s3(), ACCESS_KEY, SECRET_KEY)
    store.ensure_bucket(BUCKET)
    with tempfile.TemporaryDirectory(prefix="kubeloop-bench-images-") as root:
        keys = []
        for n in range(settings.files):
            key = f"folder/{labels[n % len(labels)]}/{n:05d}.png"
            buffer = io.BytesIO()
            picture = np.moveaxis(pictures[n % len(labels)], 0, -1)
            Image.fromarray((picture * 255).astype(np.uint8)).resize((48, 48)).save(buffer, "PNG")
            store.put_bytes(BUCKET, key, buffer.getvalue())
            (Path(root) / key).parent.mkdir(parents=True, exist_ok=True)
            (Path(root) / key).write_bytes(buffer.getvalue())
            keys.append(key)
        connect = functools.partial(ObjectStore, stack.s3(), ACCESS_KEY, SECRET_KEY)
        label_array = np.asarray([k.split("/")[1] for k in keys], dtype=np.str_)
        tags = np.asarray([""] * len(keys), dtype=np.str_)
        key_array = np.asarray(keys, dtype=np.str_)
        readers: dict[str, plugins.ImageReader] = {
            "s3": datasets.S3Images(connect, BUCKET),
            "local": LocalImages(root),
        }
        transform = images.Preprocessing(channels=3, height=32, width=32)

        def one_pass(reader: plugins.ImageReader) -> float:
            files = plugins.ImageFiles(key_array, label_array, tags, reader)
            return _loader_rate(files, transform, settings)

        log("training: data loading, S3 vs local files")
        rates = interleaved(
            {name: functools.partial(one_pass, reader) for name, reader in readers.items()},
            settings.rounds,
        )
    return best_rates(
        "training.s3.vs_local_files",
        "data loading throughput",
        rates,
        Side("s3", "the plugin's DataLoader (PNG 48 x 48 -> 3 x 32 x 32) reading S3"),
        Side("local", "the same DataLoader reading the same files from local disk"),
        {"files": settings.files, "workers": settings.workers},
    )


def _loader_rate(
    files: plugins.ImageFiles, transform: images.Preprocessing, settings: Settings
) -> float:
    import torch
    from torch.utils import data as torch_data

    from kubeloop_image_classifier import fit

    targets = torch.zeros(len(files), dtype=torch.long)
    loader = torch_data.DataLoader(
        fit.Streamed(files, targets, transform),
        batch_size=settings.batch_size,
        num_workers=settings.workers,
        prefetch_factor=4 if settings.workers else None,
    )
    started = time.perf_counter()
    seen = sum(len(batch[1]) for batch in loader)
    return seen / (time.perf_counter() - started)
