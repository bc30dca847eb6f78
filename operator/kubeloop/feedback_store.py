"""A FeedbackDataset's objects in S3 (api.samples): its inbox, snapshots, live accuracy.

`DatasetStore` is the store port of reconcile.feedbackdataset, shared by the operator and the
local mode; S3's refusals (access denied, say) become `Unavailable` with reason StorageError,
so the dataset's status says what S3 said and the runtime retries. `read_samples` is how the
trainer reads a snapshot and every one before it.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from minio.error import S3Error
from pydantic import ValidationError

from kubeloop.api.errors import Unavailable
from kubeloop.api.feedbackdataset import Storage
from kubeloop.api.samples import (
    ARCHIVE,
    INBOX,
    LIVE_ACCURACY,
    LIVE_ACCURACY_BY_WRITER,
    SAMPLES,
    FeedbackSample,
    LiveAccuracy,
    SnapshotManifest,
    VersionAccuracy,
    archive_key,
    snapshot_key,
)
from kubeloop.storage import ObjectNotFound, ObjectStore, S3Uri

T = TypeVar("T")


class DatasetStore:
    """One FeedbackDataset's prefix in its bucket."""

    def __init__(self, store: ObjectStore, storage: Storage) -> None:
        self._store = store
        self._bucket = storage.bucket
        self._prefix = storage.prefix

    def list_inbox(self) -> list[str]:
        """Every segment in the inbox and every single sample (older writers' format)."""
        return self._list(INBOX) + self._list(SAMPLES)

    def archive(self, keys: list[str], generation: int) -> list[str]:
        """Copy `keys` to snapshot `generation`'s archive, eight at a time."""
        targets = [archive_key(self._prefix, generation, k) for k in keys]

        def copy(source: str, target: str) -> None:
            _refused(lambda: self._store.copy(self._bucket, source, target))

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(copy, keys, targets))
        return targets

    def delete(self, keys: list[str]) -> None:
        if keys:
            _refused(lambda: self._store.delete(self._bucket, keys))

    def read_manifest(self, generation: int) -> SnapshotManifest | None:
        try:
            raw = self._get(snapshot_key(self._prefix, generation))
        except ObjectNotFound:
            return None
        return SnapshotManifest.model_validate(raw)

    def write_manifest(self, manifest: SnapshotManifest) -> None:
        key = snapshot_key(self._prefix, manifest.generation)
        _refused(lambda: self._store.put_json(self._bucket, key, manifest.to_wire()))

    def live_accuracy(self) -> LiveAccuracy | None:
        """The predictors' records of predictions judged by feedback, summed over every
        predictor process (each writes its own: no update is lost); None before any."""
        found = []
        for key in [*self._list(LIVE_ACCURACY_BY_WRITER), self._prefix + LIVE_ACCURACY]:
            try:
                found.append(LiveAccuracy.model_validate(self._get(key)))
            except ObjectNotFound:
                continue
        return merged(found) if found else None

    def _list(self, folder: str) -> list[str]:
        return _refused(lambda: self._store.list_keys(self._bucket, self._prefix + folder))

    def _get(self, key: str) -> Any:
        return _refused(lambda: self._store.get_json(self._bucket, key))


def merged(records: list[LiveAccuracy]) -> LiveAccuracy:
    """The sum of several predictors' live-accuracy records."""
    total: dict[str, VersionAccuracy] = {}
    for record in records:
        for version, counts in record.versions.items():
            into = total.setdefault(version, VersionAccuracy())
            into.judged += counts.judged
            into.correct += counts.correct
    return LiveAccuracy(versions=total)


def _refused(call: Callable[[], T]) -> T:
    try:
        return call()
    except S3Error as error:
        raise Unavailable(
            f"S3 refused a request ({error.code}): {error.message}", reason="StorageError"
        ) from error


@dataclass(frozen=True)
class Samples:
    """The samples a dataset URI names, in the order they were snapshotted."""

    bucket: str
    generation: int | None
    """The snapshot's generation, when the URI names a snapshot manifest."""
    samples: list[tuple[str, FeedbackSample]]
    """(the key it was read from, the sample)."""


def read_samples(store: ObjectStore, uri: S3Uri) -> Samples:
    """A snapshot manifest's samples and those of every snapshot before it (the chain of
    `previous`), or, for a dataset prefix (s3://bucket/prefix/), every sample under it.
    A sample id read twice is one sample, the first read (an item decided by review overlap
    on two replicas at once is written twice under its prediction's id).

    ObjectNotFound, UnreadableSample and (for a manifest) pydantic's ValidationError go to
    the caller.
    """
    if uri.key.endswith(".json"):
        chain = [SnapshotManifest.model_validate(store.get_json(uri.bucket, uri.key))]
        while chain[-1].previous is not None:
            previous = S3Uri.parse(chain[-1].previous)
            chain.append(
                SnapshotManifest.model_validate(store.get_json(previous.bucket, previous.key))
            )
        bucket, generation = chain[0].bucket, chain[0].generation
        keys = [key for manifest in reversed(chain) for key in manifest.segments]
    else:
        prefix = uri.key if uri.key.endswith("/") or not uri.key else uri.key + "/"
        bucket, generation = uri.bucket, None
        keys = [k for f in (ARCHIVE, INBOX, SAMPLES) for k in store.list_keys(bucket, prefix + f)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        read = list(pool.map(lambda key: _samples_of(store, bucket, key), keys))
    first: dict[str, tuple[str, FeedbackSample]] = {}
    for key, sample in (pair for part in read for pair in part):
        first.setdefault(sample.id, (key, sample))
    return Samples(bucket, generation, list(first.values()))


class UnreadableSample(ValueError):
    """An object where samples are kept holds something else; the message names it."""


def _samples_of(store: ObjectStore, bucket: str, key: str) -> list[tuple[str, FeedbackSample]]:
    data = store.get_bytes(bucket, key)
    lines = data.splitlines() if key.endswith(".jsonl") else [data]
    found = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            found.append((key, FeedbackSample.model_validate_json(line)))
        except ValidationError as error:
            where = f"s3://{bucket}/{key}" + (f" line {number}" if len(lines) > 1 else "")
            raise UnreadableSample(f"{where} is not a feedback sample: {error}") from None
    return found
