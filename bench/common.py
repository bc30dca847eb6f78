"""What every benchmark shares: the result record, timing statistics, interleaved rounds.

A benchmark measures a subject (kubeloop's code) and a baseline side by side in the same
run, alternating between them round by round (A B, then B A) so that a shared machine's
load drifts over both alike. `ratio` is always figure / baseline; `higher_is_better` says
which way is good.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
T = TypeVar("T")


@dataclass
class Result:
    """One benchmark's figure against one baseline."""

    benchmark: str
    metric: str
    unit: str
    figure: float | None
    baseline: float | None
    subject: str
    baseline_name: str
    higher_is_better: bool = True
    details: dict[str, Any] = field(default_factory=dict)
    """Secondary figures: name -> {"figure", "baseline", "ratio"} or plain values."""
    config: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    @property
    def ratio(self) -> float | None:
        return ratio(self.figure, self.baseline)

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "metric": self.metric,
            "unit": self.unit,
            "figure": _round(self.figure),
            "baseline": _round(self.baseline),
            "ratio": _round(self.ratio),
            "higher_is_better": self.higher_is_better,
            "subject": self.subject,
            "baseline_name": self.baseline_name,
            "details": _round_all(self.details),
            "config": self.config,
            "load_avg": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count(),
            **({"skipped": self.skipped} if self.skipped else {}),
        }


def skipped(benchmark: str, why: str) -> Result:
    """A benchmark that could not run here, e.g. the GPU one without a GPU."""
    return Result(benchmark, "", "", None, None, "", "", skipped=why)


def ratio(figure: float | None, baseline: float | None) -> float | None:
    if figure is None or baseline is None or baseline == 0:
        return None
    return figure / baseline


def compare(figure: float, baseline: float) -> dict[str, float | None]:
    """A secondary figure with its baseline and ratio, for `Result.details`."""
    return {"figure": figure, "baseline": baseline, "ratio": ratio(figure, baseline)}


def emit(result: Result) -> None:
    """Print one benchmark's JSON object as one line."""
    print(json.dumps(result.to_json()), flush=True)


def log(message: str) -> None:
    """Progress on stderr, so stdout stays one JSON object per line."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Latencies:
    """Per-request latencies (seconds) over a measured interval."""

    seconds: Sequence[float]
    elapsed: float
    """Wall time of the interval: throughput is len(seconds) / elapsed."""
    items_per_request: int = 1

    @staticmethod
    def merge(parts: Sequence[Latencies]) -> Latencies:
        values = [s for part in parts for s in part.seconds]
        per = parts[0].items_per_request if parts else 1
        return Latencies(values, sum(p.elapsed for p in parts), per)

    @property
    def throughput(self) -> float:
        return len(self.seconds) * self.items_per_request / self.elapsed if self.elapsed else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.seconds), q) * 1000) if self.seconds else 0.0

    def summary(self) -> dict[str, float]:
        return {
            "throughput": self.throughput,
            "p50_ms": self.percentile_ms(50),
            "p99_ms": self.percentile_ms(99),
            "requests": float(len(self.seconds)),
        }


def interleaved(runs: dict[str, Callable[[], T]], rounds: int) -> dict[str, list[T]]:
    """Each run once per round, the order reversed every other round (A B, B A, ...)."""
    names = list(runs)
    out: dict[str, list[T]] = {name: [] for name in names}
    for number in range(rounds):
        for name in names if number % 2 == 0 else reversed(names):
            out[name].append(runs[name]())
    return out


def timed(func: Callable[[], T]) -> tuple[T, float]:
    """func's result and the seconds it took."""
    started = time.perf_counter()
    value = func()
    return value, time.perf_counter() - started


def _round(value: float | None) -> float | None:
    if value is None:
        return None
    return float(f"{value:.4g}")


def _round_all(value: Any) -> Any:
    if isinstance(value, float):
        return _round(value)
    if isinstance(value, dict):
        return {k: _round_all(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_round_all(v) for v in value]
    return value


@dataclass(frozen=True)
class LoadSettings:
    """An HTTP load benchmark's size: seconds per run, rounds, callers, model epochs."""

    seconds: float
    rounds: int
    concurrency: int
    model_epochs: int = 5

    @classmethod
    def of(cls, quick: bool, concurrency: int) -> LoadSettings:
        return cls(1.0, 1, concurrency) if quick else cls(4.0, 2, concurrency)


@dataclass(frozen=True)
class Side:
    """One side of a throughput comparison: its name in the rounds and what it is."""

    key: str
    description: str


def best_rates(
    benchmark: str,
    metric: str,
    rounds: dict[str, list[float]],
    subject: Side,
    baseline: Side,
    config: dict[str, Any],
) -> Result:
    """A throughput Result (images/s) from interleaved rounds: the best round of each side,
    every round in details."""
    return Result(
        benchmark,
        metric,
        "images/s",
        max(rounds[subject.key]),
        max(rounds[baseline.key]),
        subject.description,
        baseline.description,
        details={f"{key}_rounds": values for key, values in rounds.items()},
        config=config,
    )
