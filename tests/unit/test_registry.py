"""Registry reads against a real MLflow server; outages name the server."""

import mlflow
import pytest

from kubeloop.registry import ModelNotFound, Registry, RegistryUnavailable, parse_model_uri
from tests.conftest import unused_url


def test_parse_model_uri() -> None:
    assert parse_model_uri("models:/digits/3") == ("digits", "3", None)
    assert parse_model_uri("models:/digits@champion") == ("digits", None, "champion")
    with pytest.raises(ValueError, match="models:/NAME/VERSION"):
        parse_model_uri("runs:/abc/model")


def test_versions_aliases_and_metrics(registry: Registry) -> None:
    mlflow.set_tracking_uri(registry.tracking_uri)
    client = mlflow.MlflowClient(registry.tracking_uri)
    client.create_registered_model("reg-test")
    with mlflow.start_run() as run:
        mlflow.log_metrics({"accuracy": 0.9, "accuracy.base": 0.95, "accuracy.new-user": 0.6})
    client.create_model_version("reg-test", f"runs:/{run.info.run_id}/model", run.info.run_id)
    assert registry.get_by_alias("reg-test", "champion") is None
    latest = registry.latest_version("reg-test")
    assert latest is not None
    assert latest.version == "1"
    registry.set_alias("reg-test", "champion", "1")
    champion = registry.resolve("models:/reg-test@champion")
    assert champion.run_id == run.info.run_id
    metrics = registry.metrics(champion, "accuracy")
    assert metrics.overall == pytest.approx(0.9)
    assert metrics.slices == pytest.approx({"base": 0.95, "new-user": 0.6})
    registry.tag_version("reg-test", "1", "kubeloop.gate.champion", '{"verdict": "Passed"}')
    tags = client.get_model_version("reg-test", "1").tags
    assert tags["kubeloop.gate.champion"] == '{"verdict": "Passed"}'
    assert registry.latest_version("absent-model") is None
    with pytest.raises(ModelNotFound):
        registry.resolve("models:/reg-test/7")


def test_unreachable_registry_names_the_server() -> None:
    url = unused_url()
    with pytest.raises(RegistryUnavailable, match="could not be reached"):
        Registry(url, retries=0, timeout_seconds=2).latest_version("digits")


def test_errors_name_the_server_without_its_password(registry: Registry) -> None:
    url = unused_url()
    dead = Registry(url.replace("http://", "http://user:PLANTED@"), retries=0, timeout_seconds=2)
    with pytest.raises(RegistryUnavailable) as unreachable:
        dead.latest_version("digits")
    assert "PLANTED" not in str(unreachable.value)
    assert f"the MLflow server at {url.replace('http://', 'http://user:***@')}" in str(
        unreachable.value
    )
    live = Registry(registry.tracking_uri.replace("http://", "http://user:PLANTED@"))
    with pytest.raises(ModelNotFound) as missing:
        live.resolve("models:/absent-model/1")
    assert "PLANTED" not in str(missing.value)
    assert "user:***@" in str(missing.value)
