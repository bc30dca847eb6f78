"""The prediction log: what the predictor answered, appended to S3 in batches.

Every prediction's record goes to `{prefix}predictions/{ULID}.jsonl`, one JSON object per
line (LoggedPrediction), written every few seconds or every `batch_size` records, never
one object per request:

    {"id": "01J...", "time": "2026-01-01T00:00:00.000Z", "model": "digits",
     "modelVersion": "3", "predictedLabel": "7", "probabilities": [...],
     "embedding": [...], "input": [...], "shape": [8, 8]}

A failed write keeps the records for the next attempt (up to `max_buffered`, oldest
dropped first), so a record may be written twice but is not lost to a short outage;
predictions never wait for the log. At start the review pool (serving.prediction_pool) is
refilled from the log's recent batches (`read_recent`). Per replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from ulid import ULID

from kubeloop.api import samples
from kubeloop.serving.prediction_pool import PredictionBatch
from kubeloop.storage import ObjectNotFound, ObjectStore, StorageUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoggedPrediction:
    """One line of the log."""

    id: str
    time: str
    """RFC 3339, to the millisecond."""
    model: str
    model_version: str
    predicted_label: str
    probabilities: list[float]
    embedding: list[float]
    input: list[float]
    """Flattened; empty when the input was too big to log."""
    shape: list[int]

    @classmethod
    def of(cls, batch: PredictionBatch) -> list[LoggedPrediction]:
        """The log lines of a batch (values rounded: the log is for review, not replay)."""
        times = batch.times if batch.times is not None else np.full(len(batch), batch.time)
        probabilities = np.round(batch.probabilities, 6).tolist()
        embeddings = np.round(batch.embeddings, 5).tolist()
        inputs = np.round(batch.inputs, 5).tolist()
        shape = list(batch.shape)
        return [
            cls(
                id=batch.ids[i],
                time=samples.rfc3339(float(times[i])),
                model=batch.model,
                model_version=batch.version,
                predicted_label=batch.labels[i],
                probabilities=probabilities[i],
                embedding=embeddings[i],
                input=inputs[i],
                shape=shape,
            )
            for i in range(len(batch))
        ]

    def to_wire(self) -> dict[str, Any]:
        """The JSON object of the line (orjson writes it: ~4x pydantic's speed here, in a
        thread that holds the GIL the event loop answering requests needs)."""
        return {
            "id": self.id,
            "time": self.time,
            "model": self.model,
            "modelVersion": self.model_version,
            "predictedLabel": self.predicted_label,
            "probabilities": self.probabilities,
            "embedding": self.embedding,
            "input": self.input,
            "shape": self.shape,
        }

    @classmethod
    def from_wire(cls, line: dict[str, Any]) -> LoggedPrediction:
        """A parsed line back; KeyError or TypeError when it is not one."""
        record = cls(
            id=str(line["id"]),
            time=str(line["time"]),
            model=str(line["model"]),
            model_version=str(line["modelVersion"]),
            predicted_label=str(line["predictedLabel"]),
            probabilities=list(line["probabilities"]),
            embedding=list(line["embedding"]),
            input=list(line["input"]),
            shape=[int(size) for size in line["shape"]],
        )
        samples.parse_rfc3339(record.time)  # ValueError for a bad time
        return record

    @staticmethod
    def batches(records: list[LoggedPrediction]) -> list[PredictionBatch]:
        """Lines back to batches, one per run of lines with the same version and sizes."""
        batches: list[PredictionBatch] = []
        start = 0
        for end in range(1, len(records) + 1):
            if end == len(records) or _run_key(records[end]) != _run_key(records[start]):
                batches.append(_batch(records[start:end]))
                start = end
        return batches


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
        on_written: Callable[[str], None] | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.max_buffered = max_buffered
        self.dropped = 0
        self._store = store
        self._on_written = on_written
        """Told each key written (replicas.OwnWrites.add: a key its PeerSync need not read)."""
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
        records = [record for batch in taken for record in LoggedPrediction.of(batch)]
        written = 0
        try:
            for start in range(0, len(records), self.batch_size):
                chunk = records[start : start + self.batch_size]
                # orjson: ~7x json's speed here, and this thread holds the GIL the event
                # loop answering requests needs.
                body = b"".join(orjson.dumps(r.to_wire()) + b"\n" for r in chunk)
                key = samples.predictions_key(self.prefix, str(ULID()))
                self._store.put_bytes(self.bucket, key, body, "application/x-ndjson")
                written += len(chunk)
                if self._on_written is not None:
                    self._on_written(key)
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
        chunks: list[list[LoggedPrediction]] = []
        rows = 0
        for key in reversed(keys):  # newest first, until the pool would overflow
            chunks.append(_records(key, self._store.get_bytes(self.bucket, key)))
            rows += len(chunks[-1])
            if rows >= limit:
                break
        records = [r for chunk in reversed(chunks) for r in chunk][-limit:]
        return LoggedPrediction.batches(records)

    def read(self, key: str) -> list[PredictionBatch]:
        """Blocking: one object of the log, as batches; none when it is gone."""
        try:
            body = self._store.get_bytes(self.bucket, key)
        except ObjectNotFound:
            return []
        return LoggedPrediction.batches(_records(key, body))

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


def _records(key: str, body: bytes) -> list[LoggedPrediction]:
    """The lines of one log object; a line that is not a record is skipped, with a warning."""
    records = []
    for number, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(LoggedPrediction.from_wire(orjson.loads(line)))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            log.warning("prediction log %s line %d skipped: %s", key, number, error)
    return records


def _run_key(record: LoggedPrediction) -> tuple[Any, ...]:
    sizes = (len(record.probabilities), len(record.embedding), len(record.input))
    return (record.model_version, *sizes)


def _batch(run: list[LoggedPrediction]) -> PredictionBatch:
    times = np.array([samples.parse_rfc3339(r.time) for r in run], dtype=np.float64)
    return PredictionBatch(
        ids=tuple(r.id for r in run),
        time=float(times[-1]),
        model=run[0].model,
        version=run[0].model_version,
        labels=tuple(r.predicted_label for r in run),
        probabilities=np.array([r.probabilities for r in run], dtype=np.float32),
        embeddings=np.array([r.embedding for r in run], dtype=np.float32),
        inputs=np.array([r.input for r in run], dtype=np.float32),
        shape=tuple(run[0].shape),
        times=times,
    )
