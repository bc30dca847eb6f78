"""FeedbackDataset on Kubernetes: poll S3 for new samples and create the next TrainingJob.

The order of the trigger and why it survives crashes is kubeloop.reconcile.feedbackdataset's;
this module supplies its ports: S3 (through kubeloop.storage) and the Kubernetes API.
"""

from __future__ import annotations

import contextlib
from typing import Any

from minio.error import S3Error

from kubeloop import metrics
from kubeloop.api import conditions, validation
from kubeloop.api.feedbackdataset import (
    FeedbackDataset,
    FeedbackDatasetSpec,
    FeedbackDatasetStatus,
    Kpi,
)
from kubeloop.feedback_store import DatasetStore
from kubeloop.kube.client import FEEDBACKDATASETS, SERVEDMODELS, TRAININGJOBS, Conflict
from kubeloop.kube.runtime import Retry, Runtime
from kubeloop.reconcile import feedbackdataset
from kubeloop.reconcile.common import Event, Owner, format_time, generation, read_status, spec_body
from kubeloop.storage import ObjectStore, StorageUnavailable

KIND = "FeedbackDataset"


class _Ports(DatasetStore):
    """S3 (through DatasetStore) and the Kubernetes API, as reconcile.feedbackdataset asks."""

    def __init__(self, rt: Runtime, dataset: FeedbackDataset, store: ObjectStore) -> None:
        super().__init__(store, dataset.spec)
        self._rt = rt
        self._namespace = dataset.metadata.namespace

    def get_training_job(self, name: str) -> dict[str, Any] | None:
        return self._rt.client.get(TRAININGJOBS, self._namespace, name)

    def create_training_job(self, manifest: dict[str, Any]) -> bool:
        try:
            self._rt.client.create(TRAININGJOBS, self._namespace, manifest)
        except Conflict:
            return False
        return True

    def live_kpi(self, kpi: Kpi) -> feedbackdataset.LiveKpi | None:
        served = self._rt.client.get(SERVEDMODELS, self._namespace, kpi.served_model)
        live = self.live_accuracy()
        if served is None or live is None:
            return None
        return feedbackdataset.live_kpi(live, (served.get("status") or {}).get("servingVersion"))


def reconcile(rt: Runtime, namespace: str, name: str) -> None:
    """Count new samples; at the threshold, freeze a snapshot and create its TrainingJob."""
    body = rt.client.get(FEEDBACKDATASETS, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    old = read_status(FeedbackDatasetStatus, body)
    now = rt.now()
    problems = validation.model_errors(body)
    if problems:
        _invalid(rt, body, old, problems)
        return
    dataset = FeedbackDataset.model_validate({**spec_body(body), "status": old.to_wire()})
    try:
        store = _store(rt, namespace, dataset.spec)
        ports = _Ports(rt, dataset, store)
        outcome = feedbackdataset.reconcile(dataset, ports, now, Owner.of(body))
    except StorageUnavailable as error:
        _unavailable(rt, body, old, "StorageUnavailable", str(error))
        raise Retry(str(error)) from error
    except S3Error as error:
        message = f"S3 refused a request ({error.code}): {error.message}"
        _unavailable(rt, body, old, "StorageError", message)
        raise Retry(message) from error
    except _MissingSecret as error:
        _unavailable(rt, body, old, "SecretNotFound", str(error))
        raise Retry(str(error)) from error
    rt.write_status(FEEDBACKDATASETS, body, outcome.status)
    rt.emit(body, outcome.events)
    labels = (namespace, name)
    metrics.FEEDBACK_SAMPLES.labels(*labels).set(outcome.status.samples)
    metrics.FEEDBACK_SAMPLES_SINCE_SNAPSHOT.labels(*labels).set(
        outcome.status.samples_since_snapshot
    )
    if dataset.spec.retrain is not None:
        metrics.RETRAIN_THRESHOLD.labels(*labels).set(dataset.spec.retrain.threshold)
    if outcome.created or outcome.adopted:
        # An adopted trigger was never counted: its reconcile crashed before this line.
        metrics.RETRAIN_TRIGGERS.labels(*labels).inc()


class _MissingSecret(LookupError):
    pass


def _store(rt: Runtime, namespace: str, spec: FeedbackDatasetSpec) -> ObjectStore:
    """The dataset's S3 client: its storage.secretRef's keys, else the operator's."""
    secret = spec.storage.secret_ref
    if secret is None:
        return rt.store(
            spec.storage.endpoint,
            rt.settings.s3_access_key.get_secret_value(),
            rt.settings.s3_secret_key.get_secret_value(),
        )
    fields = (rt.settings.s3_secret_access_key_field, rt.settings.s3_secret_secret_key_field)
    values = [rt.client.secret_value(namespace, secret, f) for f in fields]
    if values[0] is None or values[1] is None:
        raise _MissingSecret(
            f"Secret {secret} (storage.secretRef) is missing or lacks the keys {fields[0]} and "
            f"{fields[1]} in namespace {namespace}"
        )
    return rt.store(spec.storage.endpoint, values[0], values[1])


def _invalid(
    rt: Runtime, body: dict[str, Any], old: FeedbackDatasetStatus, problems: list[str]
) -> None:
    message = "; ".join(problems)
    _unavailable(rt, body, old, "InvalidSpec", message)


def _unavailable(
    rt: Runtime, body: dict[str, Any], old: FeedbackDatasetStatus, reason: str, message: str
) -> None:
    """Ready=False with `reason`; a Warning event when the reason is new."""
    now = format_time(rt.now())
    previous = conditions.get_condition(old.conditions, "Ready")
    new = old.model_copy(deep=True)
    new.observed_generation = generation(body)
    new.conditions = conditions.set_condition(
        new.conditions, "Ready", "False", reason, message, new.observed_generation, now
    )
    rt.write_status(FEEDBACKDATASETS, body, new)
    if previous is None or previous.reason != reason:
        rt.emit(body, [Event("Warning", reason, message)])


def forget(namespace: str, name: str) -> None:
    """Stop exporting the metrics of a deleted FeedbackDataset."""
    for gauge in (
        metrics.FEEDBACK_SAMPLES,
        metrics.FEEDBACK_SAMPLES_SINCE_SNAPSHOT,
        metrics.RETRAIN_THRESHOLD,
    ):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)
