"""Benchmark 6, GPU: ResNet-18 (CIFAR stem, torchvision's width 64) at 32 x 32 in bf16, where
an NVIDIA GPU is present; reports "skipped: no CUDA device" elsewhere.

For batch 256 and 1024, in the same run:
- training: the image-classifier plugin's training steps (device cuda, precision auto = bf16
  autocast, channels_last, cuDNN benchmark; its own images_per_second over one epoch) vs a
  raw torch loop (the same network, bf16 autocast, channels_last, Adam, the same tensors on
  the GPU);
- inference: the plugin's batched prediction on the device (what validation runs: numpy
  in, to the device, classes back) vs raw torch on tensors already there, bf16 autocast and
  no_grad. (Serving is onnxruntime; its CUDA provider is the predictor's business.)

`measure(device, ...)` runs the same code on any device: the smoke test runs it on the CPU.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.common import Result, Side, best_rates, interleaved, log, skipped

BATCHES = (256, 1024)


@dataclass(frozen=True)
class Settings:
    images: int
    rounds: int
    batches: tuple[int, ...] = BATCHES
    base_width: int = 64

    @classmethod
    def of(cls, quick: bool) -> Settings:
        return cls(images=8192 if quick else 32768, rounds=1 if quick else 2)


def run(stack: object, quick: bool) -> list[Result]:
    del stack
    try:
        import torch
    except ImportError:
        return [skipped("gpu", "skipped: no torch")]
    if not torch.cuda.is_available():
        return [skipped("gpu", "skipped: no CUDA device")]
    return measure("cuda", Settings.of(quick))


def measure(device: str, settings: Settings) -> list[Result]:
    """Training and inference figures on `device` (cuda, or cpu for the smoke test)."""
    from kubeloop import objects

    images, labels = objects.draw(settings.images, seed=5)
    results = []
    for batch_size in settings.batches:
        results += _at_batch(device, settings, batch_size, images, labels)
    return results


def _at_batch(
    device: str, settings: Settings, batch_size: int, images: Any, labels: Any
) -> list[Result]:
    import torch

    from kubeloop import images as images_module
    from kubeloop import objects, plugins
    from kubeloop_image_classifier import backbones, fit
    from kubeloop_image_classifier.arguments import ImageClassifierArgs

    classes = tuple(objects.CLASSES)
    plugin = plugins.load("image-classifier")
    results = []
    args = {
        "backbone": "resnet18",
        "stem": "cifar",
        "baseWidth": settings.base_width,
        "channels": 3,
        "height": 32,
        "width": 32,
        "epochs": 1,
        "batchSize": batch_size,
        "augment": False,
        "device": device,
        "precision": "bf16",
    }
    parsed = plugins.parse_args(plugin.info(), args)
    assert isinstance(parsed, ImageClassifierArgs)
    runtime = fit.Runtime.resolve(parsed)
    data = plugins.LabelledImages.of(images, labels, "base")
    dataset = plugins.Dataset("base", False, data, data.subset(np.arange(min(256, len(data)))))

    def plugin_training() -> float:
        context = plugins.TrainingContext(
            parsed, (dataset,), "accuracy", None, logging.getLogger("bench"), lambda _: None
        )
        return float(plugin.train(context).history[0]["images_per_second"])

    def network() -> backbones.Network:
        shape = backbones.Shape(
            32, 32, classes, backbone="resnet18", input_channels=3, stem="cifar",
            base_width=settings.base_width,
        )  # fmt: skip
        return runtime.prepare(backbones.build(shape))

    inputs = runtime.inputs(torch.from_numpy(images))
    targets = torch.tensor([classes.index(label) for label in labels], device=runtime.device)

    def raw_training() -> float:
        net = network().train()
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        _sync(device)
        started = time.perf_counter()
        for start in range(0, len(targets), batch_size):
            optimizer.zero_grad(set_to_none=True)
            with runtime.autocast():
                logits = net(inputs[start : start + batch_size])[0]
            loss = torch.nn.functional.cross_entropy(
                logits.float(), targets[start : start + batch_size]
            )
            loss.backward()
            optimizer.step()
        _sync(device)
        return len(targets) / (time.perf_counter() - started)

    log(f"gpu: training, batch {batch_size} on {device}")
    training = interleaved({"plugin": plugin_training, "torch": raw_training}, settings.rounds)
    config = {"images": settings.images, "device": _device(device)}
    results.append(
        best_rates(
            f"gpu.training.batch{batch_size}.vs_raw_torch",
            "training throughput",
            training,
            Side(
                "plugin",
                f"image-classifier train steps, ResNet-18 CIFAR stem, bf16, batch {batch_size}",
            ),
            Side("torch", "raw torch loop: same network, bf16 autocast, channels_last, Adam"),
            config,
        )
    )
    net = network().eval()

    def plugin_inference() -> float:
        transform = images_module.Preprocessing(channels=3, height=32, width=32)
        started = time.perf_counter()
        fit.predict_classes(net, data, runtime, transform, batch_size)
        return len(data) / (time.perf_counter() - started)

    def raw_inference() -> float:
        _sync(device)
        started = time.perf_counter()
        with torch.no_grad(), runtime.autocast():
            for start in range(0, len(inputs), batch_size):
                net(inputs[start : start + batch_size])[0].argmax(dim=1)
        _sync(device)
        return len(inputs) / (time.perf_counter() - started)

    log(f"gpu: inference, batch {batch_size} on {device}")
    inference = interleaved({"plugin": plugin_inference, "torch": raw_inference}, settings.rounds)
    results.append(
        best_rates(
            f"gpu.inference.batch{batch_size}.vs_raw_torch",
            "inference throughput",
            inference,
            Side("plugin", "image-classifier batched prediction on the device (numpy in)"),
            Side("torch", "raw torch: tensors already on the device, bf16 autocast, no_grad"),
            config,
        )
    )
    return results


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _device(device: str) -> Any:
    import torch

    return torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
