"""Learning efficacy on the digits: personalisation and label efficiency.

Personalisation: the example base model (examples/digits/trainingjob-base.yaml) is
fine-tuned with the FeedbackDataset's retrain template, head only and full, on 25, 50,
100 and 200 of the new user's samples (mirrored train-split digits, kubeloop.digits),
replaying the base data as the trainer does; accuracy on the test split's base and
new-user slices before and after, mean of 3 seeds (which samples the user sends, and the
fine-tune's seed).

Label efficiency: pool-based active learning from scratch on the 1078 train-split digits.
Every strategy starts from the same 20 labelled images (2 per class, per seed), trains
the plugin's network on what is labelled, scores the rest and labels the next batch it
picks, up to each budget; accuracy on the test split (base slice), mean over 5 seeds,
and the difference to random selection at the same budget (paired by seed).

Everything runs in-process through the plugin interface (no MLflow, no servers).

    .venv/bin/python bench/efficacy.py [--quick] [--part personalisation|label-efficiency]
        [--seeds 0 1 2 3 4] [--out bench/results]

Writes efficacy.json and efficacy.png to --out and prints the JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

if __package__ in (None, ""):  # run as a script: import bench.* from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench import models
from bench.common import RESULTS, log
from kubeloop import digits, plugins, selection

STRATEGIES = ("random", "least-confidence", "margin", "entropy", "k-center")
COUNTS = (25, 50, 100, 200)
MODES = ("head", "full")


@dataclass(frozen=True)
class Settings:
    """How much the study does."""

    base_epochs: int | None  # None: the example's
    tune_epochs: int | None  # None: the template's
    counts: tuple[int, ...]
    modes: tuple[str, ...]
    budgets: tuple[int, ...]
    steps: int
    """Gradient steps per active-learning model, whatever the labelled set's size."""
    seeds: tuple[int, ...]

    personalisation_seeds: tuple[int, ...]
    """Seeds of the feedback sample and of the fine-tune."""

    @classmethod
    def of(cls, quick: bool, seeds: tuple[int, ...] | None) -> Settings:
        if quick:
            return cls(8, 5, COUNTS, MODES, (20, 60, 120), 150, seeds or (0, 1, 2), (0,))
        budgets = (20, 50, 100, 150, 200)
        return cls(None, None, COUNTS, MODES, budgets, 300, seeds or (0, 1, 2, 3, 4), (0, 1, 2))


# --- personalisation -------------------------------------------------------------------------


def personalisation(settings: Settings) -> dict[str, Any]:
    """Base vs fine-tuned accuracy per slice after each number of feedback samples, mean
    over seeds (which samples the new user sends, and the fine-tune's seed)."""
    _, tune_args = models.example_args()
    if settings.tune_epochs:
        tune_args["epochs"] = settings.tune_epochs
    log("personalisation: training (or loading) the base model")
    base = models.digits_model(settings.base_epochs)
    parent = plugins.BaseModel("models:/digits/1", "1", base.checkpoint)
    reference = models.reference()
    runs = []
    for count in settings.counts:
        for mode in settings.modes:
            per_seed = []
            for seed in settings.personalisation_seeds:
                images, labels = digits.new_user_feedback(count, seed=seed)
                snapshot = models.feedback(images, labels, digits.NEW_USER)
                args = {**tune_args, "fineTune": mode, "seed": seed}
                _, evaluation, seconds = models.train(args, [reference], [snapshot], parent)
                per_seed.append({**evaluation.slices, "train_seconds": seconds})
            mean = {k: float(np.mean([r[k] for r in per_seed])) for k in per_seed[0]}
            run = {
                "feedback": count,
                "mode": mode,
                "accuracy": {k: mean[k] for k in models.SLICES},
                "delta": {k: mean[k] - base.accuracy[k] for k in models.SLICES},
                "accuracy_min": {k: min(r[k] for r in per_seed) for k in models.SLICES},
                "train_seconds": mean["train_seconds"],
                "per_seed": per_seed,
            }
            log(f"personalisation: {count} {mode}: {run['accuracy']}")
            runs.append(run)
    return {
        "base_model": {"accuracy": base.accuracy, "train_seconds": base.train_seconds},
        "tune_args": tune_args,
        "base_epochs": settings.base_epochs or models.example_args()[0]["epochs"],
        "seeds": list(settings.personalisation_seeds),
        "runs": runs,
    }


# --- label efficiency ------------------------------------------------------------------------


def label_efficiency(settings: Settings) -> dict[str, Any]:
    """Accuracy at each labelling budget per strategy, mean over seeds, and vs random."""
    pool_images, pool_labels = digits.load_split("train")
    test_images, test_labels = digits.load_slice("base")
    test = {"base": plugins.LabelledImages.of(test_images, test_labels, "base")}
    curves: dict[str, list[list[float]]] = {s: [] for s in STRATEGIES}
    for seed in settings.seeds:
        start = _initial(pool_labels, seed)
        first = _fit(pool_images, pool_labels, start, settings.steps, seed)
        first_accuracy = _accuracy(first, test)
        for strategy in STRATEGIES:
            labelled, model, accuracies = start, first, [first_accuracy]
            for budget in settings.budgets[1:]:
                picked = _pick(strategy, model, pool_images, labelled, budget - len(labelled), seed)
                labelled = np.concatenate([labelled, picked])
                model = _fit(pool_images, pool_labels, labelled, settings.steps, seed)
                accuracies.append(_accuracy(model, test))
            curves[strategy].append(accuracies)
            log(f"label efficiency: seed {seed} {strategy}: {np.round(accuracies, 4).tolist()}")
    mean = {s: np.mean(curves[s], axis=0).tolist() for s in STRATEGIES}
    std = {s: np.std(curves[s], axis=0).tolist() for s in STRATEGIES}
    paired = {s: (np.asarray(curves[s]) - np.asarray(curves["random"])) for s in STRATEGIES[1:]}
    return {
        "budgets": list(settings.budgets),
        "pool": len(pool_labels),
        "test": len(test_labels),
        "steps_per_model": settings.steps,
        "seeds": list(settings.seeds),
        "accuracy_mean": mean,
        "accuracy_std": std,
        "accuracy_per_seed": curves,
        "vs_random_mean": {s: d.mean(axis=0).tolist() for s, d in paired.items()},
        "vs_random_wins": {s: (d > 0).sum(axis=0).tolist() for s, d in paired.items()},
        "labels_to_match_random": {
            s: _labels_to_reach(settings.budgets, mean[s], mean["random"][-1]) for s in STRATEGIES
        },
    }


def _labels_to_reach(
    budgets: tuple[int, ...], accuracies: list[float], target: float
) -> int | None:
    """The smallest budget whose mean accuracy reaches `target` (random's at the largest
    budget), or None."""
    return next((b for b, a in zip(budgets, accuracies, strict=True) if a >= target), None)


def _initial(labels: NDArray[np.str_], seed: int) -> NDArray[np.intp]:
    """Two random images of each class: every model knows all ten classes."""
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), 2, replace=False) for c in digits.CLASSES]
    return np.concatenate(picked).astype(np.intp)


def _fit(
    images: NDArray[np.float32],
    labels: NDArray[np.str_],
    labelled: NDArray[np.intp],
    steps: int,
    seed: int,
) -> plugins.TrainedModel[Any]:
    """The plugin's network trained from scratch on the labelled images for `steps` steps
    (batch 32, the base model's learning rate; no validation data, so the last epoch)."""
    plugin = plugins.load(models.PLUGIN)
    base_args, _ = models.example_args()
    batch = 32
    args = {
        **base_args,
        "batchSize": batch,
        "seed": seed,
        "epochs": max(1, math.ceil(steps * batch / len(labelled))),
    }
    resolved = plugins.parse_args(plugin.info(), args)
    data = plugins.LabelledImages.of(images[labelled], labels[labelled], "base")
    empty = plugins.LabelledImages.concat([])
    context = plugins.TrainingContext(
        resolved,
        (plugins.Dataset("labelled", False, data, empty),),
        "accuracy",
        None,
        logging.getLogger("bench"),
        lambda progress: None,
    )
    return plugin.train(context)


def _pick(
    strategy: str,
    model: plugins.TrainedModel[Any],
    images: NDArray[np.float32],
    labelled: NDArray[np.intp],
    count: int,
    seed: int,
) -> NDArray[np.intp]:
    """`count` unlabelled pool rows chosen by `strategy` (kubeloop.selection)."""
    outputs = plugins.load(models.PLUGIN).predict(model, images)
    probabilities = np.asarray(outputs[plugins.PROBABILITIES])
    embeddings = np.asarray(outputs[plugins.EMBEDDING])
    seed = 1000 * seed + len(labelled)  # fresh per seed and round, same for every strategy
    if strategy == "k-center":
        return selection.select(
            "k-center", probabilities, embeddings, count, labeled=labelled, seed=seed
        )
    unlabelled = np.setdiff1d(np.arange(len(images)), labelled)
    chosen = selection.select(
        strategy, probabilities[unlabelled], embeddings[unlabelled], count, seed=seed
    )
    return unlabelled[chosen]


def _accuracy(model: plugins.TrainedModel[Any], test: dict[str, plugins.LabelledImages]) -> float:
    return plugins.load(models.PLUGIN).evaluate(model, test, "accuracy").slices["base"]


# --- report ----------------------------------------------------------------------------------


def plot(study: dict[str, Any], path: Path) -> Path:
    """Two panels: accuracy vs feedback samples (personalisation), vs budget (labelling)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    if "personalisation" in study:
        p = study["personalisation"]
        ax = axes[0]
        for tag, colour in (("new-user", "tab:red"), ("base", "tab:blue")):
            ax.axhline(p["base_model"]["accuracy"][tag], color=colour, ls=":", lw=1)
            for mode, style in (("full", "-o"), ("head", "--s")):
                runs = [r for r in p["runs"] if r["mode"] == mode]
                ax.plot(
                    [r["feedback"] for r in runs],
                    [r["accuracy"][tag] for r in runs],
                    style,
                    color=colour,
                    label=f"{tag}, {mode} fine-tune",
                )
        ax.set_xscale("log", base=2)
        ax.set_xticks(p_counts := [r["feedback"] for r in p["runs"]], [str(c) for c in p_counts])
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("new-user feedback samples")
        ax.set_ylabel("test accuracy (dotted: base model)")
        ax.set_title("personalisation")
        ax.legend(loc="lower right", fontsize=8)
    if "label_efficiency" in study:
        e = study["label_efficiency"]
        ax = axes[1]
        budgets = e["budgets"]
        for strategy in STRATEGIES:
            mean = np.asarray(e["accuracy_mean"][strategy])
            std = np.asarray(e["accuracy_std"][strategy])
            ax.plot(budgets, mean, "-o", label=strategy, lw=2 if strategy == "random" else 1)
            ax.fill_between(budgets, mean - std, mean + std, alpha=0.12)
        ax.set_xlabel("labelled images (budget)")
        ax.set_ylabel(f"test accuracy, mean of {len(e['seeds'])} seeds")
        ax.set_title("label efficiency (active learning from scratch)")
        ax.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and budgets")
    parser.add_argument(
        "--part", choices=("all", "personalisation", "label-efficiency"), default="all"
    )
    parser.add_argument("--seeds", type=int, nargs="+", help="label-efficiency seeds (default 5)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON and PNG go")
    options = parser.parse_args(argv)
    settings = Settings.of(options.quick, tuple(options.seeds) if options.seeds else None)
    options.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    study: dict[str, Any] = {"quick": options.quick}
    if options.part in ("all", "personalisation"):
        study["personalisation"] = personalisation(settings)
    if options.part in ("all", "label-efficiency"):
        study["label_efficiency"] = label_efficiency(settings)
    study["seconds"] = time.perf_counter() - started
    (options.out / "efficacy.json").write_text(json.dumps(study, indent=1))
    study["plot"] = str(plot(study, options.out / "efficacy.png"))
    print(json.dumps(study))
    return 0


if __name__ == "__main__":
    sys.exit(main())
