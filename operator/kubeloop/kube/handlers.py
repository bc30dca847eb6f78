"""kopf handlers: thin triggers of the one reconcile per kind in kubeloop.reconcile.

Each kind is reconciled on its watch events (the initial listing included, so on resume too),
except those carrying a version this process wrote or reconciled lately (its own write's
echo); FeedbackDatasets and ServedModels also on a poll (storage and registry polls, canary
steps), and any other object whose reconcile found a dependency unavailable at the next
poll. A Job's events reconcile the TrainingJob that owns it when the Job's status differs
from what that TrainingJob's last reconcile saw (or the Job is gone). The reconcile runs
under a per-object lock on the object as the event or the poll's list carried it, unless
this process has read or written a different version of it since (then it reads the object
afresh), and never branches on what changed.

No finalizers: nothing outside the cluster needs cleaning when an object goes (its children
go with it through ownerReferences), so a deletion never waits for a running operator. That is
why the poll is kubeloop's own loop and not kopf's timers, which put a finalizer on every
object they tick for. The loop follows kopf's peering: it polls only while this operator
leads, by the rule kopf pauses operators with (`peering.leads`).
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import kopf

from kubeloop import __version__, metrics
from kubeloop.api.common import GROUP, VERSION
from kubeloop.api.errors import Unavailable
from kubeloop.kube import peering, ports
from kubeloop.kube.client import ENGINES, ApiError
from kubeloop.kube.runtime import Runtime
from kubeloop.reconcile import builders, feedbackdataset, servedmodel, trainingjob
from kubeloop.reconcile.common import LABEL_TRAININGJOB
from kubeloop.reconcile.ports import Body, Ports

logger = logging.getLogger("kubeloop.operator")

Reconcile = Callable[[Body, Ports, Any], object]
RECONCILES: dict[str, Reconcile] = {
    "TrainingJob": trainingjob.reconcile,
    "FeedbackDataset": feedbackdataset.reconcile,
    "ServedModel": servedmodel.reconcile,
}
PLURALS = {"TrainingJob": "trainingjobs", "FeedbackDataset": "feedbackdatasets"}
PLURALS["ServedModel"] = "servedmodels"
POLLED = ("FeedbackDataset", "ServedModel")


def run_reconcile(
    rt: Runtime, kind: str, namespace: str, name: str, seen: Body | None = None
) -> bool:
    """Reconcile one object under its lock, counting and timing it; False when it must be
    retried because a dependency (S3, MLflow, the API server) is unavailable.

    `seen` is the object as an event or a list carried it, before the lock: it is used when
    it is the version this process last read or wrote (or knows none); otherwise, as when
    a concurrent reconcile wrote the object meanwhile, the object is read afresh. Its status
    says what is unavailable.
    """
    started = time.monotonic()
    result = "ok"
    try:
        with rt.lock(kind, namespace, name):
            body = seen
            if body is None or not rt.is_current(kind, namespace, name, body):
                body = rt.client.get(ports.RESOURCES[kind], namespace, name)
                version = None if body is None else body["metadata"].get("resourceVersion")
                rt.saw_version(kind, namespace, name, version)
            if body is None or body["metadata"].get("deletionTimestamp"):
                metrics.forget(kind, namespace, name)
                rt.forget(kind, namespace, name)
                if kind == "TrainingJob":
                    rt.saw_job(namespace, builders.job_name(name), None)
                return True
            reconcile_ports, trainer = ports.ports(rt)
            RECONCILES[kind](body, reconcile_ports, rt.now())
            rt.reconciled(kind, namespace, name, body)
            if kind == "TrainingJob":
                rt.saw_job(namespace, builders.job_name(name), trainer.job)
    except (Unavailable, ApiError) as error:
        if isinstance(error, ApiError) and not error.transient:
            result = "error"
            raise
        result = "retry"
        logger.info("%s %s/%s: will retry: %s", kind, namespace, name, error)
        return False
    except Exception:
        result = "error"
        raise
    finally:
        metrics.RECONCILE.labels(kind, result).inc()
        metrics.RECONCILE_SECONDS.labels(kind).observe(time.monotonic() - started)
    return True


def register(rt: Runtime, registry: kopf.OperatorRegistry, poller: Poller) -> None:
    """Register kubeloop's handlers with `registry`."""

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.probe(id="kubeloop", registry=registry)
    def probe(**_: Any) -> str:
        return __version__

    @kopf.on.startup(registry=registry)
    async def start_polling(**_: Any) -> None:
        poller.start()

    @kopf.on.cleanup(registry=registry)
    async def stop_polling(**_: Any) -> None:
        await poller.stop()

    def reconcile(kind: str, namespace: str, name: str, seen: Body | None = None) -> None:
        """Reconcile now; when a dependency is unavailable, again at the next poll."""
        if not run_reconcile(rt, kind, namespace, name, seen):
            poller.retry(kind, namespace, name)

    def reconcile_on_event(kind: str) -> Callable[..., None]:
        def handle(
            *,
            type: str | None,  # noqa: A002 - kopf's keyword
            body: kopf.Body,
            namespace: str | None,
            name: str,
            **_: Any,
        ) -> None:
            poller.context = contextvars.copy_context()
            where = namespace or ""
            if type == "DELETED":
                metrics.forget(kind, where, name)
                rt.forget(kind, where, name)
                return
            # Under the lock: a reconcile in flight records the version it writes first.
            with rt.lock(kind, where, name):
                if rt.handled(kind, where, name, dict(body)):
                    return  # seen already: the echo of a write, a repeated listing
            reconcile(kind, where, name, copy.deepcopy(dict(body)))

        handle.__name__ = f"reconcile_{kind.lower()}"
        return handle

    for kind, plural in PLURALS.items():
        # A watch-event handler, not kopf's create/update/resume: those store what they
        # handled in an annotation, one more API request per change, for a decision the
        # reconcile does not need (it compares the object with the world, not with its past).
        kopf.on.event(GROUP, VERSION, plural, registry=registry, id=f"{plural}-reconcile")(
            reconcile_on_event(kind)
        )

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
            if owner.get("kind") != "TrainingJob" or not owner.get("controller"):
                continue
            # Under the TrainingJob's lock: a reconcile in flight records what it saw first.
            with rt.lock("TrainingJob", namespace or "", owner["name"]):
                news = type == "DELETED" or rt.job_is_news(namespace or "", name, dict(body))
            if news:
                reconcile("TrainingJob", namespace or "", owner["name"])

    def training(body: kopf.Body, **_: Any) -> bool:
        return (body.get("status") or {}).get("phase") == "Running"

    @kopf.timer(
        GROUP,
        VERSION,
        "trainingjobs",
        interval=rt.settings.poll_seconds,
        when=training,
        registry=registry,
        id="trainingjobs-progress",
    )
    def follow_training(*, body: kopf.Body, namespace: str | None, name: str, **_: Any) -> None:
        """A TrainingJob that trains: its progress (the trainer's log) every poll_seconds,
        which also bounds how often its status is written for it."""
        poller.context = contextvars.copy_context()
        reconcile("TrainingJob", namespace or "", name, copy.deepcopy(dict(body)))

    def engine_changed(*, body: kopf.Body, namespace: str | None, **_: Any) -> None:
        """A TrainJob or JobSet of a TrainingJob with several nodes: its conditions (Complete,
        Failed, Suspended) are its TrainingJob's news."""
        for owner in body.metadata.get("ownerReferences") or []:
            if owner.get("kind") == "TrainingJob" and owner.get("controller"):
                reconcile("TrainingJob", namespace or "", owner["name"])

    for engine in ENGINES:  # watched once their CRDs exist
        kopf.on.event(
            engine.group,
            engine.version,
            engine.plural,
            labels=jobs,
            registry=registry,
            id=engine.plural,
        )(engine_changed)

    @kopf.on.event("", "v1", "pods", labels=jobs, registry=registry)
    def pod_changed(
        *,
        type: str,  # noqa: A002 - kopf's keyword
        body: kopf.Body,
        namespace: str | None,
        name: str,
        **_: Any,
    ) -> None:
        # A pod that starts running changes no count of its Job's status on every cluster
        # (a Job's status.ready is newer than Kubernetes 1.24): follow the pods themselves.
        where = namespace or ""
        pod = None if type == "DELETED" else dict(body)
        if not rt.pod_is_news(where, name, pod):
            return
        trainingjob_name = rt.trainingjob_of(where, str(body.metadata.labels[LABEL_TRAININGJOB]))
        if trainingjob_name is not None:
            reconcile("TrainingJob", where, trainingjob_name)


class Poller:
    """Reconciles every FeedbackDataset and ServedModel each poll_seconds while this operator
    leads: one list per kind and watched namespace, then one reconcile per object; and, read
    afresh, each other object whose last reconcile found a dependency unavailable."""

    def __init__(
        self, rt: Runtime, namespaces: list[str], leadership: peering.Leadership | None
    ) -> None:
        self.rt = rt
        self.namespaces = namespaces
        self.leadership = leadership
        self.context: contextvars.Context | None = None
        """kopf's context, taken from a handler: Events posted from the poll need it."""
        self._task: asyncio.Task[None] | None = None
        self._retries: set[tuple[str, str, str]] = set()
        self._guard = threading.Lock()

    def retry(self, kind: str, namespace: str, name: str) -> None:
        """Reconcile this object again at the next poll (a FeedbackDataset or ServedModel is
        reconciled at every poll anyway)."""
        if kind not in POLLED:
            with self._guard:
                self._retries.add((kind, namespace, name))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="kubeloop-poll")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.rt.settings.poll_seconds)
            try:
                await asyncio.to_thread(self.poll_once)
            except Exception as error:  # the loop outlives any one failed poll
                logger.warning("poll failed, retrying at the next one: %s", error)

    def poll_once(self) -> None:
        """Blocking: one round over every polled object, when this operator leads."""
        if self.context is None:
            return  # no handler ran yet: kopf has not started handling (Events need it)
        if self.leadership is not None and not self.leadership.leads(self.rt.client):
            return
        with self._guard:
            retries, self._retries = self._retries, set()
        for kind, where, name in sorted(retries):
            try:
                if not self.context.run(run_reconcile, self.rt, kind, where, name):
                    self.retry(kind, where, name)
            except Exception as error:  # one object's failure is its own
                logger.warning("%s %s/%s: %s", kind, where, name, error)
        for kind in POLLED:
            places: list[str | None] = [*self.namespaces] or [None]
            for namespace in places:
                items = self.rt.client.list_objects(ports.RESOURCES[kind], namespace)
                for item in items:
                    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, **item}
                    where, name = body["metadata"].get("namespace", ""), body["metadata"]["name"]
                    try:
                        self.context.run(run_reconcile, self.rt, kind, where, name, body)
                    except Exception as error:  # one object's failure is its own
                        logger.warning("%s %s/%s: %s", kind, where, name, error)
