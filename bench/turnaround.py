"""Benchmark 5, loop turnaround: threshold-crossing sample -> first prediction served by the
new version, split into training time and orchestration overhead.

Runs `kubeloop demo --quick --json` (the whole loop on one machine: S3 and MLflow servers,
the local runtime, a trainer subprocess, the predictor process) in a fresh state
directory. The demo times feedback_to_serving_seconds: from the acknowledgement of the
sample that crosses the FeedbackDataset's threshold until the predictor answers the demo
with the retrained version. Training is the plugin's train step of that retrain
(trainSeconds in the trainer's result); everything else is orchestration, split with the
demo's threshold time and the timestamps of the predictor's log (milliseconds) and the
trainer's (whole seconds) into:
- trigger: threshold sample acknowledged -> the trainer's first log line (the
  FeedbackDataset's poll, the snapshot, the TrainingJob, the trainer process starting);
- trainer overhead: the trainer's first log line -> model version registered, minus
  training (checkpoint and data loading, evaluation, ONNX export and check, MLflow
  logging and registration);
- rollout: registered -> predictor swapped (gate, alias, reload, download, warm-up);
- detection: swapped -> the demo's next prediction saw it (the demo polls).
Figure: orchestration seconds; baseline: training seconds; ratio: orchestration / training.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import ROOT, Result, log

TIMEOUT_SECONDS = 900
RETRAIN_JOB = "digits-feedback-gen-1"


def run(stack: object, quick: bool) -> list[Result]:
    del stack, quick  # the demo starts its own servers; it is already its quick variant
    with tempfile.TemporaryDirectory(prefix="kubeloop-bench-demo-") as tmp:
        state = Path(tmp)
        command = [sys.executable, "-m", "kubeloop.cli", "demo", "--quick", "--json"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBELOOP_")}
        log("turnaround: running `kubeloop demo --quick --json` (minutes)")
        done = subprocess.run(
            [*command, "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
            cwd=ROOT,
            env=env,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the demo failed ({done.returncode}):\n{done.stderr[-3000:]}")
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        return [measure(summary, state / "demo")]


def measure(summary: dict[str, Any], workdir: Path) -> Result:
    """The result from the demo's summary and the retrain's records in its state."""
    turnaround = summary["feedback_to_serving_seconds"]
    if turnaround is None:
        raise RuntimeError(f"the retrained version was not promoted: {summary['gate']}")
    attempt = _last_attempt(workdir / "trainingjobs" / RETRAIN_JOB)
    result = json.loads(attempt.with_suffix(".result").read_text())
    training = float(result["trainSeconds"])
    status = _status(workdir, RETRAIN_JOB)
    timeline = _timeline(workdir, attempt.with_suffix(".log"), str(result["modelVersion"]), summary)
    orchestration = turnaround - training
    phases: dict[str, float] = {}
    if timeline is not None:
        acknowledged, first_log, registered, swapped = timeline
        phases = {
            "trigger_s": first_log - acknowledged,
            "trainer_overhead_s": registered - first_log - training,
            "rollout_s": swapped - registered,
            "detection_s": acknowledged + turnaround - swapped,
        }
    return Result(
        "turnaround.feedback_to_serving",
        "orchestration overhead",
        "s",
        orchestration,
        training,
        "threshold-crossing sample -> new version served, minus training",
        "training: the plugin's train step of the retrain (trainSeconds)",
        higher_is_better=False,
        details={
            "turnaround_s": turnaround,
            "training_s": training,
            **phases,
            "training_share": training / turnaround,
            "trainer_status_times": [status.get("startTime"), status.get("completionTime")],
            "gate": summary["gate"]["verdict"],
            "accuracy": {v["version"]: v["metrics"]["slices"] for v in summary["versions"]},
            "demo_total_s": summary["total_seconds"],
        },
        config={
            "command": "kubeloop demo --quick --json",
            "retrain": "full fine-tune, 10 epochs (demo --quick), threshold 100 samples",
            "phases": "from the demo's threshold time and the predictor's (ms) and trainer's "
            "(whole seconds: +-1 s) log timestamps",
        },
    )


_STAMPS = (
    # The predictor's logging: local time, milliseconds.
    (re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) "), "%Y-%m-%d %H:%M:%S,%f", None),
    # The trainer's: RFC 3339 in UTC, whole seconds (its progress lines are read that way).
    (re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) "), "%Y-%m-%dT%H:%M:%SZ", UTC),
)


def _timeline(
    workdir: Path, trainer_log: Path, version: str, summary: dict[str, Any]
) -> tuple[float, float, float, float] | None:
    """(threshold sample acknowledged, trainer's first log line, version registered,
    predictor swapped) as Unix seconds, from the demo's summary and the logs; None when a
    line is missing."""
    predictor = _stamped(workdir / "predictors" / "digits.log")
    trainer = _stamped(trainer_log)
    swapped = next(
        (t for t, line in predictor if f"serving digits version {version} " in line), None
    )
    registered = next((t for t, line in trainer if "registered models:/" in line), None)
    if swapped is None or registered is None:
        return None
    return float(summary["feedback_threshold_time"]), trainer[0][0], registered, swapped


def _last_attempt(directory: Path) -> Path:
    """`attempt-N` (no suffix) of a TrainingJob's latest attempt (kubeloop.local.trainer)."""
    attempts = sorted(directory.glob("attempt-*.result"), key=lambda p: int(p.stem.split("-")[1]))
    if not attempts:
        raise RuntimeError(f"no attempt of {directory.name} left a result in {directory}")
    return attempts[-1].with_suffix("")


def _stamped(path: Path) -> list[tuple[float, str]]:
    """The lines of a log that start with a logging timestamp, with that time."""
    if not path.exists():
        return []
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        for stamp, layout, zone in _STAMPS:
            match = stamp.match(line)
            if match:
                moment = datetime.strptime(match[1], layout)
                if zone is not None:
                    moment = moment.replace(tzinfo=zone)
                lines.append((moment.timestamp(), line))
                break
    return lines


def _status(workdir: Path, name: str) -> dict[str, Any]:
    objects = json.loads((workdir / "objects.json").read_text())
    for body in objects:
        if body["kind"] == "TrainingJob" and body["metadata"]["name"] == name:
            return dict(body["status"])
    raise RuntimeError(f"TrainingJob {name} is not in the demo's state")
