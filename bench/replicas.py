"""Benchmark 8, the replicas' sync: one PeerSync.sync after one interval of this replica's
own writes, which it already holds.

The writes: `segments` feedback segments of 5 samples (inbox objects as the segment writer
stores them, each key told to OwnWrites as FeedbackService does) and `log_objects`
prediction-log objects of 1,000 predictions each (PredictionLog.flush), to the real S3
server. 400 segments are 2,000 samples, what a predictor taking 400 samples/s stores between
two syncs (every 5 s).
Subject: PeerSync told the keys this replica wrote (replicas.OwnWrites), so it skips them.
Baseline, in the same run and interleaved with it: the same PeerSync told nothing, which
reads each of them back (a GET and a parse per object), as every replica did before.
Only the sync is timed; each round writes to a fresh prefix first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from ulid import ULID

from bench.common import Result, interleaved, log
from bench.servers import ACCESS_KEY, SECRET_KEY, Stack
from kubeloop.api import samples
from kubeloop.serving.prediction_log import PredictionLog
from kubeloop.serving.prediction_pool import PredictionBatch, PredictionPool
from kubeloop.serving.replicas import OwnWrites, PeerSync
from kubeloop.storage import ObjectStore

BUCKET = "bench-replicas"
PER_SEGMENT = 5
PER_LOG_OBJECT = 1000
SUBJECT = "PeerSync skipping this replica's own keys (replicas.OwnWrites)"
BASELINE = "PeerSync reading every key back, its own included (the previous behaviour)"


@dataclass(frozen=True)
class Settings:
    segments: int
    log_objects: int
    rounds: int

    @classmethod
    def of(cls, quick: bool) -> Settings:
        return cls(40, 2, 2) if quick else cls(400, 20, 6)


def run(stack: Stack, quick: bool) -> list[Result]:
    return [measure(ObjectStore(stack.s3(), ACCESS_KEY, SECRET_KEY), Settings.of(quick))]


def measure(store: ObjectStore, settings: Settings) -> Result:
    """The result for `settings` against the S3 server of `store` (the smoke test's entry)."""
    store.ensure_bucket(BUCKET)
    log(f"replicas: {settings.rounds} rounds of {settings.segments} segments")
    times = interleaved(
        {
            "skips own": lambda: _sync(store, settings, skip_own=True),
            "reads back": lambda: _sync(store, settings, skip_own=False),
        },
        settings.rounds,
    )
    best = {name: min(seconds) for name, seconds in times.items()}
    return Result(
        "replicas.peer_sync.own_writes",
        "seconds per sync",
        "s",
        best["skips own"],
        best["reads back"],
        SUBJECT,
        BASELINE,
        higher_is_better=False,
        details={"seconds": times},
        config={
            "segments": settings.segments,
            "samples_per_segment": PER_SEGMENT,
            "log_objects": settings.log_objects,
            "predictions_per_log_object": PER_LOG_OBJECT,
            "rounds": settings.rounds,
            "statistic": "best of the rounds",
        },
    )


def _sync(store: ObjectStore, settings: Settings, *, skip_own: bool) -> float:
    """Write one interval's keys under a fresh prefix, then time one sync."""
    prefix = f"round-{ULID()}/"
    own = OwnWrites() if skip_own else None
    told = own.add if own is not None else None
    pool = PredictionPool(settings.log_objects * PER_LOG_OBJECT)
    prediction_log = PredictionLog(store, BUCKET, prefix, PER_LOG_OBJECT, on_written=told)
    ids: list[str] = []
    for n in range(settings.log_objects):
        batch = _batch(n)
        ids += batch.ids
        pool.add(batch)
        prediction_log.append(batch)
    prediction_log.flush()
    for n in range(settings.segments):
        lines = [_sample(ids[(n * PER_SEGMENT + k) % len(ids)]) for k in range(PER_SEGMENT)]
        key = samples.segment_key(prefix, str(ULID()), PER_SEGMENT)
        store.put_bytes(BUCKET, key, b"\n".join(lines), "application/x-ndjson")
        if told is not None:
            told(key)
    peers = PeerSync(store, BUCKET, prefix, pool, prediction_log, 3600.0, own)
    started = time.perf_counter()
    peers.sync()
    return time.perf_counter() - started


def _batch(n: int) -> PredictionBatch:
    rng = np.random.default_rng(n)
    return PredictionBatch(
        ids=tuple(str(ULID()) for _ in range(PER_LOG_OBJECT)),
        time=time.time(),
        model="bench",
        version="1",
        labels=tuple(str(i % 3) for i in range(PER_LOG_OBJECT)),
        probabilities=rng.dirichlet(np.ones(3), PER_LOG_OBJECT).astype(np.float32),
        embeddings=rng.standard_normal((PER_LOG_OBJECT, 8)).astype(np.float32),
        inputs=rng.random((PER_LOG_OBJECT, 4), dtype=np.float32),
        shape=(2, 2),
    )


def _sample(prediction_id: str) -> bytes:
    sample = samples.FeedbackSample(
        id=str(ULID()),
        input=[0.5, 0.25, 0.0, 1.0],
        shape=[2, 2],
        label="1",
        prediction_id=prediction_id,
        received_at=samples.rfc3339(time.time()),
    )
    return sample.model_dump_json(by_alias=True, exclude_none=True).encode()
