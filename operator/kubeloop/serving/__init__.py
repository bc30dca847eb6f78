"""The predictor: onnxruntime behind kserve, the feedback API and the review queue.

`python -m kubeloop.serving` runs it (kubeloop.api.predictor has its configuration and
command line). Layers, one direction: server (process, loops) -> asgi (the HTTP layer:
body limits, error answers) -> routes, kserve_model (HTTP, thin) -> predictor, feedback,
review, holder (logic, no HTTP; refusals are errors.Rejected) -> batching, inputs,
onnx_model, prediction_pool, prediction_log, live_accuracy (parts).
"""
