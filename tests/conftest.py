"""Shared fixtures: real S3 (SeaweedFS) and MLflow servers on 127.0.0.1, one per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubeloop.local import services
from kubeloop.registry import Registry
from kubeloop.storage import ObjectStore

ACCESS_KEY = SECRET_KEY = "kubeloop"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.Service]:
    server = services.start_s3(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_server(
    tmp_path_factory: pytest.TempPathFactory, s3_server: services.Service
) -> Iterator[services.Service]:
    server = services.start_mlflow(tmp_path_factory.mktemp("mlflow"), s3_server.url)
    yield server
    server.stop()


@pytest.fixture
def object_store(s3_server: services.Service) -> ObjectStore:
    return ObjectStore(s3_server.url, ACCESS_KEY, SECRET_KEY, retries=1)


@pytest.fixture
def registry(mlflow_server: services.Service) -> Registry:
    return Registry(mlflow_server.url)


@pytest.fixture
def s3_env(s3_server: services.Service, monkeypatch: pytest.MonkeyPatch) -> str:
    """KUBELOOP_S3_* pointing at the test S3 server; returns its URL."""
    monkeypatch.setenv("KUBELOOP_S3_ENDPOINT", s3_server.url)
    monkeypatch.setenv("KUBELOOP_S3_ACCESS_KEY", ACCESS_KEY)
    monkeypatch.setenv("KUBELOOP_S3_SECRET_KEY", SECRET_KEY)
    return s3_server.url


def unused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens, to test outages."""
    return f"http://127.0.0.1:{services.free_port()}"


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def kubeloop_up(cwd: Path, manifest: Path) -> subprocess.CompletedProcess[str]:
    """`kubeloop up -f manifest --state-dir s/t` in its own process, for a test of what it
    refuses: code that failed to refuse would go on serving, so the timeout ends it."""
    return subprocess.run(
        [sys.executable, "-m", "kubeloop.cli", "up", "-f", str(manifest), "--state-dir", "s/t"],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "2000"},  # rich wraps narrower output
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
