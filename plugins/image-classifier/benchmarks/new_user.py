"""How well a fine-tune teaches the digits model the new user, and what it costs.

Trains the base model with the arguments of examples/digits/trainingjob-base.yaml, then
fine-tunes it (full and head) with the arguments of the FeedbackDataset's training
template on 100 and 200 new-user feedback samples plus the replayed base data, exactly as
the trainer splits them. Prints one JSON object per run: train seconds (wall and CPU) and
accuracy per slice. No servers: this is the plugin and the trainer's data split only.

    .venv/bin/python plugins/image-classifier/benchmarks/new_user.py [--counts 100 200]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from kubeloop import digits, manifests, plugins
from kubeloop.api.trainingjob import DatasetSource
from kubeloop.training import datasets, splits

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "digits"
SLICES = ["base", "new-user"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--modes", nargs="+", default=["full", "head"])
    options = parser.parse_args()
    plugin = plugins.load("image-classifier")
    base_args, tune_args = _example_args()
    reference = datasets.load_reference(DatasetSource(name="base", uri="builtin://digits"))
    base = _run(plugin, base_args, [reference], [], None)
    print(json.dumps({"run": "base", **base["report"]}), flush=True)
    parent = plugins.BaseModel("models:/digits/1", "1", plugin.checkpoint(base["model"]))
    for count in options.counts:
        images, labels = digits.new_user_feedback(count, seed=0)
        feedback = splits.Feedback(
            name="feedback",
            source=f"{count} new-user samples",
            ids=tuple(f"sample-{i:05d}" for i in range(count)),
            samples=plugins.LabelledImages.of(images, labels, digits.NEW_USER),
        )
        for mode in options.modes:
            result = _run(plugin, {**tune_args, "fineTune": mode}, [reference], [feedback], parent)
            report = {"run": f"fine-tune {mode}", "feedback": count, **result["report"]}
            print(json.dumps(report), flush=True)


def _run(
    plugin: plugins.Plugin[Any, Any],
    args: dict[str, Any],
    references: list[splits.Reference],
    feedback: list[splits.Feedback],
    parent: plugins.BaseModel | None,
) -> dict[str, Any]:
    resolved = plugins.parse_args(plugin.info(), args, parent.uri if parent else None)
    assembled = splits.assemble(references, feedback, SLICES)
    context = plugins.TrainingContext(
        resolved, assembled.datasets, "accuracy", parent, logging.getLogger("bench"), _quiet
    )
    started, cpu = time.perf_counter(), time.process_time()
    model = plugin.train(context)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    evaluation = plugin.evaluate(model, assembled.evaluation, "accuracy")
    train_sizes = {d.name: len(d.train) for d in assembled.datasets}
    report = {
        "seconds": round(seconds, 1),
        "cpuSeconds": round(cpu, 1),  # less disturbed than wall time by a busy machine
        "bestEpoch": model.best_epoch,
        "accuracy": {k: round(v, 4) for k, v in evaluation.slices.items()},
        "trainExamples": train_sizes,
        "args": resolved.to_wire(),
    }
    return {"model": model, "report": report}


def _quiet(progress: plugins.Progress) -> None:
    del progress


def _example_args() -> tuple[dict[str, Any], dict[str, Any]]:
    base, tune = {}, {}
    for _, manifest in manifests.load(EXAMPLES):
        if manifest["kind"] == "TrainingJob":
            base = dict(manifest["spec"]["args"])
        if manifest["kind"] == "FeedbackDataset":
            tune = dict(manifest["spec"]["retrain"]["trainingTemplate"]["args"])
    return base, tune


if __name__ == "__main__":
    main()
