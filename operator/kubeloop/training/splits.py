"""How loaded datasets become training, validation and per-slice evaluation data.

Reference data brings its own train/val/test splits and the evaluation slices it can
provide (builtin://digits: `base`, `new-user`; an image folder or manifest is split by the
hash below of each image's key, its test part providing a slice per tag). Feedback
snapshots are split per sample by a hash of the sample's id, so a sample keeps its part in
every later snapshot that contains it:

    hash bucket  0-9   validation (model selection)
                10-19  held out for evaluation, as part of the slice it is tagged with,
                       when that slice is evaluated and no reference dataset provides it;
                       otherwise it trains
                20-99  training

A named slice is evaluated on the reference data that provides it, else on the held-out
feedback tagged with it; a slice with neither is reported as unevaluated. `overall` is the
metric over the union of the named slices, or over every dataset's test data when the job
names none. No side effects here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from kubeloop import plugins

Part = Literal["train", "val", "test"]
OVERALL = "overall"


@dataclass(frozen=True)
class Reference:
    """A dataset with its own splits, e.g. the bundled digits."""

    name: str
    source: str
    train: plugins.Examples
    validation: plugins.Examples
    test: plugins.Examples
    slices: Mapping[str, plugins.Examples]
    """Evaluation slices this dataset provides, by name."""


@dataclass(frozen=True)
class Feedback:
    """The samples of a feedback snapshot, in arrival order."""

    name: str
    source: str
    ids: tuple[str, ...]
    samples: plugins.Examples
    """In the order of `ids`."""
    feedback_dataset: str | None = None
    generation: int | None = None


@dataclass(frozen=True)
class Lineage:
    """Where one dataset came from and how it was split; for the model card and tags."""

    name: str
    source: str
    feedback: bool
    train: int
    validation: int
    test: int
    feedback_dataset: str | None = None
    generation: int | None = None


@dataclass(frozen=True)
class Assembled:
    """Data ready for the plugin, and what the evaluation runs on."""

    datasets: tuple[plugins.Dataset, ...]
    evaluation: dict[str, plugins.Examples]
    """Named slices with data, in the job's order; or one entry `overall` when none named."""
    unevaluated: list[str] = field(default_factory=list)
    """Named slices that no dataset could provide."""
    lineage: list[Lineage] = field(default_factory=list)


def feedback_part(sample_id: str) -> Part:
    """The part a feedback sample belongs to, from a hash of its id (stable across snapshots)."""
    bucket = int.from_bytes(hashlib.sha256(sample_id.encode()).digest()[:8], "big") % 100
    if bucket < 10:
        return "val"
    if bucket < 20:
        return "test"
    return "train"


def assemble(
    references: Sequence[Reference], feedback: Sequence[Feedback], slices: Sequence[str]
) -> Assembled:
    """Split every dataset and gather the evaluation data of each named slice."""
    provided: dict[str, list[plugins.Examples]] = {}
    for reference in references:
        for name, data in reference.slices.items():
            if name in slices:
                provided.setdefault(name, []).append(data)
    # None: no slice is named, so every feedback test sample is held out for `overall`.
    held_out_slices: set[str] | None = set() if slices else None
    if held_out_slices is not None:
        held_out_slices.update(s for s in slices if s not in provided)
    datasets = [plugins.Dataset(r.name, False, r.train, r.validation) for r in references]
    lineage = [
        Lineage(r.name, r.source, False, len(r.train), len(r.validation), len(r.test))
        for r in references
    ]
    held_out: dict[str, list[plugins.Examples]] = {}
    for snapshot in feedback:
        train, validation, test = _split_feedback(snapshot, held_out_slices)
        datasets.append(plugins.Dataset(snapshot.name, True, train, validation))
        lineage.append(
            Lineage(
                snapshot.name,
                snapshot.source,
                True,
                len(train),
                len(validation),
                len(test),
                snapshot.feedback_dataset,
                snapshot.generation,
            )
        )
        for tag in np.unique(test.slices):
            held_out.setdefault(str(tag), []).append(test.subset(test.slices == tag))
    if not slices:
        everything = [r.test for r in references] + [
            d for parts in held_out.values() for d in parts
        ]
        return Assembled(
            tuple(datasets),
            {OVERALL: plugins.concat(everything)},
            [],
            lineage,
        )
    evaluation = {}
    unevaluated = []
    for name in slices:
        parts = provided.get(name) or held_out.get(name) or []
        data = plugins.concat(parts)
        if len(data):
            evaluation[name] = data
        else:
            unevaluated.append(name)
    return Assembled(tuple(datasets), evaluation, unevaluated, lineage)


def _split_feedback(
    snapshot: Feedback, held_out_slices: set[str] | None
) -> tuple[plugins.Examples, plugins.Examples, plugins.Examples]:
    parts = np.asarray([feedback_part(sample_id) for sample_id in snapshot.ids], dtype=np.str_)
    samples = snapshot.samples
    if held_out_slices is None:
        test = parts == "test"
    else:
        wanted = np.isin(samples.slices, sorted(held_out_slices))
        test = (parts == "test") & wanted
    validation = parts == "val"
    train = ~(test | validation)
    return samples.subset(train), samples.subset(validation), samples.subset(test)
