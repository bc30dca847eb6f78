"""Objects a FeedbackDataset keeps in S3, and where each lives under the dataset's prefix.

    {prefix}samples/{ULID}.json           one feedback sample (FeedbackSample)
    {prefix}snapshots/gen-00001.json      a frozen snapshot (SnapshotManifest)
    {prefix}predictions/{ULID}.jsonl      a batch of logged predictions, one JSON per line
    {prefix}stats/live-accuracy.json      predictions judged by feedback, per model version

Sample keys are ULIDs, so lexical order is arrival order and a poll can list only the keys
after the last one it saw. No side effects here.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import Field

from kubeloop.api.common import ApiModel

SAMPLES = "samples/"
SNAPSHOTS = "snapshots/"
PREDICTIONS = "predictions/"
LIVE_ACCURACY = "stats/live-accuracy.json"


class FeedbackSample(ApiModel):
    """One labelled input sent back by a user."""

    id: str
    """ULID of the sample; also its key's name."""
    input: list[float]
    """The input, flattened in row-major order."""
    shape: list[int]
    """Shape of the input, e.g. [8, 8]."""
    label: str
    """Correct class, one of the dataset's classes."""
    slice: str | None = None
    """Slice or user tag, e.g. new-user."""
    prediction_id: str | None = None
    """Prediction this sample corrects or confirms."""
    predicted_label: str | None = None
    """What the model answered for that prediction, when known."""
    model_version: str | None = None
    """Model version that made that prediction, when known."""
    received_at: str
    """When the feedback API stored it (RFC 3339)."""


class SnapshotManifest(ApiModel):
    """The exact samples a retrain uses: every sample key up to the snapshot's cut."""

    dataset: str
    """FeedbackDataset name."""
    generation: int = Field(ge=1)
    """Snapshot number."""
    bucket: str
    """Bucket of the sample keys."""
    keys: list[str]
    """Sample keys, in arrival order."""
    created_at: str
    """When the snapshot was frozen (RFC 3339)."""


class VersionAccuracy(ApiModel):
    """Predictions of one model version that feedback judged."""

    judged: int = 0
    """Predictions that feedback named."""
    correct: int = 0
    """Of those, predictions whose label was right."""

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.judged if self.judged else None


class LiveAccuracy(ApiModel):
    """Live accuracy on feedback, per model version."""

    versions: dict[str, VersionAccuracy] = Field(default_factory=dict)
    """Model version -> judged and correct counts."""


def sample_key(prefix: str, sample_id: str) -> str:
    return f"{prefix}{SAMPLES}{sample_id}.json"


def snapshot_key(prefix: str, generation: int) -> str:
    return f"{prefix}{SNAPSHOTS}gen-{generation:05d}.json"


def predictions_key(prefix: str, batch_id: str) -> str:
    return f"{prefix}{PREDICTIONS}{batch_id}.jsonl"


def rfc3339(seconds: float) -> str:
    """Unix time as these objects write it: RFC 3339 in UTC, to the millisecond."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(text: str) -> float:
    """The Unix time an RFC 3339 timestamp names (the inverse of rfc3339)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
