"""Review overlap and gold answers, kept in S3 so every replica sees the same votes.

With `review.overlap: k > 1` a label from the review queue is a vote
(api.samples.vote_key, one per labeller and prediction: a labeller who labels again changes
their vote). Once k labellers have voted, agreement.decide settles the item: agreeing votes
become one sample in the inbox (id and key from the prediction's id, so deciding twice
writes the same sample), a disagreement waits in the adjudication view until someone
chooses the label. The inbox sample is written before the decision, so a crash between the
two decides again at the next vote instead of losing the label. Gold answers (labels of
items whose label is known) are recorded to score their labellers. `quality` summarizes
all of it (agreement.summarize). No HTTP here: refusals are `Rejected`.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass

from ulid import ULID

from kubeloop import agreement, metrics
from kubeloop.api import samples
from kubeloop.api.samples import Decision, FeedbackSample, GoldAnswer
from kubeloop.serving.errors import Rejected
from kubeloop.storage import ObjectNotFound, ObjectStore

_REMEMBERED = 100_000
"""Predictions whose voters this replica remembers, for the queue to skip them."""


@dataclass(frozen=True)
class Outcome:
    """Where a vote left its item."""

    status: agreement.Status | str
    """pending, agreed, disputed, or (a vote after the item was settled) its decision's."""
    votes: int
    overlap: int
    decided: Decision | None = None

    def as_json(self) -> dict[str, object]:
        return {"status": self.status, "votes": self.votes, "overlap": self.overlap}


class Consensus:
    """Votes, decisions and gold answers of one dataset."""

    def __init__(
        self, store: ObjectStore, bucket: str, prefix: str, dataset: str, overlap: int
    ) -> None:
        self.overlap = overlap
        self.dataset = dataset
        self._store = store
        self._bucket = bucket
        self._prefix = prefix
        self._voters: collections.OrderedDict[str, set[str]] = collections.OrderedDict()
        self._settled: dict[str, Decision] = {}
        """Decision key -> agreed or adjudicated decision: they do not change again."""
        self._answers: dict[str, GoldAnswer] = {}

    def voted_by(self, labeller: str | None) -> set[str]:
        """Predictions `labeller` voted on through this replica (their queue skips them)."""
        if labeller is None:
            return set()
        return {p for p, voters in self._voters.items() if labeller in voters}

    async def vote(self, sample: FeedbackSample) -> Outcome:
        """Record `sample` (with a labeller and a prediction id) as a vote; settle its item
        when `overlap` labellers have voted."""
        assert sample.labeller is not None
        assert sample.prediction_id is not None
        outcome = await asyncio.to_thread(self._vote, sample)
        voters = self._voters.setdefault(sample.prediction_id, set())
        voters.add(sample.labeller)
        self._voters.move_to_end(sample.prediction_id)
        while len(self._voters) > _REMEMBERED:
            self._voters.popitem(last=False)
        if outcome.decided is not None and outcome.status in ("agreed", "disputed"):
            metrics.REVIEW_DECISIONS.labels(self.dataset, outcome.status).inc()
        return outcome

    def _vote(self, sample: FeedbackSample) -> Outcome:
        pid = sample.prediction_id or ""
        settled = self._decision(pid)
        if settled is not None:
            return Outcome(settled.status, len(settled.votes), self.overlap)
        put = sample.model_dump(by_alias=True, exclude_none=True, mode="json")
        self._store.put_json(
            self._bucket, samples.vote_key(self._prefix, pid, sample.labeller or ""), put
        )
        keys = self._store.list_keys(self._bucket, f"{self._prefix}{samples.VOTES}{pid}/")
        if len(keys) < self.overlap:
            return Outcome("pending", len(keys), self.overlap)
        cast = [FeedbackSample.model_validate(self._get(k)) for k in keys]
        votes = {v.labeller or "": v.label for v in cast}
        verdict = agreement.decide(votes, self.overlap)
        decision = Decision(
            prediction_id=pid,
            status="disputed" if verdict.label is None else "agreed",
            votes=votes,
            label=verdict.label,
            sample=sample,
            decided_at=samples.rfc3339(time.time()),
        )
        if verdict.label is not None:
            self._settle(decision, sample, verdict.label, None)
        else:
            self._store.put_json(self._bucket, self._decision_key(pid), decision.to_wire())
        return Outcome(decision.status, len(votes), self.overlap, decision)

    async def disputes(self) -> list[Decision]:
        """The disputed items, oldest first."""
        return await asyncio.to_thread(self._disputes)

    def _disputes(self) -> list[Decision]:
        decided = self._decisions()
        return sorted((d for d in decided if d.status == "disputed"), key=lambda d: d.decided_at)

    async def adjudicate(self, prediction_id: str, label: str, adjudicator: str) -> Decision:
        """Settle a disputed item with `label`; Rejected (404/409) when it is not disputed."""
        return await asyncio.to_thread(self._adjudicate, prediction_id, label, adjudicator)

    def _adjudicate(self, prediction_id: str, label: str, adjudicator: str) -> Decision:
        decision = self._decision(prediction_id)
        if decision is None:
            raise Rejected(
                404, "not-disputed", f"prediction {prediction_id} has no disputed labels"
            )
        if decision.status != "disputed":
            raise Rejected(
                409,
                "already-decided",
                f"prediction {prediction_id} was already {decision.status} as {decision.label!r}",
            )
        settled = decision.model_copy(
            update={
                "status": "adjudicated",
                "label": label,
                "adjudicator": adjudicator,
                "decided_at": samples.rfc3339(time.time()),
            }
        )
        self._settle(settled, decision.sample, label, adjudicator)
        metrics.REVIEW_DECISIONS.labels(self.dataset, "adjudicated").inc()
        return settled

    def _settle(
        self, decision: Decision, vote: FeedbackSample, label: str, adjudicator: str | None
    ) -> None:
        """Write the item's one sample into the inbox, then its decision."""
        pid = decision.prediction_id
        sample = vote.model_copy(
            update={
                "id": pid,
                "label": label,
                "labeller": adjudicator,
                "agreed_by": sorted(n for n, given in decision.votes.items() if given == label),
                "received_at": decision.decided_at,
            }
        )
        line = sample.model_dump_json(by_alias=True, exclude_none=True).encode() + b"\n"
        key = samples.segment_key(self._prefix, pid, 1)
        self._store.put_bytes(self._bucket, key, line, "application/x-ndjson")
        self._store.put_json(self._bucket, self._decision_key(pid), decision.to_wire())
        self._settled[self._decision_key(pid)] = decision

    async def answer_gold(self, gold: FeedbackSample, labeller: str, label: str) -> GoldAnswer:
        """Record `labeller`'s `label` of the gold item `gold`."""
        answer = GoldAnswer(
            gold_id=gold.id,
            labeller=labeller,
            label=label,
            gold_label=gold.label,
            answered_at=samples.rfc3339(time.time()),
        )
        key = samples.gold_answer_key(self._prefix, str(ULID()))
        await asyncio.to_thread(self._store.put_json, self._bucket, key, answer.to_wire())
        self._answers[key] = answer
        return answer

    async def quality(self) -> agreement.Quality:
        """The dataset's label quality, from every replica's records; sets the gauges."""
        decided, answers = await asyncio.to_thread(self._records)
        quality = agreement.summarize(
            (agreement.Decided(d.votes, d.label) for d in decided),
            (agreement.GoldAnswer(a.labeller, a.label, a.gold_label) for a in answers),
        )
        _export(self.dataset, quality)
        return quality

    def _records(self) -> tuple[list[Decision], list[GoldAnswer]]:
        keys = self._store.list_keys(self._bucket, self._prefix + samples.GOLD_ANSWERS)
        for key in keys:
            if key not in self._answers:
                self._answers[key] = GoldAnswer.model_validate(self._get(key))
        return self._decisions(), [self._answers[k] for k in keys if k in self._answers]

    def _decisions(self) -> list[Decision]:
        keys = self._store.list_keys(self._bucket, self._prefix + samples.DECISIONS)
        found = []
        for key in keys:
            decision = self._settled.get(key) or Decision.model_validate(self._get(key))
            if decision.status != "disputed":
                self._settled[key] = decision
            found.append(decision)
        return found

    def _decision(self, prediction_id: str) -> Decision | None:
        key = self._decision_key(prediction_id)
        if key in self._settled:
            return self._settled[key]
        try:
            return Decision.model_validate(self._get(key))
        except ObjectNotFound:
            return None

    def _decision_key(self, prediction_id: str) -> str:
        return samples.decision_key(self._prefix, prediction_id)

    def _get(self, key: str) -> object:
        return self._store.get_json(self._bucket, key)


def _export(dataset: str, quality: agreement.Quality) -> None:
    """Set the review quality gauges (an undefined value is left out, not exported as 0)."""
    for name, mine in quality.labellers.items():
        if mine.agreement is not None:
            metrics.REVIEW_AGREEMENT.labels(dataset, name).set(mine.agreement)
        if mine.gold_accuracy is not None:
            metrics.REVIEW_GOLD_ACCURACY.labels(dataset, name).set(mine.gold_accuracy)
    cohen = [k for k in quality.cohen_kappa.values() if k is not None]
    for statistic, value in (
        ("fleiss", quality.fleiss_kappa),
        ("cohen", sum(cohen) / len(cohen) if cohen else None),
    ):
        if value is not None:
            metrics.REVIEW_KAPPA.labels(dataset, statistic).set(value)
