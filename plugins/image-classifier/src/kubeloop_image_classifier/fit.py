"""The training loop: seeded, mini-batch Adam, best epoch kept by the validation metric.

Fine-tuning replays the reference data (e.g. the base digits) beside the feedback, and
repeats the feedback so it is about `feedbackShare` of every epoch: a hundred samples
among a thousand would otherwise barely move the model, and training on them alone would
make it forget the rest.
"""

from __future__ import annotations

import copy
import math
import os
import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from kubeloop import plugins
from kubeloop_image_classifier.arguments import ImageClassifierArgs
from kubeloop_image_classifier.network import Network

_MAX_THREADS = 4  # a model this small gets no faster with more
_PIXELS_PER_THREAD = 256  # below 16 x 16 pixels extra threads mostly wait on each other


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # libraries may draw from numpy's global generator
    torch.manual_seed(seed)


def cpu_threads(height: int, width: int) -> int:
    """Threads for torch: one per 256 pixels of an image, within the CPUs this process may
    use (cgroup quota, affinity) and at most 4.

    On 8 x 8 digits one thread is as fast as two on an idle machine, and several times
    faster on a busy one (the local mode runs MLflow, S3 and the predictor beside it):
    threads that spin waiting for each other lose most when the CPUs are shared.
    """
    wanted = max(1, height * width // _PIXELS_PER_THREAD)
    available = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            available = min(available, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, min(wanted, available, _MAX_THREADS))


def training_mix(
    datasets: tuple[plugins.Dataset, ...], args: ImageClassifierArgs, rng: np.random.Generator
) -> plugins.LabelledImages:
    """Reference data (a `replay` share of it when fine-tuning) plus repeated feedback."""
    reference = [d.train for d in datasets if not d.feedback and len(d.train)]
    feedback = [d.train for d in datasets if d.feedback and len(d.train)]
    if args.fine_tune in ("full", "head") and args.replay < 1.0:
        reference = [_subsample(part, args.replay, rng) for part in reference]
    base = plugins.LabelledImages.concat(reference)
    extra = plugins.LabelledImages.concat(feedback)
    if not len(extra) or not len(base) or args.feedback_share <= 0:
        return plugins.LabelledImages.concat([p for p in (base, extra) if len(p)])
    share = min(args.feedback_share, 0.95)
    repeats = max(1, round(share * len(base) / ((1 - share) * len(extra))))
    return plugins.LabelledImages.concat([base, *[extra] * repeats])


def _subsample(
    data: plugins.LabelledImages, fraction: float, rng: np.random.Generator
) -> plugins.LabelledImages:
    keep = np.sort(rng.choice(len(data), size=max(1, round(fraction * len(data))), replace=False))
    return plugins.LabelledImages(data.images[keep], data.labels[keep], data.slices[keep])


def fit(
    network: Network,
    context: plugins.TrainingContext[ImageClassifierArgs],
    args: ImageClassifierArgs,
    device: torch.device,
) -> tuple[int, list[dict[str, float]]]:
    """Train `network` in place, leaving the best epoch's weights; (best epoch, history).

    `args.fine_tune` is the mode the plugin resolved (None trains every layer from scratch).
    """
    rng = np.random.default_rng(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    data = training_mix(tuple(context.datasets), args, rng)
    index = {label: i for i, label in enumerate(network.shape.classes)}
    images = torch.from_numpy(data.images[:, None]).to(device)
    targets = torch.tensor([index[label] for label in data.labels], device=device)
    validation = {d.name: d.validation for d in context.datasets if len(d.validation)}
    network.to(device)
    if args.fine_tune == "head":
        for parameter in network.features.parameters():
            parameter.requires_grad_(False)
    trainable = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=args.learning_rate)
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    history: list[dict[str, float]] = []
    val_key = f"val_{context.metric}"
    for epoch in range(1, args.epochs + 1):
        network.train()
        if args.fine_tune == "head":
            network.features.eval()
        order = torch.randperm(len(targets), generator=generator).to(device)
        total, seen = 0.0, 0
        for start in range(0, len(order), args.batch_size):
            batch = order[start : start + args.batch_size]
            inputs = images[batch]
            if args.augment:
                inputs = shift(inputs, generator)
            optimizer.zero_grad()
            loss = F.cross_entropy(network(inputs)[0], targets[batch])
            torch.autograd.backward(loss)
            optimizer.step()
            total += loss.item() * len(batch)
            seen += len(batch)
        score = validation_score(network, validation, context.metric, device)
        metrics = {"train_loss": total / max(seen, 1), val_key: score}
        history.append(metrics)
        context.progress(plugins.Progress(epoch, args.epochs, metrics))
        if best is None or score >= best[0]:  # ties go to the later, longer-trained epoch
            best = (score, epoch, copy.deepcopy(network.state_dict()))
    assert best is not None  # epochs >= 1 is checked with the arguments
    network.load_state_dict(best[2])
    for parameter in network.parameters():
        parameter.requires_grad_(True)
    return best[1], history


def shift(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by -1, 0 or +1 pixel along each axis, zero-filled: cheap augmentation."""
    count, _, height, width = images.shape
    padded = F.pad(images, (1, 1, 1, 1))[:, 0]
    rows = torch.randint(0, 3, (count,), generator=generator).to(images.device)
    cols = torch.randint(0, 3, (count,), generator=generator).to(images.device)
    row_index = (rows[:, None] + torch.arange(height, device=images.device))[:, :, None]
    col_index = (cols[:, None] + torch.arange(width, device=images.device))[:, None, :]
    batch_index = torch.arange(count, device=images.device)[:, None, None]
    return padded[batch_index, row_index, col_index][:, None]


def validation_score(
    network: Network,
    validation: Mapping[str, plugins.LabelledImages],
    metric: plugins.Metric,
    device: torch.device,
) -> float:
    """The metric per validation source, averaged: feedback counts as much as the base data."""
    if not validation:
        return 0.0
    classes = np.asarray(network.shape.classes, dtype=np.str_)
    scores = [
        plugins.score(metric, data.labels, classes[predict_logits(network, data.images, device)])
        for data in validation.values()
    ]
    return float(np.mean(scores))


def predict_logits(
    network: Network, images: NDArray[np.float32], device: torch.device
) -> NDArray[np.intp]:
    network.eval()
    with torch.no_grad():
        logits, _ = network(torch.from_numpy(np.asarray(images, np.float32)[:, None]).to(device))
    return np.asarray(logits.argmax(dim=1).cpu().numpy(), dtype=np.intp)
