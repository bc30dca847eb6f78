"""Inputs that numpy would coerce are refused, naming the field: numeric strings ("0.5") and
booleans in V1 `instances`, V2 `data` and feedback `input`; a V2 shape with -1; a V2
request naming its input twice. Before, each was answered 200 (or stored as a sample)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from kubeloop.local import services
from tests import serving_models
from tests.serving_process import AUTH, GUARDED_DATASET

pytestmark = pytest.mark.slow

X = serving_models.digit_like_inputs(1)[0]
STRINGS = [[str(v) for v in row] for row in X.tolist()]
BOOLEANS = [[v > 0.5 for v in row] for row in X.tolist()]
ONE_STRING = [*X.tolist()[:-1], [*X.tolist()[-1][:-1], "0.5"]]


def v2(**tensor: Any) -> dict[str, Any]:
    base = {"name": "input", "shape": [1, 8, 8], "datatype": "FP32", "data": X.ravel().tolist()}
    return {"inputs": [{**base, **tensor}]}


@pytest.mark.parametrize(
    ("values", "kind"), [(STRINGS, "a string"), (BOOLEANS, "a boolean"), (ONE_STRING, "a string")]
)
def test_v1_instances_must_be_numbers(guarded: services.Service, values: Any, kind: str) -> None:
    answer = httpx.post(f"{guarded.url}/v1/models/digits:predict", json={"instances": [values]})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == (
        f"instances is not a numeric array: it holds {kind} where a number belongs; "
        "send JSON numbers"
    )


@pytest.mark.parametrize(
    ("request_body", "problem"),
    [
        (v2(data=[str(v) for v in X.ravel().tolist()]), "inputs[0].data is not a numeric array"),
        (v2(data=[bool(v > 0.5) for v in X.ravel().tolist()]), "holds a boolean"),
        (v2(datatype="BOOL", data=[True] * 64), "inputs[0].datatype 'BOOL' is not supported"),
        (v2(shape=[-1, 8, 8]), "inputs[0].shape must be positive sizes"),
        (v2(shape=[1, -8, -8]), "got [1, -8, -8]"),
        (
            {"inputs": v2()["inputs"] * 2},
            "inputs: 2 tensors are named 'input'; send it once",
        ),
        (
            {"inputs": [*v2()["inputs"], {**v2()["inputs"][0], "name": "extra"}]},
            "unknown tensors ['extra']",
        ),
    ],
)
def test_v2_tensors_must_be_what_they_declare(
    guarded: services.Service, request_body: dict[str, Any], problem: str
) -> None:
    answer = httpx.post(f"{guarded.url}/v2/models/digits/infer", json=request_body)
    assert answer.status_code == 400, answer.text
    assert problem in answer.json()["error"]


@pytest.mark.parametrize(("values", "kind"), [(STRINGS, "a string"), (BOOLEANS, "a boolean")])
def test_feedback_input_must_be_numbers(guarded: services.Service, values: Any, kind: str) -> None:
    answer = httpx.post(
        f"{guarded.url}/v1/feedback/{GUARDED_DATASET}",
        json={"label": "1", "input": values},
        headers=AUTH,
    )
    assert answer.status_code == 422, answer.text
    assert answer.json() == {
        "error": f"input is not a numeric array: it holds {kind} where a number belongs; "
        "send JSON numbers",
        "reason": "bad-shape",
    }


def test_well_formed_requests_still_pass(guarded: services.Service) -> None:
    assert httpx.post(f"{guarded.url}/v2/models/digits/infer", json=v2()).status_code == 200
    ints = [[int(v > 0.5) for v in row] for row in X.tolist()]  # JSON integers are numbers
    answer = httpx.post(f"{guarded.url}/v1/models/digits:predict", json={"instances": [ints]})
    assert answer.status_code == 200, answer.text
