"""What the trainer reports when it has registered a model version.

`python -m kubeloop.training` prints it as the last line of stdout and writes it to
`--result FILE` (the operator passes /dev/termination-log, so it must stay under 4 KiB),
as one compact camelCase JSON object. The operator and the local runtime parse it with
`TrainingResult.parse` to fill in the TrainingJob's status. No side effects here.
"""

from __future__ import annotations

import json

from pydantic import Field, ValidationError

from kubeloop.api.common import ApiModel
from kubeloop.api.trainingjob import Metrics

MAX_BYTES = 4096
"""Kubernetes keeps at most 4096 bytes of a termination message."""


class TrainingResult(ApiModel):
    """One finished training: the version it registered and how that version scored."""

    training_job: str = Field(min_length=1)
    """Name of the TrainingJob."""
    registered_model: str = Field(min_length=1)
    """Registered model that received the version."""
    model_version: str = Field(min_length=1)
    """The new version's number, as a string."""
    mlflow_run_id: str = Field(min_length=1)
    """MLflow run that logged the training and holds the metrics."""
    metrics: Metrics
    """The evaluation metric overall and per slice."""
    onnx_max_abs_diff: float = Field(ge=0)
    """Largest difference between onnxruntime's and the framework's outputs."""
    train_seconds: float = Field(ge=0)
    """Seconds spent in the plugin's train step."""
    device: str
    """Where training ran: cpu or cuda."""

    def to_line(self) -> str:
        """The compact JSON line the trainer prints; fits a termination message."""
        return json.dumps(self.to_wire(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def parse(cls, text: str) -> TrainingResult:
        """The result in `text`: a termination message, or the trainer's whole stdout.

        The last line that holds a JSON object is taken, so log lines before it do no harm.
        """
        for line in reversed(text.strip().splitlines()):
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                return cls.model_validate(json.loads(line))
            except (json.JSONDecodeError, ValidationError):
                continue
        raise ValueError("no training result (a JSON object line) in the trainer's output")
