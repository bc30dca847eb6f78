"""The model card: a markdown page a person reads to trust (or not) a model version.

It says what data and which feedback snapshots the model saw, how it scores per slice,
which version it was fine-tuned from, and with which plugin and arguments. No side effects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubeloop import images, plugins
from kubeloop.training.splits import OVERALL, Lineage


@dataclass(frozen=True)
class Facts:
    """Everything the card states."""

    training_job: str
    registered_model: str
    plugin: plugins.PluginInfo
    args: Mapping[str, Any]
    lineage: Sequence[Lineage]
    metric: str
    evaluation: plugins.Evaluation
    slice_sizes: Mapping[str, int]
    unevaluated: Sequence[str]
    parent: str | None
    classes: Sequence[str]
    input_shape: Sequence[int]
    embedding_size: int
    onnx_max_abs_diff: float
    train_seconds: float
    device: str
    best_epoch: int
    epochs: int
    architecture: Mapping[str, str] = field(default_factory=dict)
    """What the plugin says of the model: backbone, stem, input, ..."""
    preprocessing: images.Preprocessing | None = None
    images_per_second: float | None = None


def render(facts: Facts) -> str:
    """The card as markdown."""
    lines = [
        f"# {facts.registered_model}: model card",
        "",
        f"Trained by TrainingJob `{facts.training_job}` with plugin `{facts.plugin.name}` "
        f"{facts.plugin.version}; "
        + (f"fine-tuned from `{facts.parent}`." if facts.parent else "trained from scratch."),
        "",
        "## Evaluation",
        "",
        f"| slice | {facts.metric} | examples |",
        "| --- | --- | --- |",
    ]
    total = sum(facts.slice_sizes.values())
    lines.append(f"| **overall** | {facts.evaluation.overall:.4f} | {total} |")
    for name, value in facts.evaluation.slices.items():
        if name != OVERALL:
            lines.append(f"| {name} | {value:.4f} | {facts.slice_sizes.get(name, 0)} |")
    for name in facts.unevaluated:
        lines.append(f"| {name} | not evaluated: no held-out data | 0 |")
    lines += [
        "",
        "## Data and lineage",
        "",
        "| dataset | source | feedback dataset | snapshot | train | validation | held out |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for item in facts.lineage:
        lines.append(
            f"| {item.name} | `{item.source}` | {item.feedback_dataset or '-'} | "
            f"{item.generation if item.generation is not None else '-'} | {item.train} | "
            f"{item.validation} | {item.test} |"
        )
    lines += [
        "",
        "## Training",
        "",
        f"- plugin: `{facts.plugin.name}` {facts.plugin.version}",
        f"- arguments: `{json.dumps(dict(facts.args), sort_keys=True)}`",
        f"- parent version: {facts.parent or 'none'}",
        f"- device: {facts.device}; {facts.train_seconds:.1f} s; best epoch "
        f"{facts.best_epoch} of {facts.epochs} (kept by validation {facts.metric})"
        + (
            f"; {facts.images_per_second:.0f} images/s"
            if facts.images_per_second is not None
            else ""
        ),
    ]
    if facts.architecture:
        lines += ["", "## Model", "", "| | |", "| --- | --- |"]
        lines += [f"| {key} | {value} |" for key, value in facts.architecture.items()]
        if facts.preprocessing is not None:
            lines.append(f"| transform | {facts.preprocessing.describe()} |")
    lines += [
        "",
        "## Interface",
        "",
        f"- input `{plugins.INPUT}`: float32 `[batch, {', '.join(map(str, facts.input_shape))}]`"
        + (", images in [0, 1]" if facts.preprocessing is not None else ""),
        f"- output `{plugins.PROBABILITIES}`: float32 `[batch, {len(facts.classes)}]`, "
        "softmax over the classes below",
        f"- output `{plugins.EMBEDDING}`: float32 `[batch, {facts.embedding_size}]`, "
        "penultimate-layer features",
        f"- classes, in output order: `{json.dumps(list(facts.classes))}`",
        f"- ONNX checked against the trained model: max abs diff {facts.onnx_max_abs_diff:.2e}",
    ]
    if facts.preprocessing is not None:
        lines += [
            f"- preprocessing (an image of any size to the input): "
            f"{facts.preprocessing.describe()}",
            f"- tag `{images.TAG}`: `{facts.preprocessing.to_tag()}`",
        ]
    lines.append("")
    return "\n".join(lines)
