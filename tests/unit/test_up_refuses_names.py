"""`kubeloop up` refuses a name the API server would refuse before it starts or writes anything:
a name such as ../../x must never become a path outside the state directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import kubeloop_up

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "digits"


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../../x", "is not an object name"),
        ("../../../../tmp/escape", "is not an object name"),
        ("UPPER_case", "is not an object name"),
        ("a" * 300, "is too long"),
    ],
    ids=["up-two", "up-four", "upper-case", "300-characters"],
)
def test_up_refuses_a_name_before_writing_anything(tmp_path: Path, name: str, problem: str) -> None:
    job = yaml.safe_load((EXAMPLES / "trainingjob-base.yaml").read_text())
    job["metadata"]["name"] = name
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(job))
    result = kubeloop_up(tmp_path, manifest)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"refused TrainingJob/{name}: metadata.name: {name!r} {problem}" in result.stdout
    assert "nothing was started" in result.stdout
    assert _files(tmp_path) == [Path("job.yaml")]
