"""Reading kubeloop manifests from YAML files, as `kubectl apply -f` takes them.

A manifest travels as JSON (the API server, the local runtime's state), so reading refuses
what JSON cannot carry - a timestamp, `!!binary`, a set, a non-string key, NaN - naming the
field, where kubectl would refuse the file or change the value. Reading is bounded: nesting
deeper than MAX_DEPTH or aliases that expand to more than MAX_NODES nodes (a kilobyte of
"billion laughs" YAML) are refused before anything walks the expanded document.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from kubeloop.api.validation import field_path

MAX_DEPTH = 64
"""Deepest nesting of a document; kubeloop's own manifests need fewer than ten levels."""
MAX_NODES = 100_000
"""Most values in one document once aliases are expanded; a manifest has a few hundred."""
_MERGE = "tag:yaml.org,2002:merge"


class ManifestError(ValueError):
    """Files that cannot be read as manifests; the message names each file and document."""


@dataclass(frozen=True)
class Manifest:
    """One document of a file: a mapping whose metadata, if any, is a mapping too."""

    path: Path
    index: int
    """Position of the document in its file, counting from 1."""
    body: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{self.path}, document {self.index}"

    @property
    def title(self) -> str:
        """Kind/name, as far as the manifest says them."""
        return f"{self.body.get('kind')}/{(self.body.get('metadata') or {}).get('name')}"


@dataclass(frozen=True)
class Unreadable:
    """A file, or one document of it (`index`), that is not a manifest, and why."""

    path: Path
    index: int | None
    problems: tuple[str, ...]

    @property
    def where(self) -> str:
        return str(self.path) if self.index is None else f"{self.path}, document {self.index}"


def read(path: Path) -> list[Manifest | Unreadable]:
    """Every document in `path` (a file, or a directory's *.yaml/*.yml) in order, each a
    manifest or why it is not one; never raises for what the files hold."""
    if path.is_dir():
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        if not files:
            return [Unreadable(path, None, ("no *.yaml or *.yml files in this directory",))]
        return [document for file in files for document in _read_file(file)]
    return _read_file(path)


def load(path: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every manifest in `path` with its file; ManifestError names every unreadable one."""
    documents = read(path)
    problems = [
        f"{d.where}: {problem}"
        for d in documents
        if isinstance(d, Unreadable)
        for problem in d.problems
    ]
    if problems:
        raise ManifestError("; ".join(problems))
    return [(d.path, d.body) for d in documents if isinstance(d, Manifest)]


def _read_file(path: Path) -> list[Manifest | Unreadable]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as error:
        return [Unreadable(path, None, (f"cannot be read: {error.strerror or error}",))]
    except UnicodeDecodeError as error:
        return [
            Unreadable(
                path,
                None,
                (
                    f"is not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
                    f"{error.start}); save it as UTF-8",
                ),
            )
        ]
    return parse(path, text)


def parse(path: Path, text: str) -> list[Manifest | Unreadable]:
    """The documents of `text`, read as `read` reads the file `path`."""
    documents: list[Manifest | Unreadable] = []
    index = 0
    for index, content in enumerate(_documents(text), start=1):
        if isinstance(content, _Refused):
            documents.append(Unreadable(path, index, (content.reason,)))
            break  # the stream cannot be read past a syntax error
        if content is None:
            continue  # an empty document, as between two `---`: kubectl skips it too
        problems = _manifest_problems(content)
        documents.append(
            Unreadable(path, index, tuple(problems)) if problems else Manifest(path, index, content)
        )
    if not documents:
        empty = "the file is empty" if not text.strip() else f"its {index} documents are empty"
        return [Unreadable(path, None, (f"holds no manifest: {empty}",))]
    return documents


@dataclass(frozen=True)
class _Refused:
    reason: str


def _documents(text: str) -> Iterator[Any]:
    """Each document's value, or a _Refused that ends the stream."""
    try:
        yield from yaml.load_all(text, Loader=_Loader)
    except _TooBig as error:
        yield _Refused(str(error))
    except yaml.MarkedYAMLError as error:
        yield _Refused(_yaml_message(error))
    except yaml.YAMLError as error:
        yield _Refused(f"is not YAML: {error}")


def _manifest_problems(document: Any) -> list[str]:
    if not isinstance(document, dict):
        return [
            "a manifest must be a mapping (apiVersion, kind, metadata, spec), got "
            f"{_shown(document)}"
        ]
    problems = list(_json_problems(document, []))
    metadata = document.get("metadata", {})
    if not isinstance(metadata, dict):
        problems.insert(
            0, f"metadata: must be a mapping (name, namespace, labels), got {_shown(metadata)}"
        )
    return problems


def _json_problems(value: Any, path: list[Any]) -> Iterator[str]:
    """What in `value` JSON cannot carry, each named by its field."""
    where = field_path(path) or "(root)"
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                yield from _json_problems(item, [*path, key])
            else:
                yield (
                    f"{where}: key {key!r} is {_kind_of(key)}, but JSON keys are strings; quote it"
                )
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _json_problems(item, [*path, index])
    elif isinstance(value, float) and not math.isfinite(value):
        yield f"{where}: {value} is not a number JSON can carry; give a finite number"
    elif isinstance(value, datetime.date):
        yield (
            f"{where}: {value.isoformat()} reads as a YAML timestamp, which JSON cannot carry; "
            "quote the value to mean the text"
        )
    elif not isinstance(value, str | int | float | bool | None):
        yield f"{where}: {_kind_of(value)} cannot be carried by JSON; write a string instead"


def _kind_of(value: Any) -> str:
    names = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        type(None): "null",
        bytes: "binary data (!!binary)",
        set: "a set (!!set)",
        tuple: "a pair list (!!omap or !!pairs)",
    }
    return names.get(type(value), type(value).__name__)


def _shown(value: Any) -> str:
    """What `value` is, with the value itself when it is a short scalar."""
    scalar = isinstance(value, str | int | float) and not isinstance(value, bool)
    return f"{_kind_of(value)} {value!r}" if scalar and len(repr(value)) <= 40 else _kind_of(value)


class _TooBig(yaml.YAMLError):
    """A document nested or expanded beyond the bounds."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, bounded in depth and alias expansion, refusing repeated keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        # Composing recurses per level: refuse before Python's recursion limit does.
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
                line = event.start_mark.line + 1
                raise _TooBig(f"line {line}: nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Node | None:
        node = super().compose_document()
        if node is not None:
            _check_expansion(node)
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, Any]] = set()
        for key, _ in node.value:
            if isinstance(key, ScalarNode) and key.tag != _MERGE:
                if (key.tag, key.value) in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key.value!r} is repeated", key.start_mark
                    )
                seen.add((key.tag, key.value))
        mapping: dict[Any, Any] = super().construct_mapping(node, deep)
        return mapping


def _check_expansion(root: Node) -> None:
    """_TooBig when `root`, its aliases expanded, is deeper than MAX_DEPTH or has more than
    MAX_NODES values, or an alias sits inside its own anchor.

    An alias is the very node object of its anchor, so the walk sees the document as JSON
    would; it stops at the first bound, so it never takes more than MAX_NODES steps.
    """
    visited = 0
    open_: set[int] = set()

    def visit(node: Node, depth: int) -> None:
        nonlocal visited
        visited += 1
        line = node.start_mark.line + 1
        if visited > MAX_NODES:
            raise _TooBig(f"line {line}: aliases expand the document beyond {MAX_NODES} values")
        if depth > MAX_DEPTH:
            raise _TooBig(f"line {line}: aliases nest the document deeper than {MAX_DEPTH} levels")
        if id(node) in open_:
            raise _TooBig(f"line {line}: an alias inside its own anchor, which JSON cannot carry")
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        open_.add(id(node))
        for child in children:
            visit(child, depth + 1)
        open_.discard(id(node))

    visit(root, 1)


def _yaml_message(error: yaml.MarkedYAMLError) -> str:
    mark = error.problem_mark or error.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    context = f" ({error.context})" if error.context else ""
    return f"is not valid YAML: {where}{error.problem}{context}"
