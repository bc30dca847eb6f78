"""The baseline server: a plain kserve.Model around the same onnxruntime session.

What a KServe user writes without kubeloop: V1 `{"instances": [...]}` in, the session's
probabilities out, a synchronous `predict` as in KServe's examples. No micro-batching,
uncertainty, prediction ids, prediction log, review pool, metrics or extra routes. The
server runs as kubeloop's does (one uvicorn worker, no gRPC, no per-request latency log),
bound to 127.0.0.1 (kserve itself always binds 0.0.0.0).

    python bench/plain_kserve.py --model model.onnx --port 8080 [--name digits]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import kserve
import numpy as np
import onnxruntime
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.protocol.rest.server import RESTServer


def session(data: bytes) -> onnxruntime.InferenceSession:
    """The session as kubeloop.serving.onnx_model opens it: full graph optimisation, CPU."""
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])


class PlainModel(kserve.Model):  # type: ignore[misc]  # kserve ships no type information
    def __init__(self, name: str, data: bytes) -> None:
        super().__init__(name)
        self.session = session(data)
        self.ready = True

    def predict(
        self,
        payload: dict[str, Any],
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        rows = np.asarray(payload["instances"], dtype=np.float32).reshape(-1, 1, 8, 8)
        (probabilities,) = self.session.run(["probabilities"], {"input": rows})
        return {"predictions": probabilities.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="digits")
    options = parser.parse_args()
    server = kserve.ModelServer(
        http_port=options.port, enable_grpc=False, workers=1, enable_latency_logging=False
    )
    server.register_model(PlainModel(options.name, options.model.read_bytes()))
    rest = RESTServer(
        FASTAPI_APP_IMPORT_STRING,
        server.dataplane,
        server.model_repository_extension,
        options.port,
        workers=1,
    )
    rest.config.host = "127.0.0.1"
    asyncio.run(rest.start())


if __name__ == "__main__":
    main()
