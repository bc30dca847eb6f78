"""kmock's Kubernetes emulator, declared and behaving as kubeloop's operator needs.

Shared by the API tests (tests/api) and the operator benchmark (bench/operator_jobs.py).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import kmock
from kmock._internal import parsing  # no public hook for the path parser

from kubeloop.kube.ports import merge_patch

API = "kubeloop.io/v1alpha1"
VERBS = {"list", "watch", "get", "create", "update", "patch", "delete"}
KSERVE = "serving.kserve.io/v1beta1/inferenceservices"
TRAINJOBS = "trainer.kubeflow.org/v1alpha1/trainjobs"
JOBSETS = "jobset.x-k8s.io/v1alpha2/jobsets"


def _namespaced(kind: str, status: bool = True) -> kmock.ResourceInfo:
    subresources = {"status"} if status else set()
    return kmock.ResourceInfo(kind=kind, namespaced=True, subresources=subresources, verbs=VERBS)


RESOURCES: dict[str, kmock.ResourceInfo] = {
    f"{API}/trainingjobs": _namespaced("TrainingJob"),
    f"{API}/feedbackdatasets": _namespaced("FeedbackDataset"),
    f"{API}/servedmodels": _namespaced("ServedModel"),
    "batch/v1/jobs": _namespaced("Job"),
    "apps/v1/deployments": _namespaced("Deployment"),
    "autoscaling/v2/horizontalpodautoscalers": _namespaced("HorizontalPodAutoscaler"),
    "v1/pods": _namespaced("Pod"),
    "v1/configmaps": _namespaced("ConfigMap", status=False),
    "v1/secrets": _namespaced("Secret", status=False),
    "v1/services": _namespaced("Service", status=False),
    "v1/events": _namespaced("Event", status=False),
    # kopf waits to discover namespaces and CRDs even when it watches all namespaces.
    "v1/namespaces": kmock.ResourceInfo(kind="Namespace", namespaced=False, verbs=VERBS),
    "apiextensions.k8s.io/v1/customresourcedefinitions": kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, verbs=VERBS
    ),
    "kopf.dev/v1/clusterkopfpeerings": kmock.ResourceInfo(
        kind="ClusterKopfPeering", namespaced=False, subresources={"status"}, verbs=VERBS
    ),
}
"""What the operator watches or writes, KServe's InferenceService aside."""

_VERSIONS = itertools.count(1)
_parse_path = parsing.parse_path


def _namespaces_too(path: str) -> parsing.ParsedPath:
    """kmock 0.8's path parser, which reads /api/v1/namespaces[/NAME] as a namespace prefix
    with nothing after it (and fails), taught that these paths are Namespace objects."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        name = parts[3] if len(parts) == 4 else None
        return parsing.ParsedPath(group="", version="v1", plural="namespaces", name=name)
    return _parse_path(path)


# kopf lists and watches Namespaces when it serves a list of them (`--namespace`).
parsing.parse_path = _namespaces_too


class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator with a resourceVersion that changes on every write, as the API
    server's does, generated names, and server-side apply for a single field manager.

    kmock keeps whatever resourceVersion a client sends. kopf relies on it to tell its own
    patches' events from older ones still in the watch stream; with a constant version it
    takes the event of an operator's status patch, which comes before kopf's bookkeeping
    patch, for an object not yet handled, and runs its creation handlers a second time.

    kmock reads every PATCH as a merge patch of an existing object. An apply patch
    (application/apply-patch+yaml) creates the object when there is none, and otherwise
    makes the applied fields the object's: what the one manager applied before and applies no
    more is removed (metadata's labels, annotations and ownerReferences are replaced). Real
    server-side apply, with several managers, is tested against the real API server.
    """

    async def _handle(self, request: Any) -> Any:
        if request.method == kmock.method.PATCH and "apply-patch" in str(
            request.headers.get("Content-Type", "")
        ):
            request = await self._as_apply(request)
        write = request.action in (kmock.action.CREATE, kmock.action.UPDATE)
        if write and request.resource is not None and isinstance(request.data, dict):
            metadata = request.data.setdefault("metadata", {})
            metadata["resourceVersion"] = str(next(_VERSIONS))
            if request.action == kmock.action.CREATE and metadata.get("generateName"):
                # As the API server does: kopf's Events are created with a generated name.
                metadata.setdefault("name", f"{metadata['generateName']}{next(_VERSIONS):05d}")
        return await super()._handle(request)

    async def _as_apply(self, request: Any) -> Any:
        """Carry out the apply here, then let kmock answer it as a read of the object.

        kmock matches reactions to the very request object it received, so the request is
        changed in place (it is a frozen attrs object) rather than replaced.
        """
        key = (request.resource, request.namespace, request.name)
        applied = dict(request.data or {})
        version = str(next(_VERSIONS))
        async with self._lock:
            if key not in self._objects or self._objects[key].deleted:
                metadata = {**applied.get("metadata", {}), "namespace": request.namespace}
                applied["metadata"] = {**metadata, "resourceVersion": version}
                if key in self._objects:
                    self._objects[key].create(applied)
                else:
                    self._objects[key] = applied
                event = "ADDED"
            else:
                self._objects[key].patch(_applied_patch(self._objects[key].raw, applied, version))
                event = "MODIFIED"
            raw = self._objects[key].raw
            await self._buses[request.resource].put({"type": event, "object": raw})
        object.__setattr__(request, "action", kmock.action.FETCH)
        return request


def _applied_patch(
    current: dict[str, Any], applied: dict[str, Any], version: str
) -> dict[str, Any]:
    """The merge patch that makes the applied fields the object's (one field manager)."""
    metadata = applied.get("metadata") or {}
    kept = ("labels", "annotations", "ownerReferences")
    patch: dict[str, Any] = {
        "metadata": {**{k: metadata[k] for k in kept if k in metadata}, "resourceVersion": version}
    }
    for field, value in applied.items():
        if field in ("apiVersion", "kind", "metadata"):
            continue
        previous = current.get(field)
        if isinstance(value, dict) and isinstance(previous, dict):
            patch[field] = merge_patch(previous, value)
        else:
            patch[field] = value
    return patch


def declare(emulator: kmock.KubernetesEmulator, kserve: bool = True, trainer: bool = True) -> None:
    """Declare kubeloop's resources, KServe's unless `kserve` is False, and Kubeflow Trainer's
    TrainJob and JobSet unless `trainer` is False."""
    for resource, info in RESOURCES.items():
        emulator.resources[resource] = info
    if kserve:
        emulator.resources[KSERVE] = _namespaced("InferenceService")
    if trainer:
        emulator.resources[TRAINJOBS] = _namespaced("TrainJob")
        emulator.resources[JOBSETS] = _namespaced("JobSet")


def write_kubeconfig(path: Path, server: str, user: str) -> Path:
    """A kubeconfig at `path` pointing at `server` with a bearer token."""
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": server.rstrip("/")}}],
                "users": [{"name": user, "user": {"token": f"{user}-token"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": user}}],
                "current-context": "kmock",
            }
        )
    )
    return path
