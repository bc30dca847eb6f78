"""The local runtime's state files, written so that a reader (or a `kubeloop up` killed
mid-write) sees the old content or the new, never half of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any, indent: int | None = None) -> None:
    """`data` as JSON at `path`, whole: written beside it, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(data, indent=indent))
    partial.replace(path)
