"""The MLflow model registry: the only module that talks to MLflow for kubeloop's decisions.

Model versions carry their evaluation in the logging run's metrics: `<metric>` overall and
`<metric>.<slice>` per slice (e.g. `accuracy`, `accuracy.new-user`). `call_mlflow` maps
MLflow's errors to kubeloop's, for this module and the trainer's run logging alike; the
messages name the server with its credentials redacted.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kubeloop import redaction
from kubeloop.api.errors import Unavailable
from kubeloop.api.predictor import parse_model_uri as parse_model_uri  # its home is the api
from kubeloop.api.trainingjob import Metrics

T = TypeVar("T")


class RegistryUnavailable(Unavailable):
    """The MLflow server could not be reached, or failed on its side."""

    reason = "RegistryUnavailable"


class ModelNotFound(LookupError):
    """The registered model, version or alias does not exist."""


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version, as kubeloop needs it."""

    name: str
    version: str
    run_id: str
    source: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


ALIAS_OWNER_TAG = "kubeloop.alias.{alias}"
"""Registered-model tag naming the ServedModel (namespace/name) that moves an alias."""

_SERVER_TROUBLE = ("INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED")
_MISSING = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def call_mlflow(func: Callable[[], T], what: str, tracking_uri: str) -> T:
    """Run one MLflow call for `what` (e.g. "digits/3", "logging metrics"); its errors
    become kubeloop's:

    - the server says the thing is missing: ModelNotFound;
    - it cannot be reached, or fails on its side (5xx-like codes): RegistryUnavailable
      (MLflow's HTTP client already retried, within the bounds Registry sets);
    - it answered and refused otherwise: the RestException itself, a bug to report.
    """
    from mlflow.exceptions import MlflowException, RestException
    from requests.exceptions import RequestException

    server = f"the MLflow server at {redaction.redact(tracking_uri)}"
    hint = "; check that it and its artifact store run and that KUBELOOP_MLFLOW_TRACKING_URI "
    hint += "points at it"
    try:
        return func()
    except RestException as error:
        # A missing alias comes back as INVALID_PARAMETER_VALUE "... not found".
        if error.error_code in _MISSING or "not found" in error.message.lower():
            where = f"the registry at {redaction.redact(tracking_uri)}"
            raise ModelNotFound(f"{what} is not in {where}") from error
        if error.error_code in _SERVER_TROUBLE:
            detail = _detail(error)
            raise RegistryUnavailable(f"{server} failed on {what} ({detail}){hint}") from error
        raise
    except (MlflowException, RequestException, OSError) as error:
        raise RegistryUnavailable(
            f"{server} could not be reached for {what} ({_detail(error)}){hint}"
        ) from error


def _detail(error: BaseException) -> str:
    # Redacted before it is cut: a cut must not leave half a password behind.
    return redaction.redact(f"{type(error).__name__}: {error}")[:300]


class Registry:
    """Reads and moves model versions in an MLflow registry, with bounded retries."""

    def __init__(self, tracking_uri: str, retries: int = 3, timeout_seconds: int = 30) -> None:
        # MLflow's HTTP client reads these at request time; its defaults retry for minutes.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(retries))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_seconds))
        self.tracking_uri = tracking_uri
        self._mlflow: Any = None

    @property
    def _client(self) -> Any:
        """MLflow's client, made (and mlflow imported: seconds) at the first call, so a
        process that never asks the registry never pays for it (an operator with only
        TrainingJobs, say)."""
        if self._mlflow is None:
            from mlflow import MlflowClient

            uri = self.tracking_uri
            self._mlflow = MlflowClient(tracking_uri=uri, registry_uri=uri)
        return self._mlflow

    def get_version(self, name: str, version: str) -> ModelVersion:
        return _version(
            self._call(lambda: self._client.get_model_version(name, version), f"{name}/{version}")
        )

    def get_by_alias(self, name: str, alias: str) -> ModelVersion | None:
        """The version behind `alias`, or None when the alias is not set."""
        try:
            found = self._call(
                lambda: self._client.get_model_version_by_alias(name, alias), f"{name}@{alias}"
            )
            return _version(found)
        except ModelNotFound:
            return None

    def resolve(self, uri: str) -> ModelVersion:
        """The version a models:/ URI names; ModelNotFound when there is none."""
        name, version, alias = parse_model_uri(uri)
        if version is not None:
            return self.get_version(name, version)
        found = self.get_by_alias(name, alias or "")
        if found is None:
            raise ModelNotFound(f"{uri}: registered model {name!r} has no alias {alias!r}")
        return found

    def latest_version(self, name: str) -> ModelVersion | None:
        """The highest version number of `name`, or None when it has no versions."""
        versions = self._call(lambda: self._client.search_model_versions(f"name = '{name}'"), name)
        if not versions:
            return None
        return _version(max(versions, key=lambda v: int(v.version)))

    def find_version(self, name: str, tag: str, value: str) -> ModelVersion | None:
        """The lowest version of `name` whose tag `tag` is `value`, or None.

        `name` and `value` are Kubernetes names and uids: no quotes to escape.
        """
        query = f"name = '{name}' and tags.`{tag}` = '{value}'"
        versions = self._call(lambda: self._client.search_model_versions(query), name)
        if not versions:
            return None
        return _version(min(versions, key=lambda v: int(v.version)))

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version number behind `alias`, or None when it is not set."""
        found = self.get_by_alias(name, alias)
        return found.version if found is not None else None

    def latest_version_number(self, name: str) -> str | None:
        """The highest version number of `name`, or None when it has none."""
        found = self.latest_version(name)
        return found.version if found is not None else None

    def version_metrics(self, name: str, version: str, metric: str) -> Metrics:
        """`metrics` of version `version`; empty when the version or its run is gone."""
        try:
            return self.metrics(self.get_version(name, version), metric)
        except ModelNotFound:
            return Metrics()

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._call(lambda: self._client.set_registered_model_alias(name, alias, version), name)

    def alias_owner(self, name: str, alias: str) -> str | None:
        """The ServedModel (namespace/name) that claimed `alias`, from the model's tags."""
        try:
            model = self._call(lambda: self._client.get_registered_model(name), name)
        except ModelNotFound:
            return None
        owner = (model.tags or {}).get(ALIAS_OWNER_TAG.format(alias=alias))
        return str(owner) if owner else None

    def claim_alias(self, name: str, alias: str, owner: str) -> None:
        """Tag the registered model (created when missing) with the ServedModel that promotes
        through `alias`, so a second one on the same model cannot move it too."""
        self._ensure_model(name)
        tag = ALIAS_OWNER_TAG.format(alias=alias)
        self._call(lambda: self._client.set_registered_model_tag(name, tag, owner), name)

    def tag_version(self, name: str, version: str, key: str, value: str) -> None:
        self._call(
            lambda: self._client.set_model_version_tag(name, version, key, value),
            f"version {version} of {name}",
        )

    def version_tag(self, name: str, version: str, key: str) -> str | None:
        try:
            return self.get_version(name, version).tags.get(key)
        except ModelNotFound:
            return None

    def _ensure_model(self, name: str) -> None:
        from mlflow.exceptions import RestException

        try:
            self._call(lambda: self._client.create_registered_model(name), name)
        except RestException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    def run_metrics(self, model: ModelVersion) -> dict[str, float]:
        """Every metric the version's run logged (the last value of each)."""
        run = self._call(lambda: self._client.get_run(model.run_id), f"run {model.run_id}")
        return dict(run.data.metrics)

    def metrics(self, model: ModelVersion, metric: str) -> Metrics:
        """The version's evaluation: `metric` overall and per slice, from its run."""
        return evaluation_of(self.run_metrics(model), metric)

    def download_onnx(self, model: ModelVersion) -> bytes:
        """The version's ONNX model file."""
        import mlflow.artifacts

        # MLflow resolves a models:/ URI in its global registry (a local file by default),
        # not this client's: ask this registry where the version's files are instead.
        location = self._call(
            lambda: self._client.get_model_version_download_uri(model.name, model.version),
            model.uri,
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = self._call(
                lambda: mlflow.artifacts.download_artifacts(
                    artifact_uri=location, dst_path=tmp, tracking_uri=self.tracking_uri
                ),
                model.uri,
            )
            files = sorted(Path(path).rglob("*.onnx"))
            if not files:
                raise ModelNotFound(f"{model.uri} has no .onnx file among its artifacts")
            return files[0].read_bytes()

    def check_reachable(self) -> None:
        """RegistryUnavailable unless the server answers: a cheap check before long work."""
        self._call(lambda: self._client.search_registered_models(max_results=1), "a check")

    def download_run_artifact(self, model: ModelVersion, path: str) -> bytes:
        """A file the version's run logged, e.g. checkpoint/model.pt; ModelNotFound if none."""
        import mlflow.artifacts

        listed = self._call(
            lambda: self._client.list_artifacts(model.run_id, path.rpartition("/")[0] or None),
            f"the artifacts of run {model.run_id}",
        )
        if path not in {item.path for item in listed}:
            raise ModelNotFound(f"{model.uri}: its run {model.run_id} has no artifact {path}")
        with tempfile.TemporaryDirectory() as tmp:
            local = self._call(
                lambda: mlflow.artifacts.download_artifacts(
                    run_id=model.run_id,
                    artifact_path=path,
                    dst_path=tmp,
                    tracking_uri=self.tracking_uri,
                ),
                f"{path} of run {model.run_id}",
            )
            return Path(local).read_bytes()

    def register_version(
        self,
        name: str,
        source: str,
        run_id: str,
        tags: dict[str, str],
        description: str = "",
        model_id: str | None = None,
    ) -> ModelVersion:
        """A new version of `name` (created when missing) from the logged model at `source`.

        The tags come with the version in one request, so no version exists without them.
        """
        from mlflow.exceptions import RestException

        try:
            self._call(lambda: self._client.create_registered_model(name), name)
        except RestException as error:  # call_mlflow passes refusals through
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        created = self._call(
            lambda: self._client.create_model_version(
                name,
                source,
                run_id=run_id,
                tags=tags,
                description=description,
                model_id=model_id,
            ),
            f"a new version of {name}",
        )
        return _version(created)

    def _call(self, func: Callable[[], T], what: str) -> T:
        """Run one client call for `what`, with kubeloop's errors (call_mlflow)."""
        return call_mlflow(func, what, self.tracking_uri)


def evaluation_of(logged: dict[str, float], metric: str) -> Metrics:
    """`metric` overall and per slice (`<metric>.<slice>`) among a run's metrics."""
    prefix = f"{metric}."
    slices = {k.removeprefix(prefix): v for k, v in logged.items() if k.startswith(prefix)}
    return Metrics(overall=logged.get(metric), slices=slices)


def _version(raw: Any) -> ModelVersion:
    return ModelVersion(
        name=raw.name,
        version=str(raw.version),
        run_id=raw.run_id or "",
        source=raw.source or "",
        tags=dict(raw.tags or {}),
        aliases=tuple(getattr(raw, "aliases", None) or ()),
    )
