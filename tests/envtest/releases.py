"""The Helm chart's RBAC installed on the real API server, and a kubeconfig with its
ServiceAccount's token, so that the operator runs with exactly the rights a release gives it.

Only the chart's ServiceAccount, (Cluster)Roles, bindings and peering objects are applied: the
Deployment's pod cannot run here (no kubelet); the tests start the operator as a process with
the Deployment's arguments instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests import helm_chart
from tests.envtest import audit, control_plane

APPLIED = {
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ClusterKopfPeering",
    "KopfPeering",
}
TOKEN_TIMEOUT = 60.0


@dataclass(frozen=True)
class Release:
    """One install of the chart: its rendered objects and its ServiceAccount's kubeconfig."""

    name: str
    namespace: str
    documents: list[dict[str, Any]]
    kubeconfig: Path

    @property
    def deployment(self) -> dict[str, Any]:
        (found,) = helm_chart.by_kind(self.documents, "Deployment")
        return found

    @property
    def account(self) -> str:
        return str(self.deployment["spec"]["template"]["spec"]["serviceAccountName"])

    @property
    def user(self) -> str:
        """The username the API server gives requests made with the account's token."""
        return audit.service_account_user(self.namespace, self.account)

    @property
    def watched(self) -> list[str]:
        """The namespaces the operator watches; empty: all of them."""
        return [a.split("=", 1)[1] for a in self.operator_args() if a.startswith("--namespace=")]

    def operator_args(self) -> list[str]:
        """The operator's arguments in the chart's Deployment, but --liveness (the tests give
        each process its own port)."""
        (container,) = self.deployment["spec"]["template"]["spec"]["containers"]
        return [a for a in container["args"] if not a.startswith("--liveness")]


def install(
    plane: control_plane.ControlPlane,
    name: str,
    values: dict[str, Any],
    folder: Path,
    namespace: str = helm_chart.RELEASE_NAMESPACE,
) -> Release:
    """Apply release `name`'s RBAC and peering objects; write its ServiceAccount's kubeconfig.

    The release namespace and the watched namespaces are created when missing.
    """
    documents = helm_chart.render(values, name=name, namespace=namespace)
    with plane.client() as client:
        for wanted in {namespace, *values.get("watchNamespaces", [])}:
            ensure_namespace(client, wanted)
        for document in documents:
            if document["kind"] in APPLIED:
                control_plane.create_object(client, document)
        release = Release(name, namespace, documents, folder / f"{name}.kubeconfig")
        token = wait_for_token(client, namespace, release.account)
    control_plane.write_kubeconfig(release.kubeconfig, plane.server, plane.pki.ca, {"token": token})
    return release


def ensure_namespace(client: httpx.Client, name: str) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    response = client.post("/api/v1/namespaces", json=body)
    assert response.status_code in (201, 409), response.text


def wait_for_token(client: httpx.Client, namespace: str, account: str) -> str:
    """The token the token controller gives the ServiceAccount (v1.20: in a Secret)."""
    deadline = time.monotonic() + TOKEN_TIMEOUT
    while time.monotonic() < deadline:
        token = control_plane.service_account_token(client, namespace, account)
        if token:
            return token
        time.sleep(0.2)
    raise AssertionError(f"ServiceAccount {namespace}/{account} got no token Secret")
