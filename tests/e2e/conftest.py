"""Fixtures of the end-to-end tests: one predictor shared by the bad-input tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kubeloop.local import services
from tests.serving_process import start_guarded_predictor


@pytest.fixture(scope="session")
def guarded(
    tmp_path_factory: pytest.TempPathFactory,
    mlflow_server: services.Service,
    s3_server: services.Service,
) -> Iterator[services.Service]:
    """The predictor of tests.serving_process.GUARDED_ARGS, with the token TOKEN."""
    predictor = start_guarded_predictor(
        tmp_path_factory.mktemp("guarded"), mlflow_server.url, s3_server.url
    )
    yield predictor
    predictor.stop()
