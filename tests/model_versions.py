"""Registered model versions with metrics in the real MLflow server, and ServedModel
manifests serving them: shared by the operator tests on the emulator and on the real API
server."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from mlflow import MlflowClient

from tests.operator_harness import API


def register(tracking_uri: str, model: str, metrics: dict[str, float]) -> str:
    """A model version whose run logged `metrics` (no model files: the gate reads metrics)."""
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    if not client.search_registered_models(f"name = '{model}'"):
        client.create_registered_model(model)
    run = client.create_run(experiment_id="0")
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    version = client.create_model_version(model, f"runs:/{run.info.run_id}/model", run.info.run_id)
    return str(version.version)


async def registered(tracking_uri: str, model: str, metrics: dict[str, float]) -> str:
    return await asyncio.to_thread(register, tracking_uri, model, metrics)


def served_model(name: str, model: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "ServedModel",
        "metadata": {"name": name},
        "spec": {"registeredModel": model, "alias": "champion", **spec},
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
