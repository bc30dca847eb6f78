"""The predictor's HTTP layer around every route: bodies bounded before any route reads them,
and every error answered in one place.

`BodyLimits`, an ASGI middleware, reads each request body itself, before kserve's V1/V2
handlers or kubeloop's routes (and before FastAPI parses a V2 body with the standard
library's recursive JSON decoder):

- a declared Content-Length over the route's limit is refused at once, and a body without
  one is refused as soon as it grows past it (413 naming the limit and its option);
- bodies held at once, all requests together, stay under `max_inflight_bytes`: a request
  waits for room, and gets 503 with Retry-After when none comes, so a burst of big
  requests cannot exhaust the memory either;
- a JSON body nesting deeper than `max_json_depth` is refused (400) after a linear scan,
  so no decoder recurses into it.

The route then reads the body from memory as usual. `install` registers the middleware and
the exception handlers on kserve's FastAPI app: a `Rejected` raised anywhere below becomes
`{"error": message, "reason": reason}` with its status (the message redacted), and an
unexpected exception a redacted 500.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kubeloop import redaction
from kubeloop.serving.errors import Rejected, check_body_size

ROOM_WAIT_SECONDS = 10.0
"""Longest a request waits for room under max_inflight_bytes before a 503."""

BINARY_JSON_LENGTH = "inference-header-content-length"  # V2's binary tensor extension
_METHODS_WITH_BODIES = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class BodyRule:
    """The byte limit of the routes under `prefix` (the first rule that matches applies)."""

    prefix: str
    limit: int
    option: str
    """The setting that sets the limit, named in the refusal."""
    on_refused: Callable[[Rejected], None] | None = None
    """Called with each refusal of these routes (e.g. to count it)."""


class BodyLimits:
    """ASGI middleware bounding request bodies: size, bytes held at once, JSON depth."""

    def __init__(
        self,
        app: ASGIApp,
        rules: Sequence[BodyRule],
        max_inflight_bytes: int,
        max_json_depth: int,
    ) -> None:
        self.app = app
        self.rules = rules
        self.max_json_depth = max_json_depth
        self.room = _Room(max_inflight_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _METHODS_WITH_BODIES:
            await self.app(scope, receive, send)
            return
        rule = next(r for r in self.rules if scope["path"].startswith(r.prefix))
        held = [0]  # bytes taken from the room, given back however this ends
        try:
            try:
                body = await self._read(rule, Headers(scope=scope), receive, held)
            except Rejected as error:
                if rule.on_refused is not None:
                    rule.on_refused(error)
                await answer(error)(scope, receive, send)
                return
            if body is not None:
                await self.app(scope, replay(body, receive), send)
        finally:
            await self.room.give(held[0])

    async def _read(
        self, rule: BodyRule, headers: Headers, receive: Receive, held: list[int]
    ) -> bytes | None:
        """The whole body, checked; None when the client went away meanwhile."""
        declared = headers.get("content-length", "")
        if declared.isdigit():
            check_body_size(int(declared), rule.limit, rule.option)
            held[0] += await self.room.take(int(declared))
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            check_body_size(len(body), rule.limit, rule.option, declared=False)
            if len(body) > held[0]:
                held[0] += await self.room.take(len(body) - held[0])
            if not message.get("more_body", False):
                break
        if _may_be_json(headers):
            check_json_depth(_json_part(body, headers), self.max_json_depth)
        return bytes(body)


class _Room:
    """Bytes of request bodies held at once, bounded."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._freed = asyncio.Condition()

    async def take(self, size: int) -> int:
        """Hold `size` bytes (at most the whole capacity); Rejected 503 when no room comes."""
        size = min(size, self.capacity)
        if self.used + size <= self.capacity:  # room now (the common case): no waiting
            self.used += size
            return size

        async def wait() -> None:
            async with self._freed:
                await self._freed.wait_for(lambda: self.used + size <= self.capacity)
                self.used += size

        try:
            await asyncio.wait_for(wait(), ROOM_WAIT_SECONDS)
        except TimeoutError:
            raise Rejected(
                503,
                "busy",
                f"the predictor holds {self.used} bytes of request bodies, its limit "
                f"(--max-inflight-bytes {self.capacity}); retry shortly",
                retry_after=1,
            ) from None
        return size

    async def give(self, size: int) -> None:
        if size > 0:
            async with self._freed:
                self.used -= size
                self._freed.notify_all()


async def read_body(receive: Receive) -> bytes:
    """The whole request body, however many messages it comes in."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that hands the route the body read already, then what the client sends."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _may_be_json(headers: Headers) -> bool:
    # Not only application/json: a V1 body sent without a JSON content type is read as JSON.
    media = headers.get("content-type", "").split(";")[0].strip().lower()
    return not media.startswith("image/") and media != "application/octet-stream"


def _json_part(body: bytearray, headers: Headers) -> bytes:
    """The JSON text of a body: all of it, or the header of a V2 binary-tensor body."""
    length = headers.get(BINARY_JSON_LENGTH, "")
    return bytes(body[: int(length)]) if length.isdigit() else bytes(body)


# Escapes go first (linear), so a string is then just "..." and skipping strings is linear
# too; a regex that handled escapes inside strings could backtrack quadratically.
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
_NOT_A_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_CHUNK = 1 << 20


def nesting_depth(document: bytes, stop_above: int | None = None) -> int:
    """How deep arrays and objects nest in a JSON text, brackets in strings not counted;
    stops early once past `stop_above`. Linear time, no recursion; no side effects."""
    brackets = _STRING.sub(b"", _ESCAPE.sub(b"", document)).translate(None, _NOT_A_BRACKET)
    peak = depth = 0
    for start in range(0, len(brackets), _CHUNK):
        chunk = np.frombuffer(brackets, np.uint8, min(_CHUNK, len(brackets) - start), start)
        steps = np.where((chunk == ord("[")) | (chunk == ord("{")), 1, -1).astype(np.int32)
        running = depth + np.cumsum(steps, dtype=np.int32)
        peak, depth = max(peak, int(running.max())), int(running[-1])
        if stop_above is not None and peak > stop_above:
            break
    return peak


def check_json_depth(document: bytes, limit: int) -> None:
    """Rejected (400) when the JSON text nests deeper than `limit`."""
    if document.count(b"[") + document.count(b"{") <= limit:
        return  # fewer openings than the limit cannot nest deeper: most small requests
    if nesting_depth(document, stop_above=limit) > limit:
        raise Rejected(
            400,
            "too-deep",
            f"the JSON body nests deeper than {limit} levels, the limit (--max-json-depth)",
        )


def answer(error: Rejected) -> JSONResponse:
    """The response for a refusal: its status, reason and (redacted) message."""
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(
        {"error": redaction.redact(str(error)), "reason": error.reason},
        status_code=error.status,
        headers=headers,
    )


async def _rejected(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, Rejected)
    return answer(error)


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    # Starlette logs the traceback itself after this answer (through the redacting filter).
    message = redaction.redact(f"{type(error).__name__}: {error}")
    return JSONResponse({"error": message, "reason": "internal-error"}, status_code=500)


def add_exception_handlers(app: FastAPI) -> None:
    """Refusals and unexpected errors answered once, for every route (call after kserve's)."""
    app.add_exception_handler(Rejected, _rejected)
    app.add_exception_handler(Exception, _unexpected)


def add_body_limits(app: FastAPI, **options: Any) -> None:
    """The BodyLimits middleware on `app` (options: BodyLimits' arguments)."""
    app.add_middleware(BodyLimits, **options)
