"""The predictor as a kserve.Model: KServe V1 and V2 (open inference) requests and answers.

V1  POST /v1/models/{name}:predict
    {"instances": [[[0.0, ...], ...], {"b64": "<PNG>"}, ...]}
    -> {"predictions": [{"class": "7", "class_index": 7, "probabilities": [...],
        "entropy": 0.12, "margin": 0.91, "prediction_id": "01J..."}, ...],
        "model_name": "digits", "model_version": "3"}
V2  POST /v2/models/{name}/infer
    {"inputs": [{"name": "input", "shape": [N, 8, 8], "datatype": "FP32", "data": [...]}]}
    (or datatype BYTES: one base64 PNG per input; shape sizes must be positive)
    -> outputs class (BYTES [N]), class_index (INT64 [N]), probabilities (FP32 [N, C]),
       entropy (FP32 [N]), margin (FP32 [N]), prediction_id (BYTES [N]);
       model_version is the registry version that answered.

A thin translation layer: inputs.py validates what a request holds, Predictor does the work.
A bad input is kserve's InvalidInput (400, {"error": message}); a request over the row limit
a Rejected (413), which the HTTP layer (serving.asgi) answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import kserve
import numpy as np
import orjson
from kserve.errors import InvalidInput, ModelNotReady
from kserve.protocol.infer_type import (
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    deserialize_bytes_tensor,
)

from kubeloop import metrics
from kubeloop.serving import inputs
from kubeloop.serving.errors import Rejected
from kubeloop.serving.predictor import Answer, NotLoaded, Predictor

NOT_AN_OBJECT = "expected a JSON object with instances (V1) or inputs (V2)"
"""What a body that is JSON but not an object is told, by either route."""


class KServeModel(kserve.Model):  # type: ignore[misc]  # kserve ships no type information
    """Registered with the ModelServer under the ServedModel's name."""

    def __init__(self, name: str, predictor: Predictor, max_rows: int) -> None:
        self.predictor = predictor
        self.max_rows = max_rows
        super().__init__(name)

    # kserve reads and writes `ready`; the truth is whether a version is loaded.
    @property
    def ready(self) -> bool:
        return self.predictor.holder.current is not None

    @ready.setter
    def ready(self, value: bool) -> None:
        pass

    async def healthy(self) -> bool:
        return bool(self.ready)

    def load(self) -> bool:
        return bool(self.ready)  # loading is ModelFollower's; never claim readiness here

    def get_input_types(self) -> list[dict[str, Any]]:
        model = self.predictor.holder.current
        shape = list(model.onnx.input_shape) if model else []
        return [{"name": "input", "datatype": "FP32", "shape": [-1, *shape]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        model = self.predictor.holder.current
        classes = len(model.classes) if model else -1
        return [
            {"name": "class", "datatype": "BYTES", "shape": [-1]},
            {"name": "class_index", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]},
            {"name": "entropy", "datatype": "FP32", "shape": [-1]},
            {"name": "margin", "datatype": "FP32", "shape": [-1]},
            {"name": "prediction_id", "datatype": "BYTES", "shape": [-1]},
        ]

    async def __call__(self, body: Any, headers: Any = None, verb: Any = None) -> Any:
        protocol = "v2" if isinstance(body, InferRequest) else "v1"
        start = time.perf_counter()
        try:
            if verb is None:
                return await super().__call__(body, headers=headers)
            return await super().__call__(body, headers=headers, verb=verb)
        finally:
            metrics.PREDICTOR_REQUEST_SECONDS.labels(protocol).observe(time.perf_counter() - start)

    async def answer_v1(self, body: bytes, alone: bool) -> bytes:
        """The V1 answer to a JSON body, as JSON: what `predict` answers through kserve's
        route (serving.fast_path), timed alike; raises what that route would answer. `alone`:
        no other request is in flight."""
        start = time.perf_counter()
        payload = orjson.loads(body)  # its depth was checked by serving.asgi
        if not isinstance(payload, dict):
            raise InvalidInput(NOT_AN_OBJECT)
        answer = orjson.dumps(await self._predict_v1(payload, alone))
        metrics.PREDICTOR_REQUEST_SECONDS.labels("v1").observe(time.perf_counter() - start)
        return answer

    async def predict(
        self,
        payload: dict[str, Any] | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        if isinstance(payload, InferRequest):
            return await self._predict_v2(payload)
        if isinstance(payload, bytes | bytearray):  # JSON sent without a JSON content type
            try:
                payload = orjson.loads(payload)  # its depth was checked by serving.asgi
            except orjson.JSONDecodeError as error:
                raise InvalidInput(f"the body is not JSON: {error}") from None
        if isinstance(payload, dict):
            return await self._predict_v1(payload)
        raise InvalidInput(NOT_AN_OBJECT)

    async def _predict_v1(self, payload: dict[str, Any], alone: bool = False) -> dict[str, Any]:
        if "instances" not in payload:
            raise InvalidInput('V1 requests need "instances": a list of inputs')
        answer = await self._answer(
            lambda shape: inputs.instances(
                payload["instances"], shape, self.max_rows, self.predictor.preprocessing
            ),
            alone,
        )
        probabilities = answer.probabilities.tolist()
        entropy, margin = answer.entropy.tolist(), answer.margin.tolist()
        return {
            "predictions": [
                {
                    "class": answer.labels[i],
                    "class_index": int(answer.class_index[i]),
                    "probabilities": probabilities[i],
                    "entropy": entropy[i],
                    "margin": margin[i],
                    "prediction_id": answer.ids[i],
                }
                for i in range(len(answer.ids))
            ],
            "model_name": self.name,
            "model_version": answer.version,
        }

    async def _predict_v2(self, request: InferRequest) -> InferResponse:
        tensors = [_tensor(tensor) for tensor in request.inputs]
        answer = await self._answer(
            lambda shape: inputs.tensor_rows(
                tensors, shape, self.max_rows, self.predictor.preprocessing
            )
        )
        n = len(answer.ids)
        outputs = [
            InferOutput("class", [n], "BYTES", np.array(answer.labels, dtype=object)),
            InferOutput("class_index", [n], "INT64", answer.class_index.astype(np.int64)),
            InferOutput(
                "probabilities", list(answer.probabilities.shape), "FP32", answer.probabilities
            ),
            InferOutput("entropy", [n], "FP32", answer.entropy.astype(np.float32)),
            InferOutput("margin", [n], "FP32", answer.margin.astype(np.float32)),
            InferOutput("prediction_id", [n], "BYTES", np.array(answer.ids, dtype=object)),
        ]
        return InferResponse(
            response_id=request.id or answer.ids[0],
            model_name=self.name,
            model_version=answer.version,
            infer_outputs=outputs,
            use_binary_outputs=request.use_binary_outputs,
            requested_outputs=request.request_outputs,
        )

    async def _answer(
        self, decode: Callable[[tuple[int, ...]], inputs.Rows], alone: bool = False
    ) -> Answer:
        try:
            shape = self.predictor.input_shape
            try:
                rows = decode(shape)
            except inputs.InputError as error:
                if error.reason == inputs.TOO_MANY_ROWS:
                    raise Rejected(413, error.reason, str(error)) from None
                raise InvalidInput(str(error)) from None
            return await self.predictor.predict(rows, alone)
        except NotLoaded as error:
            raise ModelNotReady(self.name, str(error)) from None


def _tensor(tensor: InferInput) -> inputs.Tensor:
    data = tensor.data
    raw = tensor._raw_data  # the binary extension's bytes, when it was used
    if raw is not None:
        data = deserialize_bytes_tensor(raw) if tensor.datatype == "BYTES" else bytes(raw)
    return inputs.Tensor(tensor.name, tensor.shape, tensor.datatype, data)
