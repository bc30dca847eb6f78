"""The predictor's HTTP layer in process (serving.asgi): the JSON depth scan, and the body
limits middleware driven as an ASGI app: declared and chunked bodies over the limit, a
client that leaves, the bound on bodies held at once, refusals answered redacted; and the
V1 fast path (serving.fast_path): what it answers itself and what it leaves to the app."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from kubeloop.serving import asgi, fast_path
from kubeloop.serving.errors import Rejected

Message = dict[str, Any]


def test_depth_counts_arrays_and_objects_but_not_strings() -> None:
    assert asgi.nesting_depth(b"") == 0
    assert asgi.nesting_depth(b'{"a": [1, [2, {"b": 3}]]}') == 4
    assert asgi.nesting_depth(b'{"label": "[[[[[[{{{{", "x": "\\"[[["}') == 1
    assert asgi.nesting_depth(b"[" * 100_000) == 100_000
    assert asgi.nesting_depth(b"[" * 100_000, stop_above=10) > 10


def test_depth_scan_is_linear_on_escaped_quotes() -> None:
    # A regex handling escapes inside strings backtracks quadratically on this body.
    body = b'"' + b'\\"' * 500_000
    started = time.perf_counter()
    asgi.nesting_depth(body)
    assert time.perf_counter() - started < 5


def test_a_deep_body_is_refused_before_a_route_reads_it() -> None:
    with pytest.raises(Rejected) as refused:
        asgi.check_json_depth(b'{"inputs": ' + b"[" * 33 + b"]" * 33 + b"}", 32)
    assert (refused.value.status, refused.value.reason) == (400, "too-deep")
    asgi.check_json_depth(b'{"inputs": ' + b"[" * 31 + b"]" * 31 + b"}", 32)


class Exchange:
    """One request through BodyLimits: what the inner app saw, what the client got."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.app_bodies: list[bytes] = []
        self.release = asyncio.Event()
        self.release.set()

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        self.app_bodies.append(message["body"])
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None

    @property
    def answer(self) -> dict[str, Any]:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


def limits(exchange: Exchange, inflight: int = 1000, **rule: Any) -> asgi.BodyLimits:
    rules = [
        asgi.BodyRule("/v1/feedback/", 50, "--max-payload-bytes", **rule),
        asgi.BodyRule("", 100, "--max-request-bytes"),
    ]
    return asgi.BodyLimits(exchange.app, rules, max_inflight_bytes=inflight, max_json_depth=8)


def request(path: str = "/v1/models/m:predict", length: int | None = None) -> dict[str, Any]:
    headers = [(b"content-type", b"application/json")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http", "method": "POST", "path": path, "headers": headers}


def chunks(*parts: bytes, disconnect: bool = False) -> Any:
    messages: list[Message] = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1 or disconnect}
        for i, part in enumerate(parts)
    ]
    if disconnect:
        messages.append({"type": "http.disconnect"})

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return receive


@pytest.mark.asyncio
async def test_a_body_within_the_limits_reaches_the_app_whole() -> None:
    exchange = Exchange()
    await limits(exchange)(request(length=13), chunks(b'{"a": ', b"[1, 2]}"), exchange.send)
    assert exchange.app_bodies == [b'{"a": [1, 2]}']
    assert exchange.status == 200


@pytest.mark.asyncio
async def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    exchange = Exchange()

    async def unread() -> Message:
        raise AssertionError("the body was read")

    await limits(exchange)(request(length=101), unread, exchange.send)
    assert exchange.status == 413
    assert exchange.answer == {
        "error": "the body has 101 bytes; the limit is 100 (--max-request-bytes)",
        "reason": "too-large",
    }
    assert exchange.app_bodies == []


@pytest.mark.asyncio
async def test_a_chunked_body_is_refused_once_it_grows_past_the_limit() -> None:
    exchange = Exchange()
    refused: list[Rejected] = []
    app = limits(exchange, on_refused=refused.append)
    await app(request("/v1/feedback/d"), chunks(b"[" + b" " * 30, b" " * 30, b"]"), exchange.send)
    assert exchange.status == 413
    assert "(--max-payload-bytes)" in exchange.answer["error"]
    assert [error.reason for error in refused] == ["too-large"]  # counted by the feedback route
    assert exchange.app_bodies == []


@pytest.mark.asyncio
async def test_deep_json_is_refused_and_other_bodies_are_not_scanned() -> None:
    exchange = Exchange()
    await limits(exchange)(request(), chunks(b"[" * 9 + b"]" * 9), exchange.send)
    assert exchange.status == 400
    assert exchange.answer["reason"] == "too-deep"
    png = request("/v1/feedback/d")
    png["headers"] = [(b"content-type", b"image/png")]
    await limits(exchange)(png, chunks(b"[" * 20), exchange.send)
    assert exchange.app_bodies == [b"[" * 20]


@pytest.mark.asyncio
async def test_a_client_that_leaves_gets_nothing_and_holds_no_room() -> None:
    exchange = Exchange()
    app = limits(exchange)
    await app(request(length=60), chunks(b"[1,", disconnect=True), exchange.send)
    assert exchange.sent == []
    assert app.room.used == 0


@pytest.mark.asyncio
async def test_bodies_held_at_once_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asgi, "ROOM_WAIT_SECONDS", 0.3)
    first, second, third = Exchange(), Exchange(), Exchange()
    first.release.clear()  # the first request's app is still busy with its 80 bytes
    holder = asgi.BodyLimits(
        first.app,
        [asgi.BodyRule("", 100, "--max-request-bytes")],
        max_inflight_bytes=100,
        max_json_depth=8,
    )
    busy = asyncio.create_task(holder(request(length=80), chunks(b"1" * 80), first.send))
    while holder.room.used < 80:
        await asyncio.sleep(0.01)
    holder.app = second.app
    started = time.monotonic()
    await holder(request(length=80), chunks(b"2" * 80), second.send)
    assert second.status == 503
    assert second.answer["reason"] == "busy"
    assert "--max-inflight-bytes" in second.answer["error"]
    start = next(m for m in second.sent if m["type"] == "http.response.start")
    assert (b"retry-after", b"1") in start["headers"]
    assert time.monotonic() - started >= 0.3
    # Once the first is answered its room is free again, and a waiting request goes on.
    holder.app = third.app
    waiting = asyncio.create_task(holder(request(length=80), chunks(b"3" * 80), third.send))
    await asyncio.sleep(0.05)
    assert third.status is None
    first.release.set()
    await asyncio.wait_for(asyncio.gather(busy, waiting), 5)
    assert (first.status, third.status) == (200, 200)
    assert holder.room.used == 0


@pytest.mark.asyncio
async def test_requests_without_bodies_pass_untouched() -> None:
    exchange = Exchange()
    scope = {"type": "http", "method": "GET", "path": "/v2/health/ready", "headers": []}
    await limits(exchange)(scope, chunks(b""), exchange.send)
    assert exchange.status == 200


def test_refusals_are_answered_redacted_with_their_headers() -> None:
    answer = asgi.answer(
        Rejected(503, "reload-failed", "at http://u:hunter2@mlflow:5000 down", retry_after=5)
    )
    assert b"hunter2" not in answer.body
    assert json.loads(answer.body) == {
        "error": "at http://u:***@mlflow:5000 down",
        "reason": "reload-failed",
    }
    assert answer.headers["Retry-After"] == "5"
    assert asgi.answer(Rejected(401, "unauthorized", "no")).headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.asyncio
async def test_the_v1_fast_path_answers_plain_json_and_leaves_the_rest_to_the_app() -> None:
    bodies: list[bytes] = []

    async def answer_v1(body: bytes, alone: bool) -> bytes:
        bodies.append(body)
        if b"bad" in body:
            raise ValueError("the framework answers this one")
        return b'{"predictions": []}'

    def model_of(name: str) -> fast_path.AnswerV1 | None:
        return answer_v1 if name == "m" else None

    def call(path: str, media: bytes, body: bytes, *extra: tuple[bytes, bytes]) -> Exchange:
        exchange = Exchange()
        scope = request(path) | {"headers": [(b"content-type", media), *extra]}
        middleware = fast_path.V1FastPath(exchange.app, model_of)
        calls.append(middleware(scope, chunks(body[:3], body[3:]), exchange.send))
        return exchange

    calls: list[Any] = []
    fast = call("/v1/models/m:predict", b"application/json; charset=utf-8", b'{"instances": []}')
    failed = call("/v1/models/m:predict", b"application/json", b'{"bad": 1}')
    others = [
        call("/v1/models/m:predict", b"text/plain", b"{}"),  # kserve's route reads it too
        call("/v1/models/m:predict", b"application/json", b"{}", (b"ce-specversion", b"1.0")),
        call("/v1/models/other:predict", b"application/json", b"{}"),  # kserve answers 404
        call("/v2/models/m/infer", b"application/json", b"{}"),
    ]
    await asyncio.gather(*calls)
    assert fast.app_bodies == []
    assert fast.status == 200
    assert fast.answer == {"predictions": []}
    assert bodies == [b'{"instances": []}', b'{"bad": 1}']  # whole, from two chunks
    assert failed.app_bodies == [b'{"bad": 1}']  # replayed whole
    assert failed.status == 200
    assert [exchange.app_bodies for exchange in others] == [[b"{}"]] * 4  # untouched
