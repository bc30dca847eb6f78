"""A canary split in the predictor itself, for runtimes with nothing in front of it to split
traffic (`kubeloop up`): the stable predictor forwards `percent` of its inference requests to
a canary predictor and answers with the canary's answer.

    POST /v1/models/{name}/canary   {"url": "http://127.0.0.1:8081", "percent": 10}
                                    {"url": null, "percent": 0} ends the split

The choice is a weighted round robin, not a coin: of every 100 inference requests exactly
`percent` go to the canary, so a count of which version answered shows the split. Feedback,
review, every other route, and a V2 request naming a version stay with the stable predictor.
When the canary cannot be reached the stable predictor answers itself (and logs it once per
failure streak).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from kubeloop.serving.asgi import BINARY_JSON_LENGTH, read_body, replay
from kubeloop.serving.v2_routes import VERSIONED

log = logging.getLogger(__name__)

_INFERENCE = re.compile(r"/v1/models/[^/]+:predict|/v2/models/[^/]+/infer")
_PASSED = ("content-type", BINARY_JSON_LENGTH)
"""The headers of a request that travel to the canary, and of its answer that come back."""
TIMEOUT_SECONDS = 30.0


@dataclass
class Split:
    """Where the canary answers, and its share of the inference requests."""

    url: str | None = None
    percent: int = 0
    _sent: int = 0
    """Inference requests seen since the split was set."""

    def set(self, url: str | None, percent: int) -> None:
        if not 0 <= percent <= 100 or (percent > 0 and not url):
            raise ValueError("a canary split needs a url and a percent from 0 to 100")
        self.url, self.percent, self._sent = (url if percent else None), percent, 0

    def to_canary(self) -> bool:
        """Whether this request goes to the canary: `percent` of every 100, spread evenly."""
        if self.url is None or self.percent == 0:
            return False
        before = self._sent * self.percent // 100
        self._sent += 1
        return self._sent * self.percent // 100 > before


class CanaryRoutes:
    """ASGI middleware: inference requests the split picks are answered by the canary."""

    def __init__(self, app: ASGIApp, split: Split) -> None:
        self.app = app
        self.split = split
        self._client: httpx.AsyncClient | None = None
        self._failing = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not _INFERENCE.fullmatch(scope["path"])
            or VERSIONED in scope  # asked for a version by number: the one served here
            or not self.split.to_canary()
        ):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        try:
            answer = await self._forward(scope, body)
        except httpx.HTTPError as error:
            if not self._failing:
                log.warning(
                    "the canary at %s did not answer (%s); serving here", self.split.url, error
                )
            self._failing = True
            await self.app(scope, replay(body, receive), send)
            return
        self._failing = False
        headers = [(k.encode(), v.encode()) for k, v in answer.headers.items() if k in _PASSED]
        await send(
            {"type": "http.response.start", "status": answer.status_code, "headers": headers}
        )
        await send({"type": "http.response.body", "body": answer.content})

    async def _forward(self, scope: Scope, body: bytes) -> httpx.Response:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=TIMEOUT_SECONDS)
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k.decode() in _PASSED}
        query = scope.get("query_string", b"").decode()
        url = f"{self.split.url}{scope['path']}" + (f"?{query}" if query else "")
        return await self._client.post(url, content=body, headers=headers)
