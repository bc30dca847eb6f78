"""The API server's audit log (JSON lines): every request, who made it, and the answer.

The control plane's policy logs every request's metadata and service accounts' writes with
their bodies (control_plane.AUDIT_POLICY).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Rule = tuple[str, str, str]
"""(API group, resource or resource/subresource, verb), as an RBAC rule names a request."""

_FINAL_STAGES = {"ResponseStarted", "ResponseComplete", "Panic"}
"""A watch logs ResponseStarted when it begins and ResponseComplete when it ends; a request
still open when the log is read has only the first."""


@dataclass(frozen=True)
class Request:
    """One request to the API server, as its audit event tells it."""

    user: str
    verb: str
    uri: str
    code: int
    group: str = ""
    resource: str = ""
    """Empty for a non-resource URL (discovery, /version, /healthz)."""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    body: Any = None
    """What the client sent (creates, updates and patches of service accounts only)."""

    @property
    def rule(self) -> Rule:
        resource = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        return (self.group, resource, self.verb)

    def __str__(self) -> str:
        return f"{self.user} {self.verb} {self.uri} -> {self.code}"


def _request(event: dict[str, Any]) -> Request:
    ref = event.get("objectRef") or {}
    return Request(
        user=event["user"]["username"],
        verb=event["verb"],
        uri=event["requestURI"],
        code=int((event.get("responseStatus") or {}).get("code") or 0),
        group=ref.get("apiGroup", ""),
        resource=ref.get("resource", ""),
        subresource=ref.get("subresource", ""),
        namespace=ref.get("namespace", ""),
        name=ref.get("name", ""),
        body=event.get("requestObject"),
    )


@dataclass(frozen=True)
class AuditLog:
    path: Path

    def mark(self) -> int:
        """Where the log ends now: read(since=mark()) later gives what came after."""
        return self.path.stat().st_size if self.path.exists() else 0

    def read(self, since: int = 0, users: set[str] | None = None) -> list[Request]:
        """Requests logged after `since` (of `users` when given), each once."""
        seen: set[str] = set()
        found = []
        with self.path.open("rb") as log:
            log.seek(since)
            for line in log:
                if not line.endswith(b"\n"):
                    break  # being written: the next read has it
                event = json.loads(line)
                if event.get("stage") not in _FINAL_STAGES or event["auditID"] in seen:
                    continue
                seen.add(event["auditID"])
                if users is None or event["user"]["username"] in users:
                    found.append(_request(event))
        return found


def service_account_user(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"
