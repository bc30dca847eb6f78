"""Active-learning strategies on crafted probability and embedding matrices: each picks
what it claims to favour, never repeats a row, respects the budget, and refuses bad input."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from kubeloop import selection
from kubeloop.api.feedbackdataset import Strategy
from kubeloop.selection import scores

# Rows crafted so every uncertainty strategy has one clear order.
P = np.array(
    [
        [0.98, 0.01, 0.01],  # 0: sure
        [0.50, 0.49, 0.01],  # 1: two-way tie (smallest margin)
        [0.36, 0.33, 0.31],  # 2: nearly uniform (highest entropy, least confident)
        [0.70, 0.20, 0.10],  # 3: fairly sure
        [0.45, 0.10, 0.45],  # 4: exact tie between classes 0 and 2 (ratio 1)
    ],
    dtype=np.float32,
)


def test_every_api_strategy_is_registered() -> None:
    assert set(typing.get_args(Strategy)) <= set(selection.STRATEGIES)


def test_scores_on_known_rows() -> None:
    assert scores.entropy(np.array([[1.0, 0.0], [0.5, 0.5]])) == pytest.approx([0.0, np.log(2)])
    assert scores.normalized_entropy(np.array([[0.25] * 4])) == pytest.approx([1.0])
    assert scores.margin(P) == pytest.approx([0.97, 0.01, 0.03, 0.5, 0.0], abs=1e-6)
    assert scores.ratio(P)[4] == pytest.approx(1.0)
    assert scores.least_confidence(P) == pytest.approx([0.02, 0.5, 0.64, 0.3, 0.55], abs=1e-6)
    one_class = np.ones((3, 1), dtype=np.float32)
    assert scores.margin(one_class) == pytest.approx([1.0, 1.0, 1.0])


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("least-confidence", [2, 4, 1, 3, 0]),
        ("entropy", [2, 4, 3, 1, 0]),  # a spread-out row 3 beats a two-way tie
        ("margin", [4, 1, 2, 3, 0]),
        ("ratio", [4, 1, 2, 3, 0]),
    ],
)
def test_uncertainty_orders(strategy: str, expected: list[int]) -> None:
    assert selection.select(strategy, P, budget=5).tolist() == expected
    assert selection.select(strategy, P, budget=2).tolist() == expected[:2]


def test_margin_and_entropy_disagree_where_they_should() -> None:
    # A tie between two classes with the rest at zero: small margin, low entropy.
    p = np.array([[0.5, 0.5, 0.0, 0.0, 0.0], [0.4, 0.15, 0.15, 0.15, 0.15]])
    assert selection.select("margin", p, budget=1).tolist() == [0]
    assert selection.select("entropy", p, budget=1).tolist() == [1]
    # Margin is absolute, ratio relative: 0.2 vs 0.12 is a closer call than 0.5 vs 0.4.
    q = np.array([[0.5, 0.4] + [0.1 / 8] * 8, [0.2, 0.12] + [0.085] * 8])
    assert selection.select("margin", q, budget=1).tolist() == [1]
    assert selection.select("ratio", q, budget=1).tolist() == [0]


def test_random_is_seeded_and_without_repeats() -> None:
    p = np.full((100, 3), 1 / 3)
    first = selection.select("random", p, budget=30, seed=7)
    assert len(set(first.tolist())) == 30
    assert first.tolist() == selection.select("random", p, budget=30, seed=7).tolist()
    assert sorted(selection.select("random", p, budget=500, seed=1).tolist()) == list(range(100))


def test_confidence_threshold_takes_only_unsure_rows() -> None:
    picked = selection.select("confidence-threshold", P, budget=10, threshold=0.6)
    assert picked.tolist() == [2, 4, 1]  # below 0.6, least confident first
    sample = selection.select("confidence-threshold", P, budget=2, threshold=0.6, seed=3)
    assert len(sample) == 2
    assert set(sample.tolist()) <= {1, 2, 4}
    assert selection.select("confidence-threshold", P, budget=10, threshold=0.1).size == 0


def test_every_nth_checks_systematically_in_arrival_order() -> None:
    p = np.full((10, 2), 0.5)
    assert selection.select("every-nth", p, budget=10, every=3).tolist() == [0, 3, 6, 9]
    assert selection.select("every-nth", p, budget=2, every=3).tolist() == [6, 9]  # most recent
    assert selection.select("every-nth", p, budget=5).tolist() == [0, 2, 4, 6, 8]
    assert selection.select("every-nth", p, budget=10, every=4, offset=1).tolist() == [1, 5, 9]
    # With times, arrival order is time order, not row order.
    times = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0], dtype=float)
    assert selection.select("every-nth", p, budget=10, every=5, times=times).tolist() == [9, 4]


def test_time_sampled_takes_one_row_per_window() -> None:
    times = np.array([0, 1, 2, 10, 11, 12, 20, 21, 22, 30], dtype=float)
    p = np.full((10, 2), 0.5)
    picked = selection.select(
        "time-sampled", p, budget=10, times=times, interval_seconds=10, seed=0
    )
    windows = (times[picked] // 10).tolist()
    assert windows == [0, 1, 2, 3]
    recent = selection.select("time-sampled", p, budget=2, times=times, interval_seconds=10)
    assert (times[recent] // 10).tolist() == [2, 3]


def _clusters(per_cluster: int, centres: np.ndarray, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    points = [c + spread * rng.standard_normal((per_cluster, centres.shape[1])) for c in centres]
    return np.concatenate(points).astype(np.float32)


def test_k_center_covers_every_cluster_and_outliers_first() -> None:
    centres = np.array([[0, 0], [100, 0], [0, 100], [100, 100]], dtype=np.float32)
    embeddings = _clusters(50, centres, 1.0, seed=0)
    embeddings = np.concatenate([embeddings, [[500, 500]]]).astype(np.float32)  # an outlier
    p = np.full((len(embeddings), 2), 0.5)
    picked = selection.select("k-center", p, embeddings, budget=5, seed=0)
    assert len(set(picked.tolist())) == 5
    assert len(embeddings) - 1 in picked.tolist()[:2]  # the outlier is the farthest point
    clusters = {int(i) // 50 for i in picked if i < 200}
    assert clusters == {0, 1, 2, 3}


def test_k_center_starts_from_labelled_rows() -> None:
    centres = np.array([[0, 0], [100, 0], [0, 100]], dtype=np.float32)
    embeddings = _clusters(20, centres, 1.0, seed=1)
    p = np.full((60, 2), 0.5)
    # Clusters 0 and 1 are labelled already: the first pick must come from cluster 2.
    picked = selection.select("k-center", p, embeddings, budget=1, labeled=[0, 20])
    assert 40 <= picked[0] < 60
    # More budget than unlabelled rows: every row but the labelled ones, once.
    everything = selection.select("k-center", p, embeddings, budget=100, labeled=[0, 20])
    assert sorted(everything.tolist()) == [i for i in range(60) if i not in (0, 20)]


def _greedy_k_center(x: np.ndarray, budget: int, labeled: list[int], first: int) -> list[int]:
    """The textbook greedy k-center in float64: the reference k-center's picks must match."""
    x = x.astype(np.float64)
    nearest = np.full(len(x), np.inf)
    for row in labeled:
        nearest = np.minimum(nearest, ((x - x[row]) ** 2).sum(axis=1))
    nearest[labeled] = -np.inf
    pick = int(np.argmax(nearest)) if labeled else first
    picked: list[int] = []
    while len(picked) < budget and nearest[pick] != -np.inf:  # -inf: all picked or labelled
        picked.append(pick)
        nearest = np.minimum(nearest, ((x - x[pick]) ** 2).sum(axis=1))
        nearest[pick] = -np.inf
        pick = int(np.argmax(nearest))
    return picked


@pytest.mark.parametrize(
    ("rows", "dims", "budget", "labelled"),
    [(3_000, 16, 800, 0), (3_000, 16, 800, 300), (2_000, 64, 400, 5), (300, 3, 290, 20)],
)
def test_k_center_picks_what_the_textbook_greedy_picks(
    rows: int, dims: int, budget: int, labelled: int
) -> None:
    # Clustered, continuous data (no near ties); budgets past the coarse index's 128 slots,
    # and the last case runs out of unlabelled rows.
    rng = np.random.default_rng(rows + dims + labelled)
    centres = 10 * rng.standard_normal((20, dims))
    embeddings = _clusters(rows // 20, centres, 1.0, seed=labelled)
    labeled = sorted(rng.choice(len(embeddings), labelled, replace=False).tolist())
    p = np.full((len(embeddings), 2), 0.5)

    picked = selection.select("k-center", p, embeddings, budget, seed=3, labeled=labeled)

    first = int(np.random.default_rng(3).integers(len(embeddings)))
    assert picked.tolist() == _greedy_k_center(embeddings, budget, labeled, first)


def test_k_center_with_every_row_labelled_picks_nothing() -> None:
    embeddings = _clusters(5, np.zeros((2, 2)), 1.0, seed=0)
    p = np.full((10, 2), 0.5)
    assert selection.select("k-center", p, embeddings, 3, labeled=list(range(10))).size == 0


def test_k_means_offers_one_representative_per_mode() -> None:
    centres = np.array([[0, 0, 0], [50, 0, 0], [0, 50, 0]], dtype=np.float32)
    sizes = [60, 30, 10]
    rng = np.random.default_rng(2)
    embeddings = np.concatenate(
        [c + rng.standard_normal((n, 3)) for c, n in zip(centres, sizes, strict=True)]
    ).astype(np.float32)
    p = np.full((100, 2), 0.5)
    picked = selection.select("k-means", p, embeddings, budget=3, seed=0)
    cluster_of = np.repeat([0, 1, 2], sizes)
    assert cluster_of[picked].tolist() == [0, 1, 2]  # biggest cluster first
    # Each representative lies near its cluster's centre, not at its edge.
    for index in picked:
        distance = np.linalg.norm(embeddings[index] - centres[cluster_of[index]])
        assert distance < 1.5


def test_embedding_strategies_need_embeddings_and_valid_shapes() -> None:
    with pytest.raises(ValueError, match="needs embeddings"):
        selection.select("k-center", P, budget=2)
    with pytest.raises(ValueError, match="embeddings must be"):
        selection.select("k-means", P, np.zeros((4, 2)), budget=2)


def test_bad_requests_are_named() -> None:
    with pytest.raises(ValueError, match="unknown strategy 'nope'"):
        selection.select("nope", P)
    with pytest.raises(ValueError, match="unknown options"):
        selection.select("entropy", P, budget=2, temperature=2)
    with pytest.raises(ValueError, match="must not be negative"):
        selection.select("entropy", P, budget=-1)
    with pytest.raises(ValueError, match=r"probabilities must be \(N, C\)"):
        selection.select("entropy", np.zeros(3))
    with pytest.raises(ValueError, match="outside the pool"):
        selection.select("k-center", P, np.zeros((5, 2)), budget=1, labeled=[9])


@pytest.mark.parametrize("strategy", sorted(selection.STRATEGIES))
def test_a_40k_pool_gives_distinct_rows_within_budget(strategy: str) -> None:
    rng = np.random.default_rng(0)
    logits = 3 * rng.standard_normal((40_000, 10))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    embeddings = rng.standard_normal((40_000, 16)).astype(np.float32)
    times = np.sort(rng.uniform(0, 3600, 40_000))
    picked = selection.select(strategy, p, embeddings, budget=50, times=times, seed=0)
    assert 0 < len(picked) <= 50
    assert len(set(picked.tolist())) == len(picked)
    assert picked.min() >= 0
    assert picked.max() < 40_000
    assert selection.select(strategy, p[:0], embeddings[:0], budget=5, times=times[:0]).size == 0
