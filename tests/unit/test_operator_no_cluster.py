"""`kubeloop operator` with no cluster to talk to: one line saying what it looked for and how to
point it at a cluster, exit code 2 - not the Kubernetes client's traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubeloop.local import services

CLUSTER_VARIABLES = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")


def _operator(home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in CLUSTER_VARIABLES}
    return subprocess.run(
        [sys.executable, "-m", "kubeloop.cli", "operator", "--standalone"],
        env={
            **clean,
            "HOME": str(home),
            "KUBELOOP_METRICS_HOST": "127.0.0.1",
            "KUBELOOP_METRICS_PORT": str(services.free_port()),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("kubeconfig", "looked_at"),
    [(None, "~/.kube/config"), ("missing.yaml", "KUBECONFIG=")],
    ids=["no-kubeconfig", "kubeconfig-missing"],
)
def test_no_cluster_is_one_line_and_exit_2(
    tmp_path: Path, kubeconfig: str | None, looked_at: str
) -> None:
    env = {"KUBECONFIG": str(tmp_path / kubeconfig)} if kubeconfig else {}
    result = _operator(tmp_path, **env)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("kubeloop operator: no Kubernetes cluster to connect to")
    assert "not in a pod with a service account" in line
    assert f"no usable kubeconfig at {looked_at}" in line
    assert "set KUBECONFIG" in line
