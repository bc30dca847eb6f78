"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver and kube-controller-manager.

The binaries come from KUBEBUILDER_ASSETS (controller-runtime's convention), or else from the
cache `.ci/run` unpacks them into (DEFAULT_ASSETS). Each start gets free ports, its own PKI (a CA,
the API server's serving certificate, client certificates of the admin and the
controller-manager, the service-account signing key), RBAC authorization, an audit log of every
request and, before the controller-manager starts, the CRDs it is given, so that its garbage
collector watches them from the beginning. No kubelet and no scheduler: pods stay Pending.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import signal
import ssl
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubeloop.local import services

ASSETS_ENV = "KUBEBUILDER_ASSETS"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
DEFAULT_ASSETS = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kubeloop" / "envtest"
)
"""Where .ci/run unpacks ../shared/envtest; used when KUBEBUILDER_ASSETS is not set."""

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
START_TIMEOUT = 90.0
"""Seconds each component may take to get ready (a loaded 2-core CI machine)."""
STOP_TIMEOUT = 10.0
CONTROLLERS = (
    "serviceaccount-token",  # the token Secrets of ServiceAccounts (v1.20)
    "serviceaccount",  # each namespace's `default` ServiceAccount
    "namespace",
    "garbagecollector",  # children go with their owner (ownerReferences)
    "job",  # a Job's pods
    "deployment",
    "replicaset",
)
"""The controllers the tests rely on; the others would only load the machine."""

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        # Service accounts' writes with their bodies: what an operator sent (ownerReferences,
        # children's specs) can be compared with what the server kept.
        {
            "level": "Request",
            "userGroups": ["system:serviceaccounts"],
            "verbs": ["create", "update", "patch"],
        },
        {"level": "Metadata"},
    ],
}


def find_assets() -> tuple[Path | None, str]:
    """The folder of the three binaries, or None and why there is none."""
    configured = os.environ.get(ASSETS_ENV)
    folder = Path(configured) if configured else DEFAULT_ASSETS
    missing = [b for b in BINARIES if not os.access(folder / b, os.X_OK)]
    if not missing:
        return folder, ""
    if configured:
        return None, f"{ASSETS_ENV}={configured} lacks the executables {', '.join(missing)}"
    return None, (
        f"no real Kubernetes control plane: set {ASSETS_ENV} to a folder with "
        f"{', '.join(BINARIES)}, or run .ci/run once with ../shared/envtest beside the "
        f"repository (it unpacks them into {DEFAULT_ASSETS})"
    )


# --- PKI ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """Files of the control plane's certificates and keys (PEM)."""

    folder: Path

    def file(self, name: str) -> Path:
        return self.folder / name

    @property
    def ca(self) -> Path:
        return self.file("ca.crt")


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        parts.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(parts)


def _certificate(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    """A certificate builder for `key`, valid from a few minutes ago for a day."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _write(
    folder: Path, name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> None:
    _write_key(folder / f"{name}.key", key)
    (folder / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_pki(folder: Path) -> Pki:
    """A CA, the API server's serving certificate (127.0.0.1, localhost, kubernetes.default…),
    client certificates of the admin (system:masters) and the controller-manager, and the key
    that signs and verifies service-account tokens."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_name = _key(), _name("kubeloop-envtest-ca")
    signs = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
    ca = (
        _certificate(ca_name, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(signs, critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    _write(folder, "ca", ca_key, ca)

    def issue(
        name: str, subject: x509.Name, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]
    ) -> None:
        key = _key()
        builder = _certificate(subject, ca_name, key).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        _write(folder, name, key, builder.sign(ca_key, hashes.SHA256()))

    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    issue(
        "apiserver",
        _name("kube-apiserver"),
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), *map(x509.DNSName, dns)],
    )
    issue("admin", _name("kubernetes-admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH, [])
    issue(
        "controller-manager",
        _name("system:kube-controller-manager"),
        ExtendedKeyUsageOID.CLIENT_AUTH,
        [],
    )
    service_accounts = _key()
    _write_key(folder / "sa.key", service_accounts)
    (folder / "sa.pub").write_bytes(
        service_accounts.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return Pki(folder)


def write_kubeconfig(path: Path, server: str, ca: Path, user: dict[str, str]) -> Path:
    """A kubeconfig for `server` as `user` (client-certificate/-key files, or a token)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "envtest", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": "user"}}],
        "current-context": "envtest",
    }
    path.write_text(json.dumps(config, indent=1))
    path.chmod(0o600)
    return path


# --- processes --------------------------------------------------------------------------------


@dataclass
class Component:
    """One started binary and its log."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 30) -> str:
        return services.log_tail(self.log, lines)

    def check_running(self) -> None:
        if self.process.poll() is not None:
            raise StartError(
                f"{self.name} exited with code {self.process.returncode}; its log ends:\n"
                + self.tail()
            )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT seconds; waits a bounded time."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)


class StartError(RuntimeError):
    """A component did not get ready in time; the message ends with its log."""


def _start(name: str, argv: list[str], logs: Path) -> Component:
    log = logs / f"{name}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
        )
    return Component(name, process, log)


def _wait(component: Component, ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        component.check_running()
        with contextlib.suppress(httpx.HTTPError, OSError):
            if ready():
                return
        time.sleep(0.25)
    raise StartError(
        f"{component.name}: {what} not within {START_TIMEOUT:.0f}s; its log ends:\n"
        + component.tail()
    )


# --- the control plane ------------------------------------------------------------------------


@dataclass
class ControlPlane:
    """A running control plane: its URL, PKI, admin kubeconfig, audit log and components."""

    server: str
    pki: Pki
    admin_kubeconfig: Path
    audit_log: Path
    folder: Path
    components: list[Component] = field(default_factory=list)

    def admin_tls(self) -> ssl.SSLContext:
        """TLS trusting the CA and presenting the admin's client certificate."""
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        context.load_cert_chain(self.pki.file("admin.crt"), self.pki.file("admin.key"))
        return context

    def client(self) -> httpx.Client:
        """A synchronous admin client (system:masters)."""
        return httpx.Client(base_url=self.server, verify=self.admin_tls(), timeout=30)

    def stop(self) -> None:
        """Stop every component, the last started first."""
        for component in reversed(self.components):
            component.stop()
        self.components.clear()

    def logs(self) -> str:
        return "\n".join(f"--- {c.name}\n{c.tail(15)}" for c in self.components)


def start(assets: Path, folder: Path, crds: Iterable[dict[str, Any]] = ()) -> ControlPlane:
    """Start etcd, kube-apiserver (installing `crds`) and kube-controller-manager in `folder`.

    Returns once the API server is ready, the CRDs are established and the controller-manager
    has given the `default` ServiceAccount its token. StartError (with the failing component's
    log tail) when a step does not happen within START_TIMEOUT seconds; then nothing is left
    running.
    """
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pki = make_pki(folder / "pki")
    etcd_port, peer_port, api_port = (services.free_port() for _ in range(3))
    server = f"https://127.0.0.1:{api_port}"
    plane = ControlPlane(
        server=server,
        pki=pki,
        admin_kubeconfig=write_kubeconfig(
            folder / "admin.kubeconfig",
            server,
            pki.ca,
            {
                "client-certificate": str(pki.file("admin.crt")),
                "client-key": str(pki.file("admin.key")),
            },
        ),
        audit_log=logs / "audit.log",
        folder=folder,
    )
    try:
        _start_etcd(plane, assets, etcd_port, peer_port)
        _start_apiserver(plane, assets, etcd_port, api_port)
        with plane.client() as client:
            install_crds(client, crds)
        _start_controller_manager(plane, assets)
    except BaseException:
        plane.stop()
        raise
    return plane


def _start_etcd(plane: ControlPlane, assets: Path, port: int, peer_port: int) -> None:
    client_url, peer_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer_port}"
    etcd = _start(
        "etcd",
        [
            str(assets / "etcd"),
            "--name=envtest",
            f"--data-dir={plane.folder / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=envtest={peer_url}",
        ],
        plane.folder / "logs",
    )
    plane.components.append(etcd)
    _wait(etcd, lambda: httpx.get(f"{client_url}/health", timeout=2).status_code == 200, "health")


def _start_apiserver(plane: ControlPlane, assets: Path, etcd_port: int, port: int) -> None:
    pki = plane.pki
    policy = plane.folder / "audit-policy.yaml"
    policy.write_text(yaml.safe_dump(AUDIT_POLICY))
    admission = [
        "NamespaceLifecycle",
        "LimitRanger",
        "ServiceAccount",
        "DefaultStorageClass",
        "ResourceQuota",
        # Setting blockOwnerDeletion needs `update` on the owner's finalizers (OpenShift
        # enables this plugin): the chart's RBAC must hold on such clusters too.
        "OwnerReferencesPermissionEnforcement",
        "MutatingAdmissionWebhook",
        "ValidatingAdmissionWebhook",
    ]
    apiserver = _start(
        "kube-apiserver",
        [
            str(assets / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            "--insecure-port=0",
            f"--tls-cert-file={pki.file('apiserver.crt')}",
            f"--tls-private-key-file={pki.file('apiserver.key')}",
            f"--client-ca-file={pki.ca}",
            f"--service-account-key-file={pki.file('sa.pub')}",
            f"--service-account-signing-key-file={pki.file('sa.key')}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--api-audiences={SERVICE_ACCOUNT_ISSUER}",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.0.0.0/24",
            f"--enable-admission-plugins={','.join(admission)}",
            f"--audit-policy-file={policy}",
            f"--audit-log-path={plane.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
            "--profiling=false",
            "--v=1",
        ],
        plane.folder / "logs",
    )
    plane.components.append(apiserver)
    with plane.client() as client:
        _wait(apiserver, lambda: client.get("/readyz").text == "ok", "/readyz ok")


def _start_controller_manager(plane: ControlPlane, assets: Path) -> None:
    pki = plane.pki
    kubeconfig = write_kubeconfig(
        plane.folder / "controller-manager.kubeconfig",
        plane.server,
        pki.ca,
        {
            "client-certificate": str(pki.file("controller-manager.crt")),
            "client-key": str(pki.file("controller-manager.key")),
        },
    )
    manager = _start(
        "kube-controller-manager",
        [
            str(assets / "kube-controller-manager"),
            f"--kubeconfig={kubeconfig}",
            "--secure-port=0",  # no health endpoint needed: readiness is the token below
            "--port=0",
            "--leader-elect=false",
            "--use-service-account-credentials",
            f"--service-account-private-key-file={pki.file('sa.key')}",
            f"--root-ca-file={pki.ca}",
            f"--controllers={','.join(CONTROLLERS)}",
            "--v=1",
        ],
        plane.folder / "logs",
    )
    plane.components.append(manager)
    with plane.client() as client:
        _wait(
            manager,
            lambda: bool(service_account_token(client, "default", "default")),
            "the token of ServiceAccount default/default",
        )


# --- API helpers (admin, synchronous) -----------------------------------------------------------

UNSUPPORTED_SCHEMA_KEYS = ("x-kubernetes-validations",)
"""CRD schema keys newer than v1.20 (CEL rules: 1.25); the server would drop them silently."""


def without_unsupported(value: Any) -> Any:
    """`value` without UNSUPPORTED_SCHEMA_KEYS, at any depth."""
    if isinstance(value, dict):
        return {
            k: without_unsupported(v) for k, v in value.items() if k not in UNSUPPORTED_SCHEMA_KEYS
        }
    if isinstance(value, list):
        return [without_unsupported(v) for v in value]
    return value


def load_crds(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    for path in paths:
        for document in yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader):
            if document:
                yield document


def install_crds(client: httpx.Client, crds: Iterable[dict[str, Any]]) -> None:
    """Create each CRD (without UNSUPPORTED_SCHEMA_KEYS) and wait until it is established."""
    names = []
    for crd in crds:
        response = client.post(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=without_unsupported(crd)
        )
        if response.status_code >= 300:
            raise StartError(f"CRD {crd['metadata']['name']} refused: {response.text[:2000]}")
        names.append(crd["metadata"]["name"])
    deadline = time.monotonic() + START_TIMEOUT
    for name in names:
        while not _established(client, name):
            if time.monotonic() > deadline:
                raise StartError(f"CRD {name} not established within {START_TIMEOUT:.0f}s")
            time.sleep(0.2)


def _established(client: httpx.Client, name: str) -> bool:
    crd = client.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}").json()
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def service_account_token(client: httpx.Client, namespace: str, name: str) -> str | None:
    """The token the token controller put in the ServiceAccount's Secret (v1.20), if yet."""
    found = client.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}")
    if found.status_code != 200:
        return None
    for reference in found.json().get("secrets") or []:
        secret = client.get(f"/api/v1/namespaces/{namespace}/secrets/{reference['name']}")
        token = (
            (secret.json().get("data") or {}).get("token") if secret.status_code == 200 else None
        )
        if token:
            return base64.b64decode(token).decode()
    return None


def resource_of(client: httpx.Client, api_version: str, kind: str) -> tuple[str, bool]:
    """(plural, namespaced) of `kind`, from the server's discovery."""
    base = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
    for resource in client.get(base).json()["resources"]:
        if resource["kind"] == kind and "/" not in resource["name"]:
            return resource["name"], bool(resource["namespaced"])
    raise LookupError(f"the API server serves no {kind} in {api_version}")


def create_object(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """Create any object (in its metadata.namespace when namespaced); fail naming it."""
    api_version, kind = body["apiVersion"], body["kind"]
    plural, namespaced = resource_of(client, api_version, kind)
    base = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
    if namespaced:
        base += f"/namespaces/{body['metadata']['namespace']}"
    response = client.post(f"{base}/{plural}", json=body)
    if response.status_code >= 300:
        raise AssertionError(f"{kind} {body['metadata']['name']} refused: {response.text}")
    return dict(response.json())
