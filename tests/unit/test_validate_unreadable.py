"""`kubeloop validate` on files that are not manifests: one readable line naming the file and
the document, exit code 2, never a traceback; the documents around a bad one are still read."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubeloop import cli, manifests

TRAININGJOB = """\
apiVersion: kubeloop.io/v1alpha1
kind: TrainingJob
metadata: {name: fine}
spec:
  plugin: {name: image-classifier}
  datasets: [{name: base, uri: builtin://digits}]
  registeredModel: digits
"""

CASES = {
    "metadata-string": (
        "apiVersion: kubeloop.io/v1alpha1\nkind: TrainingJob\nmetadata: x\n",
        "metadata: must be a mapping",
    ),
    "metadata-null": (
        "apiVersion: kubeloop.io/v1alpha1\nkind: TrainingJob\nmetadata:\n",
        "metadata: must be a mapping (name, namespace, labels), got null",
    ),
    "metadata-list": (
        "apiVersion: kubeloop.io/v1alpha1\nkind: TrainingJob\nmetadata: [a]\n",
        "metadata: must be a mapping (name, namespace, labels), got a list",
    ),
    "list": ("- a\n- b\n", "a manifest must be a mapping (apiVersion, kind, metadata, spec)"),
    "string": ("hello\n", "got a string 'hello'"),
    "int": ("42\n", "got an integer 42"),
    "syntax": ("a: [b\n", "is not valid YAML: line 2, column 1: expected ',' or ']'"),
    "tabs": ("a:\n\tb: 1\n", "line 2, column 1: found character '\\t' that cannot start"),
    "deep": ("[" * 5000 + "]" * 5000 + "\n", "nested deeper than 64 levels"),
    "python-tag": (
        'a: !!python/object/apply:os.system ["echo hi"]\n',
        "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object",
    ),
    "repeated-key": ("a: 1\na: 2\n", "line 2, column 1: key 'a' is repeated"),
}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_document_that_is_no_manifest(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, problem = CASES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    assert cli.main(["validate", "-f", str(path)]) == 2
    out = capsys.readouterr().out
    assert f"{path}, document 1: not a manifest" in out
    assert problem in out
    assert "Traceback" not in out


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"a: \xff\xfe\n", "is not UTF-8 text (byte 0xff at offset 3)"),
        (b"", "holds no manifest: the file is empty"),
        (b"---\n# only a comment\n---\n", "holds no manifest: its 2 documents are empty"),
    ],
)
def test_a_file_that_holds_no_manifest(
    content: bytes, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "file.yaml"
    path.write_bytes(content)
    assert cli.main(["validate", "-f", str(path)]) == 2
    assert f"{path}: not a manifest\n  {problem}" in capsys.readouterr().out


def test_a_missing_file_or_an_empty_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["validate", "-f", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: not a manifest\n  cannot be read: No such file" in capsys.readouterr().out
    assert cli.main(["validate", "-f", str(tmp_path)]) == 2
    assert "no *.yaml or *.yml files" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("middle", "said", "unsaid"),
    [
        ("42\n", ["document 2: not a manifest", "document 3: TrainingJob/Bad_Name invalid"], []),
        ("kind: [\n", ["document 2: not a manifest\n  is not valid YAML"], ["document 3"]),
    ],
    ids=["not-a-mapping", "syntax-error-ends-the-file"],
)
def test_documents_before_a_broken_one_are_still_checked(
    middle: str,
    said: list[str],
    unsaid: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "mixed.yaml"
    path.write_text(f"{TRAININGJOB}---\n{middle}---\n{TRAININGJOB.replace('fine', 'Bad_Name')}")
    assert cli.main(["validate", "-f", str(path)]) == 2
    out = capsys.readouterr().out
    assert f"{path}, document 1: TrainingJob/fine valid" in out
    assert all(f"{path}, {line}" in out for line in said)
    assert not any(line in out for line in unsaid)


def test_load_names_every_unreadable_document(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("42\n")
    (tmp_path / "b.yaml").write_text("a:\n\tb: 1\n")
    with pytest.raises(manifests.ManifestError) as raised:
        manifests.load(tmp_path)
    assert f"{tmp_path / 'a.yaml'}, document 1: a manifest must be a mapping" in str(raised.value)
    assert f"{tmp_path / 'b.yaml'}, document 1: is not valid YAML" in str(raised.value)
