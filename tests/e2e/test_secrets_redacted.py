"""No password planted in a URI comes out of a predictor or a trainer: every HTTP body,
stdout and stderr, log and file they wrote is searched for it. The predictor follows an
MLflow URI with a password (`http://kubeloop:PASSWORD@...`) that cannot be reached, and a
second one gets an S3 endpoint with one; the trainer fails to reach MLflow, and succeeds
against a real MLflow reached through a URI with a password (MLflow prints its run URL)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kubeloop.local import services
from tests import serving_models
from tests.conftest import ACCESS_KEY, SECRET_KEY, unused_url
from tests.serving_process import AUTH, TOKEN, shared_model, start_predictor

pytestmark = pytest.mark.slow

PLANTED = "PLANTED-pa55w0rd"
X = serving_models.digit_like_inputs(1)[0].tolist()
FEEDBACK = [
    "--feedback-dataset", "fd", "--feedback-bucket", "secrets", "--feedback-prefix", "fb/",
    "--classes", ",".join(serving_models.CLASSES), "--input-shape", "8,8",
    "--reload-timeout-seconds", "1", "--log-flush-seconds", "0.2",
]  # fmt: skip


def with_password(url: str) -> str:
    return url.replace("http://", f"http://kubeloop:{PLANTED}@")


def everything_written(directory: Path) -> dict[str, str]:
    """Every file under `directory`, as text."""
    return {
        str(path): path.read_text(errors="replace")
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def assert_nowhere(outputs: dict[str, str]) -> None:
    found = [name for name, text in outputs.items() if PLANTED in text]
    assert not found, f"the planted password is in {found}"


def test_the_predictor_shows_no_password_of_an_unreachable_mlflow(
    tmp_path: Path, mlflow_server: services.Service, s3_server: services.Service
) -> None:
    model = shared_model(mlflow_server.url)
    workdir = tmp_path / "predictor"
    predictor = start_predictor(
        workdir,
        f"models:/{model.name}@champion",
        with_password(unused_url()),
        s3_server.url,
        args=FEEDBACK,
        env={"KUBELOOP_FEEDBACK_TOKEN": TOKEN},
        wait_ready=False,
    )
    bodies: dict[str, str] = {}
    try:
        url = predictor.url
        deadline = time.monotonic() + 60
        version: dict[str, Any] = {}
        while time.monotonic() < deadline and not version.get("last_error"):
            answer = httpx.get(f"{url}/v1/models/digits/version")
            bodies["version"], version = answer.text, answer.json()
            time.sleep(0.2)
        assert "kubeloop:***@127.0.0.1" in version["last_error"]  # said, but redacted
        reload = httpx.post(f"{url}/v1/models/digits/reload", headers=AUTH, timeout=30)
        assert reload.status_code == 503
        bodies["reload"] = reload.text
        bodies["predict"] = httpx.post(
            f"{url}/v1/models/digits:predict", json={"instances": [X]}
        ).text
        bodies["feedback"] = httpx.post(
            f"{url}/v1/feedback/fd", json={"label": "1", "input": X}, headers=AUTH
        ).text
        bodies["metrics"] = httpx.get(f"{url}/metrics").text
    finally:
        predictor.stop()
    log = predictor.log_path.read_text()
    assert "kubeloop:***@127.0.0.1" in log  # the failures were logged, redacted
    assert_nowhere({**bodies, **everything_written(workdir)})


def test_the_predictor_refuses_an_s3_endpoint_with_a_password(
    tmp_path: Path, s3_server: services.Service, mlflow_server: services.Service
) -> None:
    command = [
        sys.executable, "-m", "kubeloop.serving", "--name", "digits", "--model-uri",
        "models:/serving-shared@champion", "--host", services.HOST, "--http-port",
        str(services.free_port()), *FEEDBACK,
    ]  # fmt: skip
    env = {
        **_clean_environment(),
        "KUBELOOP_MLFLOW_TRACKING_URI": mlflow_server.url,
        "KUBELOOP_S3_ENDPOINT": with_password(s3_server.url),
        "KUBELOOP_S3_ACCESS_KEY": ACCESS_KEY,
        "KUBELOOP_S3_SECRET_KEY": SECRET_KEY,
    }
    process = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert process.returncode == 2, process.stderr[-2000:]
    assert "carries credentials" in process.stderr
    assert "Traceback" not in process.stderr
    assert_nowhere(
        {"stdout": process.stdout, "stderr": process.stderr, **everything_written(tmp_path)}
    )


def test_a_trainer_that_cannot_reach_mlflow_shows_no_password(tmp_path: Path) -> None:
    process = _train(tmp_path, with_password(unused_url()))
    assert process.returncode == 3, process.stderr[-3000:]
    assert "the MLflow server at http://kubeloop:***@127.0.0.1" in process.stderr
    assert_nowhere(
        {"stdout": process.stdout, "stderr": process.stderr, **everything_written(tmp_path)}
    )


def test_a_trainer_that_registers_through_a_password_uri_shows_none(
    tmp_path: Path, mlflow_server: services.Service, s3_server: services.Service
) -> None:
    process = _train(tmp_path, with_password(mlflow_server.url), s3_server.url)
    assert process.returncode == 0, process.stderr[-3000:]
    assert "View run" in process.stdout  # MLflow printed its run URL, redacted
    assert_nowhere(
        {"stdout": process.stdout, "stderr": process.stderr, **everything_written(tmp_path)}
    )


def _clean_environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("KUBELOOP_")}


def _train(
    workdir: Path, tracking_uri: str, s3_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    job = {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "tj-secret", "namespace": "tests", "uid": f"uid-{time.time_ns()}"},
        "spec": {
            "plugin": {"name": "image-classifier"},
            "args": {"epochs": 1},
            "datasets": [{"name": "base", "uri": "builtin://digits"}],
            "registeredModel": "secrets-model",
            "evaluation": {"metric": "accuracy", "slices": ["base"]},
        },
    }
    spec = workdir / "job.yaml"
    spec.write_text(yaml.safe_dump(job))
    env = {**_clean_environment(), "KUBELOOP_MLFLOW_TRACKING_URI": tracking_uri}
    if s3_url is not None:  # MLflow's artifacts go to S3 through boto3
        env.update(
            KUBELOOP_S3_ENDPOINT=s3_url,
            KUBELOOP_S3_ACCESS_KEY=ACCESS_KEY,
            KUBELOOP_S3_SECRET_KEY=SECRET_KEY,
        )
    return subprocess.run(
        [sys.executable, "-m", "kubeloop.training", "--spec", str(spec), "--result",
         str(workdir / "result.json")],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
