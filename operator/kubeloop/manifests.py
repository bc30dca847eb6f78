"""Reading kubeloop manifests from YAML files, as `kubectl apply -f` takes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def load(path: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every YAML document in `path` (a file, or a directory's *.yaml/*.yml), with its file."""
    files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")]) if path.is_dir() else [path]
    documents = []
    for file in files:
        for document in yaml.safe_load_all(file.read_text()):
            if document is None:
                continue
            if not isinstance(document, dict):
                raise ValueError(
                    f"{file}: a manifest must be a mapping, got {type(document).__name__}"
                )
            documents.append((file, document))
    return documents
