"""Label quality statistics: Fleiss' kappa on the published example, Cohen's kappa against
scikit-learn's, the decision on an item's votes, and the per-labeller summary."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from kubeloop import agreement

# Fleiss (1971) as Wikipedia's "Fleiss' kappa" article works it: 10 items, 14 raters,
# 5 categories; kappa = 0.210.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_matches_the_worked_example() -> None:
    items = [[str(c) for c, n in enumerate(row) for _ in range(n)] for row in FLEISS_TABLE]
    kappa = agreement.fleiss_kappa(items)
    assert kappa == pytest.approx(0.20993, abs=1e-4)


def test_fleiss_kappa_refuses_items_with_different_rater_counts() -> None:
    with pytest.raises(ValueError, match="same number"):
        agreement.fleiss_kappa([["a", "a"], ["a", "b", "b"]])
    assert agreement.fleiss_kappa([]) is None
    assert agreement.fleiss_kappa([["a", "a"], ["a", "a"]]) is None  # undefined, not 1


@pytest.mark.parametrize("seed", range(5))
def test_cohen_kappa_matches_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    first = rng.choice(list("abcd"), size=40).tolist()
    second = [a if rng.random() < 0.6 else str(rng.choice(list("abcd"))) for a in first]
    assert agreement.cohen_kappa(first, second) == pytest.approx(cohen_kappa_score(first, second))


def test_cohen_kappa_edge_cases() -> None:
    assert agreement.cohen_kappa([], []) is None
    assert agreement.cohen_kappa(["a", "a"], ["a", "a"]) is None
    assert agreement.cohen_kappa(["a", "b"], ["a", "b"]) == 1.0
    with pytest.raises(ValueError, match="both"):
        agreement.cohen_kappa(["a"], [])


def test_an_item_is_decided_once_enough_labellers_voted() -> None:
    assert agreement.decide({"ada": "3"}, 2) == agreement.Verdict("pending")
    assert agreement.decide({"ada": "3", "bob": "3"}, 2) == agreement.Verdict("agreed", "3")
    assert agreement.decide({"ada": "3", "bob": "5"}, 2) == agreement.Verdict("disputed")
    assert agreement.decide({"ada": "3"}, 1) == agreement.Verdict("agreed", "3")


def test_the_summary_scores_each_labeller() -> None:
    decided = [
        agreement.Decided({"ada": "1", "bob": "1"}, "1"),
        agreement.Decided({"ada": "2", "bob": "2"}, "2"),
        agreement.Decided({"ada": "3", "bob": "4"}, "3"),  # adjudicated for ada
        agreement.Decided({"ada": "5", "bob": "6"}, None),  # still disputed
    ]
    gold = [
        agreement.GoldAnswer("ada", "7", "7"),
        agreement.GoldAnswer("ada", "8", "9"),
        agreement.GoldAnswer("cy", "9", "9"),
    ]
    quality = agreement.summarize(decided, gold)
    assert quality.items == 4
    assert quality.disputed == 1
    assert quality.labellers["ada"].agreement == 1.0
    assert quality.labellers["bob"].agreement == pytest.approx(2 / 3)
    assert quality.labellers["ada"].gold_accuracy == 0.5
    assert quality.labellers["cy"].gold_accuracy == 1.0
    assert quality.labellers["cy"].agreement is None
    ada, bob = ["1", "2", "3", "5"], ["1", "2", "4", "6"]
    assert quality.cohen_kappa == {("ada", "bob"): pytest.approx(cohen_kappa_score(ada, bob))}
    assert quality.fleiss_kappa == pytest.approx(
        agreement.fleiss_kappa([list(d.votes.values()) for d in decided])
    )
    assert quality.fleiss_kappa is not None
    assert quality.fleiss_kappa < 1.0
    shown = quality.as_json()
    assert shown["labellers"]["bob"]["votes"] == 3  # type: ignore[index]
