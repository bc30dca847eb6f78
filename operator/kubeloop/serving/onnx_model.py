"""One exported model in onnxruntime, checked against kubeloop's model contract.

The contract (what a training plugin's export produces): input "input", float32, shape
[-1, H, W] or [-1, 1, H, W]; outputs "probabilities" [-1, C] (softmax applied) and
"embedding" [-1, D]. Class names are the model version's `kubeloop.classes` tag.
"""

from __future__ import annotations

import json
import math

import numpy as np
import onnxruntime
from numpy.typing import NDArray

INPUT = "input"
PROBABILITIES = "probabilities"
EMBEDDING = "embedding"
CLASSES_TAG = "kubeloop.classes"

Array = NDArray[np.float32]


class ModelFormatError(ValueError):
    """The model does not follow kubeloop's ONNX contract; the message says how."""


class DeviceUnavailable(RuntimeError):
    """onnxruntime here cannot run on the device asked for; the message says what to do."""


PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider"]}
"""onnxruntime's execution providers for each predictor --device."""


def check_device(device: str) -> None:
    """DeviceUnavailable unless this onnxruntime has the device's provider."""
    available = onnxruntime.get_available_providers()
    missing = [p for p in PROVIDERS[device] if p not in available]
    if missing:
        raise DeviceUnavailable(
            f"--device {device} needs onnxruntime's {missing[0]}, which this onnxruntime "
            f"lacks (it has {', '.join(available)}): install onnxruntime-gpu in the predictor "
            "image and give the pod a GPU, or serve on --device cpu"
        )


class OnnxModel:
    """An inference session plus the shapes the contract promises. Thread-safe to run."""

    def __init__(
        self, data: bytes, fallback_shape: tuple[int, ...] | None = None, device: str = "cpu"
    ) -> None:
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = onnxruntime.InferenceSession(data, options, providers=PROVIDERS[device])
        except Exception as error:  # onnxruntime raises its own pybind exception types
            raise ModelFormatError(f"onnxruntime cannot load the model: {error}") from error
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name: o for o in self._session.get_outputs()}
        if INPUT not in inputs:
            raise ModelFormatError(f"the model has no input {INPUT!r} (inputs: {list(inputs)})")
        missing = [name for name in (PROBABILITIES, EMBEDDING) if name not in outputs]
        if missing:
            raise ModelFormatError(f"the model lacks outputs {missing} (outputs: {list(outputs)})")
        if inputs[INPUT].type != "tensor(float)":
            raise ModelFormatError(f"input {INPUT!r} must be float32, not {inputs[INPUT].type}")
        dims = list(inputs[INPUT].shape)[1:]
        if all(isinstance(d, int) and d > 0 for d in dims):
            self.input_shape: tuple[int, ...] = tuple(int(d) for d in dims)
        elif fallback_shape is not None and len(fallback_shape) in (len(dims), len(dims) - 1):
            # Symbolic sizes: the dataset's shape, with the channel axis when the model has one.
            self.input_shape = (
                (1, *fallback_shape) if len(dims) > len(fallback_shape) else fallback_shape
            )
        else:
            raise ModelFormatError(
                f"input {INPUT!r} has shape {inputs[INPUT].shape}: give --input-shape for its "
                "symbolic sizes"
            )
        if len(self.input_shape) not in (1, 2, 3):
            raise ModelFormatError(f"unsupported input shape [-1, {self.input_shape}]")
        classes = outputs[PROBABILITIES].shape[-1]
        self.n_classes: int | None = classes if isinstance(classes, int) else None

    @property
    def instance_size(self) -> int:
        """Values in one input."""
        return math.prod(self.input_shape)

    def run(self, batch: Array) -> tuple[Array, Array]:
        """Probabilities (N, C) and embeddings (N, D) of a batch of N inputs."""
        probabilities, embeddings = self._session.run(
            [PROBABILITIES, EMBEDDING], {INPUT: self._input(batch)}
        )
        return (
            np.asarray(probabilities, dtype=np.float32),
            np.asarray(embeddings, dtype=np.float32).reshape(len(batch), -1),
        )

    def probabilities(self, batch: Array) -> Array:
        """Probabilities (N, C) of a batch of N inputs, without fetching the embeddings (for
        what scores uncertainty only, such as least-confidence selection)."""
        (probabilities,) = self._session.run([PROBABILITIES], {INPUT: self._input(batch)})
        return np.asarray(probabilities, dtype=np.float32)

    def _input(self, batch: Array) -> Array:
        """A batch as the session takes it: contiguous float32 of the input shape."""
        x: Array = np.ascontiguousarray(batch, dtype=np.float32)
        return x.reshape(len(batch), *self.input_shape)

    def warm_up(self, rows: int) -> int:
        """Run a zero batch of `rows` and of 1, so the first request pays no allocation; C."""
        self.run(np.zeros((1, *self.input_shape), dtype=np.float32))
        probabilities, _ = self.run(np.zeros((rows, *self.input_shape), dtype=np.float32))
        if self.n_classes is None:
            self.n_classes = int(probabilities.shape[1])
        return self.n_classes


def class_names(
    tags: dict[str, str], n_classes: int, fallback: tuple[str, ...] | None
) -> tuple[str, ...]:
    """The model's ordered class names: its tag, else the dataset's, else "0".."C-1"."""
    raw = tags.get(CLASSES_TAG)
    if raw is not None:
        try:
            names = json.loads(raw)
        except json.JSONDecodeError as error:
            raise ModelFormatError(f"tag {CLASSES_TAG} is not JSON: {error}") from error
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ModelFormatError(f"tag {CLASSES_TAG} must be a JSON list of strings")
        if len(names) != n_classes:
            raise ModelFormatError(
                f"tag {CLASSES_TAG} names {len(names)} classes but the model outputs {n_classes}"
            )
        return tuple(names)
    if fallback is not None and len(fallback) == n_classes:
        return fallback
    return tuple(str(i) for i in range(n_classes))
