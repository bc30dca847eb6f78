"""The local runtime: the reconciles of kubeloop.reconcile run on one machine, no cluster.

TrainingJobs run the trainer entrypoint as processes, ServedModels the predictor entrypoint
on 127.0.0.1, FeedbackDatasets poll the local S3 server: the same reconcile functions the kopf
operator calls, with this package's ports instead of the Kubernetes API. Objects live in
`<state>/objects.json`, processes in `<state>/processes.json`; a later `up` continues, and
adopts the processes a killed one left running.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from kubeloop.api.errors import Unavailable
from kubeloop.api.feedbackdataset import Storage
from kubeloop.api.times import utc_now
from kubeloop.feedback_store import DatasetStore
from kubeloop.local.objects import InvalidManifest, LocalObjects, status_of
from kubeloop.local.predictor import LocalPredictor
from kubeloop.local.processes import ProcessTable
from kubeloop.local.trainer import LocalTrainer
from kubeloop.reconcile import feedbackdataset, servedmodel, trainingjob
from kubeloop.reconcile.ports import Body, FeedbackStore, Ports
from kubeloop.registry import Registry
from kubeloop.storage import ObjectStore

__all__ = ["InvalidManifest", "LocalLoop"]

ACCESS_KEY = SECRET_KEY = "kubeloop"
ORDER = ("FeedbackDataset", "TrainingJob", "ServedModel")
"""The order one step reconciles the kinds in, the way the loop flows: a TrainingJob that
feedback created starts in the same step (once its base model's alias is set), and a
version it registered is judged in it."""
RECONCILES: dict[str, Callable[[Body, Ports, datetime], object]] = {
    "TrainingJob": trainingjob.reconcile,
    "FeedbackDataset": feedbackdataset.reconcile,
    "ServedModel": servedmodel.reconcile,
}


class LocalFeedbackStores:
    """Every FeedbackDataset's prefix on the local S3 server (its endpoint and Secret are the
    cluster's business)."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    def open(self, namespace: str, storage: Storage) -> FeedbackStore:
        return DatasetStore(self._store, storage)


class LocalLoop:
    """Reconciles TrainingJobs, FeedbackDatasets and ServedModels with local processes."""

    def __init__(
        self,
        state_dir: Path,
        s3_url: str,
        mlflow_url: str,
        say: Callable[[str], None] = print,
        now: Callable[[], datetime] = utc_now,
        processes: ProcessTable | None = None,
        predictor_port: int | None = None,
    ) -> None:
        self.state_dir = state_dir.resolve()  # children run elsewhere: every path is absolute
        self.say = say
        self.now = now
        self.store = ObjectStore(s3_url, ACCESS_KEY, SECRET_KEY, retries=2)
        self.registry = Registry(mlflow_url)
        self.processes = processes or ProcessTable(self.state_dir)
        env = {
            "KUBELOOP_MLFLOW_TRACKING_URI": mlflow_url,
            "KUBELOOP_S3_ENDPOINT": s3_url,
            "KUBELOOP_S3_ACCESS_KEY": ACCESS_KEY,
            "KUBELOOP_S3_SECRET_KEY": SECRET_KEY,
        }
        self.objects = LocalObjects(self.state_dir, say)
        self.trainer = LocalTrainer(self.state_dir, self.processes, env, say)
        self.predictor = LocalPredictor(self.state_dir, self.processes, env, say, predictor_port)
        self.ports = Ports(
            objects=self.objects,
            trainer=self.trainer,
            predictor=self.predictor,
            registry=self.registry,
            feedback=LocalFeedbackStores(self.store),
        )

    # --- objects ----------------------------------------------------------------------------

    def apply(self, manifest: Body) -> str:
        """Create or update an object, as `kubectl apply` does; InvalidManifest when refused."""
        if manifest.get("kind") == "FeedbackDataset":
            bucket = (manifest.get("spec") or {}).get("storage", {}).get("bucket")
            outcome = self.objects.apply(manifest)
            self.store.ensure_bucket(str(bucket))
            return outcome
        return self.objects.apply(manifest)

    def get(self, kind: str, name: str, namespace: str = "default") -> Body | None:
        return self.objects.get(kind, namespace, name)

    def status(self, kind: str, name: str, namespace: str = "default") -> dict[str, Any]:
        return status_of(self.get(kind, name, namespace))

    # --- the loop ---------------------------------------------------------------------------

    def step(self) -> None:
        """One reconcile of every object, in the order the loop flows.

        An unavailable dependency is already said in the object's status (and once as a
        warning); the next step retries it.
        """
        for kind in ORDER:
            for body in self.objects.of_kind(kind):
                try:
                    RECONCILES[kind](body, self.ports, self.now())
                except Unavailable:
                    continue

    def wait(self, seconds: float) -> None:
        """Wait until the next step: `seconds`, or less when a trainer ends meanwhile (its
        TrainingJob, and the version it registered, are then the next step's news)."""
        self.processes.wait(seconds, "trainer/")

    def close(self) -> None:
        """Stop the predictors and trainers this state directory runs; objects and data stay.

        A stopped trainer's TrainingJob retries it when the loop runs again (as a Job does
        after losing its pod); the trainer then finds a version an earlier attempt registered.
        """
        for name in self.trainer.stop_all():
            self.say(f"- TrainingJob/{name}: trainer stopped; the next `kubeloop up` resumes it")
        self.processes.stop_all("predictor/")
