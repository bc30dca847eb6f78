"""Objects a FeedbackDataset keeps in S3, and where each lives under the dataset's prefix.

    {prefix}inbox/{ULID}-{n}.jsonl        a segment: n samples acknowledged together, one
                                          FeedbackSample per line (what predictors write)
    {prefix}samples/{ULID}.json           one sample (FeedbackSample): a segment of its own
    {prefix}archive/gen-00001/{name}      the segments snapshot 1 moved out of the inbox
    {prefix}snapshots/gen-00001.json      a frozen snapshot (SnapshotManifest)
    {prefix}predictions/{ULID}.jsonl      a batch of logged predictions, one JSON per line
    {prefix}stats/live-accuracy/{W}.json  predictions judged by feedback, per model version,
                                          as predictor process W counted them
    {prefix}stats/live-accuracy.json      the same from predictors before per-process records
    {prefix}gold/{name}.json[l]           gold items: FeedbackSamples whose label is known,
                                          mixed into the review queue to score labellers
    {prefix}reviews/votes/{P}/{L}.json    with review.overlap k > 1: labeller L's label of
                                          prediction P (a FeedbackSample), until k agree
    {prefix}reviews/decisions/{P}.json    what P's votes came to (Decision)
    {prefix}reviews/gold-answers/{ULID}.json  a labeller's answer on a gold item (GoldAnswer)

Votes stay out of the inbox: only a label k labellers agreed on (or an adjudicator chose)
enters it, as the sample `{prefix}inbox/{P}-1.jsonl` whose id is P, so the item is one sample
however often it is decided. The inbox holds exactly the samples no snapshot has taken: a
snapshot takes everything in it and moves it to its archive, so counting and snapshotting
never depend on the order in which writes land (see reconcile.feedbackdataset). No side
effects here.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Literal

from pydantic import Field

from kubeloop.api.common import ApiModel
from kubeloop.api.times import format_time, parse_time

INBOX = "inbox/"
SAMPLES = "samples/"
ARCHIVE = "archive/"
SNAPSHOTS = "snapshots/"
PREDICTIONS = "predictions/"
LIVE_ACCURACY = "stats/live-accuracy.json"
LIVE_ACCURACY_BY_WRITER = "stats/live-accuracy/"
GOLD = "gold/"
VOTES = "reviews/votes/"
DECISIONS = "reviews/decisions/"
GOLD_ANSWERS = "reviews/gold-answers/"
_SEGMENT = re.compile(r"-(?P<count>[0-9]+)\.jsonl$")


class FeedbackSample(ApiModel):
    """One labelled input sent back by a user."""

    id: str
    """ULID of the sample."""
    input: list[float] | None = None
    """A tensor input, flattened in row-major order (or `image`)."""
    shape: list[int] = Field(default_factory=list)
    """Shape of the tensor input, e.g. [8, 8]."""
    image: str | None = None
    """An image input as it was sent (PNG or JPEG bytes, base64), instead of `input`."""
    content_type: str | None = None
    """The image's media type, e.g. image/jpeg."""
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
    labeller: str | None = None
    """Who labelled it: the name of the labeller's token, the trusted proxy's user, or the
    name the request gave; with review.overlap, the adjudicator (None when all agreed)."""
    agreed_by: list[str] = Field(default_factory=list)
    """With review.overlap: the labellers whose labels this label is."""
    received_at: str
    """When the feedback API stored it (RFC 3339)."""


class Decision(ApiModel):
    """What the votes of `review.overlap` labellers on one prediction came to."""

    prediction_id: str
    status: Literal["agreed", "disputed", "adjudicated"]
    """agreed: every label the same; disputed: waiting for an adjudicator; adjudicated: an
    adjudicator chose the label."""
    votes: dict[str, str]
    """Labeller -> label."""
    label: str | None = None
    """The label that entered the inbox; None while disputed."""
    adjudicator: str | None = None
    sample: FeedbackSample
    """One of the votes, whose input the adjudication view shows."""
    decided_at: str
    """RFC 3339."""


class GoldAnswer(ApiModel):
    """A labeller's label of a gold item, whose label is known."""

    gold_id: str
    labeller: str
    label: str
    gold_label: str
    answered_at: str
    """RFC 3339."""


class SnapshotManifest(ApiModel):
    """One snapshot: the segments it took from the inbox, and the snapshot before it.

    A retrain uses the snapshot and every earlier one (follow `previous`), so each manifest
    lists only its own segments: a million samples are not a million-key JSON per retrain.
    """

    dataset: str
    """FeedbackDataset name."""
    generation: int = Field(ge=1)
    """Snapshot number."""
    bucket: str
    """Bucket of the segments."""
    segments: list[str] = Field(default_factory=list)
    """This snapshot's own segments (archive keys)."""
    moved: list[str] = Field(default_factory=list)
    """Where they were in the inbox; deleted there once this snapshot is recorded."""
    samples: int = Field(default=0, ge=0)
    """Samples in this snapshot's own segments."""
    total: int = Field(default=0, ge=0)
    """Samples in this snapshot and every earlier one."""
    previous: str | None = None
    """URI of the manifest of the snapshot before this one; None for the first."""
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


def vote_key(prefix: str, prediction_id: str, labeller: str) -> str:
    """Where labeller's vote on a prediction lives: the name is hashed into a key."""
    digest = hashlib.sha256(labeller.encode()).hexdigest()[:24]
    return f"{prefix}{VOTES}{prediction_id}/{digest}.json"


def decision_key(prefix: str, prediction_id: str) -> str:
    return f"{prefix}{DECISIONS}{prediction_id}.json"


def gold_answer_key(prefix: str, answer_id: str) -> str:
    return f"{prefix}{GOLD_ANSWERS}{answer_id}.json"


def sample_key(prefix: str, sample_id: str) -> str:
    return f"{prefix}{SAMPLES}{sample_id}.json"


def segment_key(prefix: str, segment_id: str, count: int) -> str:
    """The inbox key of a segment of `count` samples: the count is in the name, so the inbox
    is counted from its listing alone."""
    return f"{prefix}{INBOX}{segment_id}-{count}.jsonl"


def samples_in(key: str) -> int:
    """Samples in the object at `key`: a segment says it in its name, a sample is one."""
    match = _SEGMENT.search(key)
    return int(match["count"]) if match else 1


def archive_key(prefix: str, generation: int, key: str) -> str:
    """Where snapshot `generation` keeps the inbox object `key`."""
    return f"{prefix}{ARCHIVE}gen-{generation:05d}/{key.rsplit('/', 1)[-1]}"


def snapshot_key(prefix: str, generation: int) -> str:
    return f"{prefix}{SNAPSHOTS}gen-{generation:05d}.json"


def predictions_key(prefix: str, batch_id: str) -> str:
    return f"{prefix}{PREDICTIONS}{batch_id}.jsonl"


def rfc3339(seconds: float) -> str:
    """Unix time as these objects write it: RFC 3339 in UTC, to the millisecond."""
    return format_time(datetime.fromtimestamp(seconds, UTC), "milliseconds")


def parse_rfc3339(text: str) -> float:
    """The Unix time an RFC 3339 timestamp names (the inverse of rfc3339)."""
    moment = parse_time(text)
    if moment is None:
        raise ValueError("an empty timestamp")
    return moment.timestamp()
