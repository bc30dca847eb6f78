"""The predictor: onnxruntime behind kserve, the feedback API and the review queue."""
