"""A FeedbackDataset's objects in S3: sample keys, snapshot manifests, live accuracy.

The S3 half of reconcile.feedbackdataset's ports, shared by the operator and the local mode;
each runtime adds the TrainingJob and ServedModel lookups of its own.
"""

from __future__ import annotations

from kubeloop.api.feedbackdataset import FeedbackDatasetSpec
from kubeloop.api.samples import (
    LIVE_ACCURACY,
    SAMPLES,
    LiveAccuracy,
    SnapshotManifest,
    snapshot_key,
)
from kubeloop.storage import ObjectNotFound, ObjectStore


class DatasetStore:
    """One FeedbackDataset's prefix in its bucket."""

    def __init__(self, store: ObjectStore, spec: FeedbackDatasetSpec) -> None:
        self._store = store
        self._bucket = spec.storage.bucket
        self._prefix = spec.storage.prefix

    def list_sample_keys(self, start_after: str | None) -> list[str]:
        return self._store.list_keys(self._bucket, f"{self._prefix}{SAMPLES}", start_after)

    def read_manifest(self, generation: int) -> SnapshotManifest | None:
        try:
            raw = self._store.get_json(self._bucket, snapshot_key(self._prefix, generation))
        except ObjectNotFound:
            return None
        return SnapshotManifest.model_validate(raw)

    def write_manifest(self, manifest: SnapshotManifest) -> None:
        key = snapshot_key(self._prefix, manifest.generation)
        self._store.put_json(self._bucket, key, manifest.to_wire())

    def live_accuracy(self) -> LiveAccuracy | None:
        """The predictors' record of predictions judged by feedback, or None before any."""
        try:
            raw = self._store.get_json(self._bucket, f"{self._prefix}{LIVE_ACCURACY}")
        except ObjectNotFound:
            return None
        return LiveAccuracy.model_validate(raw)
