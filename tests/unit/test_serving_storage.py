"""The predictor's S3 side against a real S3 server: the prediction log is written in
batches and read back into the pool, live accuracy merges across restarts, and feedback is
acknowledged only once stored."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from kubeloop import feedback_store
from kubeloop.api import samples
from kubeloop.local import services
from kubeloop.serving import feedback
from kubeloop.serving.live_accuracy import LiveAccuracy
from kubeloop.serving.prediction_log import PredictionLog
from kubeloop.serving.prediction_pool import PredictionBatch, PredictionPool
from kubeloop.serving.replicas import OwnWrites, PeerSync
from kubeloop.storage import ObjectStore, StorageUnavailable
from tests.conftest import ACCESS_KEY, SECRET_KEY, unused_url
from tests.tcp_proxy import TcpProxy

BUCKET = "serving-test"


def batch(n: int, version: str = "1", start: int = 0) -> PredictionBatch:
    rng = np.random.default_rng(start)
    return PredictionBatch(
        ids=tuple(f"01J{start + i:023d}" for i in range(n)),
        time=1_700_000_000.0 + start,
        model="tiny",
        version=version,
        labels=tuple(str(i % 3) for i in range(n)),
        probabilities=rng.dirichlet(np.ones(3), n).astype(np.float32),
        embeddings=rng.standard_normal((n, 4)).astype(np.float32),
        inputs=rng.random((n, 4), dtype=np.float32),
        shape=(2, 2),
    )


def test_prediction_log_batches_and_reads_back(object_store: ObjectStore) -> None:
    object_store.ensure_bucket(BUCKET)
    log = PredictionLog(object_store, BUCKET, "log-test/", batch_size=10)
    for start in range(0, 25, 5):
        log.append(batch(5, start=start))
    assert log.flush() == 25
    keys = object_store.list_keys(BUCKET, "log-test/" + samples.PREDICTIONS)
    assert len(keys) == 3  # 10 + 10 + 5 records, not one object per request
    lines = object_store.get_bytes(BUCKET, keys[0]).decode().splitlines()
    first = json.loads(lines[0])
    assert set(first) == {
        "id", "time", "model", "modelVersion", "predictedLabel", "probabilities",
        "embedding", "input", "shape",
    }  # fmt: skip
    assert first["modelVersion"] == "1"
    assert len(first["embedding"]) == 4
    assert log.flush() == 0  # nothing new
    # Read back (everything is recent enough with a day's window), newest rows when limited.
    recent = log.read_recent(seconds=10**10, limit=12)
    pool = PredictionPool(100)
    for b in recent:
        pool.add(b)
    held = pool.view().ids.tolist()
    assert len(held) == 12
    assert held == [f"01J{i:023d}" for i in range(13, 25)]
    found = pool.find(held[0])
    assert found is not None
    assert found.shape == (2, 2)


def test_prediction_log_keeps_records_while_storage_is_down() -> None:
    dead = ObjectStore(unused_url(), ACCESS_KEY, SECRET_KEY, retries=0, timeout_seconds=1)
    log = PredictionLog(dead, BUCKET, "down/", batch_size=10, max_buffered=12)
    log.append(batch(5))
    with pytest.raises(StorageUnavailable):
        log.flush()
    log.append(batch(5, start=5))
    log.append(batch(5, start=10))  # over max_buffered: the oldest batch goes
    assert log.dropped == 5
    with pytest.raises(StorageUnavailable):
        log.flush()
    assert log._pending_rows == 10


def test_live_accuracy_merges_and_survives_restarts(object_store: ObjectStore) -> None:
    object_store.ensure_bucket(BUCKET)
    first = LiveAccuracy(object_store, BUCKET, "acc-test/", "tiny")
    first.load()
    for correct in (True, True, False):
        first.record("1", correct)
    assert first.flush()
    assert not first.flush()  # nothing pending
    # A restarted (or second) predictor writes its own record: nobody's counts are lost.
    second = LiveAccuracy(object_store, BUCKET, "acc-test/", "tiny")
    second.load()
    second.record("1", True)
    second.record("2", False)
    second.flush()
    assert first.key != second.key
    records = object_store.list_keys(BUCKET, "acc-test/" + samples.LIVE_ACCURACY_BY_WRITER)
    assert sorted(records) == sorted([first.key, second.key])
    stored = feedback_store.merged(
        [samples.LiveAccuracy.model_validate(object_store.get_json(BUCKET, k)) for k in records]
    )
    assert stored.versions["1"].judged == 4
    assert stored.versions["1"].correct == 3
    assert stored.versions["1"].accuracy == pytest.approx(0.75)
    assert stored.versions["2"].judged == 1
    assert second.totals().versions["1"].judged == 4


def test_live_accuracy_keeps_counts_when_a_flush_fails() -> None:
    dead = ObjectStore(unused_url(), ACCESS_KEY, SECRET_KEY, retries=0, timeout_seconds=1)
    live = LiveAccuracy(dead, BUCKET, "x/", "tiny")
    live.record("1", True)
    with pytest.raises(StorageUnavailable):
        live.flush()
    assert live.totals().versions["1"].judged == 1  # still pending, flushed next time


def service(store: ObjectStore, pool: PredictionPool) -> feedback.FeedbackService:
    policy = feedback.Policy("digits", ("0", "1", "2"), (2, 2))
    live = LiveAccuracy(store, BUCKET, "fb-test/", "tiny")
    return feedback.FeedbackService(policy, store, BUCKET, "fb-test/", pool, live)


@pytest.mark.asyncio
async def test_feedback_is_stored_then_acknowledged(object_store: ObjectStore) -> None:
    object_store.ensure_bucket(BUCKET)
    pool = PredictionPool(10)
    logged = batch(2)
    pool.add(logged)
    fb = service(object_store, pool)
    request = feedback.FeedbackRequest("2", None, logged.ids[0], "base")
    ack = await fb.submit(request, (2, 2))
    (line,) = object_store.get_bytes(BUCKET, ack["key"]).splitlines()  # its segment
    stored = samples.FeedbackSample.model_validate_json(line)
    assert ack["key"].startswith("fb-test/inbox/")
    assert samples.samples_in(ack["key"]) == 1
    assert stored.label == "2"
    assert stored.prediction_id == logged.ids[0]
    assert stored.predicted_label == logged.labels[0]
    assert stored.model_version == "1"
    assert stored.input == pytest.approx(logged.inputs[0].tolist())
    assert ack["correct"] is (logged.labels[0] == "2")
    assert logged.ids[0] not in pool.view().ids.tolist()  # reviewed: out of the queue
    with pytest.raises(feedback.Rejected, match="send the input") as missing:
        await fb.submit(
            feedback.FeedbackRequest("1", None, "01J9999999999999999999999Z", None), (2, 2)
        )
    assert missing.value.status == 422


@pytest.mark.asyncio
async def test_feedback_is_refused_with_retry_after_when_storage_is_down() -> None:
    dead = ObjectStore(unused_url(), ACCESS_KEY, SECRET_KEY, retries=0, timeout_seconds=1)
    pool = PredictionPool(10)
    pool.add(batch(1))
    fb = service(dead, pool)
    request = feedback.FeedbackRequest("1", None, batch(1).ids[0], None)
    with pytest.raises(feedback.Rejected) as refused:
        await asyncio.wait_for(fb.submit(request, (2, 2)), 30)
    assert (refused.value.status, refused.value.reason) == (503, "storage-unavailable")
    assert refused.value.retry_after == feedback.RETRY_AFTER_SECONDS
    assert fb._live_accuracy.totals().versions == {}  # nothing judged that was not stored


def test_a_write_retried_after_a_dropped_connection_is_whole(s3_server: services.Service) -> None:
    proxy = TcpProxy(s3_server.url)
    proxy.intercept("drop")  # reads the first request, body included, and hangs up on it
    try:
        store = ObjectStore(proxy.url, ACCESS_KEY, SECRET_KEY, retries=2, timeout_seconds=3)
        ObjectStore(s3_server.url, ACCESS_KEY, SECRET_KEY).ensure_bucket(BUCKET)
        log = PredictionLog(store, BUCKET, "retry-test/", batch_size=1000)
        log.append(batch(200))
        assert log.flush() == 200  # the first attempt was dropped, the retry sent everything
        assert proxy.intercepted == 1
        (key,) = store.list_keys(BUCKET, "retry-test/" + samples.PREDICTIONS)
        assert len(store.get_bytes(BUCKET, key).decode().splitlines()) == 200
    finally:
        proxy.close()


class _ReadsRecorded(ObjectStore):
    """The real store, recording the keys read from it."""

    def __init__(self, store: ObjectStore) -> None:
        super().__init__(store.endpoint, ACCESS_KEY, SECRET_KEY, retries=1)
        self.read: list[str] = []

    def get_bytes(self, bucket: str, key: str) -> bytes:
        self.read.append(key)
        return super().get_bytes(bucket, key)


@pytest.mark.asyncio
async def test_a_replica_reads_back_only_what_the_others_wrote(object_store: ObjectStore) -> None:
    object_store.ensure_bucket(BUCKET)
    prefix = "own-writes-test/"
    store = _ReadsRecorded(object_store)
    policy = feedback.Policy("digits", ("0", "1", "2"), (2, 2))
    live = LiveAccuracy(store, BUCKET, prefix, "tiny")
    own, pool, theirs_pool = OwnWrites(), PredictionPool(100), PredictionPool(100)
    mine, theirs = batch(3, start=0), batch(3, start=10)
    pool.add(mine)
    theirs_pool.add(theirs)
    log = PredictionLog(store, BUCKET, prefix, batch_size=10, on_written=own.add)
    log.append(mine)
    log.flush()
    (my_log,) = object_store.list_keys(BUCKET, prefix + samples.PREDICTIONS)
    fb = feedback.FeedbackService(
        policy, store, BUCKET, prefix, pool, live, on_written=own.add
    )  # this replica
    await fb.submit(feedback.FeedbackRequest("2", None, mine.ids[0], "base"), (2, 2))
    other_log = PredictionLog(object_store, BUCKET, prefix, batch_size=10)  # another replica
    other_log.append(theirs)
    other_log.flush()
    other_fb = feedback.FeedbackService(policy, object_store, BUCKET, prefix, theirs_pool, live)
    other_ack = await other_fb.submit(
        feedback.FeedbackRequest("1", None, theirs.ids[1], None), (2, 2)
    )
    assert own.unlisted() == 2  # its log object and its segment
    peers = PeerSync(store, BUCKET, prefix, pool, log, window_seconds=3600.0, own=own)
    store.read.clear()
    assert peers.sync() == 3  # the other replica's predictions
    assert theirs.ids[1] not in pool.view().ids.tolist()  # labelled there: out of this queue
    (their_log,) = set(object_store.list_keys(BUCKET, prefix + samples.PREDICTIONS)) - {my_log}
    assert sorted(store.read) == sorted([their_log, other_ack["key"]])  # nothing of its own
    assert own.unlisted() == 0  # forgotten once listed
