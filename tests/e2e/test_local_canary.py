"""A canary on one machine: the local runtime's predictor port runs the candidate as a second
predictor process and the stable one forwards the canary's share to it; when the plan has
no canary any more, the candidate process stops and all traffic is the stable one's."""

from __future__ import annotations

import collections
import time
from pathlib import Path

import httpx
import pytest

from kubeloop.api.servedmodel import ServedModel
from kubeloop.local import services
from kubeloop.local.predictor import LocalPredictor
from kubeloop.local.processes import ProcessTable
from kubeloop.reconcile.ports import Deploy, ServingState
from tests import serving_models
from tests.conftest import ACCESS_KEY, SECRET_KEY

pytestmark = pytest.mark.slow
X = serving_models.digit_like_inputs(1, seed=2)


def test_kubeloop_up_splits_a_canary_between_two_predictors(
    tmp_path: Path, mlflow_server: services.Service, s3_server: services.Service
) -> None:
    model = serving_models.champion_and_candidate(mlflow_server.url, "local-canary")
    env = {
        "KUBELOOP_MLFLOW_TRACKING_URI": mlflow_server.url,
        "KUBELOOP_S3_ENDPOINT": s3_server.url,
        "KUBELOOP_S3_ACCESS_KEY": ACCESS_KEY,
        "KUBELOOP_S3_SECRET_KEY": SECRET_KEY,
    }
    table = ProcessTable(tmp_path)
    said: list[str] = []
    port = LocalPredictor(tmp_path, table, env, said.append, base_port=services.free_port())
    body = {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "ServedModel",
        "metadata": {"name": "digits", "namespace": "default", "uid": "u1", "generation": 1},
        "spec": {"registeredModel": model, "canary": {"steps": [30]}},
    }
    sm = ServedModel.model_validate(body)
    stable = f"models:/{model}@champion"

    def settled(deploy: Deploy, what: str) -> ServingState:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = port.apply(sm, body, deploy, None, spec_changed=False)
            if state.ready and any(what in line for line in said):
                return state
            time.sleep(0.2)  # polls until the processes are up, as the local loop does
        raise AssertionError(f"not {what} within 120 s: {said}")

    def answered(url: str, count: int) -> collections.Counter[str]:
        versions: collections.Counter[str] = collections.Counter()
        for _ in range(count):
            answer = httpx.post(
                f"{url}/v1/models/digits:predict", json={"instances": X.tolist()}, timeout=30
            )
            assert answer.status_code == 200, answer.text
            versions[str(answer.json()["model_version"])] += 1
        return versions

    try:
        canary = Deploy(stable, f"models:/{model}/2", 30, version="1")
        state = settled(canary, "30% of inference goes to the canary")
        assert state.url is not None
        assert answered(state.url, 100) == {"1": 70, "2": 30}
        assert table.get("predictor/digits-canary") is not None

        port.apply(sm, body, Deploy(stable, version="1"), None, spec_changed=False)
        assert table.get("predictor/digits-canary") is None
        assert answered(state.url, 20) == {"1": 20}
    finally:
        table.stop_all()
