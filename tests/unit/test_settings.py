"""Settings come from KUBELOOP_* environment variables."""

from pathlib import Path

import pytest

from kubeloop import settings


def test_defaults_and_env_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBELOOP_S3_ENDPOINT", "http://127.0.0.1:9999")
    monkeypatch.setenv("KUBELOOP_NAMESPACES", '["a", "b"]')
    monkeypatch.setenv("KUBELOOP_STATE_DIR", "/tmp/state")
    loaded = settings.load()
    assert loaded.s3_endpoint == "http://127.0.0.1:9999"
    assert loaded.namespaces == ["a", "b"]
    assert loaded.state_dir == Path("/tmp/state")
    assert loaded.mlflow_tracking_uri.startswith("http://")


def test_every_field_is_documented() -> None:
    for name, field in settings.Settings.model_fields.items():
        assert field.description, f"KUBELOOP_{name.upper()} has no docstring"
