"""The S3 and MLflow servers of a state directory: started once, found again after a restart.

They run as roles server/s3 and server/mlflow of the state directory's process table, on
ports that stay the same across runs when they can (so the MLflow UI and the predictor keep
their URLs), with their data in the state directory (s3/ and mlflow.db).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubeloop.local import services
from kubeloop.local.processes import ProcessTable

S3_ROLE, MLFLOW_ROLE = "server/s3", "server/mlflow"
S3_PORT, MLFLOW_PORT = 8333, 5000
"""Preferred ports; any free one is taken when they are busy."""


@dataclass(frozen=True)
class Servers:
    """Where the state directory's servers answer."""

    s3_url: str
    mlflow_url: str


def ensure_servers(
    table: ProcessTable,
    say: Callable[[str], None] = print,
    s3_port: int | None = None,
    mlflow_port: int | None = None,
) -> Servers:
    """The servers this state directory's table runs, when they still answer; else new ones.

    Data stays in the state directory, so a new server continues where the last one stopped.
    """
    s3 = table.get(S3_ROLE)
    if s3 is not None and services.is_healthy(s3.url + "/"):
        say(f"reusing the S3 server at {s3.url}")
        s3_url = s3.url
    else:
        table.stop(S3_ROLE)
        port = table.port(S3_ROLE, s3_port or S3_PORT)
        started = services.start_s3(table.state_dir / "s3", port, starter=_starter(table))
        s3_url = started.url
        say(f"started the S3 server (SeaweedFS) at {s3_url}")
    mlflow = table.get(MLFLOW_ROLE)
    if mlflow is not None and services.is_healthy(mlflow.url + "/health"):
        say(f"reusing MLflow at {mlflow.url}")
        return Servers(s3_url, mlflow.url)
    table.stop(MLFLOW_ROLE)
    port = table.port(MLFLOW_ROLE, mlflow_port or MLFLOW_PORT)
    started = services.start_mlflow(table.state_dir, s3_url, port=port, starter=_starter(table))
    say(f"started MLflow at {started.url}")
    return Servers(s3_url, started.url)


def stop_servers(table: ProcessTable) -> None:
    table.stop(MLFLOW_ROLE)
    table.stop(S3_ROLE)


def _starter(table: ProcessTable) -> services.Spawner:
    roles = {"s3": S3_ROLE, "mlflow": MLFLOW_ROLE}

    def start(
        name: str,
        command: list[str],
        url: str,
        log_path: Path,
        cwd: Path,
        env: dict[str, str] | None = None,
    ) -> services.Service:
        return table.spawn(roles[name], command, url, log_path, cwd, env)

    return start
