"""The real processes the benchmarks talk to, all on 127.0.0.1 and all stopped at the end.

S3 (SeaweedFS) and MLflow start through kubeloop.local.services, as in the tests and the
local mode; the predictor is its real command (`python -m kubeloop.serving`) serving a
version registered the way the trainer registers it; the plain KServe baseline is
bench/plain_kserve.py. Each starts on first use.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from bench.common import ROOT, log
from kubeloop.local import services

ACCESS_KEY = SECRET_KEY = "kubeloop"
MODEL = "bench-digits"
BUCKET = "bench"
DATASET = "digits-feedback"
PREFIX = "feedback/bench/"
CLASSES = ",".join(str(d) for d in range(10))


class Stack:
    """Servers started on demand; `with Stack() as stack:` stops them all."""

    def __init__(self, workdir: Path | None = None) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="kubeloop-bench-")
            workdir = Path(self._tmp.name)
        self.workdir = workdir
        self._started: list[services.Service] = []
        self._s3: str | None = None
        self._mlflow: str | None = None
        self._models: dict[bytes, str] = {}
        self._predictors: dict[tuple[bytes, tuple[str, ...]], services.Service] = {}

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for service in reversed(self._started):
            service.stop()
        self._started.clear()
        if self._tmp is not None:
            self._tmp.cleanup()

    def s3(self) -> str:
        """URL of the S3 server."""
        if self._s3 is None:
            log("starting the S3 server (SeaweedFS)")
            service = services.start_s3(self.workdir / "s3")
            self._started.append(service)
            self._s3 = service.url
        return self._s3

    def mlflow(self) -> str:
        """URL of the MLflow server (artifacts in the S3 server)."""
        if self._mlflow is None:
            s3 = self.s3()
            log("starting MLflow")
            service = services.start_mlflow(self.workdir / "mlflow", s3, ACCESS_KEY, SECRET_KEY)
            self._started.append(service)
            self._mlflow = service.url
        return self._mlflow

    def register(self, onnx: bytes) -> str:
        """models:/bench-digits@champion on a new version holding `onnx`, logged and
        registered as the trainer does (kubeloop.training.tracking, kubeloop.registry)."""
        if onnx in self._models:
            return self._models[onnx]
        import json

        from kubeloop.registry import Registry
        from kubeloop.training import tracking

        url = self.mlflow()
        with tracking.Run(url).start(MODEL, "bench", {}) as run:
            logged = run.log_onnx(onnx, (1, 8, 8), 10, 64)
        registry = Registry(url)
        tags = {"kubeloop.classes": json.dumps(CLASSES.split(","))}
        version = registry.register_version(
            MODEL, logged.model_uri, run.run_id, tags, model_id=logged.model_id
        )
        registry.set_alias(MODEL, "champion", version.version)
        self._models[onnx] = f"models:/{MODEL}@champion"
        return self._models[onnx]

    def predictor(self, onnx: bytes, *args: str, name: str = "digits") -> services.Service:
        """The real predictor serving `onnx` with the feedback API on, as a ServedModel with
        a FeedbackDataset deploys it; `args` add or override options. Started once per
        model and arguments."""
        running = self._predictors.get((onnx, args))
        if running is not None and running.process.poll() is None:
            return running
        uri = self.register(onnx)
        port = services.free_port()
        command = [
            sys.executable, "-m", "kubeloop.serving", "--name", name, "--model-uri", uri,
            "--host", services.HOST, "--http-port", str(port),
            "--feedback-dataset", DATASET, "--feedback-bucket", BUCKET,
            "--feedback-prefix", PREFIX, "--classes", CLASSES, "--input-shape", "8,8",
            "--slices", "base,new-user", *args,
        ]  # fmt: skip
        env = {
            "KUBELOOP_MLFLOW_TRACKING_URI": self.mlflow(),
            "KUBELOOP_S3_ENDPOINT": self.s3(),
            "KUBELOOP_S3_ACCESS_KEY": ACCESS_KEY,
            "KUBELOOP_S3_SECRET_KEY": SECRET_KEY,
        }
        service = self._serve(f"predictor-{port}", command, port, env)
        self._predictors[(onnx, args)] = service
        return service

    def plain_kserve(self, onnx: bytes, name: str = "digits") -> services.Service:
        """bench/plain_kserve.py: a plain kserve.Model around the same onnxruntime session."""
        path = self.workdir / "plain-model.onnx"
        path.write_bytes(onnx)
        port = services.free_port()
        command = [
            sys.executable, str(ROOT / "bench" / "plain_kserve.py"),
            "--model", str(path), "--name", name, "--port", str(port),
        ]  # fmt: skip
        return self._serve(f"plain-kserve-{port}", command, port, {})

    def _serve(
        self, label: str, command: list[str], port: int, env: dict[str, str]
    ) -> services.Service:
        url = f"http://{services.HOST}:{port}"
        log(f"starting {label}")
        environment = {k: v for k, v in os.environ.items() if not k.startswith("KUBELOOP_")}
        service = services.spawn(
            label, command, url, self.workdir / f"{label}.log", self.workdir, environment | env
        )
        self._started.append(service)
        wait_ready(service, url + "/v2/health/ready", 120.0)
        return service


def wait_ready(service: services.Service, url: str, timeout: float) -> None:
    """Poll `url` until it answers 200; RuntimeError with the log tail otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            break
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(
        f"{service.name} did not get ready at {url}:\n{services.log_tail(service.log_path, 30)}"
    )
