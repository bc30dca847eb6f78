"""Live accuracy: of the predictions that feedback named, how many were right, per version.

Counts are kept in memory and merged into `{prefix}stats/live-accuracy.json` (api.samples
.LiveAccuracy) at most every couple of seconds and at shutdown: the stored counts are read,
this process's new counts added, the sum written. A restart loses nothing that was flushed
and starts from the stored counts; replicas add to the same object (a write racing another
replica's can lose that replica's last few counts, which the KPI rule tolerates). The
FeedbackDataset controller reads the object for its "skip retraining while the KPI holds"
decision.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from kubeloop import metrics
from kubeloop.api import samples
from kubeloop.storage import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)


class LiveAccuracy:
    """Judged and correct counts per model version, flushed to S3."""

    def __init__(self, store: ObjectStore, bucket: str, prefix: str, model: str) -> None:
        self.key = prefix + samples.LIVE_ACCURACY
        self.model = model
        self._store = store
        self._bucket = bucket
        self._stored: dict[str, samples.VersionAccuracy] = {}
        self._pending: dict[str, samples.VersionAccuracy] = {}
        self._lock = threading.Lock()

    def record(self, version: str, correct: bool) -> None:
        """One prediction of `version` judged by feedback."""
        with self._lock:
            counts = self._pending.setdefault(version, samples.VersionAccuracy())
            counts.judged += 1
            counts.correct += int(correct)
            self._set_gauge(version)

    def totals(self) -> samples.LiveAccuracy:
        """Stored plus pending counts."""
        with self._lock:
            versions = set(self._stored) | set(self._pending)
            return samples.LiveAccuracy(versions={v: self._total(v) for v in sorted(versions)})

    def load(self) -> None:
        """Blocking: start from the stored counts (none when the object does not exist yet)."""
        stored = self._read()
        with self._lock:
            self._stored = stored.versions
            for version in set(self._stored) | set(self._pending):
                self._set_gauge(version)

    def flush(self) -> bool:
        """Blocking: merge pending counts into the stored object; False when none were pending.

        On failure the counts stay pending and the storage error propagates.
        """
        with self._lock:
            taken, self._pending = self._pending, {}
        if not taken:
            return False
        try:
            stored = self._read()
            for version, counts in taken.items():
                total = stored.versions.setdefault(version, samples.VersionAccuracy())
                total.judged += counts.judged
                total.correct += counts.correct
            self._store.put_json(self._bucket, self.key, stored.to_wire())
        except Exception:
            with self._lock:
                for version, counts in taken.items():
                    pending = self._pending.setdefault(version, samples.VersionAccuracy())
                    pending.judged += counts.judged
                    pending.correct += counts.correct
            raise
        with self._lock:
            self._stored = stored.versions
            for version in stored.versions:
                self._set_gauge(version)
        return True

    async def run(self, interval: float) -> None:
        """Flush every `interval` seconds while there is something new."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.flush)
            except Exception as error:  # retried at the next interval; counts stay pending
                log.warning("live accuracy not written, will retry: %s", error)

    def _read(self) -> samples.LiveAccuracy:
        try:
            return samples.LiveAccuracy.model_validate(self._store.get_json(self._bucket, self.key))
        except ObjectNotFound:
            return samples.LiveAccuracy()

    def _total(self, version: str) -> samples.VersionAccuracy:
        stored = self._stored.get(version, samples.VersionAccuracy())
        pending = self._pending.get(version, samples.VersionAccuracy())
        return samples.VersionAccuracy(
            judged=stored.judged + pending.judged, correct=stored.correct + pending.correct
        )

    def _set_gauge(self, version: str) -> None:
        accuracy = self._total(version).accuracy
        if accuracy is not None:
            metrics.LIVE_ACCURACY.labels(model=self.model, version=version).set(accuracy)
