"""Several predictor replicas behind one dataset, each seeing what the others did.

Every replica appends its predictions to the shared prediction log and its feedback to the
dataset's inbox. `PeerSync` reads both back every few seconds: predictions another replica
made join this one's review pool (so the queue offers every prediction, whichever replica
answered it, and feedback naming one is judged here), and predictions another replica got
feedback for leave the queue. It reads what was written since the newest key it read, less
a rewind that covers writes landing out of order; keys already read are skipped, and so are
the keys this replica wrote itself (`OwnWrites`: its prediction log and its feedback segments,
which it already holds). A prediction id this replica does not hold yet is looked for at once
(`find`), before feedback naming it is refused.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from ulid import ULID

from kubeloop.api import samples
from kubeloop.serving.prediction_log import PredictionLog
from kubeloop.serving.prediction_pool import HeldPrediction, PredictionPool
from kubeloop.storage import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

REWIND_SECONDS = 120.0
"""How far before the newest key read each sync lists again (writes land out of order)."""


class OwnWrites:
    """Keys this replica wrote and holds already, which its PeerSync does not read back: with
    one replica, every key it would read. Thread-safe (writes finish in worker threads)."""

    def __init__(self) -> None:
        self._keys: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, key: str) -> None:
        """`key` is written (acknowledged by S3)."""
        with self._lock:
            self._keys[key] = _made(key)

    def claim(self, keys: list[str], listed_since: float) -> set[str]:
        """Those of `keys` this replica wrote, forgotten now they are listed; also forgets
        the ones made before `listed_since`, which no listing reaches any more."""
        with self._lock:
            own = {key for key in keys if self._keys.pop(key, None) is not None}
            self._keys = {k: t for k, t in self._keys.items() if t >= listed_since}
            return own

    def unlisted(self) -> int:
        """How many keys it holds: written, and not yet listed by a sync. (A count, not
        `len`: an empty OwnWrites would read as false where `own or ...` is written.)"""
        with self._lock:
            return len(self._keys)


class PeerSync:
    """Keeps this replica's review pool up to date with the other replicas'."""

    def __init__(
        self,
        store: ObjectStore,
        bucket: str,
        prefix: str,
        pool: PredictionPool,
        prediction_log: PredictionLog,
        window_seconds: float,
        own: OwnWrites | None = None,
    ) -> None:
        self._store = store
        self._bucket = bucket
        self._prefix = prefix
        self._pool = pool
        self._log = prediction_log
        self._window = window_seconds
        self._own = own if own is not None else OwnWrites()
        self._read: dict[str, float] = {}
        """Keys read, and their ULID's time, within the rewind."""
        started = time.time()  # the warm start read the log before; the rewind covers the rest
        self._since = dict.fromkeys((samples.PREDICTIONS, samples.INBOX, samples.SAMPLES), started)
        self._lock = threading.Lock()

    def sync(self) -> int:
        """Blocking: read what the other replicas logged since the last sync; predictions
        added to the pool."""
        with self._lock:
            added = 0
            for key in self._new(samples.PREDICTIONS):
                for batch in self._log.read(key):
                    before = len(self._pool)
                    self._pool.add(batch)
                    added += len(self._pool) - before
            for folder in (samples.INBOX, samples.SAMPLES):
                for key in self._new(folder):
                    self._mark_reviewed(key)
            return added

    async def find(self, prediction_id: str) -> HeldPrediction | None:
        """The prediction `prediction_id`, after a sync when this replica does not hold it
        and it is recent enough to be in the log's window."""
        found = self._pool.find(prediction_id)
        if found is not None:
            return found
        try:
            made = ULID.from_str(prediction_id).timestamp
        except ValueError:
            return None
        if made < time.time() - self._window:
            return None
        await asyncio.to_thread(self.sync)
        return self._pool.find(prediction_id)

    async def run(self, interval: float) -> None:
        """Sync every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.sync)
            except Exception as error:  # the next sync catches up
                log.warning("could not read the other replicas' logs: %s", error)

    def _new(self, folder: str) -> list[str]:
        """Keys of `folder` not read yet and not this replica's, from the rewind before the
        newest one read."""
        now = time.time()
        since = max(self._since[folder] - REWIND_SECONDS, now - self._window)
        floor = str(ULID.from_timestamp(max(0.0, since)))[:10] + "0" * 16
        keys = self._store.list_keys(
            self._bucket, self._prefix + folder, start_after=f"{self._prefix}{folder}{floor}"
        )
        new = [k for k in keys if k not in self._read]
        for key in new:
            made = _made(key)
            self._read[key] = made
            self._since[folder] = max(self._since[folder], made)
        horizon = min(self._since.values()) - REWIND_SECONDS
        self._read = {k: t for k, t in self._read.items() if t >= horizon}
        own = self._own.claim(new, now - self._window)
        return [key for key in new if key not in own]

    def _mark_reviewed(self, key: str) -> None:
        try:
            data = self._store.get_bytes(self._bucket, key)
        except ObjectNotFound:
            return  # taken by a snapshot meanwhile
        for line in data.splitlines():
            try:
                sample = samples.FeedbackSample.model_validate_json(line)
            except ValueError:
                continue
            if sample.prediction_id:
                self._pool.mark_reviewed(sample.prediction_id)


def _made(key: str) -> float:
    """The time in a key's ULID (0 when it has none)."""
    name = key.rsplit("/", 1)[-1][:26]
    try:
        return float(ULID.from_str(name).timestamp)
    except ValueError:
        return 0.0
