"""The operator baseline: a minimal kopf operator that only creates each TrainingJob's Job.

The same Job kubeloop's operator creates (kubeloop.reconcile.builders.build_job), through
the same API client and the same kopf settings, and nothing else: no validation beyond
parsing, no status, no events, no reaction to the Job's changes.

    KUBECONFIG=... python -m kopf run bench/minimal_operator.py --standalone -A \
        --liveness http://127.0.0.1:PORT/healthz
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from kubeloop.api.trainingjob import TrainingJob
from kubeloop.kube import ports
from kubeloop.kube.client import JOBS, KubeClient
from kubeloop.reconcile import builders
from kubeloop.reconcile.common import spec_body
from kubeloop.settings import Settings

DEFAULTS = Settings()
_client: KubeClient | None = None


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _client
    # As kubeloop's operator: bookkeeping in annotations, Events only for warnings.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="bench.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="bench.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    _client = KubeClient.from_environment()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_via_client(**kwargs)


@kopf.on.create("kubeloop.io", "v1alpha1", "trainingjobs")
def create_job(body: kopf.Body, namespace: str | None, **_: Any) -> None:
    assert _client is not None
    raw = dict(body)
    tj = TrainingJob.model_validate(spec_body(raw))
    _client.create(JOBS, namespace, ports.owned(builders.build_job(tj, DEFAULTS), raw))
