"""KServe V2 requests as the protocol's clients send them, made what kserve's handlers take.

- `/v2/models/NAME/versions/VERSION[/ready|/infer]`: kserve answers 501 for any version. A
  predictor serves one registry version, so a request naming it goes to the route without
  the version, and one naming another version gets 404 saying which version is served.
- An infer body without `inference-header-content-length` (the binary tensor extension) is
  JSON, whatever its content type: tritonclient's HTTP client sends JSON with no
  Content-Type, which kserve would take for binary tensors and refuse.

The model metadata's `versions` is the dataplane's (`served_version`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from kubeloop.serving.asgi import BINARY_JSON_LENGTH, answer
from kubeloop.serving.errors import Rejected

VERSIONED = "kubeloop.version"
"""Scope key naming the version a rewritten request asked for (the canary split leaves
such requests with this predictor)."""
VersionOf = Callable[[str], str | None]
"""The registry version a model name serves; None when none is loaded (or no such model)."""

_VERSIONED = re.compile(r"/v2/models/(?P<model>[^/]+)/versions/(?P<version>[^/]+)(?P<rest>/.*)?")
_INFER = re.compile(r"/v2/models/[^/]+/infer")
_JSON = b"application/json"


class V2Routes:
    """ASGI middleware: versioned V2 routes answered for the served version, and V2 JSON
    bodies read as JSON whatever their content type."""

    def __init__(self, app: ASGIApp, version_of: VersionOf) -> None:
        self.app = app
        self.version_of = version_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        versioned = _VERSIONED.fullmatch(scope["path"])
        if versioned is not None:
            model, asked = versioned["model"], versioned["version"]
            served = self.version_of(model)
            if served is not None and asked != served:
                refusal = Rejected(
                    404,
                    "version-not-served",
                    f"model {model} serves version {served}, not {asked}: ask for version "
                    f"{served}, or leave the version out of the request",
                )
                await answer(refusal)(scope, receive, send)
                return
            path = f"/v2/models/{model}{versioned['rest'] or ''}"
            scope = {**scope, "path": path, "raw_path": path.encode(), VERSIONED: asked}
        if scope["method"] == "POST" and _INFER.fullmatch(scope["path"]):
            scope = {**scope, "headers": _as_json(scope["headers"])}
        await self.app(scope, receive, send)


def _as_json(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """An infer request's headers with Content-Type JSON unless it sends binary tensors."""
    if any(name == BINARY_JSON_LENGTH.encode() for name, _ in headers):
        return headers
    return [*((n, v) for n, v in headers if n != b"content-type"), (b"content-type", _JSON)]
