"""Logging one training to its MLflow run: params, metrics, the ONNX model, files.

The training process owns its run, so it logs through mlflow's fluent API; reading and
registering model versions goes through kubeloop.registry. MLflow's errors are mapped by
kubeloop.registry.call_mlflow, as the registry's are: a failure to reach the server becomes
RegistryUnavailable naming it, credentials redacted (the HTTP client already retried with
backoff: kubeloop.registry.Registry sets its bounds).
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from kubeloop import plugins
from kubeloop.registry import call_mlflow

T = TypeVar("T")
MODEL_NAME = "model"
_BATCH = 1000  # metrics per request, MLflow's limit


@dataclass(frozen=True)
class LoggedModel:
    """Where the ONNX model went: what a model version is registered from."""

    model_uri: str
    model_id: str | None


class Run:
    """One MLflow run; `start()` opens it, and it ends FINISHED or FAILED with the block."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self.run_id = ""

    @contextmanager
    def start(self, experiment: str, run_name: str, tags: Mapping[str, str]) -> Iterator[Run]:
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        self._guard(lambda: mlflow.set_experiment(experiment), f"opening experiment {experiment}")
        active = self._guard(
            lambda: mlflow.start_run(run_name=run_name, tags=dict(tags)), "starting a run"
        )
        self.run_id = active.info.run_id
        try:
            yield self
        except BaseException:
            self._end("FAILED")
            raise
        self._guard(lambda: mlflow.end_run("FINISHED"), "finishing the run")

    def log_params(self, params: Mapping[str, Any]) -> None:
        import mlflow

        values = {key: str(value)[:6000] for key, value in params.items()}
        self._guard(lambda: mlflow.log_params(values), "logging parameters")

    def log_datasets(self, datasets: Sequence[tuple[str, str]]) -> None:
        """The run's data lineage (splits.Assembled.lineage): each (name, source URI) as an
        MLflow dataset input (context "training", which holds its evaluation split too)."""
        import mlflow
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.data.dataset import Dataset
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        found: list[Dataset | None] = [
            MetaDataset(  # type: ignore[abstract]  # mlflow declares profile abstract; it runs
                resolve_dataset_source(uri)
                if uri.startswith("s3://")
                else CodeDatasetSource({"uri": uri}),
                name=name,
            )
            for name, uri in datasets
        ]
        self._guard(
            lambda: mlflow.log_inputs(
                found,
                contexts=["training"] * len(found),
                tags_list=[{"kubeloop.uri": uri} for _, uri in datasets],
            ),
            "logging the datasets",
        )

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import mlflow

        values = {key: float(value) for key, value in metrics.items()}
        self._guard(lambda: mlflow.log_metrics(values, step=step), "logging metrics")

    def log_epochs(self, epochs: Sequence[Mapping[str, float]]) -> None:
        """Per-epoch metrics with step = epoch (from 1), in a few batched requests.

        Logged after training rather than live, so the network never slows an epoch down;
        the trainer's log shows progress while it runs.
        """
        import mlflow
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), now, step)
            for step, values in enumerate(epochs, start=1)
            for key, value in values.items()
        ]
        client = mlflow.MlflowClient(self.tracking_uri)
        for start in range(0, len(metrics), _BATCH):
            chunk = metrics[start : start + _BATCH]
            self._guard(
                functools.partial(client.log_batch, self.run_id, metrics=chunk),
                "logging per-epoch metrics",
            )

    def log_onnx(
        self, onnx_model: bytes, input_shape: tuple[int, ...], classes: int, embedding: int
    ) -> LoggedModel:
        """The ONNX model as one file, with a signature naming its tensors and shapes."""
        import mlflow.onnx
        import onnx
        from mlflow.models import ModelSignature
        from mlflow.types.schema import Schema, TensorSpec

        float32 = np.dtype(np.float32)
        signature = ModelSignature(
            inputs=Schema([TensorSpec(float32, (-1, *input_shape), plugins.INPUT)]),
            outputs=Schema(
                [
                    TensorSpec(float32, (-1, classes), plugins.PROBABILITIES),
                    TensorSpec(float32, (-1, embedding), plugins.EMBEDDING),
                ]
            ),
        )
        proto = onnx.load_from_string(onnx_model)
        # Named, the requirements are not inferred: inferring runs a Python subprocess that
        # loads the model (2-3 s of every training) to find what the flavour names anyway.
        requirements = mlflow.onnx.get_default_pip_requirements()
        info = self._guard(
            lambda: mlflow.onnx.log_model(
                proto,
                name=MODEL_NAME,
                signature=signature,
                save_as_external_data=False,
                pip_requirements=requirements,
            ),
            "logging the ONNX model",
        )
        return LoggedModel(info.model_uri, getattr(info, "model_id", None))

    def log_file(self, data: bytes, path: str) -> None:
        """`data` as the run artifact `path`, e.g. checkpoint/model.pt."""
        import mlflow

        directory, _, name = path.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / name
            local.write_bytes(data)
            self._guard(
                lambda: mlflow.log_artifact(str(local), artifact_path=directory or None),
                f"uploading {path}",
            )

    def _end(self, status: str) -> None:
        import mlflow
        from mlflow.exceptions import MlflowException

        # When the server is what failed, the run stays RUNNING there; nothing to undo.
        with contextlib.suppress(MlflowException, OSError):
            mlflow.end_run(status)

    def _guard(self, func: Callable[[], T], what: str) -> T:
        return call_mlflow(func, what, self.tracking_uri)
