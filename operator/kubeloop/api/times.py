"""Times as Kubernetes writes them (RFC 3339, UTC) and back; no side effects.

The one formatter of the project: conditions, statuses, manifests and samples all use it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

Precision = Literal["seconds", "milliseconds"]


def format_time(moment: datetime, timespec: Precision = "seconds") -> str:
    """`moment` in RFC 3339 UTC with a Z, e.g. 2026-01-01T12:00:00Z."""
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_time(text: str | None) -> datetime | None:
    """The moment an RFC 3339 timestamp names, or None when there is none."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)
