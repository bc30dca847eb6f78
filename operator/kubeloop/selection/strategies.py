"""Active-learning strategies: which logged predictions a person should label next.

Each strategy is one function `(pool, budget, options) -> indices` into the pool, most
valuable first, at most `budget` of them, never repeating one; `STRATEGIES` maps the names
of `FeedbackDataset.spec.review.strategy` (plus `time-sampled`) to them. All of them are
vectorised numpy over the whole pool; nothing here does I/O.

What each favours:

- random: nothing; an unbiased sample, the baseline every other strategy must beat.
- least-confidence: rows whose predicted class has the least probability.
- margin: rows whose two best classes are closest (the decision boundary between two).
- ratio: like margin, relative: runner-up / top, so 0.4 vs 0.5 ranks above 0.1 vs 0.2.
- entropy: rows whose mass is spread over many classes (confused across the board).
- k-center: coverage of the embedding space (greedy core-set): each pick is the row
  farthest from everything already picked or labelled, so outliers and unseen regions
  come first; it ignores uncertainty.
- k-means: representatives of the embedding space's dense modes: the row nearest each of
  `budget` centroids, biggest cluster first; typical cases, not outliers.
- every-nth: systematic checking, every Nth prediction in arrival order (N = pool / budget
  unless given), the most recent ones; unbiased over time, catches slow drift.
- time-sampled: one random prediction per time window (window = span / budget unless
  given), the most recent windows; unbiased over time even when traffic is bursty.
- confidence-threshold: the checking rule "review whatever the model was unsure of":
  rows below a confidence threshold, a random sample of them when they exceed the budget
  (least confident first in the answer), so every unsure case has the same chance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import threadpoolctl
from numpy.typing import NDArray

from kubeloop.selection import scores

Indices = NDArray[np.intp]
Floats = NDArray[np.floating]

_CENTRE_BLOCK = 64
"""Labelled rows per block of k-center's initial distances: N x 64 floats at a time."""


@dataclass(frozen=True)
class Pool:
    """The predictions to choose from: one row per prediction."""

    probabilities: Floats
    """(N, C) class probabilities."""
    embeddings: Floats | None = None
    """(N, D) embeddings; needed by k-center and k-means."""
    times: Floats | None = None
    """(N,) arrival times in seconds; row order is arrival order when omitted."""

    def __len__(self) -> int:
        return int(self.probabilities.shape[0])


@dataclass(frozen=True)
class Options:
    """Knobs of the strategies; each names the strategies that read it."""

    seed: int | None = None
    """Random seed (random, k-center without labelled rows, k-means, time-sampled,
    confidence-threshold); fresh randomness when omitted."""
    threshold: float = 0.5
    """confidence-threshold: review rows whose confidence is below this."""
    every: int | None = None
    """every-nth: N; pool size / budget when omitted."""
    offset: int = 0
    """every-nth: position of the first pick in arrival order."""
    interval_seconds: float | None = None
    """time-sampled: window length; time span / budget when omitted."""
    labeled: tuple[int, ...] | NDArray[np.integer] = ()
    """k-center: rows already labelled, the initial centres."""
    iterations: int = 10
    """k-means: Lloyd iterations at most."""
    sample_size: int = 10_000
    """k-means: rows the centroids are fitted on (a random subset of a bigger pool)."""
    chunk_rows: int = 8192
    """Rows per block of a distance matrix, bounding its memory."""


Strategy = Callable[[Pool, int, Options], Indices]


def random(pool: Pool, budget: int, options: Options) -> Indices:
    """A uniform sample without replacement."""
    rng = np.random.default_rng(options.seed)
    return rng.choice(len(pool), size=min(budget, len(pool)), replace=False).astype(np.intp)


def least_confidence(pool: Pool, budget: int, options: Options) -> Indices:
    """The rows with the lowest top probability."""
    return _largest(scores.least_confidence(pool.probabilities), budget)


def margin(pool: Pool, budget: int, options: Options) -> Indices:
    """The rows with the smallest gap between the two best classes."""
    return _largest(-scores.margin(pool.probabilities), budget)


def ratio(pool: Pool, budget: int, options: Options) -> Indices:
    """The rows with the highest runner-up / top ratio."""
    return _largest(scores.ratio(pool.probabilities), budget)


def entropy(pool: Pool, budget: int, options: Options) -> Indices:
    """The rows with the highest entropy."""
    return _largest(scores.entropy(pool.probabilities), budget)


def k_center(pool: Pool, budget: int, options: Options) -> Indices:
    """Greedy k-center (core-set): repeatedly the row farthest from every centre so far.

    O(budget * N * D): one matrix-vector product per pick updates each row's distance to
    its nearest centre, in place, on one BLAS thread. Without labelled rows the first centre
    is a random row.
    """
    x = _embeddings(pool, "k-center")
    n = len(x)
    budget = min(budget, n)
    if budget == 0:
        return np.empty(0, dtype=np.intp)
    norms = np.einsum("ij,ij->i", x, x)
    nearest = np.full(n, np.inf, dtype=np.float32)
    labeled = np.asarray(options.labeled, dtype=np.intp)
    if labeled.size:
        _check_indices(labeled, n, "labeled")
        for start in range(0, labeled.size, _CENTRE_BLOCK):
            block = labeled[start : start + _CENTRE_BLOCK]
            distances = _squared_distances(x, norms, x[block], norms[block], options.chunk_rows)
            np.minimum(nearest, distances.min(axis=1), out=nearest)
        nearest[labeled] = -np.inf  # never pick a labelled row
        pick = int(np.argmax(nearest))
    else:
        pick = int(np.random.default_rng(options.seed).integers(n))
    picked = np.empty(budget, dtype=np.intp)
    distances = np.empty(n, dtype=x.dtype)
    # One BLAS thread: each pick is one memory-bound matrix-vector product, which more
    # threads barely speed up on an idle machine and stall on a loaded one (bench/README.md).
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        for step in range(budget):
            picked[step] = pick
            np.matmul(x, x[pick], out=distances)
            distances *= -2.0
            distances += norms
            distances += norms[pick]
            np.minimum(nearest, distances, out=nearest)
            nearest[pick] = -np.inf  # picked rows stay at -inf: the minimum keeps them there
            pick = int(np.argmax(nearest))
            if not np.isfinite(nearest[pick]):  # every row picked or labelled
                return picked[: step + 1]
    return picked


def k_means(pool: Pool, budget: int, options: Options) -> Indices:
    """The row nearest each of `budget` k-means centroids, biggest cluster first.

    Centroids start from k-means++ and are refined by at most `iterations` Lloyd steps on
    at most `sample_size` rows; then each pool row joins its nearest centroid and every
    cluster offers its member closest to the centroid.
    """
    x = _embeddings(pool, "k-means")
    n = len(x)
    k = min(budget, n)
    if k == 0:
        return np.empty(0, dtype=np.intp)
    rng = np.random.default_rng(options.seed)
    fit = x if n <= options.sample_size else x[rng.choice(n, options.sample_size, replace=False)]
    fit_norms = np.einsum("ij,ij->i", fit, fit)
    centroids = _k_means_plus_plus(fit, fit_norms, k, rng)
    assignment = np.full(len(fit), -1, dtype=np.intp)
    for _ in range(options.iterations):
        centroid_norms = np.einsum("ij,ij->i", centroids, centroids)
        distances = _squared_distances(
            fit, fit_norms, centroids, centroid_norms, options.chunk_rows
        )
        new_assignment = distances.argmin(axis=1)
        if np.array_equal(new_assignment, assignment):
            break
        assignment = new_assignment
        counts = np.bincount(assignment, minlength=k)
        filled = counts > 0  # an empty cluster keeps its centroid
        # Per-cluster sums in one pass over the rows sorted by cluster (ufunc.at is slow).
        order = np.argsort(assignment, kind="stable")
        starts = (np.cumsum(counts) - counts)[filled]
        sums = np.add.reduceat(fit[order], starts, axis=0)
        centroids[filled] = sums / counts[filled, None]
    # Every pool row to its nearest centroid; each cluster's closest member represents it.
    norms = np.einsum("ij,ij->i", x, x)
    centroid_norms = np.einsum("ij,ij->i", centroids, centroids)
    distances = _squared_distances(x, norms, centroids, centroid_norms, options.chunk_rows)
    cluster = distances.argmin(axis=1)
    own = distances[np.arange(n), cluster]
    order = np.lexsort((own, cluster))  # by cluster, nearest member first
    first = np.unique(cluster[order], return_index=True)[1]
    representatives = order[first]
    sizes = np.bincount(cluster, minlength=k)[cluster[representatives]]
    picked = representatives[np.argsort(-sizes, kind="stable")]
    if len(picked) < k:  # clusters that got no pool row: fill with the least typical rows
        rest = np.setdiff1d(np.arange(n), picked, assume_unique=True)
        extra = rest[np.argsort(-own[rest], kind="stable")[: k - len(picked)]]
        picked = np.concatenate([picked, extra])
    return picked.astype(np.intp)


def every_nth(pool: Pool, budget: int, options: Options) -> Indices:
    """Every Nth row in arrival order from `offset`; the most recent `budget` of them."""
    n = len(pool)
    if budget <= 0 or n == 0:
        return np.empty(0, dtype=np.intp)
    step = options.every if options.every is not None else max(1, n // budget)
    if step < 1:
        raise ValueError(f"every must be at least 1, not {step}")
    picked = _arrival_order(pool)[options.offset :: step]
    return picked[-budget:].astype(np.intp)


def time_sampled(pool: Pool, budget: int, options: Options) -> Indices:
    """One random row per time window; the most recent `budget` windows, in time order."""
    n = len(pool)
    if budget <= 0 or n == 0:
        return np.empty(0, dtype=np.intp)
    times = (
        np.asarray(pool.times, dtype=np.float64)
        if pool.times is not None
        else np.arange(n, dtype=np.float64)
    )
    start, span = float(times.min()), float(np.ptp(times))
    interval = options.interval_seconds or (span / budget if span > 0 else 1.0)
    if interval <= 0:
        raise ValueError(f"interval_seconds must be positive, not {interval}")
    window = np.floor((times - start) / interval).astype(np.int64)
    rng = np.random.default_rng(options.seed)
    order = np.lexsort((rng.random(n), window))  # by window, random within it
    picked = order[np.unique(window[order], return_index=True)[1]]
    return picked[-budget:].astype(np.intp)


def confidence_threshold(pool: Pool, budget: int, options: Options) -> Indices:
    """Rows below the confidence threshold; a random sample when more than `budget`."""
    confidence = scores.confidence(pool.probabilities)
    below = np.flatnonzero(confidence < options.threshold)
    if len(below) > budget:
        below = np.random.default_rng(options.seed).choice(below, size=budget, replace=False)
    return below[np.argsort(confidence[below], kind="stable")].astype(np.intp)


STRATEGIES: dict[str, Strategy] = {
    "random": random,
    "least-confidence": least_confidence,
    "margin": margin,
    "ratio": ratio,
    "entropy": entropy,
    "k-center": k_center,
    "k-means": k_means,
    "every-nth": every_nth,
    "time-sampled": time_sampled,
    "confidence-threshold": confidence_threshold,
}
"""Strategy name -> function; the names of api.feedbackdataset.Strategy and time-sampled."""

EMBEDDING_STRATEGIES = frozenset({"k-center", "k-means"})
"""Strategies that read embeddings, which are only comparable within one model version."""

OPTION_NAMES = frozenset(f.name for f in fields(Options))


def select(
    strategy: str,
    probabilities: Floats,
    embeddings: Floats | None = None,
    budget: int = 50,
    *,
    times: Floats | None = None,
    **options: object,
) -> Indices:
    """Indices of at most `budget` rows of the pool to label, most valuable first.

    `options` are the fields of `Options` (seed, threshold, every, offset,
    interval_seconds, labeled, iterations, sample_size, chunk_rows). Raises ValueError
    naming the problem for an unknown strategy or option, or a malformed pool.
    """
    function = STRATEGIES.get(strategy)
    if function is None:
        raise ValueError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    if budget < 0:
        raise ValueError(f"budget must not be negative, not {budget}")
    unknown = sorted(set(options) - OPTION_NAMES)
    if unknown:
        raise ValueError(f"unknown options {unknown}; known: {', '.join(sorted(OPTION_NAMES))}")
    pool = _pool(probabilities, embeddings, times)
    return function(pool, budget, Options(**options))  # type: ignore[arg-type]  # checked names; values are the caller's


def _pool(probabilities: Floats, embeddings: Floats | None, times: Floats | None) -> Pool:
    p = np.asarray(probabilities)
    if p.ndim != 2:
        raise ValueError(f"probabilities must be (N, C), got shape {p.shape}")
    e = None
    if embeddings is not None:
        e = np.asarray(embeddings)
        if e.ndim != 2 or len(e) != len(p):
            raise ValueError(f"embeddings must be (N={len(p)}, D), got shape {e.shape}")
    t = None
    if times is not None:
        t = np.asarray(times)
        if t.shape != (len(p),):
            raise ValueError(f"times must be (N={len(p)},), got shape {t.shape}")
    return Pool(p, e, t)


def _largest(values: Floats, budget: int) -> Indices:
    """Indices of the `budget` largest values, largest first, ties by position."""
    n = len(values)
    budget = min(budget, n)
    if budget <= 0:
        return np.empty(0, dtype=np.intp)
    candidates = np.argpartition(-values, budget - 1)[:budget] if budget < n else np.arange(n)
    candidates.sort()  # ties keep pool order after the stable sort below
    return candidates[np.argsort(-values[candidates], kind="stable")].astype(np.intp)


def _embeddings(pool: Pool, strategy: str) -> NDArray[np.float32]:
    if pool.embeddings is None:
        raise ValueError(f"the {strategy} strategy needs embeddings")
    return np.ascontiguousarray(pool.embeddings, dtype=np.float32)


def _arrival_order(pool: Pool) -> Indices:
    if pool.times is None:
        return np.arange(len(pool), dtype=np.intp)
    return np.argsort(pool.times, kind="stable").astype(np.intp)


def _check_indices(indices: Indices, n: int, name: str) -> None:
    if indices.size and (indices.min() < 0 or indices.max() >= n):
        raise ValueError(f"{name} holds indices outside the pool of {n} rows")


def _squared_distances(
    x: NDArray[np.float32],
    x_norms: NDArray[np.float32],
    centres: NDArray[np.float32],
    centre_norms: NDArray[np.float32],
    chunk_rows: int,
) -> NDArray[np.float32]:
    """(len(x), len(centres)) squared euclidean distances, computed `chunk_rows` at a time."""
    out = np.empty((len(x), len(centres)), dtype=np.float32)
    for start in range(0, len(x), max(1, chunk_rows)):
        stop = start + max(1, chunk_rows)
        block = x_norms[start:stop, None] - 2.0 * (x[start:stop] @ centres.T)
        out[start:stop] = block + centre_norms[None, :]
    return out


def _k_means_plus_plus(
    x: NDArray[np.float32], norms: NDArray[np.float32], k: int, rng: np.random.Generator
) -> NDArray[np.float32]:
    """k initial centroids, each drawn with probability proportional to squared distance."""
    centroids = np.empty((k, x.shape[1]), dtype=np.float32)
    first = int(rng.integers(len(x)))
    centroids[0] = x[first]
    nearest = np.maximum(norms - 2.0 * (x @ x[first]) + norms[first], 0.0)
    for i in range(1, k):
        cumulative = np.cumsum(nearest, dtype=np.float64)
        total = float(cumulative[-1])
        # Inverse-CDF draw: rng.choice(p=...) would re-validate the distribution every step.
        draw = np.searchsorted(cumulative, rng.random() * total, side="right")
        pick = min(int(draw), len(x) - 1) if total > 0 else int(rng.integers(len(x)))
        centroids[i] = x[pick]
        distances = np.maximum(norms - 2.0 * (x @ x[pick]) + norms[pick], 0.0)
        np.minimum(nearest, distances, out=nearest)
    return centroids
