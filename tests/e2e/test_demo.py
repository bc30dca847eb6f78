"""`kubeloop demo --quick --json`: the whole loop end to end, as CI and a newcomer run it.

Real S3 and MLflow servers, real torch training in subprocesses, a real predictor process,
real HTTP feedback. The figures are the demo's own; the test checks the story holds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from kubeloop.local import processes

SLICE_BAND = 0.02  # the example ServedModel's maxSliceRegression


def test_demo_retrains_on_feedback_and_serves_the_better_version(tmp_path: Path) -> None:
    # Exactly the README's command (plus --json to read its summary), from a fresh working
    # directory and with the default, relative state directory, as a newcomer runs it.
    kubeloop = Path(sys.executable).with_name("kubeloop")
    result = subprocess.run(
        [str(kubeloop), "demo", "--quick", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(summary["plot"]).is_relative_to(tmp_path / ".kubeloop" / "demo")
    assert "kubeloop up -f" in result.stderr  # how to look at what it made, afterwards
    assert not list(processes.marked(tmp_path / ".kubeloop" / "demo")), "left running"

    base, retrained = summary["versions"]
    assert base["trainingJob"] == "digits-base"
    assert retrained["trainingJob"] == "digits-feedback-gen-1"
    assert summary["serving_version"] == retrained["version"]
    assert summary["retrain_triggers"] == 1
    assert summary["feedback_samples"] >= 100

    # A real gain on the new user, and the base slice within the gate's band.
    gain = retrained["metrics"]["slices"]["new-user"] - base["metrics"]["slices"]["new-user"]
    assert gain > 0.2, summary
    assert retrained["metrics"]["slices"]["base"] >= base["metrics"]["slices"]["base"] - SLICE_BAND

    gate = summary["gate"]
    assert gate["verdict"] == "Passed"
    assert gate["slice_deltas"]["new-user"] > 0.2
    assert summary["feedback_to_serving_seconds"] > 0

    # Each TrainingJob's status kept the trainer's last epoch report (read from its log).
    objects = json.loads((tmp_path / ".kubeloop" / "demo" / "objects.json").read_text())
    for body in objects:
        if body["kind"] == "TrainingJob":
            progress = body["status"]["progress"]
            assert progress["epoch"] == progress["epochs"] > 0, body["metadata"]["name"]
            assert progress["percent"] == 100
            assert "val_accuracy" in progress["metrics"]

    with Image.open(summary["plot"]) as plot:
        assert plot.size[0] > 300
    cards = sorted(Path(summary["model_cards"]).glob("*.md"))
    assert len(cards) == 2
    assert "new-user" in cards[1].read_text()
