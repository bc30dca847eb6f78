"""kopf handlers: thin triggers of one idempotent reconcile per kind.

Each kind is reconciled on create, update and resume, and FeedbackDatasets and ServedModels
on an idle timer too (storage and registry polls, canary steps). A Job's events reconcile the
TrainingJob that owns it when the Job's status differs from what that TrainingJob's last
reconcile saw (or the Job is gone). The reconcile reads the object afresh, under a per-object
lock, and never branches on what changed.

kopf puts its own finalizer on objects that have timers (FeedbackDataset, ServedModel), to stop
the timer when the object goes; it holds no cleanup of kubeloop's and kopf removes it at once.
kubeloop adds no finalizer: nothing outside the cluster needs cleaning, and children go with
their owner through ownerReferences.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import kopf

from kubeloop import __version__, metrics
from kubeloop.api.common import GROUP, VERSION
from kubeloop.kube import feedbackdatasets, servedmodels, trainingjobs
from kubeloop.kube.client import ApiError
from kubeloop.kube.runtime import Retry, Runtime
from kubeloop.reconcile.common import LABEL_TRAININGJOB
from kubeloop.registry import RegistryUnavailable
from kubeloop.storage import StorageUnavailable

logger = logging.getLogger("kubeloop.operator")

Reconcile = Callable[[Runtime, str, str], None]


def run_reconcile(
    rt: Runtime, kind: str, reconcile: Reconcile, namespace: str, name: str, polled: bool
) -> None:
    """Reconcile one object under its lock, counting and timing it.

    An unavailable dependency (S3, MLflow, the API server) is retried: by kopf after
    poll_seconds (kopf.TemporaryError), or, for `polled` kinds, by their next timer tick.
    The object's status says what is unavailable.
    """
    started = time.monotonic()
    result = "ok"
    try:
        with rt.lock(kind, namespace, name):
            reconcile(rt, namespace, name)
    except (Retry, StorageUnavailable, RegistryUnavailable, ApiError) as error:
        if isinstance(error, ApiError) and not error.transient:
            result = "error"
            raise
        result = "retry"
        if not polled:
            raise kopf.TemporaryError(str(error), delay=rt.settings.poll_seconds) from error
        logger.info("%s %s/%s: retrying on the next poll: %s", kind, namespace, name, error)
    except Exception:
        result = "error"
        raise
    finally:
        metrics.RECONCILE.labels(kind, result).inc()
        metrics.RECONCILE_SECONDS.labels(kind).observe(time.monotonic() - started)


def register(rt: Runtime, registry: kopf.OperatorRegistry) -> None:
    """Register kubeloop's handlers with `registry`."""
    poll = rt.settings.poll_seconds

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.probe(id="kubeloop", registry=registry)
    def probe(**_: Any) -> str:
        return __version__

    def handler(kind: str, reconcile: Reconcile, polled: bool) -> Callable[..., None]:
        def handle(*, namespace: str | None, name: str, **_: Any) -> None:
            run_reconcile(rt, kind, reconcile, namespace or "", name, polled)

        handle.__name__ = f"reconcile_{kind.lower()}"
        return handle

    kinds: list[tuple[str, str, Reconcile, bool]] = [
        ("trainingjobs", trainingjobs.KIND, trainingjobs.reconcile, False),
        ("feedbackdatasets", feedbackdatasets.KIND, feedbackdatasets.reconcile, True),
        ("servedmodels", servedmodels.KIND, servedmodels.reconcile, True),
    ]
    for plural, kind, reconcile, polled in kinds:
        handle = handler(kind, reconcile, polled)
        for decorator in (kopf.on.resume, kopf.on.create, kopf.on.update):
            decorator(GROUP, VERSION, plural, registry=registry, id=f"{plural}-reconcile")(handle)
        if polled:
            kopf.timer(
                GROUP, VERSION, plural, interval=poll, registry=registry, id=f"{plural}-poll"
            )(handle)

    jobs = {LABEL_TRAININGJOB: kopf.PRESENT}

    @kopf.on.event("batch", "v1", "jobs", labels=jobs, registry=registry)
    def job_changed(
        *,
        type: str,  # noqa: A002 - kopf's keyword
        body: kopf.Body,
        namespace: str | None,
        name: str,
        **_: Any,
    ) -> None:
        for owner in body.metadata.get("ownerReferences") or []:
            if owner.get("kind") != trainingjobs.KIND or not owner.get("controller"):
                continue
            # Under the TrainingJob's lock: a reconcile in flight records what it saw first.
            with rt.lock(trainingjobs.KIND, namespace or "", owner["name"]):
                news = type == "DELETED" or rt.job_is_news(namespace or "", name, dict(body))
            if not news:
                continue  # nothing the TrainingJob's status depends on changed
            try:
                run_reconcile(
                    rt,
                    trainingjobs.KIND,
                    trainingjobs.reconcile,
                    namespace or "",
                    owner["name"],
                    polled=False,
                )
            except kopf.TemporaryError as error:
                # Events are not retried; the TrainingJob's own handlers are.
                logger.warning("TrainingJob %s/%s: %s", namespace, owner["name"], error)

    forgetters = {
        "trainingjobs": trainingjobs.forget,
        "feedbackdatasets": feedbackdatasets.forget,
        "servedmodels": servedmodels.forget,
    }
    for plural, forget in forgetters.items():

        def deleted(
            *,
            type: str,  # noqa: A002 - kopf's keyword
            namespace: str | None,
            name: str,
            forget: Callable[[str, str], None] = forget,
            **_: Any,
        ) -> None:
            if type == "DELETED":
                forget(namespace or "", name)

        kopf.on.event(GROUP, VERSION, plural, registry=registry, id=f"{plural}-deleted")(deleted)
