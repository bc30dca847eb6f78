"""What the predictor answered: an in-memory pool for the review queue, and a log in S3.

Every prediction gets a ULID; its record (input, probabilities, embedding, predicted label,
model version, time) goes to the pool, a fixed-size ring of numpy arrays that the review
queue and the similarity search read, and to the log: batches of records appended to S3
as `{prefix}predictions/{ULID}.jsonl`, one JSON object per line, written every few seconds
or every `batch_size` records, never one object per request:

    {"id": "01J...", "time": "2026-01-01T00:00:00.000Z", "model": "digits",
     "modelVersion": "3", "predictedLabel": "7", "probabilities": [...],
     "embedding": [...], "input": [...], "shape": [8, 8]}

A failed write keeps the records for the next attempt (up to `max_buffered`, oldest
dropped first), so a record may be written twice but is not lost to a short outage;
predictions never wait for the log. At start the pool is refilled from the log's recent batches. The
pool and the log are per replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray
from ulid import ULID

from kubeloop.api import samples
from kubeloop.storage import ObjectStore, StorageUnavailable

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

    def records(self) -> list[dict[str, Any]]:
        """The log lines of this batch."""
        times = self.times if self.times is not None else np.full(len(self), self.time)
        probabilities = np.round(self.probabilities, 6).tolist()
        embeddings = np.round(self.embeddings, 5).tolist()
        inputs = np.round(self.inputs, 5).tolist()
        return [
            {
                "id": self.ids[i],
                "time": _rfc3339(float(times[i])),
                "model": self.model,
                "modelVersion": self.version,
                "predictedLabel": self.labels[i],
                "probabilities": probabilities[i],
                "embedding": embeddings[i],
                "input": inputs[i],
                "shape": list(self.shape),
            }
            for i in range(len(self))
        ]

    @classmethod
    def from_records(cls, records: list[dict[str, Any]]) -> list[PredictionBatch]:
        """Log lines back to batches, one per run of lines with the same version and sizes."""
        batches: list[PredictionBatch] = []
        run: list[dict[str, Any]] = []

        def close() -> None:
            if run:
                batches.append(cls._from_run(run))
                run.clear()

        for record in records:
            if run and _run_key(record) != _run_key(run[0]):
                close()
            run.append(record)
        close()
        return batches

    @classmethod
    def _from_run(cls, run: list[dict[str, Any]]) -> PredictionBatch:
        times = np.array([_parse_time(r["time"]) for r in run], dtype=np.float64)
        return cls(
            ids=tuple(r["id"] for r in run),
            time=float(times[-1]),
            model=run[0]["model"],
            version=run[0]["modelVersion"],
            labels=tuple(r["predictedLabel"] for r in run),
            probabilities=np.array([r["probabilities"] for r in run], dtype=np.float32),
            embeddings=np.array([r["embedding"] for r in run], dtype=np.float32),
            inputs=np.array([r["input"] for r in run], dtype=np.float32),
            shape=tuple(run[0]["shape"]),
            times=times,
        )


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
            "time": _rfc3339(float(self.times[i])),
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
        """Append a batch, overwriting the oldest rows once the pool is full."""
        if len(batch) == 0:
            return
        with self._lock:
            self._add(batch)

    def _add(self, batch: PredictionBatch) -> None:
        widths = (batch.probabilities.shape[1], batch.embeddings.shape[1], batch.inputs.shape[1])
        if widths != self._widths():
            if self._size:
                log.warning("model output sizes changed to %s: the review pool restarts", widths)
            self._allocate(widths, batch.shape)
        n = min(len(batch), self.capacity)
        first = len(batch) - n
        slots = (self._next + np.arange(n)) % self.capacity
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
        self._slot.update(zip(ids, slots.tolist(), strict=True))
        self._next = int((self._next + n) % self.capacity)
        self._size = min(self._size + n, self.capacity)

    def find(self, prediction_id: str) -> dict[str, Any] | None:
        """The prediction with this id, with its embedding, or None when not (or no longer) held."""
        with self._lock:
            return self._find(prediction_id)

    def _find(self, prediction_id: str) -> dict[str, Any] | None:
        slot = self._slot.get(prediction_id)
        if slot is None:
            return None
        return {
            "prediction_id": prediction_id,
            "predicted_label": self._labels[slot],
            "model_version": self._versions[slot],
            "time": float(self._times[slot]),
            "embedding": self._embeddings[slot].copy(),
            "input": self._inputs[slot].copy(),
            "shape": self._shape,
            "reviewed": bool(self._reviewed[slot]),
        }

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


class PredictionLog:
    """Appends prediction batches to S3 in JSONL objects of up to `batch_size` records."""

    def __init__(
        self,
        store: ObjectStore,
        bucket: str,
        prefix: str,
        batch_size: int = 1000,
        flush_seconds: float = 5.0,
        max_buffered: int = 200_000,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.max_buffered = max_buffered
        self.dropped = 0
        self._store = store
        self._pending: deque[PredictionBatch] = deque()
        self._pending_rows = 0
        self._lock = threading.Lock()
        self._full = asyncio.Event()

    def append(self, batch: PredictionBatch) -> None:
        """Queue a batch for the next write; the oldest are dropped beyond `max_buffered`."""
        with self._lock:
            self._pending.append(batch)
            self._pending_rows += len(batch)
            while self._pending_rows > self.max_buffered and len(self._pending) > 1:
                dropped = self._pending.popleft()
                self._pending_rows -= len(dropped)
                self.dropped += len(dropped)
            full = self._pending_rows >= self.batch_size
        if full:
            self._full.set()

    def flush(self) -> int:
        """Blocking: write what is queued, `batch_size` records per object; records written.

        On a storage failure the unwritten batches go back to the front of the queue and
        StorageUnavailable is raised.
        """
        with self._lock:
            taken = list(self._pending)
            self._pending.clear()
            self._pending_rows = 0
        records = [record for batch in taken for record in batch.records()]
        written = 0
        try:
            for start in range(0, len(records), self.batch_size):
                chunk = records[start : start + self.batch_size]
                # orjson: ~7x json's speed here, and this thread holds the GIL the event
                # loop answering requests needs.
                body = b"".join(orjson.dumps(r) + b"\n" for r in chunk)
                key = samples.predictions_key(self.prefix, str(ULID()))
                self._store.put_bytes(self.bucket, key, body, "application/x-ndjson")
                written += len(chunk)
        except Exception:
            self._requeue(taken, written)
            raise
        return written

    async def run(self) -> None:
        """Write every `flush_seconds`, or sooner when `batch_size` records are waiting."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self.flush_seconds)
            self._full.clear()
            if not self._pending:
                continue
            try:
                await asyncio.to_thread(self.flush)
            except StorageUnavailable as error:
                log.warning("prediction log not written, will retry: %s", error)
            except Exception:  # the loop must outlive a failed write
                log.exception("prediction log not written, will retry")

    def read_recent(self, seconds: float, limit: int) -> list[PredictionBatch]:
        """Blocking: the log's batches of the last `seconds`, at most `limit` rows, oldest first."""
        since = max(0.0, time.time() - seconds)
        floor = str(ULID.from_timestamp(since))[:10] + "0" * 16  # smallest ULID of that ms
        keys = self._store.list_keys(
            self.bucket,
            self.prefix + samples.PREDICTIONS,
            start_after=samples.predictions_key(self.prefix, floor),
        )
        chunks: list[list[dict[str, Any]]] = []
        rows = 0
        for key in reversed(keys):  # newest first, until the pool would overflow
            lines = self._store.get_bytes(self.bucket, key).decode().splitlines()
            chunks.append([orjson.loads(line) for line in lines if line.strip()])
            rows += len(chunks[-1])
            if rows >= limit:
                break
        records = [r for chunk in reversed(chunks) for r in chunk][-limit:]
        return PredictionBatch.from_records(records)

    def _requeue(self, taken: list[PredictionBatch], written: int) -> None:
        # Batches fully written stay written; the rest return to the front, in order.
        unwritten: list[PredictionBatch] = []
        seen = 0
        for batch in taken:
            if seen + len(batch) > written:
                unwritten.append(batch)
            seen += len(batch)
        with self._lock:
            self._pending.extendleft(reversed(unwritten))
            self._pending_rows += sum(len(b) for b in unwritten)


def _run_key(record: dict[str, Any]) -> tuple[Any, ...]:
    return (
        record["modelVersion"],
        len(record["probabilities"]),
        len(record["embedding"]),
        len(record["input"]),
    )


def _rfc3339(seconds: float) -> str:
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
