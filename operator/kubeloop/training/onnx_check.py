"""The exported ONNX model must compute what the trained model computes.

onnxruntime runs the export on a validation batch; its outputs are compared with the
plugin's own (`Plugin.predict`). Names and shapes must follow the contract in
kubeloop.plugins, and no output may differ by more than `TOLERANCE`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from kubeloop import plugins

TOLERANCE = 1e-4


class OnnxMismatch(RuntimeError):
    """The export breaks the interface or computes something else than the trained model."""


def max_abs_diff(
    onnx_model: bytes,
    images: NDArray[np.float32],
    input_shape: tuple[int, ...],
    reference: Mapping[str, Any],
) -> float:
    """The largest difference between onnxruntime's and the plugin's outputs on `images`."""
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != [plugins.INPUT] or sorted(outputs) != sorted(plugins.OUTPUTS):
        raise OnnxMismatch(
            f"the ONNX model has inputs {inputs} and outputs {outputs}; expected input "
            f"{plugins.INPUT!r} and outputs {list(plugins.OUTPUTS)}"
        )
    batch = np.asarray(images, dtype=np.float32).reshape(len(images), *input_shape)
    produced = dict(zip(outputs, session.run(outputs, {plugins.INPUT: batch}), strict=True))
    worst = 0.0
    for name in plugins.OUTPUTS:
        expected = np.asarray(reference[name], dtype=np.float32)
        if produced[name].shape != expected.shape:
            raise OnnxMismatch(
                f"ONNX output {name!r} has shape {list(produced[name].shape)}, the trained "
                f"model's {list(expected.shape)}"
            )
        worst = max(worst, float(np.max(np.abs(produced[name] - expected), initial=0.0)))
    if not worst <= TOLERANCE:  # also catches NaN
        raise OnnxMismatch(
            f"onnxruntime's outputs differ from the trained model's by up to {worst:.3g} "
            f"(tolerance {TOLERANCE:g}) on {len(images)} validation images; the export is wrong"
        )
    return worst
