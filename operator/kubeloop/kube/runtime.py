"""What the operator's reconciles share in one process: settings, the API client, storage and
registry clients, per-object locks, the versions of the objects this process last read or
wrote, and what the last TrainingJob reconciles saw."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubeloop.api.times import utc_now
from kubeloop.kube.client import KubeClient, Resource
from kubeloop.reconcile import observations
from kubeloop.registry import Registry
from kubeloop.settings import Settings
from kubeloop.storage import ObjectStore

HANDLED_VERSIONS = 4
"""Versions remembered per object as handled (what it wrote or reconciled from lately)."""


@dataclass
class Runtime:
    """The operator's shared state; one per process."""

    settings: Settings
    client: KubeClient
    clock: Callable[[], datetime] = utc_now
    _registry: Registry | None = field(default=None, init=False)
    _stores: dict[tuple[str, str, str], ObjectStore] = field(default_factory=dict, init=False)
    _locks: dict[tuple[str, str, str], threading.Lock] = field(default_factory=dict, init=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, init=False)
    _serves: dict[str, tuple[bool, float]] = field(default_factory=dict, init=False)
    _jobs_seen: dict[tuple[str, str], str] = field(default_factory=dict, init=False)
    _pods_seen: dict[tuple[str, str], str] = field(default_factory=dict, init=False)
    _job_owners: dict[tuple[str, str], str] = field(default_factory=dict, init=False)
    _versions: dict[tuple[str, str, str], str | None] = field(default_factory=dict, init=False)
    _handled: dict[tuple[str, str, str], collections.deque[str]] = field(
        default_factory=dict, init=False
    )

    @classmethod
    def from_settings(cls, settings: Settings, client: KubeClient) -> Runtime:
        return cls(settings, client)

    def now(self) -> datetime:
        return self.clock()

    def lock(self, kind: str, namespace: str, name: str) -> threading.Lock:
        """One lock per object: a poll and a change handler never reconcile it at once."""
        with self._guard:
            return self._locks.setdefault((kind, namespace, name), threading.Lock())

    def is_current(self, kind: str, namespace: str, name: str, body: dict[str, Any]) -> bool:
        """Whether `body` (an event's or a list's, taken before the object's lock) is the
        version this process last read or wrote, or this process knows none: then a reconcile
        can start from it without reading the object again. Call under the object's lock."""
        key = (kind, namespace, name)
        with self._guard:
            if key not in self._versions:
                return True
            known = self._versions[key]
        return known is not None and known == body.get("metadata", {}).get("resourceVersion")

    def handled(self, kind: str, namespace: str, name: str, body: dict[str, Any]) -> bool:
        """Whether `body` is a version a reconcile in this process has started from or
        written lately: an event carrying it (the echo of its own write, or the watch's
        ADDED repeating the initial listing) holds nothing that reconcile has not seen."""
        version = body.get("metadata", {}).get("resourceVersion")
        with self._guard:
            return version is not None and version in self._handled.get((kind, namespace, name), ())

    def reconciled(self, kind: str, namespace: str, name: str, body: dict[str, Any]) -> None:
        """Remember that a reconcile completed from `body`'s version."""
        self._remember_handled(
            (kind, namespace, name), body.get("metadata", {}).get("resourceVersion")
        )

    def _remember_handled(self, key: tuple[str, str, str], version: str | None) -> None:
        if version is not None:
            with self._guard:
                self._handled.setdefault(key, collections.deque(maxlen=HANDLED_VERSIONS)).append(
                    version
                )

    def saw_version(self, kind: str, namespace: str, name: str, version: str | None) -> None:
        """Remember the resourceVersion this process read or wrote last; None: unknown (a write
        that may or may not have landed), so the next reconcile reads the object afresh."""
        with self._guard:
            self._versions[(kind, namespace, name)] = version
        self._remember_handled((kind, namespace, name), version)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        """Drop what is remembered of a deleted object."""
        with self._guard:
            self._versions.pop((kind, namespace, name), None)
            self._handled.pop((kind, namespace, name), None)

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
                self._job_owners.pop((namespace, name), None)
            else:
                self._jobs_seen[(namespace, name)] = observations.job_fingerprint(job)
                for owner in job.get("metadata", {}).get("ownerReferences") or []:
                    if owner.get("kind") == "TrainingJob" and owner.get("controller"):
                        self._job_owners[(namespace, name)] = str(owner["name"])

    def trainingjob_of(self, namespace: str, job: str) -> str | None:
        """The TrainingJob whose reconcile last acted on Job `job`, or None."""
        with self._guard:
            return self._job_owners.get((namespace, job))

    def job_is_news(self, namespace: str, name: str, job: dict[str, Any]) -> bool:
        """Whether `job` differs from what the last reconcile of its TrainingJob saw."""
        with self._guard:
            seen = self._jobs_seen.get((namespace, name))
        return seen != observations.job_fingerprint(job)

    def pod_is_news(self, namespace: str, name: str, pod: dict[str, Any] | None) -> bool:
        """Whether a trainer pod changed in what its TrainingJob's status depends on, and
        remember it (None: the pod is gone)."""
        key = (namespace, name)
        with self._guard:
            if pod is None:
                return self._pods_seen.pop(key, None) is not None
            seen = observations.pod_fingerprint(pod)
            news, self._pods_seen[key] = self._pods_seen.get(key) != seen, seen
        return news

    def serves(self, resource: Resource) -> bool:
        """Whether the cluster serves `resource`, asked at most every discovery_seconds."""
        cached = self._serves.get(resource.api_version + resource.plural)
        if cached is not None and time.monotonic() - cached[1] < self.settings.discovery_seconds:
            return cached[0]
        found = self.client.serves(resource)
        self._serves[resource.api_version + resource.plural] = (found, time.monotonic())
        return found
