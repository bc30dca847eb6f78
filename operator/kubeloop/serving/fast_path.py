"""The KServe V1 predict request, answered without the web framework in between.

A V1 predict with a JSON body is most of what a predictor answers, and for a small model the
framework's routing, request and response objects and kserve's data plane cost several times
the inference (bench/README.md, predictor). This ASGI middleware sits inside kubeloop's own
(body limits, canary split, V2 routes: they still apply) and hands such a request straight to
its model's V1 code (KServeModel.answer_v1): the same answer, byte for byte, as through the
framework, told whether other such requests are in flight (a lone one on a cheap model runs
inline, serving.batching). Anything else, and any request that fails, goes on to the
framework unchanged (its body replayed), so every error is answered there, in kserve's
format.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from kubeloop.serving.asgi import read_body, replay

AnswerV1 = Callable[[bytes, bool], Awaitable[bytes]]
"""A model's V1 answer to a JSON body, told whether no other request is in flight; raises
on anything the framework must answer."""
ModelOf = Callable[[str], AnswerV1 | None]
"""The V1 answer of the model registered under a name; None for no such model."""

_PREDICT = re.compile(r"/v1/models/(?P<model>[^/]+):predict")
_JSON = (b"", b"application/json")
_HEADERS = [(b"content-type", b"application/json")]


class V1FastPath:
    """ASGI middleware: V1 predict requests with a plain JSON body answered by the model."""

    def __init__(self, app: ASGIApp, model_of: ModelOf) -> None:
        self.app = app
        self.model_of = model_of
        self._in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer_v1 = self._answerer(scope)
        if answer_v1 is None:
            await self.app(scope, receive, send)
            return
        self._in_flight += 1
        try:
            body = await read_body(receive)
            try:
                answer = await answer_v1(body, self._in_flight == 1)
            except Exception:  # the framework answers it, as it would have without this path
                await self.app(scope, replay(body, receive), send)
                return
            length = [(b"content-length", str(len(answer)).encode())]
            start = {"type": "http.response.start", "status": 200, "headers": _HEADERS + length}
            await send(start)
            await send({"type": "http.response.body", "body": answer})
        finally:
            self._in_flight -= 1

    def _answerer(self, scope: Scope) -> AnswerV1 | None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        predict = _PREDICT.fullmatch(scope["path"])
        if predict is None or not _plain_json(scope["headers"]):
            return None
        return self.model_of(predict["model"])


def _plain_json(headers: list[tuple[bytes, bytes]]) -> bool:
    """A JSON body (or one without a content type, which kserve reads as JSON), and not a
    CloudEvent (ce-* headers, or the structured content type), which kserve answers in kind."""
    media = b""
    for name, value in headers:
        if name.startswith(b"ce-"):
            return False
        if name == b"content-type":
            media = value.split(b";")[0].strip().lower()
    return media in _JSON
