"""The predictor's own canary split (serving.canary), as `kubeloop up` uses it: two real
predictor processes serving versions 1 and 2; the stable one forwards its share of
inference to the canary. Counted over 1,000 requests, the share is exact."""

from __future__ import annotations

import collections
from pathlib import Path

import httpx
import pytest

from kubeloop.local import services
from tests import serving_models
from tests.serving_process import AUTH, TOKEN, start_predictor

pytestmark = pytest.mark.slow
X = serving_models.digit_like_inputs(4, seed=5)


def test_the_stable_predictor_sends_the_canary_its_share(
    tmp_path: Path, mlflow_server: services.Service, s3_server: services.Service
) -> None:
    name = serving_models.champion_and_candidate(mlflow_server.url, "canary")
    env = {"KUBELOOP_FEEDBACK_TOKEN": TOKEN}
    stable, candidate = (
        start_predictor(
            tmp_path / f"v{v}", f"models:/{name}/{v}", mlflow_server.url, s3_server.url, env=env
        )
        for v in ("1", "2")
    )
    try:
        with httpx.Client(base_url=stable.url, timeout=30) as client:

            def split(url: str | None, percent: int) -> httpx.Response:
                body = {"url": url, "percent": percent}
                return client.post("/v1/models/digits/canary", json=body, headers=AUTH)

            def answered(count: int, v2: bool = False) -> collections.Counter[str]:
                versions: collections.Counter[str] = collections.Counter()
                for i in range(count):
                    if v2:
                        row = {"name": "input", "shape": [1, 8, 8], "datatype": "FP32"}
                        tensor = {**row, "data": X[i % 4].reshape(-1).tolist()}
                        answer = client.post("/v2/models/digits/infer", json={"inputs": [tensor]})
                    else:
                        instances = {"instances": [X[i % 4].tolist()]}
                        answer = client.post("/v1/models/digits:predict", json=instances)
                    assert answer.status_code == 200, answer.text
                    versions[str(answer.json()["model_version"])] += 1
                return versions

            assert split(candidate.url, 10).json() == {"url": candidate.url, "percent": 10}
            assert answered(1000) == {"1": 900, "2": 100}
            assert split(candidate.url, 50).status_code == 200
            assert answered(20, v2=True) == {"1": 10, "2": 10}
            row = {"name": "input", "shape": [1, 8, 8], "datatype": "FP32"}
            tensor = {**row, "data": X[0].reshape(-1).tolist()}
            for _ in range(4):  # a request for version 1 by number is never split off
                named = client.post("/v2/models/digits/versions/1/infer", json={"inputs": [tensor]})
                assert named.json()["model_version"] == "1"
            assert split(None, 0).status_code == 200
            assert answered(50) == {"1": 50}

            refused = client.post("/v1/models/digits/canary", json={"percent": 10}, headers=AUTH)
            assert (refused.status_code, refused.json()["reason"]) == (422, "bad-canary")
            assert client.post("/v1/models/digits/canary", json={}).status_code == 401
            candidate.stop()  # a canary that is gone: the stable predictor answers itself
            assert split(candidate.url, 100).status_code == 200
            assert answered(5) == {"1": 5}
    finally:
        stable.stop()
        candidate.stop()
