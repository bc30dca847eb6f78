"""The bearer token is compared as bytes: a header of any bytes (`Bearer \\xff\\xfe\\xfd`) is a
401 on every guarded route, not a 500 from comparing non-ASCII text; a non-ASCII token
sent as its UTF-8 bytes is accepted."""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlparse

import pytest
from starlette.requests import Request

from kubeloop.local import services
from kubeloop.serving import routes
from kubeloop.serving.errors import Rejected
from tests.serving_process import GUARDED_DATASET

GUARDED_ROUTES = [
    ("POST", f"/v1/feedback/{GUARDED_DATASET}"),
    ("GET", f"/v1/review/{GUARDED_DATASET}"),
    ("GET", "/v1/similar/01J0000000000000000000000Z"),
    ("POST", "/v1/models/digits/reload"),
]


def raw_request(url: str, method: str, path: str, authorization: bytes) -> tuple[int, bytes]:
    """Send a request whose Authorization header is exactly `authorization` (httpx would
    refuse to send such bytes); the status and the head of the answer."""
    address = urlparse(url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 2\r\nConnection: close\r\n".encode()
            + b"Authorization: "
            + authorization
            + b"\r\n\r\n{}"
        )
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path"), GUARDED_ROUTES)
def test_a_non_ascii_bearer_is_a_401(guarded: services.Service, method: str, path: str) -> None:
    status, answer = raw_request(guarded.url, method, path, b"Bearer \xff\xfe\xfd")
    assert status == 401, answer
    assert b'"reason":"unauthorized"' in answer
    assert b"www-authenticate: bearer" in answer.lower()


def authorize(token: str, header: bytes) -> None:
    scope: dict[str, Any] = {"type": "http", "headers": [(b"authorization", header)]}
    nobody: Any = None
    c = routes.Components("digits", nobody, nobody, nobody, token=token, labellers={token: "ada"})
    assert routes._authorize(c, Request(scope)) == "ada"  # a labeller's token, compared alike
    routes._authorize(
        routes.Components("digits", nobody, nobody, nobody, token=token), Request(scope)
    )


def test_tokens_are_compared_as_bytes() -> None:
    authorize("tök€n", "Bearer tök€n".encode())
    authorize("plain", b"bearer  plain ")
    for header in (b"Bearer \xff\xfe\xfd", "Bearer tök€n!".encode(), b"Basic plain", b""):
        with pytest.raises(Rejected) as refused:
            authorize("tök€n", header)
        assert refused.value.status == 401
