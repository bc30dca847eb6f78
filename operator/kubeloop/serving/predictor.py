"""Prediction without a protocol: rows in, classes with uncertainty and prediction ids out.

Rows go through the micro-batcher; each batch runs on the version the holder serves when
the batch starts. Everything per row (class, entropy, margin, one ULID as the id feedback
and the review queue refer to, the review pool, the prediction log, the metrics) is done
once per batch, vectorised, in the inference thread; a request only gets its slice. No
HTTP here: kserve_model.py speaks V1 and V2.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from ulid import ULID

from kubeloop import metrics
from kubeloop.images import Preprocessing
from kubeloop.selection import scores
from kubeloop.serving.batching import MicroBatcher
from kubeloop.serving.holder import LoadedModel, ModelHolder
from kubeloop.serving.prediction_log import PredictionLog
from kubeloop.serving.prediction_pool import PredictionBatch, PredictionPool

Floats = NDArray[np.float32]

MAX_LOGGED_INPUT_VALUES = 4096
"""Inputs up to this many values are kept in the pool and the log (the review queue shows
them, feedback may refer to them by prediction id); bigger ones are logged without input."""


INLINE_SECONDS = 0.0005
"""A request whose rows the serving version ran in less than this (by the last run's time
per row) runs on the event loop, not in the inference thread (serving.batching)."""


class NotLoaded(RuntimeError):
    """No model version is loaded yet."""


@dataclass(frozen=True)
class Answer:
    """Predictions for some rows, all computed by `model`; sliceable by rows."""

    model: LoadedModel
    ids: tuple[str, ...]
    class_index: NDArray[np.intp]
    labels: tuple[str, ...]
    probabilities: Floats
    embeddings: Floats
    entropy: NDArray[np.floating]
    margin: NDArray[np.floating]

    @property
    def version(self) -> str:
        return self.model.version.version

    def rows(self, start: int, stop: int) -> Answer:
        return Answer(
            self.model,
            self.ids[start:stop],
            self.class_index[start:stop],
            self.labels[start:stop],
            self.probabilities[start:stop],
            self.embeddings[start:stop],
            self.entropy[start:stop],
            self.margin[start:stop],
        )


class Predictor:
    """Runs rows on the serving version through the micro-batcher and records the answers."""

    def __init__(
        self,
        holder: ModelHolder,
        max_batch_size: int,
        max_latency_seconds: float,
        pool: PredictionPool | None = None,
        log: PredictionLog | None = None,
    ) -> None:
        self.holder = holder
        self.pool = pool
        self.log = log
        self.batcher: MicroBatcher[Answer] = MicroBatcher(
            self._run,
            max_batch_size,
            max_latency_seconds,
            on_batch=metrics.PREDICTOR_BATCH_SIZE.observe,
            inline_seconds=INLINE_SECONDS,
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input of the serving version; NotLoaded before the first load."""
        return self._current().onnx.input_shape

    @property
    def preprocessing(self) -> Preprocessing | None:
        """How the serving version decodes images (None: exact-size PNGs); NotLoaded before
        the first load."""
        return self._current().preprocessing

    async def predict(self, rows: Floats, alone: bool = False) -> Answer:
        """Classes, probabilities, uncertainty and ids for N rows of `input_shape`; `alone`:
        no other request is in flight (serving.batching runs a cheap one inline)."""
        return await self.batcher.submit(rows, alone)

    async def close(self) -> None:
        await self.batcher.close()

    def _run(self, rows: Floats) -> Answer:
        """In the inference thread: one batch on the version serving right now, recorded."""
        model = self._current()
        probabilities, embeddings = model.onnx.run(rows)
        class_index = probabilities.argmax(axis=1).astype(np.intp)
        answer = Answer(
            model=model,
            ids=tuple(str(ULID()) for _ in range(len(rows))),
            class_index=class_index,
            labels=tuple(model.classes[i] for i in class_index.tolist()),
            probabilities=probabilities,
            embeddings=embeddings,
            entropy=scores.entropy(probabilities),
            margin=scores.margin(probabilities),
        )
        self._record(answer, rows)
        return answer

    def _current(self) -> LoadedModel:
        model = self.holder.current
        if model is None:
            raise NotLoaded("no model version is loaded yet")
        return model

    def _record(self, answer: Answer, rows: Floats) -> None:
        version = answer.model.version.version
        counts = np.bincount(answer.class_index, minlength=len(answer.model.classes))
        for index in np.flatnonzero(counts).tolist():
            label = answer.model.classes[index]
            metrics.PREDICTIONS.labels(label, version).inc(int(counts[index]))
        histogram = metrics.PREDICTION_ENTROPY.labels(version)
        classes = answer.probabilities.shape[1]
        for value in scores.normalized(answer.entropy, classes).tolist():  # computed once
            histogram.observe(value)
        if self.pool is None and self.log is None:
            return
        batch = PredictionBatch(
            ids=answer.ids,
            time=time.time(),
            model=answer.model.version.name,
            version=answer.version,
            labels=answer.labels,
            probabilities=answer.probabilities,
            embeddings=answer.embeddings,
            inputs=rows.reshape(len(rows), -1)
            if rows[0].size <= MAX_LOGGED_INPUT_VALUES
            else np.empty((len(rows), 0), dtype=np.float32),
            shape=answer.model.onnx.input_shape,
        )
        if self.pool is not None:
            self.pool.add(batch)
        if self.log is not None:
            self.log.append(batch)
