"""Label quality: how often labellers agree, and how well they score on gold items.

Pure functions over plain records, no I/O (serving.consensus reads the records from S3):

- `decide`: the votes an item has collected -> agreed, disputed or still pending;
- `cohen_kappa`: two labellers over the items both labelled (Cohen 1960);
- `fleiss_kappa`: any number of labellers, a fixed number of labels per item (Fleiss 1971);
- `summarize`: per labeller agreement with the decided label and gold accuracy, Fleiss'
  kappa over every decided item and Cohen's kappa per pair of labellers.

A kappa is None when chance agreement is total (every label the same class): it is then
undefined, not perfect.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Status = Literal["pending", "agreed", "disputed"]


@dataclass(frozen=True)
class Verdict:
    """What the votes on one item come to."""

    status: Status
    label: str | None = None
    """The agreed label (status agreed)."""


def decide(votes: Mapping[str, str], overlap: int) -> Verdict:
    """Labeller -> label votes on one item, once `overlap` labellers have voted: agreed when
    all labels are the same, disputed otherwise; pending before that."""
    if len(votes) < overlap:
        return Verdict("pending")
    labels = set(votes.values())
    return Verdict("agreed", labels.pop()) if len(labels) == 1 else Verdict("disputed")


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float | None:
    """Cohen's kappa of two labellers' labels on the same items, in order."""
    if len(first) != len(second):
        raise ValueError(f"{len(first)} labels against {len(second)}: give both for each item")
    if not first:
        return None
    n = len(first)
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    a_counts, b_counts = Counter(first), Counter(second)
    chance = sum(a_counts[c] * b_counts[c] for c in a_counts) / (n * n)
    return None if chance == 1.0 else (observed - chance) / (1.0 - chance)


def fleiss_kappa(items: Iterable[Sequence[str]]) -> float | None:
    """Fleiss' kappa of items that each got the same number (two or more) of labels."""
    rows = [Counter(labels) for labels in items]
    if not rows:
        return None
    raters = {sum(row.values()) for row in rows}
    if len(raters) != 1 or min(raters) < 2:
        raise ValueError(f"every item needs the same number (>= 2) of labels, not {raters}")
    n, count = raters.pop(), len(rows)
    per_item = [(sum(v * v for v in row.values()) - n) / (n * (n - 1)) for row in rows]
    totals: Counter[str] = Counter()
    for row in rows:
        totals.update(row)
    chance = sum((t / (count * n)) ** 2 for t in totals.values())
    observed = sum(per_item) / count
    return None if chance == 1.0 else (observed - chance) / (1.0 - chance)


@dataclass(frozen=True)
class Decided:
    """An item with its votes and the label it ended with (None while disputed)."""

    votes: Mapping[str, str]
    label: str | None


@dataclass(frozen=True)
class GoldAnswer:
    labeller: str
    label: str
    gold_label: str


@dataclass
class LabellerQuality:
    votes: int = 0
    """Labels given on items decided by overlap."""
    agreed: int = 0
    """Of those, labels equal to the item's final label."""
    gold_answered: int = 0
    gold_correct: int = 0

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.votes if self.votes else None

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_answered if self.gold_answered else None


@dataclass
class Quality:
    labellers: dict[str, LabellerQuality] = field(default_factory=dict)
    fleiss_kappa: float | None = None
    cohen_kappa: dict[tuple[str, str], float | None] = field(default_factory=dict)
    """Per pair of labellers (names in order) with items in common."""
    items: int = 0
    """Items decided by overlap (agreed, adjudicated or disputed)."""
    disputed: int = 0
    """Of those, items still waiting for an adjudicator."""

    def as_json(self) -> dict[str, object]:
        return {
            "items": self.items,
            "disputed": self.disputed,
            "fleiss_kappa": self.fleiss_kappa,
            "cohen_kappa": [
                {"labellers": list(pair), "kappa": kappa}
                for pair, kappa in sorted(self.cohen_kappa.items())
            ],
            "labellers": {
                name: {
                    "votes": q.votes,
                    "agreement": q.agreement,
                    "gold_answered": q.gold_answered,
                    "gold_accuracy": q.gold_accuracy,
                }
                for name, q in sorted(self.labellers.items())
            },
        }


def summarize(decided: Iterable[Decided], gold: Iterable[GoldAnswer]) -> Quality:
    """The label quality of a dataset's decided items and gold answers."""
    quality = Quality()
    by_size: dict[int, list[list[str]]] = {}
    pairs: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
    for item in decided:
        quality.items += 1
        quality.disputed += item.label is None
        by_size.setdefault(len(item.votes), []).append(list(item.votes.values()))
        for name, label in item.votes.items():
            mine = quality.labellers.setdefault(name, LabellerQuality())
            if item.label is not None:
                mine.votes += 1
                mine.agreed += label == item.label
        for a, b in itertools.combinations(sorted(item.votes), 2):
            firsts, seconds = pairs.setdefault((a, b), ([], []))
            firsts.append(item.votes[a])
            seconds.append(item.votes[b])
    rated = max(by_size, key=lambda size: len(by_size[size]), default=0)
    if rated >= 2:  # the usual overlap; items of other sizes (a changed spec) are left out
        quality.fleiss_kappa = fleiss_kappa(by_size[rated])
    quality.cohen_kappa = {pair: cohen_kappa(*labels) for pair, labels in pairs.items()}
    for answer in gold:
        mine = quality.labellers.setdefault(answer.labeller, LabellerQuality())
        mine.gold_answered += 1
        mine.gold_correct += answer.label == answer.gold_label
    return quality
