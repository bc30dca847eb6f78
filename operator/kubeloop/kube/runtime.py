"""What the operator's reconciles share: settings, the API client, storage and registry
clients, per-object locks, status writes and events."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubeloop.api.common import ApiModel
from kubeloop.kube.client import EVENTS, ApiError, KubeClient, Resource
from kubeloop.reconcile import builders, common, observations
from kubeloop.reconcile.common import Event, merge_patch
from kubeloop.registry import Registry
from kubeloop.settings import Settings
from kubeloop.storage import ObjectStore

logger = logging.getLogger("kubeloop.operator")


class Retry(Exception):
    """A dependency (S3, MLflow, the API server) is unavailable; reconcile again later.

    The status already says so in a condition when this is raised.
    """


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    """The operator's shared state; one per process."""

    settings: Settings
    client: KubeClient
    defaults: builders.ChildDefaults
    clock: Callable[[], datetime] = _utcnow
    _registry: Registry | None = field(default=None, init=False)
    _stores: dict[tuple[str, str, str], ObjectStore] = field(default_factory=dict, init=False)
    _locks: dict[tuple[str, str, str], threading.Lock] = field(default_factory=dict, init=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, init=False)
    _serves: dict[str, tuple[bool, float]] = field(default_factory=dict, init=False)
    _jobs_seen: dict[tuple[str, str], str] = field(default_factory=dict, init=False)

    @classmethod
    def from_settings(cls, settings: Settings, client: KubeClient) -> Runtime:
        return cls(settings, client, builders.ChildDefaults.from_settings(settings))

    def now(self) -> datetime:
        return self.clock()

    def lock(self, kind: str, namespace: str, name: str) -> threading.Lock:
        """One lock per object: a timer and a change handler never reconcile it at once."""
        with self._guard:
            return self._locks.setdefault((kind, namespace, name), threading.Lock())

    def registry(self) -> Registry:
        with self._guard:
            if self._registry is None:
                self._registry = Registry(self.settings.mlflow_tracking_uri)
            return self._registry

    def store(self, endpoint: str | None, access_key: str, secret_key: str) -> ObjectStore:
        """An S3 client for `endpoint` (the operator's when None) and these credentials."""
        url = endpoint or self.settings.s3_endpoint
        key = (url, access_key, secret_key)
        with self._guard:
            if key not in self._stores:
                self._stores[key] = ObjectStore(
                    url,
                    access_key,
                    secret_key,
                    self.settings.s3_region,
                    self.settings.s3_retries,
                    self.settings.s3_timeout_seconds,
                )
            return self._stores[key]

    def saw_job(self, namespace: str, name: str, job: dict[str, Any] | None) -> None:
        """Remember the Job a completed TrainingJob reconcile acted on (None: forget it)."""
        with self._guard:
            if job is None:
                self._jobs_seen.pop((namespace, name), None)
            else:
                self._jobs_seen[(namespace, name)] = observations.job_fingerprint(job)

    def job_is_news(self, namespace: str, name: str, job: dict[str, Any]) -> bool:
        """Whether `job` differs from what the last reconcile of its TrainingJob saw."""
        with self._guard:
            seen = self._jobs_seen.get((namespace, name))
        return seen != observations.job_fingerprint(job)

    def serves(self, resource: Resource, ttl_seconds: float = 30.0) -> bool:
        """Whether the cluster serves `resource`, checked at most every `ttl_seconds`."""
        cached = self._serves.get(resource.api_version + resource.plural)
        if cached is not None and time.monotonic() - cached[1] < ttl_seconds:
            return cached[0]
        found = self.client.serves(resource)
        self._serves[resource.api_version + resource.plural] = (found, time.monotonic())
        return found

    def write_status(self, resource: Resource, body: dict[str, Any], new: ApiModel) -> None:
        """Merge-patch the status subresource from what `body` holds to `new`.

        Only the model's fields are compared: keys others keep in the status stay.
        """
        known = common.field_names(type(new))
        stored = {k: v for k, v in (body.get("status") or {}).items() if k in known}
        patch = merge_patch(stored, new.to_wire())
        if not patch:
            return
        metadata = body["metadata"]
        try:
            self.client.patch(
                resource, metadata["namespace"], metadata["name"], {"status": patch}, "status"
            )
        except ApiError as error:
            if error.status == 404:
                return  # deleted meanwhile
            raise

    def emit(self, involved: dict[str, Any], events: Iterable[Event]) -> None:
        """Post each event about `involved`; a failure to post is logged, never raised."""
        metadata = involved.get("metadata", {})
        for event in events:
            log = logger.warning if event.type == "Warning" else logger.info
            log(
                "%s %s/%s: %s: %s",
                involved.get("kind"),
                metadata.get("namespace"),
                metadata.get("name"),
                event.reason,
                event.message,
            )
            try:
                self.client.create(
                    EVENTS,
                    metadata.get("namespace"),
                    builders.build_event(involved, event, self.now()),
                )
            except ApiError as error:
                logger.warning("could not post event %s: %s", event.reason, error)


def _ref(body: dict[str, Any]) -> str:
    metadata = body.get("metadata", {})
    return f"{body.get('kind')}/{metadata.get('namespace')}/{metadata.get('name')}"


def is_owned_by(child: dict[str, Any], owner: dict[str, Any]) -> bool:
    """Whether `child` names `owner` as its controller (by uid when the owner has one)."""
    uid = owner.get("metadata", {}).get("uid")
    for reference in child.get("metadata", {}).get("ownerReferences") or []:
        if not reference.get("controller"):
            continue
        if uid and reference.get("uid") == uid:
            return True
        if not uid and (reference.get("kind"), reference.get("name")) == (
            owner.get("kind"),
            owner.get("metadata", {}).get("name"),
        ):
            return True
    return False
