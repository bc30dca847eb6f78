"""The tests playing the node: the control plane has no kubelet, so pods stay Pending until a
test runs a container's command here and writes the pod's status as the kubelet would.

A container runs as a local process: its command and args, with the files of its configMap,
secret and downwardAPI volumes written under a folder that stands for the container's file
system (paths in the args rewritten to it), its env resolved (values, secretKeyRef,
configMapKeyRef) and the termination message read from its terminationMessagePath, cut at the
kubelet's 4096 bytes.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.operator_harness import Cluster

TERMINATION_MESSAGE_LIMIT = 4096
"""The kubelet keeps at most this many bytes of a termination message."""
DEFAULT_TERMINATION_PATH = "/dev/termination-log"


@dataclass(frozen=True)
class Exit:
    code: int
    message: str
    output: str


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _object_data(
    cluster: Cluster, resource: str, name: str, namespace: str
) -> dict[str, str]:
    found = await cluster.get(resource, name, namespace)
    assert found is not None, f"{resource} {namespace}/{name}, which the pod uses, does not exist"
    if resource == "v1/secrets":
        return {k: base64.b64decode(v).decode() for k, v in (found.get("data") or {}).items()}
    return dict(found.get("data") or {})


async def _env(cluster: Cluster, container: dict[str, Any], namespace: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for variable in container.get("env") or []:
        name = variable["name"]
        if "value" in variable:
            env[name] = variable["value"]
            continue
        source = variable.get("valueFrom") or {}
        if "secretKeyRef" in source:
            resource, ref = "v1/secrets", source["secretKeyRef"]
        elif "configMapKeyRef" in source:
            resource, ref = "v1/configmaps", source["configMapKeyRef"]
        else:
            raise AssertionError(f"env {name}: this kubelet cannot resolve {source}")
        data = await _object_data(cluster, resource, ref["name"], namespace)
        if ref["key"] in data:
            env[name] = data[ref["key"]]
        else:
            assert ref.get("optional"), f"env {name}: {ref['name']} has no key {ref['key']}"
    return env


async def _mount(
    cluster: Cluster, pod: dict[str, Any], container: dict[str, Any], root: Path
) -> dict[str, Path]:
    """Write the container's configMap, secret and downwardAPI volumes under `root`:
    mountPath -> folder."""
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    namespace = pod["metadata"]["namespace"]
    mounted = {}
    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            data = await _object_data(
                cluster, "v1/configmaps", volume["configMap"]["name"], namespace
            )
        elif "secret" in volume:
            data = await _object_data(
                cluster, "v1/secrets", volume["secret"]["secretName"], namespace
            )
        elif "downwardAPI" in volume:
            items = volume["downwardAPI"]["items"]
            data = {i["path"]: _field(pod, i["fieldRef"]["fieldPath"]) for i in items}
        else:
            continue
        folder = root / mount["mountPath"].lstrip("/")
        folder.mkdir(parents=True, exist_ok=True)
        for key, text in data.items():
            (folder / key).write_text(text)
        mounted[mount["mountPath"]] = folder
    return mounted


def _field(pod: dict[str, Any], path: str) -> str:
    """A downward API fieldPath of `pod`: metadata.name and the like, or one label or
    annotation (metadata.annotations['key'])."""
    found = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if found:
        return str(pod["metadata"].get(found[1], {}).get(found[2], ""))
    assert path in ("metadata.name", "metadata.namespace", "metadata.uid"), path
    return str(pod["metadata"][path.removeprefix("metadata.")])


def _local(argument: str, paths: dict[str, Path]) -> str:
    """`argument` with a container path (under a mount, or the termination file) made local."""
    for container_path, local in sorted(paths.items(), key=lambda p: -len(p[0])):
        if argument == container_path or argument.startswith(container_path.rstrip("/") + "/"):
            return str(local) + argument[len(container_path) :]
    return argument


async def run_container(
    cluster: Cluster, pod: dict[str, Any], name: str, root: Path, timeout: float
) -> Exit:
    """Run container `name` of `pod` as a local process; its exit code and termination message.

    `python` in the command is this interpreter (the image's Python is this environment).
    """
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] == name]
    root.mkdir(parents=True, exist_ok=True)
    paths = await _mount(cluster, pod, container, root)
    termination = root / "termination-log"
    termination.write_text("")
    paths[container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH] = termination
    argv = [_local(a, paths) for a in [*container.get("command", []), *container.get("args", [])]]
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    env = {**os.environ, **await _env(cluster, container, pod["metadata"]["namespace"])}
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=root,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"container {name} ran longer than {timeout}s") from None
    message = termination.read_bytes()[:TERMINATION_MESSAGE_LIMIT].decode(errors="replace")
    return Exit(int(process.returncode or 0), message, output.decode(errors="replace"))


async def job_pod(cluster: Cluster, job: str) -> dict[str, Any] | None:
    """The pod the Job controller made for `job` (it labels them job-name)."""
    for pod in await cluster.list_objects("v1/pods"):
        if (pod["metadata"].get("labels") or {}).get("job-name") == job:
            return pod
    return None


async def report_running(cluster: Cluster, pod: dict[str, Any], ready: bool = False) -> None:
    """The pod's status once its containers started (all ready when `ready`)."""
    now = _now()
    status = "True" if ready else "False"
    await _write_status(
        cluster,
        pod,
        {
            "phase": "Running",
            "startTime": now,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": status, "lastTransitionTime": now},
                {"type": "Ready", "status": status, "lastTransitionTime": now},
            ],
            "containerStatuses": [
                _container_status(c, {"running": {"startedAt": now}}, ready)
                for c in pod["spec"]["containers"]
            ],
        },
    )


async def report_terminated(cluster: Cluster, pod: dict[str, Any], name: str, exited: Exit) -> None:
    """The pod's status once container `name` (its only one) exited."""
    now = _now()
    terminated = {
        "exitCode": exited.code,
        "reason": "Completed" if exited.code == 0 else "Error",
        "message": exited.message,
        "startedAt": now,
        "finishedAt": now,
    }
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] == name]
    await _write_status(
        cluster,
        pod,
        {
            "phase": "Succeeded" if exited.code == 0 else "Failed",
            "conditions": [
                {"type": "Ready", "status": "False", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "False", "lastTransitionTime": now},
            ],
            "containerStatuses": [_container_status(container, {"terminated": terminated}, False)],
        },
    )


def _container_status(
    container: dict[str, Any], state: dict[str, Any], ready: bool
) -> dict[str, Any]:
    return {
        "name": container["name"],
        "image": container["image"],
        "imageID": "",
        "ready": ready,
        "restartCount": 0,
        "started": "running" in state,
        "state": state,
    }


async def _write_status(cluster: Cluster, pod: dict[str, Any], status: dict[str, Any]) -> None:
    metadata = pod["metadata"]
    await cluster.patch(
        "v1/pods", metadata["name"], {"status": status}, "status", metadata["namespace"]
    )
