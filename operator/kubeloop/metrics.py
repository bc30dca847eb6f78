"""Every Prometheus metric kubeloop exports, in one place.

Label sets are bounded (kinds, protocols, reasons, slices, versions of one model); names
end in _total, _seconds or _bytes as Prometheus expects.
"""

from __future__ import annotations

import contextlib
import threading

from prometheus_client import Counter, Gauge, Histogram

from kubeloop.api.times import parse_time

# --- operator ---------------------------------------------------------------------------

RECONCILE = Counter(
    "kubeloop_reconcile_total",
    "Reconciles by kind and result (ok, retry: a dependency was unavailable, error).",
    ["kind", "result"],
)
RECONCILE_SECONDS = Histogram(
    "kubeloop_reconcile_seconds",
    "Duration of one reconcile, by kind.",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TRAININGJOBS = Gauge("kubeloop_trainingjobs", "TrainingJobs by phase.", ["phase"])
TRAININGJOB_SECONDS = Histogram(
    "kubeloop_trainingjob_duration_seconds",
    "Duration of finished TrainingJobs, from the trainer's start to its end.",
    ["phase"],
    buckets=(30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200),
)
FEEDBACK_SAMPLES = Gauge(
    "kubeloop_feedback_samples", "Feedback samples counted in storage.", ["namespace", "dataset"]
)
FEEDBACK_SAMPLES_SINCE_SNAPSHOT = Gauge(
    "kubeloop_feedback_samples_since_snapshot",
    "Feedback samples that arrived after the latest snapshot.",
    ["namespace", "dataset"],
)
RETRAIN_THRESHOLD = Gauge(
    "kubeloop_retrain_threshold",
    "New samples that trigger a retrain (spec.retrain.threshold).",
    ["namespace", "dataset"],
)
RETRAIN_TRIGGERS = Counter(
    "kubeloop_retrain_triggers_total",
    "TrainingJobs created by FeedbackDatasets.",
    ["namespace", "dataset"],
)
GATE_VERDICTS = Counter(
    "kubeloop_gate_verdicts_total", "Quality-gate verdicts on candidate versions.", ["result"]
)
GATE_SLICE_DELTA = Gauge(
    "kubeloop_gate_slice_delta",
    "Candidate minus serving metric per slice, at the latest gate verdict.",
    ["namespace", "servedmodel", "slice"],
)
SERVING_VERSION = Gauge(
    "kubeloop_serving_version_info",
    "1 for the model version a ServedModel serves.",
    ["namespace", "servedmodel", "version"],
)

_PHASES = ("Pending", "Running", "Succeeded", "Failed")
_phases: dict[tuple[str, str], str] = {}
_serving: dict[tuple[str, str], str] = {}
_lock = threading.Lock()


def observe_training_job(
    namespace: str,
    name: str,
    phase: str,
    times: tuple[str | None, str | None],
    finished: bool,
) -> None:
    """Count the TrainingJob under its phase; time it (start, completion) once it finished."""
    with _lock:
        _phases[(namespace, name)] = phase
        _export_phases()
    start, end = parse_time(times[0]), parse_time(times[1])
    if finished and start is not None and end is not None:
        TRAININGJOB_SECONDS.labels(phase).observe(max(0.0, (end - start).total_seconds()))


def observe_feedback_dataset(
    namespace: str, name: str, samples: int, since_snapshot: int, threshold: int | None
) -> None:
    """The dataset's counts (and threshold) as gauges."""
    FEEDBACK_SAMPLES.labels(namespace, name).set(samples)
    FEEDBACK_SAMPLES_SINCE_SNAPSHOT.labels(namespace, name).set(since_snapshot)
    if threshold is not None:
        RETRAIN_THRESHOLD.labels(namespace, name).set(threshold)


def observe_serving(namespace: str, name: str, version: str | None) -> None:
    """The version a ServedModel serves, as the info metric's label."""
    with _lock:
        previous = _serving.get((namespace, name))
        if previous is not None and previous != version:
            with contextlib.suppress(KeyError):
                SERVING_VERSION.remove(namespace, name, previous)
            del _serving[(namespace, name)]
        if version is not None:
            SERVING_VERSION.labels(namespace, name, version).set(1)
            _serving[(namespace, name)] = version


def forget(kind: str, namespace: str, name: str) -> None:
    """Stop exporting the per-object metrics of a deleted object."""
    with _lock:
        if kind == "TrainingJob" and _phases.pop((namespace, name), None) is not None:
            _export_phases()
    if kind == "ServedModel":
        observe_serving(namespace, name, None)
    if kind == "FeedbackDataset":
        for gauge in (FEEDBACK_SAMPLES, FEEDBACK_SAMPLES_SINCE_SNAPSHOT, RETRAIN_THRESHOLD):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, name)


def _export_phases() -> None:
    for phase in _PHASES:
        TRAININGJOBS.labels(phase).set(sum(1 for p in _phases.values() if p == phase))


# --- predictor --------------------------------------------------------------------------

PREDICTOR_REQUEST_SECONDS = Histogram(
    "kubeloop_predictor_request_seconds",
    "Inference request latency in the predictor, batching wait included, by protocol (v1, v2).",
    ["protocol"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
PREDICTOR_BATCH_SIZE = Histogram(
    "kubeloop_predictor_batch_size",
    "Rows per onnxruntime call after micro-batching.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
PREDICTIONS = Counter(
    "kubeloop_predictions_total",
    "Predictions by predicted class and the model version that made them (canary or stable).",
    ["class", "version"],
)
FEEDBACK = Counter(
    "kubeloop_feedback_total",
    "Feedback requests by dataset, result (accepted, rejected) and reason (ok or the problem).",
    ["dataset", "result", "reason"],
)
LIVE_ACCURACY = Gauge(
    "kubeloop_live_accuracy",
    "Share of predictions judged right by feedback, per model version.",
    ["model", "version"],
)
PREDICTION_ENTROPY = Histogram(
    "kubeloop_prediction_entropy",
    "Entropy of each prediction over its maximum log(classes): 0 sure, 1 uniform, by version.",
    ["version"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
)
REVIEW_DECISIONS = Counter(
    "kubeloop_review_decisions_total",
    "Items settled by review overlap, by dataset and outcome (agreed, disputed, adjudicated).",
    ["dataset", "status"],
)
REVIEW_AGREEMENT = Gauge(
    "kubeloop_review_agreement",
    "Share of a labeller's overlap labels equal to the item's final label.",
    ["dataset", "labeller"],
)
REVIEW_GOLD_ACCURACY = Gauge(
    "kubeloop_review_gold_accuracy",
    "Share of a labeller's answers on gold items (known labels) that were right.",
    ["dataset", "labeller"],
)
REVIEW_KAPPA = Gauge(
    "kubeloop_review_kappa",
    "Chance-corrected agreement of the labellers: Fleiss' kappa over the items decided by "
    "overlap, and the mean of Cohen's kappa over pairs of labellers (statistic fleiss, cohen).",
    ["dataset", "statistic"],
)

__all__ = ["Counter", "Gauge", "Histogram"]
