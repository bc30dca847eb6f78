"""Reading manifests that JSON cannot carry, or that expand without bound: refused with the field
(or line) named, by `kubeloop validate`, by `manifests.load` (which `kubeloop up` uses), and
fuzzed: whatever the bytes, reading and validating answer in words, never with an exception."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubeloop import admission, cli, manifests
from tests.conftest import kubeloop_up

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "digits"


def _laughs(levels: int) -> str:
    """A "billion laughs" document: 9**levels values from a few hundred bytes."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _job(args: str) -> str:
    return (
        "apiVersion: kubeloop.io/v1alpha1\nkind: TrainingJob\nmetadata: {name: j}\n"
        f"spec:\n  plugin: {{name: image-classifier}}\n  args:\n{args}"
        "  datasets: [{name: base, uri: builtin://digits}]\n  registeredModel: digits\n"
    )


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ("    seed: 2024-01-01\n", "spec.args.seed: 2024-01-01 reads as a YAML timestamp"),
        ("    seed: 2024-01-01 10:00:00\n", "spec.args.seed: 2024-01-01T10:00:00 reads as a YAML"),
        ("    seed: !!binary aGVsbG8=\n", "spec.args.seed: binary data (!!binary) cannot be"),
        ("    seed: !!set {a, b}\n", "spec.args.seed: a set (!!set) cannot be carried by JSON"),
        ("    seed: !!omap [a: 1]\n", "spec.args.seed[0]: a pair list (!!omap or !!pairs)"),
        ("    seed: .nan\n", "spec.args.seed: nan is not a number JSON can carry"),
        ("    seed: -.inf\n", "spec.args.seed: -inf is not a number JSON can carry"),
        (
            "    1: x\n",
            "spec.args: key 1 is an integer, but JSON keys are strings; quote it",
        ),
        ("    yes: x\n", "spec.args: key True is a boolean, but JSON keys are strings"),
    ],
)
def test_values_json_cannot_carry_are_refused_naming_the_field(
    args: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(_job(args))
    assert cli.main(["validate", "-f", str(path)]) == 2
    assert problem in capsys.readouterr().out
    with pytest.raises(manifests.ManifestError, match=r"document 1: spec\.args"):
        manifests.load(path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (_laughs(9), "aliases expand the document beyond 100000 values"),
        ("a: &a [*a]\n", "an alias inside its own anchor"),
        ("a: &a {b: *a}\n", "an alias inside its own anchor"),
        (
            "".join(f"l{i}: &l{i} [*l{i - 1}]\n" if i else "l0: &l0 [x]\n" for i in range(80)),
            "aliases nest the document deeper than 64 levels",
        ),
        ("a: " + "[" * 100 + "]" * 100 + "\n", "nested deeper than 64 levels"),
    ],
    ids=["billion-laughs", "self-alias", "self-alias-mapping", "alias-chain", "deep"],
)
def test_documents_that_expand_without_bound_are_refused_quickly(
    text: str, problem: str, tmp_path: Path
) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    started = time.perf_counter()
    with pytest.raises(manifests.ManifestError, match=problem):
        manifests.load(path)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (_job("    seed: 2024-01-01\n"), "document 1: spec.args.seed: 2024-01-01 reads as a YAML"),
        (_laughs(9), "document 1: line 1: aliases expand the document beyond 100000 values"),
    ],
    ids=["date", "billion-laughs"],
)
def test_up_refuses_them_before_starting_anything(tmp_path: Path, text: str, problem: str) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(text)
    result = kubeloop_up(tmp_path, manifest)
    assert result.returncode == 1
    assert result.stderr.startswith(f"kubeloop up: {manifest}, {problem}")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "s").exists()


def test_aliases_within_the_bounds_are_read() -> None:
    text = "base: &base {cpu: '1', memory: 2Gi}\ncopy: *base\nmerged: {<<: *base, gpu: 1}\n"
    (document,) = yaml.safe_load_all(text)
    path = Path("inline.yaml")
    assert manifests.parse(path, text) == [manifests.Manifest(path, 1, document)]


def test_the_examples_survive_a_json_round_trip() -> None:
    for _, body in manifests.load(EXAMPLES):
        assert json.loads(json.dumps(body)) == body


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_are_read_or_refused_in_words(content: bytes) -> None:
    for document in manifests.parse(Path("fuzz.yaml"), content.decode("utf-8", "replace")):
        if isinstance(document, manifests.Unreadable):
            assert document.problems
            assert all(isinstance(p, str) and p for p in document.problems)
        else:
            assert json.loads(json.dumps(document.body)) == document.body


def _example(kind: str) -> dict[str, Any]:
    return next(body for _, body in manifests.load(EXAMPLES) if body["kind"] == kind)


PLACES = [
    ("spec",),
    ("metadata",),
    ("metadata", "name"),
    ("spec", "args"),
    ("spec", "args", "epochs"),
    ("spec", "plugin"),
    ("spec", "datasets"),
    ("spec", "retrain"),
    ("spec", "retrain", "trainingTemplate"),
    ("spec", "retrain", "trainingTemplate", "args"),
    ("spec", "storage", "prefix"),
    ("spec", "canary"),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["TrainingJob", "FeedbackDataset", "ServedModel"]),
    place=st.sampled_from(PLACES),
    value=JSON,
)
def test_any_json_in_a_manifest_is_validated_in_words(
    kind: str, place: tuple[str, ...], value: Any
) -> None:
    manifest = json.loads(json.dumps(_example(kind)))
    node = manifest
    for key in place[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[place[-1]] = value
    found = admission.problems(manifest)
    assert all(isinstance(p, str) and ": " in p for p in found)
