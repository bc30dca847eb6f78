"""What the demo shows: every model version with its per-slice metrics, as JSON and a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubeloop.local.loop import LocalLoop

MODEL_CARD = "model_card.md"


def summary(
    loop: LocalLoop,
    workdir: Path,
    *,
    model: str,
    served: str,
    dataset: str,
    feedback_sent: int,
    base_correct_on_feedback: int,
    feedback_to_serving_seconds: float | None,
    threshold_time: float,
    total_seconds: float,
) -> dict[str, Any]:
    """The demo's result: versions, gate, timings (`threshold_time`: Unix time the sample
    that crossed the retrain threshold was acknowledged); writes the plot and the model
    cards."""
    latest = loop.registry.latest_version(model)
    versions = []
    cards = workdir / "model-cards"
    cards.mkdir(exist_ok=True)
    for number in range(1, int(latest.version) + 1 if latest else 1):
        version = loop.registry.get_version(model, str(number))
        metrics = loop.registry.metrics(version, "accuracy")
        (cards / f"{model}-v{number}.md").write_text(
            loop.registry.download_run_artifact(version, MODEL_CARD).decode()
        )
        versions.append(
            {
                "version": version.version,
                "trainingJob": version.tags.get("kubeloop.trainingJob"),
                "metrics": {"overall": metrics.overall, "slices": metrics.slices},
            }
        )
    served_status = loop.status("ServedModel", served)
    dataset_status = loop.status("FeedbackDataset", dataset)
    gate = served_status.get("gate") or {}
    plot = plot_accuracy(versions, workdir / "accuracy.png", model)
    return {
        "versions": versions,
        "serving_version": served_status.get("servingVersion"),
        "feedback_samples": dataset_status.get("samples", 0),
        "feedback_sent": feedback_sent,
        "base_accuracy_on_feedback": base_correct_on_feedback / max(1, feedback_sent),
        "retrain_triggers": len(dataset_status.get("snapshots", [])),
        "gate": {
            "verdict": gate.get("verdict"),
            "candidate_version": gate.get("candidateVersion"),
            "baseline_version": gate.get("baselineVersion"),
            "overall_delta": gate.get("overallDelta"),
            "slice_deltas": gate.get("sliceDeltas", {}),
            "failed_slices": gate.get("failedSlices", []),
            "message": gate.get("message"),
        },
        "feedback_to_serving_seconds": feedback_to_serving_seconds,
        "feedback_threshold_time": threshold_time,
        "total_seconds": total_seconds,
        "plot": str(plot),
        "model_cards": str(cards),
    }


def plot_accuracy(versions: list[dict[str, Any]], path: Path, title: str = "digits") -> Path:
    """Grouped bars: accuracy per slice (and overall) for each model version."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slices = sorted({s for v in versions for s in v["metrics"]["slices"]})
    groups = ["overall", *slices]
    width = 0.8 / max(1, len(versions))
    figure, axes = plt.subplots(figsize=(7, 4))
    for i, version in enumerate(versions):
        values = [version["metrics"]["overall"] or 0.0]
        values += [version["metrics"]["slices"].get(s, 0.0) for s in slices]
        positions = [g + i * width for g in range(len(groups))]
        bars = axes.bar(positions, values, width, label=f"v{version['version']}")
        axes.bar_label(bars, fmt="%.2f", fontsize=8)
    axes.set_xticks([g + width * (len(versions) - 1) / 2 for g in range(len(groups))], groups)
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("accuracy (held-out)")
    axes.set_title(f"{title}: accuracy per slice per model version")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
