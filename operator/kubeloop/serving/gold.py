"""Gold items: samples whose label is known, mixed into the review queue to score labellers.

They are FeedbackSamples under `{prefix}gold/` (one per .json, or one per line of .jsonl),
read again at most once a minute. In the queue a gold item looks like any other: the
serving version's answer as the pre-annotation, its sample id (a ULID) as the prediction
id, so a labeller cannot tell it apart. Its answers score the labeller
(serving.consensus.answer_gold) and never become samples. Each labeller gets a gold item
once per replica. No HTTP here.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Any

import numpy as np
from pydantic import ValidationError

from kubeloop.api import samples
from kubeloop.api.samples import FeedbackSample
from kubeloop.serving import inputs
from kubeloop.serving.holder import LoadedModel
from kubeloop.storage import ObjectStore

log = logging.getLogger(__name__)
REFRESH_SECONDS = 60.0


class GoldSet:
    """A dataset's gold items."""

    def __init__(self, store: ObjectStore, bucket: str, prefix: str) -> None:
        self._store = store
        self._bucket = bucket
        self._prefix = prefix
        self._items: dict[str, FeedbackSample] = {}
        self._read_at = -REFRESH_SECONDS
        self._given: set[tuple[str, str]] = set()
        """(labeller, gold id) shown or answered through this replica."""

    def find(self, prediction_id: str | None) -> FeedbackSample | None:
        return self._items.get(prediction_id or "")

    def answered(self, labeller: str, gold_id: str) -> None:
        self._given.add((labeller, gold_id))

    async def pick(
        self, count: int, labeller: str | None, model: LoadedModel | None
    ) -> list[dict[str, Any]]:
        """Up to `count` gold items `labeller` has not had, as review items answered by
        `model`; none without a labeller (nobody to score) or a model."""
        if count <= 0 or labeller is None or model is None:
            return []
        if time.monotonic() - self._read_at >= REFRESH_SECONDS:
            await asyncio.to_thread(self._refresh)
        fresh = [g for g in self._items.values() if (labeller, g.id) not in self._given]
        rng = np.random.default_rng()
        chosen = [fresh[i] for i in rng.permutation(len(fresh))[:count].tolist()]
        fitting = [(g, _input(g, model)) for g in chosen]
        rows = [(g, row) for g, row in fitting if row is not None]
        if not rows:
            return []
        stacked = np.stack([row for _, row in rows])
        probabilities, _ = await asyncio.to_thread(model.onnx.run, stacked)
        items = []
        for (g, row), p in zip(rows, probabilities, strict=True):
            self._given.add((labeller, g.id))
            items.append(
                {
                    "prediction_id": g.id,
                    "predicted_label": model.classes[int(p.argmax())],
                    "model_version": model.version.version,
                    "time": samples.rfc3339(time.time()),
                    "probabilities": p.tolist(),
                    "input": row.reshape(-1).tolist(),
                    "shape": list(row.shape),
                }
            )
        return items

    def _refresh(self) -> None:
        """Read the gold items again; an unreadable object is logged and left out."""
        found: dict[str, FeedbackSample] = {}
        for key in self._store.list_keys(self._bucket, self._prefix + samples.GOLD):
            try:
                data = self._store.get_bytes(self._bucket, key)
                for line in data.splitlines() if key.endswith(".jsonl") else [data]:
                    if line.strip():
                        sample = FeedbackSample.model_validate_json(line)
                        found[sample.id] = sample
            except ValidationError as error:
                log.warning(
                    "s3://%s/%s is not a gold sample, left out: %s", self._bucket, key, error
                )
        self._items = found
        self._read_at = time.monotonic()


def _input(gold: FeedbackSample, model: LoadedModel) -> np.ndarray[Any, Any] | None:
    """The gold sample as one input of `model`, None when it does not fit."""
    shape = model.onnx.input_shape
    try:
        if gold.image is not None:
            return inputs.image(base64.b64decode(gold.image), shape, model.preprocessing)
        values = np.asarray(gold.input or [], dtype=np.float32)
        return values.reshape(shape) if values.size == int(np.prod(shape)) else None
    except inputs.InputError as error:
        log.warning("gold sample %s does not fit the model, left out: %s", gold.id, error)
        return None
