"""The review queue and the similarity search over the pool of logged predictions.

The queue offers the predictions a person should label next, chosen by an active-learning
strategy (kubeloop.selection), each with the model's answer as a pre-annotation. Labelled
ones (feedback named them) leave the queue. Embeddings are only comparable within one
model version, so k-center, k-means and the similarity search look at the rows of one
version: the newest for the queue, the query's for the search. Selection runs in a worker
thread on a copy of the pool, so serving goes on meanwhile. An `audit_share` of each request
is drawn at random from the rest of the pool (marked `audit`) and spread through the queue:
random checking, so the live accuracy also measures the easy cases. A `gold_share` are gold
items (serving.gold), placed the same way; with review overlap, a labeller's queue leaves out
what they already voted on (serving.consensus). No HTTP here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np

from kubeloop import selection
from kubeloop.selection import scores
from kubeloop.serving.consensus import Consensus
from kubeloop.serving.errors import Rejected
from kubeloop.serving.gold import GoldSet
from kubeloop.serving.holder import LoadedModel
from kubeloop.serving.prediction_pool import PoolView, PredictionPool


class UnknownPrediction(Rejected, LookupError):
    """The prediction id is not (or no longer) in this predictor's pool (404)."""

    def __init__(self, message: str) -> None:
        super().__init__(404, "unknown-prediction", message)


class BadReviewRequest(Rejected, ValueError):
    """An unknown strategy or an option it refuses (400)."""

    def __init__(self, message: str) -> None:
        super().__init__(400, "bad-request", message)


class ReviewQueue:
    """Picks predictions to label from `pool`; with `gold`, a `gold_share` of gold items
    answered by `model()`, and with `consensus`, none its labeller already voted on."""

    def __init__(
        self,
        pool: PredictionPool,
        strategy: str,
        budget: int,
        audit_share: float = 0.0,
        consensus: Consensus | None = None,
        gold: GoldSet | None = None,
        gold_share: float = 0.0,
        model: Callable[[], LoadedModel | None] = lambda: None,
    ) -> None:
        self.pool = pool
        self.strategy = strategy
        self.budget = budget
        self.audit_share = audit_share
        self.consensus = consensus
        self.gold = gold
        self.gold_share = gold_share
        self.model = model

    async def select(
        self,
        strategy: str | None = None,
        budget: int | None = None,
        include_reviewed: bool = False,
        labeller: str | None = None,
        **options: object,
    ) -> dict[str, Any]:
        """Up to `budget` predictions for `labeller` to label, most useful first;
        BadReviewRequest for an unknown strategy or bad options."""
        strategy = strategy or self.strategy
        budget = self.budget if budget is None else budget
        if strategy not in selection.STRATEGIES:
            raise BadReviewRequest(
                f"unknown strategy {strategy!r}; known: {', '.join(selection.STRATEGIES)}"
            )
        view = self.pool.view(include_reviewed)
        voted = self.consensus.voted_by(labeller) if self.consensus else set()
        if voted and len(view):
            view = view.where(~np.isin(view.ids, np.array(sorted(voted), dtype=object)))
        if strategy in selection.EMBEDDING_STRATEGIES and len(view):
            view = view.where(view.versions == view.versions[-1])
        golden = round(budget * self.gold_share)
        gold = await self.gold.pick(golden, labeller, self.model()) if self.gold else []
        audits = min(round(budget * self.audit_share), len(view), budget - len(gold))
        if len(view) == 0:
            picked = np.empty(0, dtype=np.intp)
        else:
            try:
                picked = await asyncio.to_thread(
                    selection.select,
                    strategy,
                    view.probabilities,
                    view.embeddings,
                    budget - audits - len(gold),
                    times=view.times,
                    **options,
                )
            except ValueError as error:  # an option the strategy refuses, named by it
                raise BadReviewRequest(str(error)) from None
        rng = np.random.default_rng()
        audited = _audit(len(view), picked, audits, rng)
        queue = [{**item, "audit": False} for item in _items(view, picked)]
        extras = [{**item, "audit": True} for item in _items(view, audited)]
        extras += [{**item, **_uncertainty(item), "audit": False} for item in gold]
        extras = [extras[i] for i in rng.permutation(len(extras)).tolist()]
        places = _spread(len(queue) + len(extras), len(extras))
        for place, item in zip(places, extras, strict=True):
            queue.insert(place, item)
        for rank, item in enumerate(queue):
            item["rank"] = rank
        return {"strategy": strategy, "budget": budget, "pool": len(view), "items": queue}

    async def similar(self, prediction_id: str, k: int) -> dict[str, Any]:
        """The `k` logged predictions nearest to `prediction_id` by embedding, nearest first."""
        query = self.pool.find(prediction_id)
        if query is None:
            raise UnknownPrediction(
                f"prediction {prediction_id} is not in this predictor's pool (it holds the "
                f"latest {self.pool.capacity} predictions of this replica)"
            )
        view = self.pool.view(include_reviewed=True)
        view = view.where((view.versions == query.model_version) & (view.ids != prediction_id))
        distances, picked = await asyncio.to_thread(_nearest, view, query.embedding, k)
        items = _items(view, picked)
        for item, distance in zip(items, distances.tolist(), strict=True):
            item["distance"] = distance
        return {
            "prediction_id": prediction_id,
            "model_version": query.model_version,
            "predicted_label": query.predicted_label,
            "pool": len(view),
            "items": items,
        }


def _nearest(
    view: PoolView, embedding: np.ndarray[Any, Any], k: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Euclidean distances and indices of the k rows nearest `embedding`, nearest first."""
    if len(view) == 0 or k <= 0:
        return np.empty(0), np.empty(0, dtype=np.intp)
    difference = view.embeddings - embedding[None, :]
    squared = np.einsum("ij,ij->i", difference, difference)
    k = min(k, len(view))
    candidates = np.argpartition(squared, k - 1)[:k] if k < len(view) else np.arange(len(view))
    order = candidates[np.argsort(squared[candidates], kind="stable")]
    return np.sqrt(squared[order]), order


def _audit(
    size: int, picked: np.ndarray[Any, Any], count: int, rng: np.random.Generator
) -> np.ndarray[Any, Any]:
    """`count` rows of a pool of `size` drawn uniformly from those not `picked`."""
    rest = np.setdiff1d(np.arange(size), picked)
    return rng.choice(rest, size=min(count, len(rest)), replace=False)


def _spread(length: int, count: int) -> list[int]:
    """`count` places, ascending, spread evenly over a queue of `length` items."""
    return [int((j + 0.5) * length / count) for j in range(count)] if count else []


def _uncertainty(item: dict[str, Any]) -> dict[str, float]:
    probabilities = np.asarray([item["probabilities"]])
    return {
        "entropy": float(scores.entropy(probabilities)[0]),
        "margin": float(scores.margin(probabilities)[0]),
    }


def _items(view: PoolView, picked: np.ndarray[Any, Any]) -> list[dict[str, Any]]:
    if len(picked) == 0:
        return []
    probabilities = view.probabilities[picked]
    entropy = scores.entropy(probabilities).tolist()
    margin = scores.margin(probabilities).tolist()
    items = []
    for rank, i in enumerate(picked.tolist()):
        item = view.item(i)
        item.update(rank=rank, entropy=entropy[rank], margin=margin[rank])
        items.append(item)
    return items
