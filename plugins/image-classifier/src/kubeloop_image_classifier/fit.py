"""The training loop: seeded, mini-batch Adam, best epoch kept by the validation metric.

Fine-tuning replays the reference data (e.g. the base digits) beside the feedback, and
repeats the feedback so it is about `feedbackShare` of every epoch: a hundred samples
among a thousand would otherwise barely move the model, and training on them alone would
make it forget the rest.

Data that is all in memory (the bundled datasets, feedback samples) is converted to one
tensor on the device and batched by indexing; image files (an image folder in S3) are
streamed by a torch DataLoader (worker processes decode, batches are prefetched, pinned for
a GPU). Both feed the same step, which on CUDA runs under bf16 autocast with channels_last
tensors and cuDNN's autotuner: `Runtime` holds those choices, and a test runs the very
same path on the CPU by asking for bf16 there.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from numpy.typing import NDArray
from torch.utils import data as torch_data

from kubeloop import images, plugins
from kubeloop_image_classifier.arguments import ImageClassifierArgs
from kubeloop_image_classifier.backbones import Network

_MAX_THREADS = 4  # a model this small gets no faster with more
_PIXELS_PER_THREAD = 256  # below 16 x 16 pixels extra threads mostly wait on each other
_IN_MEMORY_BYTES = 512 << 20  # validation images decoded once when they fit in this
_PREFETCH = 4  # batches each DataLoader worker prepares ahead
_READ_THREADS = 8  # files each DataLoader worker reads at once


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # libraries may draw from numpy's global generator
    torch.manual_seed(seed)


def available_cpus() -> int:
    """CPUs this process may use: its affinity, within a cgroup quota."""
    available = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            available = min(available, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return available


def cpu_threads(height: int, width: int) -> int:
    """Threads for torch: one per 256 pixels of an image, within the CPUs this process may
    use (cgroup quota, affinity) and at most 4.

    On 8 x 8 digits one thread is as fast as two on an idle machine, and several times
    faster on a busy one (the local mode runs MLflow, S3 and the predictor beside it):
    threads that spin waiting for each other lose most when the CPUs are shared.
    """
    wanted = max(1, height * width // _PIXELS_PER_THREAD)
    return max(1, min(wanted, available_cpus(), _MAX_THREADS))


@dataclass(frozen=True)
class Runtime:
    """Where and how the steps run; `resolve` derives it from the arguments."""

    device: torch.device
    bf16: bool
    """Forward passes under torch.autocast(bfloat16)."""
    channels_last: bool
    """Images and weights in NHWC memory layout (faster convolutions on tensor cores)."""
    pin_memory: bool
    workers: int
    ranks: plugins.Ranks = field(default_factory=plugins.Ranks)
    """The processes training together; each trains its shard of every epoch."""

    @classmethod
    def resolve(cls, args: ImageClassifierArgs, ranks: plugins.Ranks | None = None) -> Runtime:
        """The runtime `args` ask for; InvalidArguments for cuda where torch sees no GPU.

        Among several processes each takes the GPU of its local rank."""
        cuda = torch.cuda.is_available()
        if args.device == "cuda" and not cuda:
            raise plugins.InvalidArguments(
                f"args.device: cuda, but torch {torch.__version__} sees no GPU (a CPU build of "
                "torch, or no GPU given to this pod: set spec.resources.gpu); use auto or cpu"
            )
        ranks = ranks or plugins.Ranks()
        device = torch.device(
            "cuda" if args.device == "cuda" or (args.device == "auto" and cuda) else "cpu"
        )
        if device.type == "cuda" and ranks.world_size > 1:
            device = torch.device("cuda", ranks.local_rank)
            torch.cuda.set_device(device)
        on_gpu = device.type == "cuda"
        bf16 = args.precision == "bf16" or (args.precision == "auto" and on_gpu)
        cpus = available_cpus()
        workers = args.workers if args.workers is not None else min(8 if on_gpu else 2, cpus)
        return cls(
            device,
            bf16,
            channels_last=on_gpu or bf16,
            pin_memory=on_gpu,
            workers=workers,
            ranks=ranks,
        )

    def prepare(self, network: Network) -> Network:
        """The network on the device, in its memory layout; cuDNN autotuning on CUDA."""
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: the fastest kernels
            torch.cuda.reset_peak_memory_stats(self.device)
        network.to(self.device)
        if self.channels_last:
            network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
        return network

    def inputs(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device, non_blocking=self.pin_memory)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    @contextmanager
    def process_group(self) -> Iterator[None]:
        """The processes' group (NCCL on GPUs, gloo on the CPU) while they train together,
        from torchrun's rendezvous (MASTER_ADDR, MASTER_PORT); nothing for one process."""
        if self.ranks.world_size == 1:
            yield
            return
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        torch_dist.init_process_group(
            backend, rank=self.ranks.rank, world_size=self.ranks.world_size
        )
        try:
            yield
        finally:
            torch_dist.destroy_process_group()

    def wrap(self, network: Network) -> torch.nn.Module:
        """What a training step runs: the network, or DistributedDataParallel around it
        (gradients averaged over the processes at each step)."""
        if self.ranks.world_size == 1:
            return network
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(network, device_ids=ids)

    def autocast(self) -> AbstractContextManager[Any]:
        if not self.bf16:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)


def training_mix(
    datasets: tuple[plugins.Dataset, ...], args: ImageClassifierArgs, rng: np.random.Generator
) -> plugins.Examples:
    """Reference data (a `replay` share of it when fine-tuning) plus repeated feedback."""
    reference = [d.train for d in datasets if not d.feedback and len(d.train)]
    feedback = [d.train for d in datasets if d.feedback and len(d.train)]
    if args.fine_tune in ("full", "head") and args.replay < 1.0:
        reference = [_subsample(part, args.replay, rng) for part in reference]
    base = plugins.concat(reference)
    extra = plugins.concat(feedback)
    if not len(extra) or not len(base) or args.feedback_share <= 0:
        return plugins.concat([p for p in (base, extra) if len(p)])
    share = min(args.feedback_share, 0.95)
    repeats = max(1, round(share * len(base) / ((1 - share) * len(extra))))
    return plugins.concat([base, *[extra] * repeats])


def _subsample(
    data: plugins.Examples, fraction: float, rng: np.random.Generator
) -> plugins.Examples:
    keep = np.sort(rng.choice(len(data), size=max(1, round(fraction * len(data))), replace=False))
    return data.subset(keep)


def fit(
    network: Network,
    context: plugins.TrainingContext[ImageClassifierArgs],
    args: ImageClassifierArgs,
    runtime: Runtime,
    preprocessing: images.Preprocessing,
) -> tuple[int, list[dict[str, float]]]:
    """Train `network` in place, leaving the best epoch's weights; (best epoch, history).

    `args.fine_tune` is the mode the plugin resolved (None trains every layer from scratch).
    Each epoch reports train_loss, val_<metric>, images_per_second (training steps only) and,
    on CUDA, gpu_memory_bytes (the peak allocated so far).
    """
    rng = np.random.default_rng(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    data = training_mix(tuple(context.datasets), args, rng)
    index = {label: i for i, label in enumerate(network.shape.classes)}
    targets = torch.tensor([index[label] for label in data.labels])
    batches = _batches(data, targets, preprocessing, args, runtime, generator)
    validation = {
        d.name: _resident(d.validation, preprocessing)
        for d in context.datasets
        if len(d.validation)
    }
    runtime.prepare(network)
    if args.fine_tune == "head":
        for parameter in network.body_parameters():
            parameter.requires_grad_(False)
    trainable = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=args.learning_rate)
    step = runtime.wrap(network)
    ranks = runtime.ranks
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    history: list[dict[str, float]] = []
    val_key = f"val_{context.metric}"
    for epoch in range(1, args.epochs + 1):
        network.train()
        if args.fine_tune == "head":
            _freeze_statistics(network)
        total, seen, started = 0.0, 0, time.perf_counter()
        for inputs, batch_targets in batches(epoch):
            if args.augment:
                inputs = shift(inputs, generator)
            optimizer.zero_grad()
            with runtime.autocast():
                logits = step(inputs)[0]
            loss = F.cross_entropy(logits.float(), batch_targets)
            torch.autograd.backward(loss)
            optimizer.step()
            total += loss.item() * len(batch_targets)
            seen += len(batch_targets)
        elapsed = time.perf_counter() - started
        # Only rank 0's model is kept: the others need not validate theirs.
        score = (
            validation_score(network, validation, context.metric, runtime, preprocessing)
            if ranks.leader
            else 0.0
        )
        metrics = {
            "train_loss": total / max(seen, 1),
            val_key: score,
            "images_per_second": seen * ranks.world_size / max(elapsed, 1e-9),
        }
        if runtime.device.type == "cuda":
            metrics["gpu_memory_bytes"] = float(torch.cuda.max_memory_allocated(runtime.device))
        history.append(metrics)
        context.progress(plugins.Progress(epoch, args.epochs, metrics))
        if best is None or score >= best[0]:  # ties go to the later, longer-trained epoch
            best = (score, epoch, copy.deepcopy(network.state_dict()))
    assert best is not None  # epochs >= 1 is checked with the arguments
    network.load_state_dict(best[2])
    for parameter in network.parameters():
        parameter.requires_grad_(True)
    return best[1], history


Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


def _batches(
    data: plugins.Examples,
    targets: torch.Tensor,
    preprocessing: images.Preprocessing,
    args: ImageClassifierArgs,
    runtime: Runtime,
    generator: torch.Generator,
) -> Any:
    """A function giving epoch N's (inputs, targets) batches on the device, shuffled.

    Among several processes each gets every world_size-th example of the same shuffle (the
    shuffle padded to a multiple of world_size, as DistributedSampler does), so all take the
    same number of steps; image files go through a DistributedSampler.
    """
    ranks = runtime.ranks
    if isinstance(data, plugins.LabelledImages):
        tensor = runtime.inputs(torch.from_numpy(data.load(np.arange(len(data)), preprocessing)))
        on_device = targets.to(runtime.device)

        def in_memory(epoch: int) -> Batches:
            order = torch.randperm(len(on_device), generator=generator)
            if ranks.world_size > 1:
                padding = order[: (-len(order)) % ranks.world_size]
                order = torch.cat([order, padding])[ranks.rank :: ranks.world_size]
            order = order.to(runtime.device)
            for start in range(0, len(order), args.batch_size):
                batch = order[start : start + args.batch_size]
                yield tensor[batch], on_device[batch]

        return in_memory
    dataset = Streamed(data, targets, preprocessing)
    sampler: torch_data.Sampler[int] = torch_data.RandomSampler(
        range(len(data)), generator=generator
    )
    if ranks.world_size > 1:
        sampler = torch_data.DistributedSampler(
            dataset, num_replicas=ranks.world_size, rank=ranks.rank, seed=args.seed
        )
    loader = torch_data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=runtime.workers,
        prefetch_factor=_PREFETCH if runtime.workers else None,
        persistent_workers=runtime.workers > 0,
        pin_memory=runtime.pin_memory,
    )

    def streamed(epoch: int) -> Batches:
        if isinstance(sampler, torch_data.DistributedSampler):
            sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
        for inputs, batch_targets, positions in loader:
            if bool((batch_targets < 0).any()):
                dataset.raise_unreadable(positions, batch_targets)
            yield runtime.inputs(inputs), batch_targets.to(runtime.device, non_blocking=True)

    return streamed


class Streamed(torch_data.Dataset[tuple[torch.Tensor, int, int]]):
    """Examples as (input, target, position), decoded where the DataLoader asks (a worker).

    A worker fetches a whole batch at once (`__getitems__`), its files read by a few threads
    at a time: a read from S3 mostly waits on the network, and one at a time a worker would
    decode a few hundred images a second at most.

    An undecodable file comes back as target -1: an exception raised in a worker reaches the
    training process with the worker's traceback in its message, so the training process
    reads that file again itself and raises ImageUnreadable naming it.
    """

    _pool: ThreadPoolExecutor | None = None
    _pool_pid = 0

    def __init__(
        self, data: plugins.Examples, targets: torch.Tensor, preprocessing: images.Preprocessing
    ) -> None:
        self.parts = plugins.parts(data)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])
        self.targets = targets
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int, int]:
        try:
            image = self._image(position)
        except plugins.ImageUnreadable:
            return torch.zeros(self.preprocessing.input_shape), -1, position
        return torch.from_numpy(image), int(self.targets[position]), position

    def __getitems__(self, positions: list[int]) -> list[tuple[torch.Tensor, int, int]]:
        if os.getpid() != self._pool_pid or self._pool is None:  # a new (forked) worker
            self._pool = ThreadPoolExecutor(max_workers=_READ_THREADS)
            self._pool_pid = os.getpid()
        return list(self._pool.map(self.__getitem__, positions))

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_pool", "_pool_pid")}

    def raise_unreadable(self, positions: torch.Tensor, targets: torch.Tensor) -> None:
        for position in positions[targets < 0].tolist():
            self._image(int(position))  # raises ImageUnreadable naming the file
        raise AssertionError("an unreadable image read well the second time")

    def _image(self, position: int) -> NDArray[np.float32]:
        which = int(np.searchsorted(self.starts, position, side="right")) - 1
        part = self.parts[which]
        local = position - int(self.starts[which])
        if isinstance(part, plugins.ImageFiles):
            return part.item(local, self.preprocessing)
        return images.fit_array(part.images[local], self.preprocessing)


def _resident(data: plugins.Examples, preprocessing: images.Preprocessing) -> plugins.Examples:
    """`data` decoded into memory once when it fits, so every epoch's validation is cheap."""
    size = len(data) * math.prod(preprocessing.input_shape) * 4
    if isinstance(data, plugins.LabelledImages) or size > _IN_MEMORY_BYTES:
        return data
    return plugins.LabelledImages(
        data.load(np.arange(len(data)), preprocessing), data.labels, data.slices
    )


def _freeze_statistics(network: Network) -> None:
    """A head-only fine-tune keeps the body as it was: batch norms use their running
    statistics and dropout is off everywhere but in the head."""
    head = set(network.head.modules())
    for module in network.modules():
        if module is not network and module not in head:
            module.eval()


def shift(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by -1, 0 or +1 pixel along each axis, zero-filled: cheap augmentation."""
    count, channels, height, width = images.shape
    padded = F.pad(images, (1, 1, 1, 1))
    rows = torch.randint(0, 3, (count,), generator=generator).to(images.device)
    cols = torch.randint(0, 3, (count,), generator=generator).to(images.device)
    row_index = (rows[:, None] + torch.arange(height, device=images.device))[:, None, :, None]
    col_index = (cols[:, None] + torch.arange(width, device=images.device))[:, None, None, :]
    batch_index = torch.arange(count, device=images.device)[:, None, None, None]
    channel_index = torch.arange(channels, device=images.device)[None, :, None, None]
    moved = padded[batch_index, channel_index, row_index, col_index]
    if images.is_contiguous(memory_format=torch.channels_last) and channels > 1:
        return moved.contiguous(memory_format=torch.channels_last)
    return moved


def validation_score(
    network: Network,
    validation: Mapping[str, plugins.Examples],
    metric: plugins.Metric,
    runtime: Runtime,
    preprocessing: images.Preprocessing,
) -> float:
    """The metric per validation source, averaged: feedback counts as much as the base data."""
    if not validation:
        return 0.0
    classes = np.asarray(network.shape.classes, dtype=np.str_)
    scores = [
        plugins.score(
            metric, data.labels, classes[predict_classes(network, data, runtime, preprocessing)]
        )
        for data in validation.values()
    ]
    return float(np.mean(scores))


def predict_classes(
    network: Network,
    data: plugins.Examples,
    runtime: Runtime,
    preprocessing: images.Preprocessing,
    batch_size: int = plugins.EVALUATION_BATCH,
) -> NDArray[np.intp]:
    """The argmax class of every example, in batches on the runtime's device."""
    network.eval()
    found = []
    with torch.no_grad():
        for batch in plugins.batches(data, preprocessing, batch_size):
            with runtime.autocast():
                logits, _ = network(runtime.inputs(torch.from_numpy(batch)))
            found.append(logits.float().argmax(dim=1).cpu().numpy())
    return np.asarray(np.concatenate(found) if found else np.zeros(0), dtype=np.intp)
