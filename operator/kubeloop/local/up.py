"""`kubeloop up -f DIR`: run the manifests a user would `kubectl apply`, on this machine."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from kubeloop import manifests
from kubeloop.api import validation
from kubeloop.local import services
from kubeloop.local.loop import LocalLoop


def run(state_dir: Path, paths: list[Path], console: Console, poll_seconds: float = 2.0) -> int:
    """Start or reuse the servers, apply `paths` and reconcile until Ctrl-C; the exit code."""
    documents = [doc for path in paths for _, doc in manifests.load(path)]
    refused = [
        f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}: {error}"
        for doc in documents
        for error in validation.schema_errors(doc)
    ]
    if refused:
        for line in refused:
            console.print(f"refused {line}", markup=False)
        console.print("nothing was started; fix the manifests and run `kubeloop up` again")
        return 2
    servers = services.ensure_servers(state_dir, say=console.print)
    loop = LocalLoop(state_dir, servers.s3_url, servers.mlflow_url, say=console.print)
    try:
        for document in documents:
            outcome = loop.apply(document)
            console.print(
                f"{document['kind'].lower()}.kubeloop.io/{document['metadata']['name']} {outcome}"
            )
        console.print(
            f"MLflow UI: {servers.mlflow_url}   S3: {servers.s3_url}   state: {state_dir}"
        )
        console.print("reconciling; Ctrl-C stops every process and keeps the state")
        announced: set[str] = set()
        while True:
            loop.step()
            for (kind, name), body in loop.objects.items():
                url = (body.get("status") or {}).get("url")
                if kind == "ServedModel" and url and name not in announced:
                    announced.add(name)
                    dataset = body["spec"].get("feedbackDataset")
                    console.print(f"ServedModel/{name}: predictor at {url}/v2/models/{name}/infer")
                    if dataset:
                        console.print(f"  feedback: POST {url}/v1/feedback/{dataset}")
            time.sleep(poll_seconds)
    except KeyboardInterrupt:
        console.print("stopping; the state stays in " + str(state_dir))
        return 0
    finally:
        loop.close()
        servers.stop()
