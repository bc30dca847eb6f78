"""The predictor as the tests run it: the real command (`python -m kubeloop.serving`) as a
subprocess on a free 127.0.0.1 port, with bounded waits and the log tail in every failure."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from kubeloop.local import services
from tests import serving_models
from tests.conftest import ACCESS_KEY, SECRET_KEY

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@functools.cache
def shared_model(tracking_uri: str) -> serving_models.Registered:
    """Version 1 of `serving-shared` (alias champion), registered once per test process."""
    return serving_models.register(
        tracking_uri,
        "serving-shared",
        serving_models.tiny_classifier_onnx(seed=0),
        alias="champion",
    )


def start_predictor(
    workdir: Path,
    model_uri: str,
    mlflow_url: str,
    s3_url: str,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    name: str = "digits",
    wait_ready: bool = True,
    timeout: float = 90.0,
) -> services.Service:
    """Start the predictor and wait until it answers (and is ready, unless told not to)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = services.free_port()
    url = f"http://{services.HOST}:{port}"
    command = [
        sys.executable, "-m", "kubeloop.serving", "--name", name, "--model-uri", model_uri,
        "--host", services.HOST, "--http-port", str(port), *args,
    ]  # fmt: skip
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("KUBELOOP_")
    }
    environment.update(
        KUBELOOP_MLFLOW_TRACKING_URI=mlflow_url,
        KUBELOOP_S3_ENDPOINT=s3_url,
        KUBELOOP_S3_ACCESS_KEY=ACCESS_KEY,
        KUBELOOP_S3_SECRET_KEY=SECRET_KEY,
        **(env or {}),
    )
    log_path = workdir / f"predictor-{port}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
            start_new_session=True,
        )
    service = services.Service("predictor", url, process, log_path, environment)
    path = "/v2/health/ready" if wait_ready else "/v2/health/live"
    try:
        wait_for(service, path, timeout)
    except BaseException:
        service.kill()
        raise
    return service


def wait_for(service: services.Service, path: str, timeout: float, status: int = 200) -> None:
    """Poll `path` until it answers `status`; fails with the server's log tail."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise AssertionError(
                f"the predictor exited with {service.process.returncode}:\n"
                + services.log_tail(service.log_path, 40)
            )
        try:
            answer = httpx.get(service.url + path, timeout=2)
            if answer.status_code == status:
                return
            last = f"{answer.status_code} {answer.text[:200]}"
        except httpx.HTTPError as error:
            last = repr(error)
        time.sleep(0.2)
    raise AssertionError(
        f"{service.url}{path} did not answer {status} within {timeout:.0f}s (last: {last}); "
        f"log tail:\n{services.log_tail(service.log_path, 40)}"
    )


GUARDED_DATASET = "guarded-fb"
GUARDED_BUCKET = "guarded"
GUARDED_MAX_ROWS = 100
GUARDED_ARGS = [
    "--feedback-dataset", GUARDED_DATASET, "--feedback-bucket", GUARDED_BUCKET,
    "--feedback-prefix", "fb/", "--classes", ",".join(serving_models.CLASSES),
    "--input-shape", "8,8",
    "--max-request-rows", str(GUARDED_MAX_ROWS), "--log-flush-seconds", "600",
]  # fmt: skip
"""The bad-input tests' predictor: feedback on, a token, the default body limits."""


def start_guarded_predictor(workdir: Path, mlflow_url: str, s3_url: str) -> services.Service:
    """A predictor serving the shared model with GUARDED_ARGS and the token TOKEN."""
    model = shared_model(mlflow_url)
    return start_predictor(
        workdir,
        f"models:/{model.name}@champion",
        mlflow_url,
        s3_url,
        args=GUARDED_ARGS,
        env={"KUBELOOP_FEEDBACK_TOKEN": TOKEN},
    )


def start_reviewing_predictor(
    workdir: Path,
    mlflow_url: str,
    s3_url: str,
    bucket: str,
    review_args: Sequence[str],
    env: dict[str, str] | None = None,
    dataset: str = "digits-fb",
    prefix: str = "feedback/digits/",
) -> services.Service:
    """A predictor of the shared digits model (`shared_model`) taking feedback for `dataset`
    into `bucket`, its review queue as `review_args` say."""
    model = shared_model(mlflow_url)
    args = [
        "--feedback-dataset", dataset, "--feedback-bucket", bucket, "--feedback-prefix", prefix,
        "--classes", ",".join(serving_models.CLASSES), "--input-shape", "8,8", *review_args,
    ]  # fmt: skip
    return start_predictor(
        workdir, f"models:/{model.name}@champion", mlflow_url, s3_url, args=args, env=env
    )
