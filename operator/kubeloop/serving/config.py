"""The predictor's command line: `python -m kubeloop.serving --name NAME --model-uri URI ...`.

The operator builds these arguments (reconcile.servedmodel.predictor_args) and the local mode
runs the same command. MLflow and S3 connections come from kubeloop.settings (KUBELOOP_*);
the feedback bearer token from KUBELOOP_FEEDBACK_TOKEN. Parsing imports no server code, so
`--help` is instant.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from kubeloop.registry import parse_model_uri

TOKEN_ENV = "KUBELOOP_FEEDBACK_TOKEN"


@dataclass(frozen=True)
class FeedbackConfig:
    """Where feedback samples, the prediction log and live accuracy go."""

    dataset: str
    bucket: str
    prefix: str
    classes: tuple[str, ...]
    input_shape: tuple[int, ...] | None
    slices: tuple[str, ...]


@dataclass(frozen=True)
class ServingConfig:
    """Everything the predictor process is told on its command line."""

    name: str
    model_uri: str
    host: str = "0.0.0.0"  # a pod's server; tests and the local mode pass 127.0.0.1
    http_port: int = 8080
    max_batch_size: int = 32
    max_latency_ms: float = 5.0
    alias_poll_seconds: float = 10.0
    feedback: FeedbackConfig | None = None
    max_payload_bytes: int = 1 << 20
    pool_size: int = 50_000
    log_flush_seconds: float = 5.0
    log_batch_size: int = 1000
    warm_start_seconds: float = 3600.0
    stats_flush_seconds: float = 2.0
    review_strategy: str = "least-confidence"
    review_budget: int = 50
    feedback_token: str | None = None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kubeloop.serving",
        description=(
            "kubeloop predictor: onnxruntime behind a KServe ModelServer (V1 and V2 protocols) "
            "with micro-batching, alias following, the feedback API, the prediction log and "
            f"the review queue. Feedback bearer token from ${TOKEN_ENV}; MLflow and S3 from "
            "KUBELOOP_MLFLOW_TRACKING_URI and KUBELOOP_S3_*."
        ),
    )
    p.add_argument("--name", required=True, help="model name in the inference routes")
    p.add_argument(
        "--model-uri", required=True, help="models:/NAME@ALIAS (followed) or models:/NAME/VERSION"
    )
    p.add_argument("--host", default="0.0.0.0", help="address to bind (default: %(default)s)")
    p.add_argument("--http-port", type=_port, default=8080, help="HTTP port (default: %(default)s)")
    p.add_argument("--max-batch-size", type=_positive_int, default=32, help="rows per batch")
    p.add_argument(
        "--max-latency-ms", type=_non_negative_float, default=5.0, help="longest wait for a batch"
    )
    p.add_argument(
        "--alias-poll-seconds",
        type=_positive_float,
        default=10.0,
        help="how often the alias is checked for a new version",
    )
    feedback = p.add_argument_group(
        "feedback (all of dataset, bucket, prefix and classes, or none)"
    )
    feedback.add_argument("--feedback-dataset", help="FeedbackDataset name in the feedback routes")
    feedback.add_argument("--feedback-bucket", help="S3 bucket of samples and the prediction log")
    feedback.add_argument("--feedback-prefix", help="key prefix of the dataset, e.g. feedback/d/")
    feedback.add_argument("--classes", type=_names, help="comma-separated class names")
    feedback.add_argument("--input-shape", type=_shape, help="shape of one input, e.g. 8,8")
    feedback.add_argument("--slices", type=_names, default=(), help="allowed slice tags")
    p.add_argument(
        "--max-payload-bytes", type=_positive_int, default=1 << 20, help="feedback body limit"
    )
    p.add_argument("--pool-size", type=_positive_int, default=50_000, help="predictions kept")
    p.add_argument(
        "--log-flush-seconds", type=_positive_float, default=5.0, help="prediction log interval"
    )
    p.add_argument(
        "--log-batch-size", type=_positive_int, default=1000, help="records per log object"
    )
    p.add_argument(
        "--warm-start-seconds",
        type=_non_negative_float,
        default=3600.0,
        help="prediction log age read back into the review pool at start (0: none)",
    )
    p.add_argument(
        "--stats-flush-seconds",
        type=_positive_float,
        default=2.0,
        help="how often live accuracy is written",
    )
    p.add_argument("--review-strategy", default="least-confidence", help="review default")
    p.add_argument("--review-budget", type=_positive_int, default=50, help="review default")
    return p


def parse_args(argv: Sequence[str] | None = None, token: str | None = None) -> ServingConfig:
    """The configuration `argv` describes; exits with a usage message when it is wrong."""
    p = parser()
    args = p.parse_args(argv)
    try:
        parse_model_uri(args.model_uri)
    except ValueError as error:
        p.error(str(error))
    from kubeloop import selection

    if args.review_strategy not in selection.STRATEGIES:
        p.error(f"--review-strategy must be one of {', '.join(selection.STRATEGIES)}")
    wanted = [args.feedback_dataset, args.feedback_bucket, args.feedback_prefix, args.classes]
    feedback = None
    if any(value is not None for value in wanted):
        if not all(value is not None for value in wanted):
            p.error(
                "feedback needs --feedback-dataset, --feedback-bucket, --feedback-prefix and "
                "--classes together"
            )
        if len(set(args.classes)) != len(args.classes):
            p.error("--classes must not repeat a class")
        feedback = FeedbackConfig(
            dataset=args.feedback_dataset,
            bucket=args.feedback_bucket,
            prefix=args.feedback_prefix,
            classes=args.classes,
            input_shape=args.input_shape,
            slices=args.slices,
        )
    return ServingConfig(
        name=args.name,
        model_uri=args.model_uri,
        host=args.host,
        http_port=args.http_port,
        max_batch_size=args.max_batch_size,
        max_latency_ms=args.max_latency_ms,
        alias_poll_seconds=args.alias_poll_seconds,
        feedback=feedback,
        max_payload_bytes=args.max_payload_bytes,
        pool_size=args.pool_size,
        log_flush_seconds=args.log_flush_seconds,
        log_batch_size=args.log_batch_size,
        warm_start_seconds=args.warm_start_seconds,
        stats_flush_seconds=args.stats_flush_seconds,
        review_strategy=args.review_strategy,
        review_budget=args.review_budget,
        feedback_token=token or None,
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {text}")
    return value


def _names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError("needs at least one name")
    return names


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a shape: {text!r} (expected e.g. 8,8)") from None
    if not shape or any(size < 1 for size in shape):
        raise argparse.ArgumentTypeError(f"not a shape: {text!r} (sizes must be positive)")
    return shape
