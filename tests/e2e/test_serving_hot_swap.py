"""The predictor follows an MLflow alias: not ready before the alias exists, ready once it
does, and when the alias moves under concurrent V1 and V2 traffic the new version takes
over with no failed request, every answer computed by the version it names."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest

from kubeloop.local import services
from kubeloop.serving import onnx_model
from tests import serving_models
from tests.serving_process import start_predictor, wait_for

pytestmark = pytest.mark.slow

MODEL = "swap-test"
X = serving_models.digit_like_inputs(1, seed=3)


def test_alias_is_followed_and_swapped_under_load(
    tmp_path: Path, mlflow_server: services.Service, s3_server: services.Service
) -> None:
    v1_bytes = serving_models.tiny_classifier_onnx(seed=0)
    v2_bytes = serving_models.tiny_classifier_onnx(seed=1)
    expected = {
        version: onnx_model.OnnxModel(data).run(X)[0][0]
        for version, data in (("1", v1_bytes), ("2", v2_bytes))
    }
    assert not np.allclose(expected["1"], expected["2"])
    serving_models.register(mlflow_server.url, MODEL, v1_bytes)  # no alias yet
    predictor = start_predictor(
        tmp_path,
        f"models:/{MODEL}@live",
        mlflow_server.url,
        s3_server.url,
        args=["--alias-poll-seconds", "0.5", "--max-latency-ms", "2"],
        wait_ready=False,
    )
    try:
        # Up, but not ready: nothing to serve yet.
        assert httpx.get(f"{predictor.url}/v2/health/ready").status_code == 503
        assert httpx.get(f"{predictor.url}/v2/models/digits/ready").status_code == 503
        refused = httpx.post(
            f"{predictor.url}/v1/models/digits:predict", json={"instances": [X[0].tolist()]}
        )
        assert refused.status_code == 503
        mlflow.MlflowClient(mlflow_server.url).set_registered_model_alias(MODEL, "live", "1")
        wait_for(predictor, "/v2/health/ready", timeout=60)

        outcomes: Counter[str] = Counter()
        mismatches: list[str] = []
        stop = threading.Event()

        def client(protocol: str) -> None:
            with httpx.Client(base_url=predictor.url, timeout=30) as http:
                while not stop.is_set():
                    try:
                        version, probabilities = _predict(http, protocol)
                    except Exception as error:  # every failure is counted, none may happen
                        outcomes[f"error {type(error).__name__}: {error}"[:200]] += 1
                        continue
                    outcomes[version] += 1
                    if not np.allclose(probabilities, expected[version], atol=1e-5):
                        mismatches.append(version)

        threads = [threading.Thread(target=client, args=(p,)) for p in ["v1", "v2"] * 3]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.0)
            serving_models.register(mlflow_server.url, MODEL, v2_bytes, alias="live")
            deadline = time.monotonic() + 60
            while outcomes["2"] < 50 and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        assert outcomes["1"] > 0
        assert outcomes["2"] >= 50, dict(outcomes)
        assert set(outcomes) == {"1", "2"}, dict(outcomes)  # no errors of any kind
        assert mismatches == []
        version = httpx.get(f"{predictor.url}/v1/models/digits/version").json()
        assert version["model_version"] == "2"
        assert version["last_error"] is None
    finally:
        predictor.stop()


def _predict(http: httpx.Client, protocol: str) -> tuple[str, np.ndarray]:
    if protocol == "v1":
        answer = http.post("/v1/models/digits:predict", json={"instances": [X[0].tolist()]})
        answer.raise_for_status()
        body = answer.json()
        return body["model_version"], np.array(body["predictions"][0]["probabilities"])
    tensor = {"name": "input", "shape": [1, 8, 8], "datatype": "FP32", "data": X.ravel().tolist()}
    answer = http.post("/v2/models/digits/infer", json={"inputs": [tensor]})
    answer.raise_for_status()
    body = answer.json()
    outputs = {o["name"]: o for o in body["outputs"]}
    return body["model_version"], np.array(outputs["probabilities"]["data"])
