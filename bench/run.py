"""Run kubeloop's performance benchmarks; one JSON object per result on stdout.

    .venv/bin/python bench/run.py [--quick] [--only predictor selection ...] [--out DIR]

Each object holds the figure, the baseline measured side by side in the same run, and
their ratio (figure / baseline; `higher_is_better` says which way is good). Progress goes
to stderr; the objects are also appended to DIR/bench-<time>.jsonl. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import bench.* from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench import common
from bench.servers import Stack

Benchmark = Callable[[Stack, bool], list[common.Result]]
MODULES = {
    "predictor": "predictor",
    "selection": "selection",
    "feedback": "feedback",
    "operator": "operator_jobs",
    "turnaround": "turnaround",
    "gpu": "gpu",
    "training": "training",
    "replicas": "replicas",
}
"""Benchmark name: its module in bench/, which has `run(stack, quick)`."""
NAMES = tuple(MODULES)
SLOW = {"turnaround"}  # left out of --quick unless named with --only


def benchmark(name: str) -> Benchmark:
    """The benchmark's run function, imported only when it runs."""
    if name not in MODULES:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(NAMES)}")
    run: Benchmark = importlib.import_module(f"bench.{MODULES[name]}").run
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller and shorter (seconds)")
    parser.add_argument("--only", nargs="+", choices=NAMES, help="run only these")
    parser.add_argument("--out", type=Path, default=common.RESULTS, help="where the JSONL goes")
    options = parser.parse_args(argv)
    names = options.only or [n for n in NAMES if not (options.quick and n in SLOW)]
    options.out.mkdir(parents=True, exist_ok=True)
    record = options.out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    failed = 0
    with Stack() as stack:
        for name in names:
            common.log(f"{name}: running{' (quick)' if options.quick else ''}")
            started = time.perf_counter()
            try:
                # Libraries print (MLflow's run links): stdout is for the results only.
                with contextlib.redirect_stdout(sys.stderr):
                    results = benchmark(name)(stack, options.quick)
            except Exception as error:  # one broken benchmark must not hide the others
                traceback.print_exc()
                failed += 1
                results = [common.skipped(name, f"failed: {type(error).__name__}: {error}")]
            common.log(f"{name}: done in {time.perf_counter() - started:.0f}s")
            for result in results:
                common.emit(result)
                with record.open("a") as out:
                    out.write(json.dumps(result.to_json()) + "\n")
    common.log(f"results in {record}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
