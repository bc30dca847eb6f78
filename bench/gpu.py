"""Benchmark 6, GPU: what an NVIDIA GPU buys the digits model, where one is present.

- inference: the selection pool (40,000 images, batch 1024) through onnxruntime's CUDA
  execution provider vs its CPU provider, same model, same run;
- training: the example base TrainingJob's plugin train step on cuda vs cpu (torch).
Reports "skipped: no CUDA device" when onnxruntime has no CUDA provider or torch sees no
GPU (onnxruntime-gpu and a CUDA build of torch are needed).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import onnxruntime

from bench import models
from bench.common import Result, log, skipped

BATCH = 1024


def run(stack: object, quick: bool) -> list[Result]:
    del stack
    cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    try:
        import torch

        torch_cuda = bool(torch.cuda.is_available())
    except ImportError:
        torch_cuda = False
    if not cuda:
        return [skipped("gpu", "skipped: no CUDA device")]
    pool_size = 8_000 if quick else 40_000
    model = models.digits_model(5)
    floats = models.image_pool(pool_size).astype(np.float32).reshape(-1, 1, 8, 8) / 255
    rates = {}
    for provider in ("CUDAExecutionProvider", "CPUExecutionProvider"):
        session = onnxruntime.InferenceSession(model.onnx, providers=[provider])
        session.run(None, {"input": floats[:BATCH]})  # warm-up (CUDA kernels, allocations)
        started = time.perf_counter()
        for start in range(0, len(floats), BATCH):
            session.run(None, {"input": floats[start : start + BATCH]})
        rates[provider] = len(floats) / (time.perf_counter() - started)
    results = [
        Result(
            "gpu.inference.vs_cpu",
            "throughput",
            "images/s",
            rates["CUDAExecutionProvider"],
            rates["CPUExecutionProvider"],
            "onnxruntime CUDAExecutionProvider, batch 1024",
            "onnxruntime CPUExecutionProvider, batch 1024",
            config={"pool": pool_size, "device": _device()},
        )
    ]
    if torch_cuda:
        results.append(_training(quick))
    else:
        results.append(skipped("gpu.training", "skipped: no CUDA device (torch)"))
    return results


def _training(quick: bool) -> Result:
    """The plugin's train step on cuda, then on cpu (it picks cuda when torch sees one)."""
    import torch

    args, _ = models.example_args()
    if quick:
        args["epochs"] = 5
    log("gpu: training on cuda")
    _, _, on_gpu = models.train(args, [models.reference()], [])
    original = torch.cuda.is_available
    torch.cuda.is_available = lambda: False  # the plugin asks torch where to train
    try:
        log("gpu: training on cpu")
        _, _, on_cpu = models.train(args, [models.reference()], [])
    finally:
        torch.cuda.is_available = original
    return Result(
        "gpu.training.vs_cpu",
        "train step time",
        "s",
        on_gpu,
        on_cpu,
        "image-classifier train step on cuda (example base args)",
        "the same on cpu",
        higher_is_better=False,
        config={"epochs": args["epochs"], "device": _device()},
    )


def _device() -> Any:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        return None
