"""The predictions this replica made lately, in memory: the pool the review queue and the
similarity search read, and feedback looks predictions up in.

Every prediction has a ULID; a batch's rows (input, probabilities, embedding, predicted
label, model version, time) go into a fixed-size ring of numpy arrays, the oldest
overwritten first. The inference thread adds, the event loop reads: thread-safe. At start
the predictor refills it from the prediction log (serving.prediction_log). Per replica.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from kubeloop.api import samples

log = logging.getLogger(__name__)

Floats = NDArray[np.float32]


@dataclass(frozen=True)
class PredictionBatch:
    """The predictions of one request (or of one stretch of the log), all by one version."""

    ids: tuple[str, ...]
    time: float
    """Unix time of the predictions."""
    model: str
    version: str
    labels: tuple[str, ...]
    """Predicted class names."""
    probabilities: Floats
    embeddings: Floats
    inputs: Floats
    """(N, prod(shape)) flattened inputs."""
    shape: tuple[int, ...]
    times: NDArray[np.float64] | None = None
    """Per-row times, when rows differ (read back from the log)."""

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, keep: list[int]) -> PredictionBatch:
        """The batch of only the rows `keep`."""
        times = self.times[keep] if self.times is not None else None
        return PredictionBatch(
            ids=tuple(self.ids[i] for i in keep),
            time=self.time,
            model=self.model,
            version=self.version,
            labels=tuple(self.labels[i] for i in keep),
            probabilities=self.probabilities[keep],
            embeddings=self.embeddings[keep],
            inputs=self.inputs[keep],
            shape=self.shape,
            times=times,
        )


@dataclass(frozen=True)
class HeldPrediction:
    """One prediction the pool holds, as feedback and the similarity search use it."""

    prediction_id: str
    predicted_label: str
    model_version: str
    time: float
    """Unix time of the prediction."""
    embedding: Floats
    input: Floats
    """The flattened input (empty when it was too big to keep)."""
    shape: tuple[int, ...]
    reviewed: bool
    """Feedback named it already: it counts once for live accuracy."""


@dataclass(frozen=True)
class PoolView:
    """A copy of (part of) the pool in arrival order, safe to read in another thread."""

    ids: NDArray[np.object_]
    labels: NDArray[np.object_]
    versions: NDArray[np.object_]
    times: NDArray[np.float64]
    probabilities: Floats
    embeddings: Floats
    inputs: Floats
    shape: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.ids)

    def where(self, mask: NDArray[np.bool_]) -> PoolView:
        return PoolView(
            self.ids[mask],
            self.labels[mask],
            self.versions[mask],
            self.times[mask],
            self.probabilities[mask],
            self.embeddings[mask],
            self.inputs[mask],
            self.shape,
        )

    def item(self, i: int) -> dict[str, Any]:
        """Row `i` as the review API shows it."""
        return {
            "prediction_id": self.ids[i],
            "predicted_label": self.labels[i],
            "model_version": self.versions[i],
            "time": samples.rfc3339(float(self.times[i])),
            "probabilities": self.probabilities[i].tolist(),
            "input": self.inputs[i].tolist(),
            "shape": list(self.shape),
        }


class PredictionPool:
    """The latest `capacity` predictions as ring arrays; thread-safe (the inference thread
    adds, the event loop reads)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._size = 0
        self._next = 0
        self._slot: dict[str, int] = {}
        self._ids = np.empty(capacity, dtype=object)
        self._labels = np.empty(capacity, dtype=object)
        self._versions = np.empty(capacity, dtype=object)
        self._times = np.zeros(capacity, dtype=np.float64)
        self._reviewed = np.zeros(capacity, dtype=bool)
        # Widths are known from the first batch; until then the arrays are (capacity, 0).
        self._probabilities: Floats = np.zeros((capacity, 0), dtype=np.float32)
        self._embeddings: Floats = np.zeros((capacity, 0), dtype=np.float32)
        self._inputs: Floats = np.zeros((capacity, 0), dtype=np.float32)
        self._shape: tuple[int, ...] = ()

    def __len__(self) -> int:
        return self._size

    def add(self, batch: PredictionBatch) -> None:
        """Append a batch, overwriting the oldest rows once the pool is full; predictions it
        holds already (read back from the shared log, say) are not added twice."""
        if len(batch) == 0:
            return
        with self._lock:
            new = [
                i for i, prediction_id in enumerate(batch.ids) if prediction_id not in self._slot
            ]
            if len(new) < len(batch):
                batch = batch.rows(new)
            if len(batch):
                self._add(batch)

    def _add(self, batch: PredictionBatch) -> None:
        widths = (batch.probabilities.shape[1], batch.embeddings.shape[1], batch.inputs.shape[1])
        if widths != self._widths():
            if self._size:
                log.warning("model output sizes changed to %s: the review pool restarts", widths)
            self._allocate(widths, batch.shape)
        n = min(len(batch), self.capacity)
        first = len(batch) - n
        slots: slice | NDArray[np.intp] = (
            slice(self._next, self._next + n)  # contiguous: cheaper to write than an index
            if self._next + n <= self.capacity
            else (self._next + np.arange(n)) % self.capacity
        )
        for old in self._ids[slots]:
            if old is not None:
                self._slot.pop(old, None)
        ids = batch.ids[first:]
        self._ids[slots] = ids
        self._labels[slots] = batch.labels[first:]
        self._versions[slots] = batch.version
        self._times[slots] = batch.times[first:] if batch.times is not None else batch.time
        self._reviewed[slots] = False
        self._probabilities[slots] = batch.probabilities[first:]
        self._embeddings[slots] = batch.embeddings[first:]
        self._inputs[slots] = batch.inputs[first:]
        numbers = range(slots.start, slots.stop) if isinstance(slots, slice) else slots.tolist()
        self._slot.update(zip(ids, numbers, strict=True))
        self._next = int((self._next + n) % self.capacity)
        self._size = min(self._size + n, self.capacity)

    def find(self, prediction_id: str) -> HeldPrediction | None:
        """The prediction with this id, with its embedding, or None when not (or no longer) held."""
        with self._lock:
            slot = self._slot.get(prediction_id)
            if slot is None:
                return None
            return HeldPrediction(
                prediction_id=prediction_id,
                predicted_label=self._labels[slot],
                model_version=self._versions[slot],
                time=float(self._times[slot]),
                embedding=self._embeddings[slot].copy(),
                input=self._inputs[slot].copy(),
                shape=self._shape,
                reviewed=bool(self._reviewed[slot]),
            )

    def mark_reviewed(self, prediction_id: str) -> None:
        with self._lock:
            slot = self._slot.get(prediction_id)
            if slot is not None:
                self._reviewed[slot] = True

    def view(self, include_reviewed: bool = False) -> PoolView:
        """The held predictions, oldest first; without reviewed ones unless asked."""
        with self._lock:
            return self._view(include_reviewed)

    def _view(self, include_reviewed: bool) -> PoolView:
        if self._size < self.capacity:
            order = np.arange(self._size)
        else:
            order = (self._next + np.arange(self.capacity)) % self.capacity
        if not include_reviewed:
            order = order[~self._reviewed[order]]
        return PoolView(
            self._ids[order],
            self._labels[order],
            self._versions[order],
            self._times[order],
            self._probabilities[order],
            self._embeddings[order],
            self._inputs[order],
            self._shape,
        )

    def _widths(self) -> tuple[int, int, int]:
        return (
            self._probabilities.shape[1],
            self._embeddings.shape[1],
            self._inputs.shape[1],
        )

    def _allocate(self, widths: tuple[int, int, int], shape: tuple[int, ...]) -> None:
        classes, dim, size = widths
        self._probabilities = np.zeros((self.capacity, classes), dtype=np.float32)
        self._embeddings = np.zeros((self.capacity, dim), dtype=np.float32)
        self._inputs = np.zeros((self.capacity, size), dtype=np.float32)
        self._shape = shape
        self._size = self._next = 0
        self._slot.clear()
        self._ids[:] = None
