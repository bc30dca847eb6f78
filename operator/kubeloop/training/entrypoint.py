"""The trainer's command line: run one TrainingJob, report the result, exit with a code.

    python -m kubeloop.training --spec FILE [--result FILE]

FILE is a TrainingJob manifest (YAML or JSON). Connections come from KUBELOOP_* settings.
On success the result (kubeloop.api.training_result) is written to --result and printed
as the last line of stdout; on failure --result gets a TrainingFailure (the error, its
message and the last log lines), so the reason reaches the TrainingJob's status (the pod's
termination message). Logs go to stderr, credentials in URIs redacted (kubeloop.redaction).
Under torchrun (distributed.numProcPerNode) only rank 0 writes the result or the failure; the
other ranks train their shards and exit 0.
Exit codes:

    0  a model version was registered
    1  training failed (bad data, a plugin error, an ONNX mismatch, ...)
    2  the spec or its arguments are invalid, the base model does not exist, or a setting
       cannot be used (an S3 endpoint with credentials in it)
    3  MLflow or S3 could not be reached, after bounded retries
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from kubeloop import plugins, redaction, registry, settings, storage
from kubeloop.api.training_result import TrainingFailure
from kubeloop.training import checks, datasets, onnx_check, run

OK, FAILED, INVALID, UNREACHABLE = 0, 1, 2, 3
_EXIT_CODES: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], int], ...] = (
    (
        (checks.InvalidSpec, plugins.InvalidArguments, registry.ModelNotFound),
        INVALID,
    ),
    (storage.InvalidEndpoint, INVALID),
    ((registry.RegistryUnavailable, storage.StorageUnavailable), UNREACHABLE),
)

_EXPECTED = (
    checks.InvalidSpec,
    plugins.PluginError,
    registry.ModelNotFound,
    registry.RegistryUnavailable,
    storage.StorageUnavailable,
    storage.InvalidEndpoint,
    datasets.DatasetError,
    onnx_check.OnnxMismatch,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the trainer; returns the exit code."""
    with redaction.redacted_output():  # MLflow prints run URLs built from the tracking URI
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kubeloop.training",
        description="Train, evaluate, export and register the model a TrainingJob describes.",
    )
    parser.add_argument("--spec", type=Path, required=True, help="TrainingJob manifest file")
    parser.add_argument("--result", type=Path, help="also write the result JSON to this file")
    args = parser.parse_args(argv)
    config = settings.load()
    log, tail = _logger(config.log_level)
    job_name = str(args.spec)
    leader = plugins.Ranks.from_env().leader  # under torchrun, only rank 0 reports
    try:
        job = checks.load_job(args.spec)
        job_name = f"{job.metadata.namespace}/{job.metadata.name}"
        result = run.train_job(job, config, log)
    except Exception as error:  # every failure ends in one readable paragraph and a code
        code = exit_code(error)
        message = " ".join(str(error).split())
        if not isinstance(error, _EXPECTED):
            log.error("unexpected error", exc_info=error)  # a bug: keep the traceback
            message = f"{type(error).__name__}: {message}"
        print(f"kubeloop trainer: TrainingJob {job_name} failed: {message}", file=sys.stderr)
        if args.result is not None and leader:  # one writer
            failure = TrainingFailure(
                training_job=job_name,
                error=type(error).__name__,
                message=message,
                exit_code=code,
                log_tail=list(tail.lines),
            )
            _write(args.result, failure.to_line())
        return code
    if result is None or not leader:
        return OK  # a rank other than 0 (or a retry's, which found the version): rank 0 says it
    line = result.to_line()
    if args.result is not None:
        _write(args.result, line)
    print(line, flush=True)
    return OK


def _write(path: Path, line: str) -> None:
    """The result or failure line, whole or not at all: a reader never sees half of it."""
    if path.parent == Path("/dev"):  # the termination log: written in place
        path.write_text(line + "\n")
        return
    partial = path.with_name(path.name + ".partial")
    partial.write_text(line + "\n")
    partial.replace(path)


def exit_code(error: BaseException) -> int:
    """The exit code that tells the operator what kind of failure `error` is."""
    for kinds, code in _EXIT_CODES:
        if isinstance(error, kinds):
            return code
    return FAILED


class _Tail(logging.Handler):
    """Keeps the last log lines, for the failure report."""

    def __init__(self, size: int = 12) -> None:
        super().__init__()
        self.lines: collections.deque[str] = collections.deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record)[:300])


def _logger(level: str) -> tuple[logging.Logger, _Tail]:
    log = logging.getLogger("kubeloop.training")
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime  # RFC 3339 in UTC: the progress lines' times
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
        log.addHandler(handler)
        log.propagate = False
    tail = next((h for h in log.handlers if isinstance(h, _Tail)), None)
    if tail is None:
        tail = _Tail()
        tail.setFormatter(formatter)
        log.addHandler(tail)
    log.setLevel(level.upper())
    return log, tail
