"""Dockerfiles lint cleanly and their entrypoints are the project's own, working commands.

No Docker engine runs here, so images are not built; what can be checked is checked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "images").glob("*/Dockerfile"))


def entrypoint(dockerfile: Path) -> list[str]:
    lines = [line for line in dockerfile.read_text().splitlines() if line.startswith("ENTRYPOINT")]
    assert len(lines) == 1, f"{dockerfile} needs exactly one exec-form ENTRYPOINT"
    command: list[str] = json.loads(lines[0].removeprefix("ENTRYPOINT").strip())
    return command


def test_every_image_is_there() -> None:
    assert {d.parent.name for d in DOCKERFILES} == {"operator", "trainer", "predictor"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda d: d.parent.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda d: d.parent.name)
def test_image_is_multi_stage_pinned_and_non_root(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert text.count("\nFROM ") >= 2, "multi-stage: build stage and runtime stage"
    assert ":latest" not in text
    assert "ARG PYTHON_IMAGE=python:3.11." in text, "base image pinned to a patch release"
    assert "\nUSER 10001" in text


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda d: d.parent.name)
def test_entrypoint_starts_with_help(dockerfile: Path) -> None:
    command = entrypoint(dockerfile)
    if command[0] == "python":
        command = [sys.executable, *command[1:]]
    else:
        command = [str(Path(sys.executable).with_name(command[0])), *command[1:]]
    result = subprocess.run(
        [*command, "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout.lower()
