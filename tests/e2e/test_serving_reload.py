"""POST /v1/models/NAME/reload changes what is served, so it needs the bearer token; and
while the registry hangs it answers 503 after --reload-timeout-seconds (the check goes on)
instead of holding the request for MLflow's retries, and every other request is answered
meanwhile."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from kubeloop.local import services
from tests import serving_models
from tests.serving_process import AUTH, TOKEN, shared_model, start_predictor
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow

X = serving_models.digit_like_inputs(1)[0].tolist()
BOUND = 2


def test_reload_needs_the_token_and_is_bounded_while_mlflow_hangs(
    tmp_path: Path, mlflow_server: services.Service, s3_server: services.Service
) -> None:
    model = shared_model(mlflow_server.url)
    mlflow = TcpProxy(mlflow_server.url)
    predictor = start_predictor(
        tmp_path,
        f"models:/{model.name}@champion",
        mlflow.url,
        s3_server.url,
        args=["--alias-poll-seconds", "600", "--reload-timeout-seconds", str(BOUND)],
        env={"KUBELOOP_FEEDBACK_TOKEN": TOKEN},
    )
    reload_url = f"{predictor.url}/v1/models/digits/reload"
    try:
        refused = httpx.post(reload_url)
        assert refused.status_code == 401
        assert refused.json()["reason"] == "unauthorized"
        assert httpx.post(reload_url, headers=AUTH, timeout=30).json()["swapped"] is False

        mlflow.hold()
        latencies: list[float] = []
        with ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            reloading = pool.submit(httpx.post, reload_url, headers=AUTH, timeout=60)
            while not reloading.done():  # the event loop keeps answering meanwhile
                sent = time.monotonic()
                answer = httpx.post(
                    f"{predictor.url}/v1/models/digits:predict",
                    json={"instances": [X]},
                    timeout=30,
                )
                latencies.append(time.monotonic() - sent)
                assert answer.status_code == 200, answer.text
            reload = reloading.result()
        took = time.monotonic() - started
        assert reload.status_code == 503, reload.text
        assert reload.json()["reason"] == "reload-timeout"
        assert "--reload-timeout-seconds" in reload.json()["error"]
        assert reload.headers["Retry-After"] == "5"
        assert BOUND <= took < BOUND + 8  # not MLflow's 30 s timeout times its retries
        assert len(latencies) >= 2
        assert max(latencies) < BOUND
        # Another reload while that check still hangs waits on it, as long at most.
        started = time.monotonic()
        again = httpx.post(reload_url, headers=AUTH, timeout=60)
        assert again.json()["reason"] == "reload-timeout"
        assert time.monotonic() - started < BOUND + 8
        assert httpx.get(f"{predictor.url}/v1/models/digits/version").status_code == 200
    finally:
        mlflow.close()  # the hung check fails at once, so the predictor stops promptly
        predictor.stop()
