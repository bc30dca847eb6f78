"""The Helm chart rendered as a release would install it (helm-python-sdk), as plain dicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

CHART = Path(__file__).resolve().parents[1] / "helm" / "kubeloop"
RELEASE = "kubeloop"
RELEASE_NAMESPACE = "kubeloop-system"


def render(
    values: dict[str, Any], name: str = RELEASE, namespace: str = RELEASE_NAMESPACE
) -> list[dict[str, Any]]:
    """The chart's objects (NOTES.txt left out) for an install of release `name`."""
    chart = helm.Chart.load(CHART)
    rendered = chart.render(values, name=name, namespace=namespace, is_install=True)
    documents: list[dict[str, Any]] = []
    for path, text in rendered.items():
        if path.endswith(".txt"):
            continue
        documents.extend(d for d in yaml.safe_load_all(text) if d)
    return documents


def by_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]
