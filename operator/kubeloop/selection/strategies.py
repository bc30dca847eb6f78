"""Active-learning strategies: which logged predictions a person should label next.

Each strategy is one function `(pool, budget, options) -> indices` into the pool, most
valuable first, at most `budget` of them, never repeating one; `STRATEGIES` maps the names
of `FeedbackDataset.spec.review.strategy` (plus `time-sampled`) to them. All of them are
vectorised numpy over the whole pool (k-center: a numba-compiled loop); nothing here
does I/O.

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

import functools
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import threadpoolctl
from numpy.typing import NDArray

from kubeloop.selection import scores

Indices = NDArray[np.intp]
Floats = NDArray[np.floating]

_LEAD = 8
"""k-center: leading (principal) columns kept beside each row in its centre's segment:
most rows are ruled out by these alone, without reading the row itself."""
_CELLS = 128
"""k-center: the first centres double as a fixed coarse index over the pool; each new
centre measures its distance to these, and from it bounds its distance to every later
centre, so most clusters are ruled out without touching their centre."""


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

    The farthest-point (Gonzalez) greedy with triangle-inequality pruning, compiled by
    numba on one thread (`_k_center_greedy`). Every row remembers its nearest centre;
    a new centre c can only take row x from centre a if d(a, c) < 2 d(x, a), so whole
    clusters, and most rows of the rest, are skipped once the radii shrink. Distances are
    sums of squared differences in float64, so the picks are the textbook greedy's (ties
    to the lowest row). Memory: the pool once more in float64, plus ~200 bytes a row.
    Labelled rows are the initial centres and never picked; without them the first
    centre is a random row.
    """
    x = _embeddings(pool, "k-center")
    n = len(x)
    budget = min(budget, n)
    if budget == 0:
        return np.empty(0, dtype=np.intp)
    labeled = np.unique(np.asarray(options.labeled, dtype=np.int64))
    _check_indices(labeled, n, "labeled")
    first = -1 if labeled.size else int(np.random.default_rng(options.seed).integers(n))
    picked = _compiled_k_center()(_principal_axes(x), labeled, first, budget, _CELLS)
    return picked.astype(np.intp)


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


@functools.cache
def _compiled_k_center() -> Callable[..., NDArray[np.int64]]:
    """`_k_center_greedy` compiled by numba, on first use: importing numba takes ~0.4 s,
    and cache=True keeps the machine code on disk, so compiling is paid once per machine."""
    import numba

    compiled: Callable[..., NDArray[np.int64]] = numba.njit(
        cache=True, nogil=True, fastmath={"reassoc", "contract"}
    )(_k_center_greedy)
    return compiled


def compile_k_center() -> None:
    """Compile k-center's loop now (seconds on a machine without numba's cache of it), so
    that the first k-center selection does not wait for it."""
    rows = np.random.default_rng(0).random((16, 4), dtype=np.float32)
    k_center(Pool(rows[:, :2], rows, None), 4, Options())


def _principal_axes(x: NDArray[np.float32]) -> NDArray[np.float64]:
    """x centred and rotated onto its principal axes, in float64 (zero columns added up to
    _LEAD): distances are unchanged up to rounding, and the first columns carry most of
    them (93% of the digits model's in the first 8 of 64), so a sum of squares over the
    first _LEAD columns alone rules most rows out."""
    rows = x.astype(np.float64)
    rows -= rows.mean(axis=0)
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):  # as steady as the rest
        sample = rows[:: max(1, len(rows) // 50_000)]
        _, axes = np.linalg.eigh(sample.T @ sample)
        rotated = rows @ axes[:, ::-1]
    if rotated.shape[1] < _LEAD:
        rotated = np.pad(rotated, ((0, 0), (0, _LEAD - rotated.shape[1])))
    return np.ascontiguousarray(rotated)


def _k_center_greedy(
    x: NDArray[np.float64], labeled: NDArray[np.int64], first: int, budget: int, cells: int
) -> NDArray[np.int64]:
    """Farthest-point greedy over the rows of x: up to `budget` picks, in order.

    Written for numba (plain loops, one thread). The labelled rows, then each pick, are
    added as centres ("slots"). Each row keeps its squared distance to its centre
    (`nearest`, -inf for centres) and sits in that slot's contiguous segment of
    `member_*` (with its first _LEAD columns, so most checks read no row of x); each
    slot keeps its radius (largest distance) and the row that has it, and a tournament
    tree over the slots yields the farthest row of all (ties: the lowest row), the next
    pick. Triangle inequality: a new centre c, at distance D from slot a, can only take
    row x of a if D < 2 d(x, a); so a slot is skipped when D >= 2 radius(a), a row when
    D >= 2 d(x, a). D itself is bounded first through `cells` coarse centres, the first
    slots: with g the coarse centre nearest a's row when that index was frozen,
    D >= |d(c, g) - d(a, g)|, and each coarse cell keeps its slots sorted by d(a, g), so
    only an annulus of them is read. Distances are sums of squares in float64; every
    bound keeps a relative slack of 1e-9, so rounding never prunes a row that could
    change. Rows only ever move to the newest slot, whose segment is appended; when the
    buffer is full the live segments are copied into a bigger one.
    """
    n, dims = x.shape
    slack = 1.0 + 1e-9
    slots = labeled.size + budget
    nearest = np.full(n, np.inf)
    owner = np.full(n, -1, dtype=np.int64)
    centre = np.zeros(slots, dtype=np.int64)
    radius = np.full(slots, -np.inf)
    far = np.full(slots, n, dtype=np.int64)
    start = np.zeros(slots, dtype=np.int64)
    length = np.zeros(slots, dtype=np.int64)
    capacity = 2 * n + 1024
    member_row = np.zeros(capacity, dtype=np.int64)
    member_value = np.zeros(capacity)
    member_lead = np.zeros((capacity, _LEAD))
    end = 0
    leaves = 1
    while leaves < slots:
        leaves *= 2
    tree = np.full(2 * leaves, -1, dtype=np.int64)  # best slot of each subtree, -1 none
    frozen = False
    cell_of = np.zeros(n, dtype=np.int64)
    cell_distance = np.zeros(n)  # to the row's coarse centre, when frozen
    cell_radius = np.zeros(cells)
    # Each cell's slots, contiguous and by distance to the cell's centre, in `entry_*`:
    # entries begin..begin+size of `cell_begin`, room for `cell_room`; slot -> position.
    cell_begin = np.zeros(cells, dtype=np.int64)
    cell_size = np.zeros(cells, dtype=np.int64)
    cell_room = np.zeros(cells, dtype=np.int64)
    position = np.zeros(slots, dtype=np.int64)
    entries = 16 * cells
    entry_slot = np.zeros(entries, dtype=np.int64)
    entry_distance = np.zeros(entries)
    entry_radius = np.zeros(entries)
    entry_point = np.zeros((entries, dims))  # the slot's centre
    entry_end = 0
    cell_point = np.zeros((cells, dims))
    to_cell = np.zeros(cells)
    candidates = np.zeros(slots + 1, dtype=np.int64)
    candidate_distance = np.zeros(slots + 1)
    moved = np.zeros(n, dtype=np.int64)
    picked = np.zeros(budget, dtype=np.int64)
    count = 0
    used = 0
    while True:
        if used < labeled.size:
            c = labeled[used]
        elif used == 0:
            c = first
        else:
            best = tree[1]
            if count == budget or best < 0 or radius[best] == -np.inf:
                break  # budget spent, or every row picked or labelled
            c = far[best]
        if used >= labeled.size:
            picked[count] = c
            count += 1
            if count == budget:
                break
        s = used
        used += 1
        top = tree[1]
        largest = np.sqrt(radius[top]) if top >= 0 and radius[top] > 0.0 else 0.0
        point = x[c]
        a0 = owner[c]
        d0 = nearest[c]
        nearest[c] = -np.inf
        owner[c] = s
        centre[s] = c
        # Which slots the new centre may take rows from, with their squared distance to it.
        found = 0
        if frozen:
            for g in range(cells):
                total = 0.0
                for k in range(dims):
                    t = point[k] - cell_point[g, k]
                    total += t * t
                to_cell[g] = np.sqrt(total)
            for g in range(cells):
                reach = 2.0 * largest * slack
                if to_cell[g] - cell_radius[g] >= reach:
                    continue
                low = cell_begin[g]  # the first entry with distance > to_cell - reach
                high = low + cell_size[g]
                while low < high:
                    middle = (low + high) // 2
                    if entry_distance[middle] <= to_cell[g] - reach:
                        low = middle + 1
                    else:
                        high = middle
                for e in range(low, cell_begin[g] + cell_size[g]):
                    bound = entry_distance[e] - to_cell[g]
                    if bound >= reach:
                        break
                    ra = entry_radius[e]
                    limit = 4.0 * ra * slack
                    if ra > 0.0 and bound * bound < limit:
                        a = entry_slot[e]
                        if a == a0:
                            continue
                        if a < cells:
                            total = to_cell[a] * to_cell[a]
                        else:
                            total = 0.0
                            for k in range(dims):
                                t = point[k] - entry_point[e, k]
                                total += t * t
                        if total < limit:
                            candidates[found] = a
                            candidate_distance[found] = total
                            found += 1
        else:
            for a in range(s):
                ra = radius[a]
                if a != a0 and ra > 0.0:
                    limit = 4.0 * ra * slack
                    other = x[centre[a]]
                    total = 0.0
                    for k in range(dims):
                        t = point[k] - other[k]
                        total += t * t
                    if total < limit:
                        candidates[found] = a
                        candidate_distance[found] = total
                        found += 1
        if a0 >= 0:
            candidates[found] = a0
            candidate_distance[found] = d0
            found += 1
        taken = 0
        if s == 0:  # the first centre takes every row
            for row in range(n):
                if row != c:
                    other = x[row]
                    total = 0.0
                    for k in range(dims):
                        t = other[k] - point[k]
                        total += t * t
                    nearest[row] = total
                    moved[taken] = row
                    taken += 1
        for i in range(found):
            a = candidates[i]
            between = candidate_distance[i]
            kept_radius = -np.inf
            kept_far = n
            write = start[a]
            for read in range(start[a], start[a] + length[a]):
                row = member_row[read]
                value = member_value[read]
                if row == c:
                    continue  # the new centre leaves its old slot
                total = value
                if between < 4.0 * value * slack:
                    total = 0.0
                    for j in range(_LEAD):
                        t = member_lead[read, j] - point[j]
                        total += t * t
                    if total < value:
                        rest = 0.0
                        for k in range(_LEAD, dims):
                            t = x[row, k] - point[k]
                            rest += t * t
                        total += rest
                if total < value:
                    nearest[row] = total
                    moved[taken] = row
                    taken += 1
                else:
                    if write != read:
                        member_row[write] = row
                        member_value[write] = value
                        for k in range(_LEAD):
                            member_lead[write, k] = member_lead[read, k]
                    write += 1
                    if value > kept_radius or (value == kept_radius and row < kept_far):
                        kept_radius = value
                        kept_far = row
            length[a] = write - start[a]
            radius[a] = kept_radius
            far[a] = kept_far
        # The rows c took (in no order): c's segment, at the end of the buffer.
        if end + taken > capacity:
            live = 0
            for a in range(s):
                live += length[a]
            capacity = 2 * (live + taken) + 1024
            old_row, old_value, old_lead = member_row, member_value, member_lead
            member_row = np.zeros(capacity, dtype=np.int64)
            member_value = np.zeros(capacity)
            member_lead = np.zeros((capacity, _LEAD))
            end = 0
            for a in range(s):
                first_member = start[a]
                start[a] = end
                for j in range(length[a]):
                    member_row[end] = old_row[first_member + j]
                    member_value[end] = old_value[first_member + j]
                    for k in range(_LEAD):
                        member_lead[end, k] = old_lead[first_member + j, k]
                    end += 1
        start[s] = end
        length[s] = taken
        new_radius = -np.inf
        new_far = n
        for i in range(taken):
            row = moved[i]
            value = nearest[row]
            owner[row] = s
            member_row[end] = row
            member_value[end] = value
            for k in range(_LEAD):
                member_lead[end, k] = x[row, k]
            end += 1
            if value > new_radius or (value == new_radius and row < new_far):
                new_radius = value
                new_far = row
        radius[s] = new_radius
        far[s] = new_far
        # Re-rank the slots that changed in the tournament tree.
        for i in range(found + 1):
            a = s if i == found else candidates[i]
            node = leaves + a
            tree[node] = a
            while node > 1:
                node //= 2
                left = tree[2 * node]
                right = tree[2 * node + 1]
                if right < 0:
                    tree[node] = left
                elif (
                    left < 0
                    or radius[right] > radius[left]
                    or (radius[right] == radius[left] and far[right] < far[left])
                ):
                    tree[node] = right
                else:
                    tree[node] = left
        if frozen:  # the new slot joins its row's cell, in order
            g = cell_of[c]
            if cell_size[g] == cell_room[g]:  # move the cell to the end, with twice the room
                room = 2 * cell_room[g]
                if entry_end + room > entries:
                    entries = 2 * (entry_end + room)
                    old_slot, old_distance = entry_slot, entry_distance
                    old_radius, old_point = entry_radius, entry_point
                    entry_slot = np.zeros(entries, dtype=np.int64)
                    entry_distance = np.zeros(entries)
                    entry_radius = np.zeros(entries)
                    entry_point = np.zeros((entries, dims))
                    entry_slot[:entry_end] = old_slot[:entry_end]
                    entry_distance[:entry_end] = old_distance[:entry_end]
                    entry_radius[:entry_end] = old_radius[:entry_end]
                    entry_point[:entry_end] = old_point[:entry_end]
                for i in range(cell_size[g]):
                    entry_slot[entry_end + i] = entry_slot[cell_begin[g] + i]
                    entry_distance[entry_end + i] = entry_distance[cell_begin[g] + i]
                    entry_radius[entry_end + i] = entry_radius[cell_begin[g] + i]
                    for k in range(dims):
                        entry_point[entry_end + i, k] = entry_point[cell_begin[g] + i, k]
                    position[entry_slot[entry_end + i]] = entry_end + i
                cell_begin[g] = entry_end
                cell_room[g] = room
                entry_end += room
            e = cell_begin[g] + cell_size[g]
            while e > cell_begin[g] and entry_distance[e - 1] > cell_distance[c]:
                entry_slot[e] = entry_slot[e - 1]
                entry_distance[e] = entry_distance[e - 1]
                entry_radius[e] = entry_radius[e - 1]
                for k in range(dims):
                    entry_point[e, k] = entry_point[e - 1, k]
                position[entry_slot[e]] = e
                e -= 1
            entry_slot[e] = s
            entry_distance[e] = cell_distance[c]
            for k in range(dims):
                entry_point[e, k] = point[k]
            position[s] = e
            cell_size[g] += 1
            for i in range(found + 1):  # the radii that changed
                a = s if i == found else candidates[i]
                entry_radius[position[a]] = radius[a]
        elif used == cells:  # freeze the coarse index: the first `cells` slots
            frozen = True
            for row in range(n):
                g = owner[row]
                distance = np.sqrt(nearest[row]) if nearest[row] > 0.0 else 0.0
                cell_of[row] = g
                cell_distance[row] = distance
                cell_radius[g] = max(cell_radius[g], distance)
            for g in range(cells):
                cell_point[g] = x[centre[g]]
                cell_begin[g] = 16 * g
                cell_room[g] = 16
                cell_size[g] = 1
                entry_slot[16 * g] = g
                entry_distance[16 * g] = 0.0
                entry_radius[16 * g] = radius[g]
                for k in range(dims):
                    entry_point[16 * g, k] = cell_point[g, k]
                position[g] = 16 * g
            entry_end = 16 * cells
    return picked[:count]
