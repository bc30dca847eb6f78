"""The predictor: onnxruntime behind kserve, the feedback API and the review queue.

`python -m kubeloop.serving` runs it (serving.config has the command line). Layers, one
direction: server (process, loops) -> routes, kserve_model (HTTP, thin) -> predictor,
feedback, review, holder (logic, no HTTP) -> batching, inputs, onnx_model, prediction_log,
live_accuracy (parts).
"""
