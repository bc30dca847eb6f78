"""Deeply nested JSON is refused on every JSON route (V1, V2, feedback) with 400 naming the
limit, before any decoder recurses into it, and the keep-alive connection stays usable
(serving.asgi; its depth scan is tested in tests/unit/test_serving_asgi.py)."""

from __future__ import annotations

import http.client
from urllib.parse import urlparse

import pytest

from kubeloop.local import services
from tests import serving_models
from tests.serving_process import AUTH, GUARDED_DATASET

pytestmark = pytest.mark.slow

X = serving_models.digit_like_inputs(1)[0].tolist()
DEEP_BODIES = {
    "[ x100000": b"[" * 100_000,
    '{"a": x50000': b'{"a":' * 50_000,
    "input 50k deep": b'{"label": "1", "input": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
}
ROUTES = {
    "v1": "/v1/models/digits:predict",
    "v2": "/v2/models/digits/infer",
    "feedback": f"/v1/feedback/{GUARDED_DATASET}",
}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("body", DEEP_BODIES)
def test_deep_json_is_refused_naming_the_limit_and_the_connection_lives(
    guarded: services.Service, route: str, body: str
) -> None:
    address = urlparse(guarded.url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=30)
    headers = {"Content-Type": "application/json", **AUTH}
    try:
        connection.request("POST", ROUTES[route], body=DEEP_BODIES[body], headers=headers)
        answer = connection.getresponse()
        text = answer.read().decode()
        assert answer.status == 400, text
        assert "--max-json-depth" in text
        assert "32 levels" in text
        assert not answer.will_close  # keep-alive: no 500 tore the connection down
        sock = connection.sock
        connection.request(
            "POST", ROUTES["v1"], body=f'{{"instances": [{X}]}}'.encode(), headers=headers
        )
        again = connection.getresponse()
        assert again.status == 200, again.read()
        assert connection.sock is sock  # the same connection answered
    finally:
        connection.close()
