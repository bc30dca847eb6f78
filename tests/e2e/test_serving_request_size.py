"""Inference has size limits: a body over --max-request-bytes is refused (413, naming the
limit) before it is read, so it costs the predictor no memory; a request over
--max-request-rows is refused before its inputs are decoded; the predictor goes on
serving. Before these limits a 1e5-row V1 request added ~1.4 GiB of RSS and took 9 s."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import pytest

from kubeloop.local import services
from tests import serving_models
from tests.serving_process import AUTH, GUARDED_DATASET, GUARDED_MAX_ROWS

pytestmark = pytest.mark.slow

X = serving_models.digit_like_inputs(1)[0].tolist()
MIB = 1 << 20


def peak_rss(process: services.Service) -> int:
    """The predictor's peak resident memory so far (VmHWM), in bytes."""
    status = open(f"/proc/{process.process.pid}/status").read()  # noqa: SIM115
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def post(guarded: services.Service, path: str, body: bytes | Iterator[bytes]) -> httpx.Response:
    """POST a JSON body as bytes, with a Content-Length (or chunked, from an iterator)."""
    headers = {"Content-Type": "application/json"}
    return httpx.post(f"{guarded.url}{path}", content=body, headers=headers, timeout=60)


def still_serving(guarded: services.Service) -> None:
    assert guarded.process.poll() is None
    answer = httpx.post(f"{guarded.url}/v1/models/digits:predict", json={"instances": [X]})
    assert answer.status_code == 200, answer.text


def test_a_1e5_row_body_is_refused_unread_and_costs_no_memory(guarded: services.Service) -> None:
    body = json.dumps({"instances": [X] * 100_000}).encode()
    assert len(body) > 16 * MIB  # the default --max-request-bytes
    before = peak_rss(guarded)
    answer = post(guarded, "/v1/models/digits:predict", body)
    assert answer.status_code == 413, answer.text[:300]
    assert answer.json()["reason"] == "too-large"
    assert f"the body has {len(body)} bytes; the limit is {16 * MIB}" in answer.json()["error"]
    assert "--max-request-bytes" in answer.json()["error"]
    assert peak_rss(guarded) - before < 64 * MIB
    still_serving(guarded)


def test_a_v2_body_over_the_limit_is_refused(guarded: services.Service) -> None:
    rows = 80_000  # 20 MB of JSON
    head = f'{{"inputs": [{{"name": "input", "shape": [{rows}, 8, 8], "datatype": "FP32", '
    body = head.encode() + b'"data": [' + b"0.5," * (rows * 64 - 1) + b"0.5]}]}"
    before = peak_rss(guarded)
    answer = post(guarded, "/v2/models/digits/infer", body)
    assert answer.status_code == 413
    assert "--max-request-bytes" in answer.json()["error"]
    assert peak_rss(guarded) - before < 64 * MIB
    still_serving(guarded)


def test_a_chunked_body_is_refused_once_it_passes_the_limit(guarded: services.Service) -> None:
    def body() -> Iterator[bytes]:  # no Content-Length: the server counts as it reads
        yield b'{"instances": ['
        for _ in range(32):
            yield b" " * MIB

    answer = post(guarded, "/v1/models/digits:predict", body())
    assert answer.status_code == 413
    assert "grew past the limit" in answer.json()["error"]
    still_serving(guarded)


def test_a_feedback_body_over_its_own_limit_is_refused(guarded: services.Service) -> None:
    answer = httpx.post(
        f"{guarded.url}/v1/feedback/{GUARDED_DATASET}",
        content=b"x" * (2 * MIB),
        headers={"Content-Type": "application/json", **AUTH},
    )
    assert answer.status_code == 413
    assert answer.json()["reason"] == "too-large"
    assert "--max-payload-bytes" in answer.json()["error"]


@pytest.mark.parametrize("protocol", ["v1", "v2", "v2-png"])
def test_more_rows_than_the_limit_are_refused_before_decoding(
    guarded: services.Service, protocol: str
) -> None:
    rows = GUARDED_MAX_ROWS + 1
    png = base64.b64encode(serving_models.png_bytes(serving_models.digit_like_inputs(1)[0]))
    if protocol == "v1":
        path, body = ":predict", {"instances": [X] * rows}
    elif protocol == "v2":
        # One row of data for 101 declared: refused for the rows, before the data is read.
        tensor = {"name": "input", "shape": [rows, 8, 8], "datatype": "FP32", "data": X}
        path, body = "/infer", {"inputs": [tensor]}
    else:
        tensor = {"name": "input", "shape": [rows], "datatype": "BYTES", "data": [png.decode()]}
        tensor["data"] = tensor["data"] * rows
        path, body = "/infer", {"inputs": [tensor]}
    prefix = "/v1/models/digits" if protocol == "v1" else "/v2/models/digits"
    answer = httpx.post(f"{guarded.url}{prefix}{path}", json=body, timeout=30)
    assert answer.status_code == 413, answer.text[:300]
    error = answer.json()["error"]
    assert f"holds {rows} inputs; the limit is {GUARDED_MAX_ROWS}" in error
    assert "--max-request-rows" in error
    assert answer.json()["reason"] == "too-many-rows"
    within = httpx.post(
        f"{guarded.url}/v1/models/digits:predict", json={"instances": [X] * GUARDED_MAX_ROWS}
    )
    assert within.status_code == 200
