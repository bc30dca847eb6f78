"""A FeedbackDataset's objects in S3: sample keys, snapshot manifests, live accuracy.

The store port of reconcile.feedbackdataset, shared by the operator and the local mode. S3's
refusals (access denied, a missing bucket's neighbour errors) become `Unavailable` with reason
StorageError, so the dataset's status says what S3 said and the runtime retries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from minio.error import S3Error

from kubeloop.api.errors import Unavailable
from kubeloop.api.feedbackdataset import Storage
from kubeloop.api.samples import (
    LIVE_ACCURACY,
    SAMPLES,
    LiveAccuracy,
    SnapshotManifest,
    snapshot_key,
)
from kubeloop.storage import ObjectNotFound, ObjectStore

T = TypeVar("T")


class DatasetStore:
    """One FeedbackDataset's prefix in its bucket."""

    def __init__(self, store: ObjectStore, storage: Storage) -> None:
        self._store = store
        self._bucket = storage.bucket
        self._prefix = storage.prefix

    def list_sample_keys(self, start_after: str | None) -> list[str]:
        prefix = f"{self._prefix}{SAMPLES}"
        return _refused(lambda: self._store.list_keys(self._bucket, prefix, start_after))

    def read_manifest(self, generation: int) -> SnapshotManifest | None:
        key = snapshot_key(self._prefix, generation)
        try:
            raw = _refused(lambda: self._store.get_json(self._bucket, key))
        except ObjectNotFound:
            return None
        return SnapshotManifest.model_validate(raw)

    def write_manifest(self, manifest: SnapshotManifest) -> None:
        key = snapshot_key(self._prefix, manifest.generation)
        _refused(lambda: self._store.put_json(self._bucket, key, manifest.to_wire()))

    def live_accuracy(self) -> LiveAccuracy | None:
        """The predictors' record of predictions judged by feedback, or None before any."""
        key = f"{self._prefix}{LIVE_ACCURACY}"
        try:
            raw = _refused(lambda: self._store.get_json(self._bucket, key))
        except ObjectNotFound:
            return None
        return LiveAccuracy.model_validate(raw)


def _refused(call: Callable[[], T]) -> T:
    try:
        return call()
    except S3Error as error:
        raise Unavailable(
            f"S3 refused a request ({error.code}): {error.message}", reason="StorageError"
        ) from error
