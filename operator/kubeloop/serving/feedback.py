"""The feedback API's logic: validate a labelled input, store it, judge the prediction.

A request is a JSON object or a raw PNG body (its fields then come as query parameters):

    {"input": [[...], ...] | null, "image_png": "<base64>" | null, "label": "7",
     "prediction_id": "01J..." | null, "slice": "new-user" | null}

The input may be left out when `prediction_id` names a prediction this predictor holds (its
own, or another replica's read from the shared prediction log): the logged input is used. An
image is stored as it was sent (PNG bytes), not as floats. A sample is acknowledged only once
S3 has acknowledged the segment holding it (serving.segments: concurrent samples are written
together, api.samples.FeedbackSample per line); when storage is down the answer is 503 and
nothing is counted. Every refusal is a `Rejected` with an HTTP
status, a one-word reason (a metric label) and a message naming the problem; refusals are
counted (kubeloop_feedback_total) and answered by the HTTP layer. No HTTP here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import dataclasses
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from ulid import ULID

from kubeloop import metrics
from kubeloop.api import samples
from kubeloop.images import Preprocessing
from kubeloop.serving import inputs
from kubeloop.serving.consensus import Consensus
from kubeloop.serving.errors import Rejected as Rejected  # callers catch feedback.Rejected
from kubeloop.serving.errors import check_body_size
from kubeloop.serving.gold import GoldSet
from kubeloop.serving.live_accuracy import LiveAccuracy
from kubeloop.serving.prediction_pool import HeldPrediction, PredictionPool
from kubeloop.serving.segments import SegmentWriter
from kubeloop.storage import ObjectStore, StorageUnavailable

RETRY_AFTER_SECONDS = 5
_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
_FIELDS = {"input", "image_png", "label", "labeller", "prediction_id", "slice"}
_LABELLER = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
"""A labeller's name: 1 to 128 characters, no control characters."""
PAYLOAD_OPTION = "--max-payload-bytes"


@dataclass(frozen=True)
class Policy:
    """What a FeedbackDataset accepts."""

    dataset: str
    classes: tuple[str, ...]
    input_shape: tuple[int, ...] | None
    """None: the serving model's input shape."""
    slices: tuple[str, ...] = ()
    """Allowed slice tags; any tag when empty."""
    max_payload_bytes: int = 1 << 20


@dataclass(frozen=True)
class FeedbackRequest:
    """A validated request, before storage."""

    label: str
    input: NDArray[np.float32] | None
    prediction_id: str | None
    slice: str | None
    image: bytes | None = None
    """The image as it was sent (PNG or JPEG), stored instead of its floats."""
    content_type: str = "image/png"
    labeller: str | None = None
    """Who labelled it, as the request names them (credentials name them in `submit`)."""


def parse_json(
    body: bytes,
    policy: Policy,
    shape: tuple[int, ...],
    preprocessing: Preprocessing | None = None,
) -> FeedbackRequest:
    """A JSON feedback body; `shape` is the shape one input must have."""
    _check_size(len(body), policy)
    document = _json_object(body, "the body must be a JSON object")
    unknown = sorted(set(document) - _FIELDS)
    if unknown:
        raise Rejected(
            400, "bad-json", f"unknown fields {unknown}; known: {', '.join(sorted(_FIELDS))}"
        )
    fields = _fields(document.get("label"), document, policy)
    array: NDArray[np.float32] | None = None
    image: bytes | None = None
    try:
        if document.get("input") is not None and document.get("image_png") is not None:
            raise Rejected(422, "bad-shape", "give either input or image_png, not both")
        if document.get("input") is not None:
            array = inputs.one(document["input"], shape, field="input")
        elif document.get("image_png") is not None:
            image = _base64(document["image_png"])
            array = inputs.image(image, shape, preprocessing)
    except inputs.InputError as error:
        raise Rejected(_input_status(error), error.reason, str(error)) from None
    return FeedbackRequest(
        fields.label, array, fields.prediction_id, fields.slice, image, labeller=fields.labeller
    )


def parse_image(
    body: bytes,
    params: Mapping[str, str],
    policy: Policy,
    shape: tuple[int, ...],
    preprocessing: Preprocessing | None = None,
    content_type: str = "image/png",
) -> FeedbackRequest:
    """A raw image body (PNG; JPEG too for a model with a transform) with label,
    prediction_id and slice as query parameters."""
    _check_size(len(body), policy)
    fields = _fields(params.get("label"), params, policy)
    try:
        array = inputs.image(body, shape, preprocessing)
    except inputs.InputError as error:
        raise Rejected(_input_status(error), error.reason, str(error)) from None
    return FeedbackRequest(
        fields.label,
        array,
        fields.prediction_id,
        fields.slice,
        body,
        content_type,
        labeller=fields.labeller,
    )


def check_size(content_length: str | None, policy: Policy) -> None:
    """Refuse a body whose declared length exceeds the limit, before reading it."""
    if content_length is not None and content_length.isdigit():
        _check_size(int(content_length), policy)


class FeedbackService:
    """Stores validated feedback and judges the predictions it names."""

    def __init__(
        self,
        policy: Policy,
        store: ObjectStore,
        bucket: str,
        prefix: str,
        pool: PredictionPool,
        live_accuracy: LiveAccuracy,
        find_elsewhere: Callable[[str], Awaitable[HeldPrediction | None]] | None = None,
        write_timeout_seconds: float = 30.0,
        consensus: Consensus | None = None,
        gold: GoldSet | None = None,
        on_written: Callable[[str], None] | None = None,
    ) -> None:
        self.consensus = consensus
        """Votes, decisions and gold answers; with overlap k > 1 labels are votes until k
        agree."""
        self.gold = gold
        self.policy = policy
        self.bucket = bucket
        self.prefix = prefix
        self._store = store
        self._pool = pool
        self._live_accuracy = live_accuracy
        self._find_elsewhere = find_elsewhere
        self._timeout = write_timeout_seconds
        self._on_written = on_written
        """Told each segment's key once written (replicas.OwnWrites.add)."""
        self.writer = SegmentWriter(self._put, prefix)
        self._labelled: collections.Counter[tuple[str, str]] = collections.Counter()
        """(labeller, UTC day) -> samples this process stored for them."""

    async def receive(
        self,
        body: bytes,
        content_type: str,
        params: Mapping[str, str],
        model_shape: tuple[int, ...] | None,
        preprocessing: Preprocessing | None = None,
        labeller: str | None = None,
    ) -> dict[str, Any]:
        """A request as it came (a JSON or PNG body; `model_shape` is the serving version's
        input shape, None before one is loaded), validated and stored: the acknowledgement.
        `labeller`: who the request's credentials say sent it, which the body cannot change."""
        shape = expected_shape(self.policy, model_shape)
        media = content_type.split(";")[0].strip().lower()
        if media in ("image/png", "image/jpeg"):
            parsed = parse_image(body, params, self.policy, shape, preprocessing, media)
        elif media in ("application/json", ""):
            parsed = parse_json(body, self.policy, shape, preprocessing)
        else:
            raise Rejected(
                415,
                "unsupported-media-type",
                f"content type {media!r}: send application/json, image/png or image/jpeg",
            )
        if labeller is not None:
            parsed = dataclasses.replace(parsed, labeller=labeller)
        return await self.submit(parsed, shape)

    @contextlib.contextmanager
    def counting_refusals(self) -> Iterator[None]:
        """Count each Rejected raised in the block (kubeloop_feedback_total), then re-raise it."""
        try:
            yield
        except Rejected as error:
            self.reject(error)
            raise

    async def submit(self, request: FeedbackRequest, shape: tuple[int, ...]) -> dict[str, Any]:
        """Store the sample (inputs of `shape`); the acknowledgement names its key and the
        judgement, if any. An answer on a gold item scores its labeller instead, and with
        review overlap the sample is a vote (serving.consensus)."""
        gold = self.gold.find(request.prediction_id) if self.gold is not None else None
        if gold is not None:
            return await self._answer_gold(gold, request)
        logged = self._pool.find(request.prediction_id) if request.prediction_id else None
        if logged is None and request.prediction_id and self._find_elsewhere is not None:
            logged = await self._find_elsewhere(request.prediction_id)  # another replica's
        array = request.input
        if array is None:
            if logged is None:
                raise Rejected(
                    422,
                    "missing-input",
                    "no input given, and prediction_id names no prediction this predictor "
                    "still holds: send the input",
                )
            array = np.asarray(logged.input, dtype=np.float32)
            if array.size != int(np.prod(shape)):
                raise Rejected(
                    422,
                    "missing-input",
                    f"the logged input of {request.prediction_id} does not have shape "
                    f"{list(shape)}: send the input",
                )
            array = array.reshape(shape)
        image = request.image
        sample = samples.FeedbackSample(
            id=str(ULID()),
            input=None if image is not None else array.reshape(-1).tolist(),
            shape=[] if image is not None else list(array.shape),
            image=base64.b64encode(image).decode() if image is not None else None,
            content_type=request.content_type if image is not None else None,
            label=request.label,
            slice=request.slice,
            prediction_id=request.prediction_id,
            predicted_label=logged.predicted_label if logged else None,
            model_version=logged.model_version if logged else None,
            labeller=request.labeller,
            received_at=samples.rfc3339(time.time()),
        )
        if self.consensus is not None and self.consensus.overlap > 1:
            return await self._vote(sample, logged)
        with _storing(self._timeout):
            key = await self.writer.write(sample, self._timeout)
        correct: bool | None = None
        if logged is not None:
            correct = request.label == logged.predicted_label
            if not logged.reviewed:  # a prediction counts once, however often it is labelled
                self._live_accuracy.record(logged.model_version, correct)
                self._pool.mark_reviewed(logged.prediction_id)
        self._accepted(sample.labeller)
        return _ack(sample, self.bucket, key, correct)

    async def _vote(
        self, sample: samples.FeedbackSample, logged: HeldPrediction | None
    ) -> dict[str, Any]:
        """With review overlap: `sample` is its labeller's vote on its prediction."""
        assert self.consensus is not None
        if sample.labeller is None or sample.prediction_id is None:
            raise Rejected(
                422,
                "overlap-needs-labeller",
                f"review.overlap is {self.consensus.overlap}: each label needs the labeller "
                "who gave it (sign in on the review page, or send labeller) and the "
                "prediction_id it labels",
            )
        with _storing(self._timeout):
            outcome = await self.consensus.vote(sample)
        decided = outcome.decided
        correct: bool | None = None
        if decided is not None and logged is not None and not logged.reviewed:
            self._pool.mark_reviewed(logged.prediction_id)  # settled: it leaves the queues
            if decided.label is not None:
                correct = decided.label == logged.predicted_label
                self._live_accuracy.record(logged.model_version, correct)
        self._accepted(sample.labeller)
        key = samples.vote_key(self.prefix, sample.prediction_id, sample.labeller)
        return {**_ack(sample, self.bucket, key, correct), "review": outcome.as_json()}

    async def adjudicate(
        self, prediction_id: str, body: bytes, adjudicator: str | None
    ) -> dict[str, Any]:
        """Choose the label of a disputed item: `body` is {"label": ...}; the decision."""
        if self.consensus is None:
            raise Rejected(404, "no-overlap", f"{self.policy.dataset} keeps no review votes")
        document = _json_object(body, 'send {"label": CLASS, "labeller": NAME}')
        fields = _fields(document.get("label"), {"labeller": document.get("labeller")}, self.policy)
        who = adjudicator or fields.labeller
        if who is None:
            raise Rejected(422, "bad-labeller", "name the adjudicator: send labeller")
        with _storing(self._timeout):
            decision = await self.consensus.adjudicate(prediction_id, fields.label, who)
        held = decision.sample
        if held.model_version is not None and held.predicted_label is not None:
            self._live_accuracy.record(held.model_version, fields.label == held.predicted_label)
        self._accepted(who)
        return decision.to_wire()

    async def _answer_gold(
        self, gold: samples.FeedbackSample, request: FeedbackRequest
    ) -> dict[str, Any]:
        if request.labeller is None:
            raise Rejected(
                422, "bad-labeller", "this item scores labellers: send the labeller's name"
            )
        assert self.consensus is not None  # a gold set comes with one (serving.server)
        with _storing(self._timeout):
            answer = await self.consensus.answer_gold(gold, request.labeller, request.label)
        assert self.gold is not None
        self.gold.answered(request.labeller, gold.id)
        self._accepted(request.labeller)
        return {
            "id": None,
            "bucket": self.bucket,
            "key": None,
            "label": answer.label,
            "prediction_id": gold.id,
            "predicted_label": None,
            "model_version": None,
            "correct": None,
            "review": {"status": "gold"},
        }

    def _accepted(self, labeller: str | None) -> None:
        metrics.FEEDBACK.labels(dataset=self.policy.dataset, result="accepted", reason="ok").inc()
        if labeller is not None:
            self._labelled[(labeller, samples.rfc3339(time.time())[:10])] += 1

    async def progress(self, labeller: str | None, version: str | None) -> dict[str, Any]:
        """The review page's progress line: what `labeller` labelled today (through this
        replica), the samples waiting for the next snapshot (the inbox, all replicas'), and
        the live accuracy of `version`."""
        inbox = await asyncio.to_thread(
            self._store.list_keys, self.bucket, self.prefix + samples.INBOX
        )
        counts = self._live_accuracy.totals().versions.get(version or "")
        today = samples.rfc3339(time.time())[:10]
        return {
            "labeller": labeller,
            "labelled_today": self._labelled[(labeller, today)] if labeller else 0,
            "samples_since_snapshot": sum(samples.samples_in(k) for k in inbox),
            "model_version": version,
            "live_judged": counts.judged if counts else 0,
            "live_accuracy": counts.correct / counts.judged if counts and counts.judged else None,
        }

    def _put(self, key: str, body: bytes) -> None:
        """Blocking: store one segment; a missing bucket is created and the write retried."""
        try:
            self._store.put_bytes(self.bucket, key, body, "application/x-ndjson")
        except StorageUnavailable:
            raise
        except Exception:  # e.g. NoSuchBucket: nobody created it yet
            self._store.ensure_bucket(self.bucket)
            self._store.put_bytes(self.bucket, key, body, "application/x-ndjson")
        if self._on_written is not None:
            self._on_written(key)

    def reject(self, error: Rejected) -> None:
        """Count a refusal."""
        metrics.FEEDBACK.labels(
            dataset=self.policy.dataset, result="rejected", reason=error.reason
        ).inc()


def _ack(
    sample: samples.FeedbackSample, bucket: str, key: str, correct: bool | None
) -> dict[str, Any]:
    return {
        "id": sample.id,
        "bucket": bucket,
        "key": key,
        "label": sample.label,
        "prediction_id": sample.prediction_id,
        "predicted_label": sample.predicted_label,
        "model_version": sample.model_version,
        "correct": correct,
    }


@contextlib.contextmanager
def _storing(timeout: float) -> Iterator[None]:
    """Storage failures in the block as 503s: nothing stored, nothing acknowledged."""
    try:
        yield
    except Rejected:
        raise
    except TimeoutError:
        raise Rejected(
            503,
            "storage-timeout",
            f"the sample was not stored within {timeout:g}s, retry later",
            retry_after=RETRY_AFTER_SECONDS,
        ) from None
    except StorageUnavailable as error:
        raise Rejected(
            503,
            "storage-unavailable",
            f"the sample was not stored, retry later: {error}",
            retry_after=RETRY_AFTER_SECONDS,
        ) from None
    except Exception as error:  # e.g. a missing bucket: nothing stored, nothing acknowledged
        raise Rejected(
            503,
            "storage-error",
            f"the sample was not stored ({type(error).__name__}: {error})",
            retry_after=RETRY_AFTER_SECONDS,
        ) from None


def _fields(label: Any, fields: Mapping[str, Any], policy: Policy) -> FeedbackRequest:
    """Label, prediction id and slice checked; the input comes after."""
    if not isinstance(label, str) or not label:
        raise Rejected(422, "bad-label", "label is required: one of " + _listing(policy.classes))
    if label not in policy.classes:
        raise Rejected(
            422,
            "bad-label",
            f"label {label!r} is not one of the dataset's classes: {_listing(policy.classes)}",
        )
    prediction_id = fields.get("prediction_id")
    if prediction_id is not None and (
        not isinstance(prediction_id, str) or not _ULID.match(prediction_id)
    ):
        raise Rejected(
            422, "bad-prediction-id", f"prediction_id {prediction_id!r} is not a prediction id"
        )
    tag = fields.get("slice")
    if tag is not None and (not isinstance(tag, str) or not tag):
        raise Rejected(422, "bad-slice", "slice must be a non-empty string")
    if tag is not None and policy.slices and tag not in policy.slices:
        raise Rejected(422, "bad-slice", f"slice {tag!r} is not one of {_listing(policy.slices)}")
    labeller = fields.get("labeller")
    if labeller is not None and (not isinstance(labeller, str) or not _LABELLER.match(labeller)):
        raise Rejected(
            422, "bad-labeller", "labeller must be a name of 1 to 128 characters, no controls"
        )
    return FeedbackRequest(
        label=label, input=None, prediction_id=prediction_id, slice=tag, labeller=labeller
    )


def _check_size(size: int, policy: Policy) -> None:
    check_body_size(size, policy.max_payload_bytes, PAYLOAD_OPTION)


def _base64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise inputs.InputError("bad-image", "image_png must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise inputs.InputError("bad-image", "image_png is not valid base64") from None


def _input_status(error: inputs.InputError) -> int:
    return 400 if error.reason == "bad-image" else 422


def _listing(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:20])
    return shown + (f" ... ({len(names)} in all)" if len(names) > 20 else "")


def expected_shape(policy: Policy, model_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    """The shape feedback inputs must have: the dataset's, else the serving model's."""
    if policy.input_shape is not None:
        return policy.input_shape
    if model_shape is None:
        raise Rejected(
            503, "not-ready", "no model is loaded yet to tell the input shape", retry_after=2
        )
    return model_shape


def _json_object(body: bytes, not_an_object: str) -> dict[str, Any]:
    """`body` as a JSON object; Rejected (400 bad-json) when it is not JSON, or saying
    `not_an_object` when it is JSON of another kind."""
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise Rejected(400, "bad-json", f"the body is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise Rejected(400, "bad-json", not_an_object)
    return document
