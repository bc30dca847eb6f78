"""What the trainer reports when it has registered a model version.

`python -m kubeloop.training` prints it as the last line of stdout and writes it to
`--result FILE` (the operator passes /dev/termination-log, so it must stay under 4 KiB),
as one compact camelCase JSON object. The operator and the local runtime parse it with
`TrainingResult.parse` to fill in the TrainingJob's status. A failed trainer writes a
`TrainingFailure` there instead. No side effects here.
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


class TrainingFailure(ApiModel):
    """What the trainer reports when it fails, in the same place as a result.

    Written to `--result` (on Kubernetes the pod's termination message), so the reason a
    training failed reaches the TrainingJob's status, not only "exited with code 1".
    """

    training_job: str
    """Name of the TrainingJob (or the spec file, when it could not be read)."""
    error: str
    """Kind of failure: the error's class, e.g. DatasetError, InvalidSpec."""
    message: str
    """What went wrong and what to do, in one paragraph."""
    exit_code: int
    """The trainer's exit code: 1 failed, 2 invalid spec, 3 MLflow or S3 unreachable."""
    log_tail: list[str] = Field(default_factory=list)
    """The trainer's last log lines."""

    def to_line(self, limit: int = MAX_BYTES) -> str:
        """One JSON line of at most `limit` bytes: the log tail is cut first, then the message."""
        failure = self.model_copy(deep=True)
        while True:
            line = json.dumps(failure.to_wire(), separators=(",", ":"))
            if len(line.encode()) <= limit:
                return line
            if failure.log_tail:
                failure.log_tail = failure.log_tail[1:]
            else:
                failure.message = failure.message[: max(0, len(failure.message) - 200)]

    def describe(self) -> str:
        """The failure for a person: kind, message and the last log lines."""
        text = f"{self.error}: {self.message}"
        if self.log_tail:
            text += "\nlast log lines:\n" + "\n".join(self.log_tail)
        return text

    @classmethod
    def parse(cls, text: str) -> TrainingFailure | None:
        """The failure in `text` (a termination message or result file), or None."""
        for line in reversed(text.strip().splitlines()):
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                return cls.model_validate(json.loads(line))
            except (json.JSONDecodeError, ValidationError):
                continue
        return None
