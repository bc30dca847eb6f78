"""Live accuracy: of the predictions that feedback named, how many were right, per version.

Each predictor process counts in memory and writes its own record,
`{prefix}stats/live-accuracy/{writer}.json` (api.samples.LiveAccuracy), at most every couple of
seconds and at shutdown. Nobody else writes that key, so no replica's counts are lost to
another's write; readers sum every record (feedback_store.merged): the FeedbackDataset's
KPI, and this process's gauge, which also counts the other replicas' records as last read.
Records of earlier processes stay, so a restart loses nothing that was flushed.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from ulid import ULID

from kubeloop import metrics
from kubeloop.api import samples
from kubeloop.feedback_store import merged
from kubeloop.storage import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)


class LiveAccuracy:
    """Judged and correct counts per model version: this process's, written to its own key,
    and the others' as last read."""

    def __init__(
        self, store: ObjectStore, bucket: str, prefix: str, model: str, writer: str | None = None
    ) -> None:
        self.writer = writer or str(ULID())
        self.key = f"{prefix}{samples.LIVE_ACCURACY_BY_WRITER}{self.writer}.json"
        self.model = model
        self._prefix = prefix
        self._store = store
        self._bucket = bucket
        self._own = samples.LiveAccuracy()
        self._others = samples.LiveAccuracy()
        self._written = 0  # judgements in the record as last written
        self._judged = 0
        self._lock = threading.Lock()

    def record(self, version: str, correct: bool) -> None:
        """One prediction of `version` judged by feedback."""
        with self._lock:
            counts = self._own.versions.setdefault(version, samples.VersionAccuracy())
            counts.judged += 1
            counts.correct += int(correct)
            self._judged += 1
            self._set_gauges()

    def totals(self) -> samples.LiveAccuracy:
        """Every process's counts: this one's and the others' as last read."""
        with self._lock:
            return merged([self._own, self._others])

    def load(self) -> None:
        """Blocking: read the other processes' records (and the older single record)."""
        keys = self._store.list_keys(self._bucket, self._prefix + samples.LIVE_ACCURACY_BY_WRITER)
        keys = [k for k in keys if k != self.key] + [self._prefix + samples.LIVE_ACCURACY]
        found = []
        for key in keys:
            try:
                found.append(
                    samples.LiveAccuracy.model_validate(self._store.get_json(self._bucket, key))
                )
            except ObjectNotFound:
                continue
        with self._lock:
            self._others = merged(found)
            self._set_gauges()

    def flush(self) -> bool:
        """Blocking: write this process's record when it has new counts; False when not.

        On failure the counts stay and are written by the next flush.
        """
        with self._lock:
            if self._judged == self._written:
                return False
            judged, body = self._judged, self._own.to_wire()
        self._store.put_json(self._bucket, self.key, body)
        with self._lock:
            self._written = judged
        return True

    async def run(self, interval: float) -> None:
        """Flush every `interval` seconds while there is something new; read the others'
        records every ten intervals."""
        rounds = 0
        while True:
            await asyncio.sleep(interval)
            rounds += 1
            try:
                await asyncio.to_thread(self.flush)
                if rounds % 10 == 0:
                    await asyncio.to_thread(self.load)
            except Exception as error:  # retried at the next interval; counts stay
                log.warning("live accuracy not written or read, will retry: %s", error)

    def _set_gauges(self) -> None:
        for version, counts in merged([self._own, self._others]).versions.items():
            if counts.accuracy is not None:
                metrics.LIVE_ACCURACY.labels(model=self.model, version=version).set(counts.accuracy)
