"""No acknowledged sample is left out: counting and snapshots on the real S3 server, with
writes that land late and out of order while the FeedbackDataset polls and snapshots.

Once, keys whose ULID (made when the request arrived) sorted before one already counted were
never counted, and never snapshotted when they landed after a cut: 185 of 960 were lost with
16 writers of 0-40 ms latency. The reconcile here is the one both runtimes run, through the
real S3 store port; the objects are in memory.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
from ulid import ULID

from kubeloop.api.samples import FeedbackSample, sample_key, segment_key
from kubeloop.api.times import utc_now
from kubeloop.feedback_store import read_samples
from kubeloop.local.loop import LocalFeedbackStores
from kubeloop.reconcile import feedbackdataset
from kubeloop.storage import ObjectStore, S3Uri
from tests.memory_ports import Memory

pytestmark = pytest.mark.slow
BUCKET = "counting"


def dataset(prefix: str, threshold: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "FeedbackDataset",
        "metadata": {"name": "ds", "namespace": "default", "generation": 1, "uid": "u"},
        "spec": {
            "storage": {"bucket": BUCKET, "prefix": prefix},
            "classes": ["0", "1"],
            "retrain": {
                "threshold": threshold,
                "trainingTemplate": {
                    "plugin": {"name": "image-classifier"},
                    "datasets": [{"name": "base", "uri": "builtin://digits"}],
                    "registeredModel": "m",
                },
            },
        },
    }


def sample(sample_id: str) -> FeedbackSample:
    return FeedbackSample(id=sample_id, input=[0.0, 1.0], shape=[2], label="1", received_at="T")


class Dataset:
    """The FeedbackDataset's reconcile over the real S3 store, with objects in memory."""

    def __init__(self, store: ObjectStore, prefix: str, threshold: int) -> None:
        self.memory = Memory()
        self.ports = replace(self.memory.ports, feedback=LocalFeedbackStores(store))
        self.memory.objects.put(dataset(prefix, threshold))
        self.store = store

    def reconcile(self) -> None:
        body = self.memory.objects.items[("FeedbackDataset", "default", "ds")]
        feedbackdataset.reconcile(body, self.ports, utc_now())

    def status(self) -> dict[str, Any]:
        return self.memory.objects.status("FeedbackDataset", "ds")

    def snapshotted(self) -> Counter[str]:
        """Sample ids in the latest snapshot and every one before it."""
        snapshots = self.status().get("snapshots") or []
        if not snapshots:
            return Counter()
        found = read_samples(self.store, S3Uri.parse(snapshots[-1]["manifest"]))
        return Counter(s.id for _, s in found.samples)

    def drain(self) -> None:
        """Snapshot whatever is left: the threshold lowered to one sample."""
        body = self.memory.objects.items[("FeedbackDataset", "default", "ds")]
        body["spec"]["retrain"]["threshold"] = 1
        for _ in range(5):
            self.reconcile()
            if self.status()["samplesSinceSnapshot"] == 0:
                self.reconcile()  # the last snapshot's samples leave the inbox
                return
        raise AssertionError(f"samples are left: {self.status()}")


def test_a_write_held_back_past_a_poll_and_a_cut_is_counted_and_snapshotted(
    object_store: ObjectStore,
) -> None:
    object_store.ensure_bucket(BUCKET)
    prefix = f"held-{ULID()}/"
    ds = Dataset(object_store, prefix, threshold=2)
    early = str(ULID())  # its request arrived first; its write lands last
    time.sleep(0.002)
    later = [str(ULID()) for _ in range(2)]
    for sample_id in later:
        object_store.put_json(BUCKET, sample_key(prefix, sample_id), sample(sample_id).to_wire())
    ds.reconcile()  # counts 2 and cuts snapshot 1 without the early sample
    assert [s["samples"] for s in ds.status()["snapshots"]] == [2]
    object_store.put_json(BUCKET, sample_key(prefix, early), sample(early).to_wire())
    ds.reconcile()
    assert ds.status()["samplesSinceSnapshot"] == 1  # counted, though it sorts first
    ds.drain()
    assert ds.snapshotted() == Counter([*later, early])


def test_sixteen_slow_writers_and_a_fast_poll_lose_and_duplicate_nothing(
    object_store: ObjectStore,
) -> None:
    object_store.ensure_bucket(BUCKET)
    prefix = f"writers-{ULID()}/"
    ds = Dataset(object_store, prefix, threshold=40)
    acknowledged: list[str] = []
    lock = threading.Lock()
    done = threading.Event()

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(15):  # 16 writers x 15 segments x 4 samples = 960 samples
            ids = [str(ULID()) for _ in range(4)]  # made when the requests arrived
            time.sleep(rng.uniform(0.0, 0.04))  # the write lands 0-40 ms later
            body = b"\n".join(sample(i).model_dump_json(by_alias=True).encode() for i in ids)
            object_store.put_bytes(BUCKET, segment_key(prefix, ids[0], len(ids)), body)
            with lock:
                acknowledged.extend(ids)  # acknowledged only once S3 acknowledged the write

    def poller() -> None:
        while not done.is_set():
            ds.reconcile()
            time.sleep(0.05)

    polling = threading.Thread(target=poller)
    polling.start()
    writers = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(120)
    done.set()
    polling.join(60)
    ds.drain()
    snapshotted = ds.snapshotted()
    assert len(acknowledged) == 960
    assert set(snapshotted) == set(acknowledged), "an acknowledged sample is in no snapshot"
    assert max(snapshotted.values()) == 1, "a sample is in two snapshots"
    generations = [s["generation"] for s in ds.status()["snapshots"]]
    assert generations == list(range(1, len(generations) + 1))
    assert len(generations) >= 3  # snapshots were cut while writes were still landing
    assert ds.status()["samples"] == 960
    assert object_store.list_keys(BUCKET, f"{prefix}inbox/") == []
