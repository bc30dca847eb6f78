"""A small dict-in, dict-out client of the Kubernetes API, on the official client's transport.

The official client brings authentication (in-cluster service account, kubeconfig); objects
stay plain dicts, as the builders make them and as kopf hands them over.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import kubernetes  # type: ignore[import-untyped]  # the client ships no type hints
import urllib3

logger = logging.getLogger(__name__)
FIELD_MANAGER = "kubeloop"


@dataclass(frozen=True)
class Resource:
    """A kind of object, addressed the way the REST API addresses it."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{quote(namespace)}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name)}"
        if subresource is not None:
            base += f"/{subresource}"
        return base


TRAININGJOBS = Resource("kubeloop.io", "v1alpha1", "trainingjobs")
FEEDBACKDATASETS = Resource("kubeloop.io", "v1alpha1", "feedbackdatasets")
SERVEDMODELS = Resource("kubeloop.io", "v1alpha1", "servedmodels")
JOBS = Resource("batch", "v1", "jobs")
PODS = Resource("", "v1", "pods")
SECRETS = Resource("", "v1", "secrets")
SERVICES = Resource("", "v1", "services")
EVENTS = Resource("", "v1", "events")
DEPLOYMENTS = Resource("apps", "v1", "deployments")
AUTOSCALERS = Resource("autoscaling", "v2", "horizontalpodautoscalers")
AUTOSCALERS_V2BETA2 = Resource("autoscaling", "v2beta2", "horizontalpodautoscalers")
"""HorizontalPodAutoscalers on API servers before 1.23, which do not serve autoscaling/v2."""
INFERENCESERVICES = Resource("serving.kserve.io", "v1beta1", "inferenceservices")
TRAINJOBS = Resource("trainer.kubeflow.org", "v1alpha1", "trainjobs")
JOBSETS = Resource("jobset.x-k8s.io", "v1alpha2", "jobsets")
ENGINES = (TRAINJOBS, JOBSETS)
"""What runs a TrainingJob's several nodes, in the order the operator prefers them."""


class ApiError(RuntimeError):
    """The API server refused a request, or could not be reached (status 0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def transient(self) -> bool:
        """Worth retrying later: unreachable, throttled, or a server-side error."""
        return self.status == 0 or self.status == 429 or self.status >= 500


class NotFound(ApiError):
    """404: the object (or its kind) does not exist."""


class Conflict(ApiError):
    """409: the object already exists, or changed meanwhile."""


class KubeClient:
    """Synchronous calls of the Kubernetes REST API; objects are plain dicts."""

    def __init__(self, api: kubernetes.client.ApiClient, timeout_seconds: float = 30.0) -> None:
        self._api = api
        self._timeout = timeout_seconds

    @classmethod
    def from_environment(cls) -> KubeClient:
        """A client configured in-cluster (service account) or from the kubeconfig.

        ApiError with status 0 and reason NoCluster, saying what was looked for and how to
        point kubeloop at a cluster, when neither is there.
        """
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException as in_cluster:
            kubeconfig = os.environ.get("KUBECONFIG")
            try:
                kubernetes.config.load_kube_config()
            except (kubernetes.config.ConfigException, OSError, ValueError) as error:
                looked_at = f"KUBECONFIG={kubeconfig}" if kubeconfig else "~/.kube/config"
                raise ApiError(
                    0,
                    "NoCluster",
                    f"no Kubernetes cluster to connect to: not in a pod with a service account "
                    f"({in_cluster}) and no usable kubeconfig at {looked_at} ({error}); set "
                    "KUBECONFIG to a kubeconfig file (or select a context with `kubectl config "
                    "use-context`), or run the operator in the cluster (helm install)",
                ) from error
        return cls(kubernetes.client.ApiClient())

    def get(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return self._call("GET", resource.path(namespace, name))
        except NotFound:
            return None

    def list_objects(
        self, resource: Resource, namespace: str | None, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Objects of `resource` with `labels` (checked here as well as by the server)."""
        query = []
        if labels:
            query.append(("labelSelector", ",".join(f"{k}={v}" for k, v in labels.items())))
        items = self._call("GET", resource.path(namespace), query=query).get("items") or []
        wanted = dict(labels or {})
        return [
            item
            for item in items
            if all(
                (item.get("metadata", {}).get("labels") or {}).get(k) == v
                for k, v in wanted.items()
            )
        ]

    def create(
        self, resource: Resource, namespace: str | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Create the object; Conflict when one of that name exists."""
        return self._call("POST", resource.path(namespace), body=body)

    def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """Apply a JSON merge patch (RFC 7386) to the object or its subresource."""
        return self._call(
            "PATCH",
            resource.path(namespace, name, subresource),
            body=patch,
            content_type="application/merge-patch+json",
        )

    def apply(
        self, resource: Resource, namespace: str | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Server-side apply `body` as field manager kubeloop, forcing ownership of its fields.

        The server creates the object or merges it, removes fields kubeloop set before and
        no longer sets, and leaves fields others (defaults, other controllers) own alone: no
        code guesses which fields the server defaulted.
        """
        name = body["metadata"]["name"]
        return self._call(
            "PATCH",
            resource.path(namespace, name),
            body=body,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

    def delete(self, resource: Resource, namespace: str | None, name: str) -> None:
        """Delete the object (its dependents in the background); absent is fine."""
        with contextlib.suppress(NotFound):
            self._call(
                "DELETE", resource.path(namespace, name), body={"propagationPolicy": "Background"}
            )

    def serves(self, resource: Resource) -> bool:
        """Whether the API server serves `resource` (e.g. whether KServe's CRD is installed)."""
        base = f"/apis/{resource.group}/{resource.version}" if resource.group else "/api/v1"
        try:
            found = self._call("GET", base)
        except NotFound:
            return False
        return any(r.get("name") == resource.plural for r in found.get("resources") or [])

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """One key of a Secret, decoded; None when the Secret or the key is missing."""
        secret = self.get(SECRETS, namespace, name)
        encoded = ((secret or {}).get("data") or {}).get(key)
        if encoded is None:
            return ((secret or {}).get("stringData") or {}).get(key)
        return base64.b64decode(encoded).decode()

    def pod_log(self, namespace: str, pod: str, container: str, lines: int) -> str:
        """The last `lines` lines of a container's log."""
        query = [("container", container), ("tailLines", str(lines))]
        path = PODS.path(namespace, pod, "log")
        return self._request("GET", path, query=query, accept="text/plain").decode(errors="replace")

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        data = self._request(method, path, body, query, content_type)
        return dict(json.loads(data)) if data else {}

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> bytes:
        try:
            response = self._api.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Accept": accept, "Content-Type": content_type},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=self._timeout,
            )
        except kubernetes.client.ApiException as error:
            raise _error(error.status or 0, error.reason or "", error.body) from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise ApiError(0, type(error).__name__, f"{method} {path}: {error}") from error
        return bytes(response.data or b"")


def _error(status: int, reason: str, body: Any) -> ApiError:
    message = str(body or "")
    try:
        parsed = json.loads(body)
        message = str(parsed.get("message") or message)
        reason = str(parsed.get("reason") or reason)
    except (TypeError, ValueError, AttributeError):
        pass
    kind = NotFound if status == 404 else Conflict if status == 409 else ApiError
    return kind(status, reason, message[:500])
