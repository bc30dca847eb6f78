"""The local runtime: the operator's reconcile decisions carried out on one machine.

TrainingJobs run the trainer entrypoint as subprocesses, ServedModels run the predictor
entrypoint as local processes on 127.0.0.1, FeedbackDatasets poll the local S3 server: the
same kubeloop.reconcile functions the kopf operator calls, with processes instead of pods.
Objects and their status live in `<state>/objects.json`, so a later `up` continues.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from kubeloop.api import conditions, validation
from kubeloop.api.feedbackdataset import FeedbackDataset, FeedbackDatasetStatus, Kpi
from kubeloop.api.servedmodel import ServedModel, ServedModelStatus
from kubeloop.api.trainingjob import TrainingJob, TrainingJobStatus
from kubeloop.feedback_store import DatasetStore
from kubeloop.local import services
from kubeloop.reconcile import builders, feedbackdataset, servedmodel, trainingjob
from kubeloop.reconcile.common import Event, format_time, parse, read_status, spec_body
from kubeloop.registry import Registry, RegistryUnavailable
from kubeloop.storage import ObjectStore, StorageUnavailable

ACCESS_KEY = SECRET_KEY = "kubeloop"
KINDS = ("TrainingJob", "FeedbackDataset", "ServedModel")
Key = tuple[str, str]


class InvalidManifest(ValueError):
    """A manifest the API server would refuse; the message names every problem."""


class LocalLoop:
    """Reconciles TrainingJobs, FeedbackDatasets and ServedModels with local processes."""

    def __init__(
        self,
        state_dir: Path,
        s3_url: str,
        mlflow_url: str,
        say: Callable[[str], None] = print,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.state_dir = state_dir
        self.say = say
        self.now = now
        self.store = ObjectStore(s3_url, ACCESS_KEY, SECRET_KEY, retries=2)
        self.registry = Registry(mlflow_url)
        self.env = {
            "KUBELOOP_MLFLOW_TRACKING_URI": mlflow_url,
            "KUBELOOP_S3_ENDPOINT": s3_url,
            "KUBELOOP_S3_ACCESS_KEY": ACCESS_KEY,
            "KUBELOOP_S3_SECRET_KEY": SECRET_KEY,
        }
        self.trainers: dict[str, tuple[services.Service, str]] = {}
        self.predictors: dict[str, tuple[services.Service, list[str]]] = {}
        self._objects_file = state_dir / "objects.json"
        self.objects: dict[Key, dict[str, Any]] = {}
        if self._objects_file.exists():
            for body in json.loads(self._objects_file.read_text()):
                self.objects[(body["kind"], body["metadata"]["name"])] = body

    # --- objects ----------------------------------------------------------------------------

    def apply(self, manifest: dict[str, Any]) -> str:
        """Create or update an object, as `kubectl apply` does; InvalidManifest when refused."""
        errors = validation.schema_errors(manifest)
        name = manifest.get("metadata", {}).get("name")
        if errors:
            raise InvalidManifest(f"{manifest.get('kind')}/{name}: " + "; ".join(errors))
        key = (manifest["kind"], name)
        old = self.objects.get(key)
        body = json.loads(json.dumps(spec_body(manifest)))
        body["metadata"].setdefault("namespace", "default")
        generation = 1
        if old is not None:
            generation = old["metadata"].get("generation", 1)
            if old.get("spec") != body.get("spec"):
                generation += 1
            body["status"] = old.get("status", {})
        body["metadata"]["generation"] = generation
        if key[0] == "FeedbackDataset":
            self.store.ensure_bucket(body["spec"]["storage"]["bucket"])
        self.objects[key] = body
        self._save()
        return "configured" if old is not None else "created"

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, name))

    def status(self, kind: str, name: str) -> dict[str, Any]:
        body = self.get(kind, name)
        return dict(body.get("status") or {}) if body is not None else {}

    def _save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._objects_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(list(self.objects.values()), indent=1))
        tmp.replace(self._objects_file)

    # --- the loop ---------------------------------------------------------------------------

    def step(self) -> None:
        """One reconcile of every object, in the order the loop flows."""
        for kind in ("TrainingJob", "ServedModel", "FeedbackDataset"):
            for key in [k for k in self.objects if k[0] == kind]:
                body = self.objects[key]
                reconcile = {
                    "TrainingJob": self._trainingjob,
                    "ServedModel": self._servedmodel,
                    "FeedbackDataset": self._feedbackdataset,
                }[kind]
                reconcile(body)
        self._save()

    def close(self) -> None:
        """Stop every process this loop started; objects and data stay for the next run."""
        for service, _ in self.trainers.values():
            service.stop()
        for service, _ in self.predictors.values():
            service.stop()
        self._save()

    def _emit(self, body: dict[str, Any], events: tuple[Event, ...] | list[Event]) -> None:
        for event in events:
            mark = "!" if event.type == "Warning" else "-"
            self.say(f"{mark} {body['kind']}/{body['metadata']['name']}: {event.message}")

    # --- TrainingJob: a trainer subprocess ----------------------------------------------------

    def _trainingjob(self, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        old = read_status(TrainingJobStatus, body)
        tj, problems = parse(TrainingJob, body, lambda tj: trainingjob.spec_problems(tj.spec))
        now = format_time(self.now())
        plan = trainingjob.decide(
            old, body["metadata"]["generation"], self._trainer_state(name), name, problems, now
        )
        if plan.start_trainer and tj is not None:
            self._start_trainer(tj)
        body["status"] = plan.status.to_wire()
        self._emit(body, plan.events)

    def _trainer_dir(self) -> Path:
        path = self.state_dir / "trainingjobs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _start_trainer(self, tj: TrainingJob) -> None:
        name = tj.metadata.name
        spec_file = self._trainer_dir() / f"{name}.yaml"
        result_file = self._trainer_dir() / f"{name}.result.json"
        spec_file.write_text(yaml.safe_dump(builders.trainingjob_manifest(tj), sort_keys=False))
        result_file.unlink(missing_ok=True)
        command = [sys.executable, "-m", "kubeloop.training"]
        command += trainingjob.trainer_args(str(spec_file), str(result_file))
        log = self._trainer_dir() / f"{name}.log"
        service = services.spawn(f"trainer {name}", command, "", log, self.state_dir, self.env)
        self.trainers[name] = (service, format_time(self.now()))
        self.say(f"- TrainingJob/{name}: training in a subprocess (log: {log})")

    def _trainer_state(self, name: str) -> trainingjob.TrainerState | None:
        if name not in self.trainers:
            return None
        service, started = self.trainers[name]
        code = service.process.poll()
        if code is None:
            return trainingjob.TrainerState("Running", start_time=started)
        finished = format_time(self.now())
        result_file = self._trainer_dir() / f"{name}.result.json"
        if code == 0 and result_file.exists():
            return trainingjob.TrainerState(
                "Succeeded", started, finished, result=result_file.read_text()
            )
        return trainingjob.TrainerState(
            "Failed",
            started,
            finished,
            reason="TrainerFailed",
            message=f"the trainer exited with code {code}; log tail ({service.log_path}):\n"
            + services.log_tail(service.log_path, 8),
        )

    # --- ServedModel: a predictor process ------------------------------------------------------

    def _servedmodel(self, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        generation = body["metadata"]["generation"]
        old = read_status(ServedModelStatus, body)
        now = self.now()
        sm, problems = parse(ServedModel, body, lambda sm: servedmodel.spec_problems(sm.spec))
        if sm is None or problems:
            message = "; ".join(problems)
            status = servedmodel.not_servable(old, generation, "InvalidSpec", message, now)
            body["status"] = status.to_wire()
            return
        try:
            plan = servedmodel.roll_out(sm.spec, old, generation, self.registry, now)
        except RegistryUnavailable as error:
            status = servedmodel.registry_unavailable(old, generation, str(error), now)
            body["status"] = status.to_wire()
            return
        state = None
        if plan.deploy is not None:
            # Locally the stable predictor takes all traffic; a canary is only reported.
            state = self._ensure_predictor(sm, plan.deploy.stable_uri)
            if plan.set_alias is not None and state.ready:
                self._reload(name, state)
        body["status"] = servedmodel.decide_ready(plan, state, generation, now).to_wire()
        self._emit(body, plan.events)

    def _ensure_predictor(self, sm: ServedModel, uri: str) -> servedmodel.ServingState:
        name = sm.metadata.name
        feedback = None
        if sm.spec.feedback_dataset is not None:
            dataset = self.get("FeedbackDataset", sm.spec.feedback_dataset)
            if dataset is not None and not validation.model_errors(dataset):
                spec = FeedbackDataset.model_validate(spec_body(dataset)).spec
                feedback = (sm.spec.feedback_dataset, spec)
        running = self.predictors.get(name)
        port = int(running[0].url.rsplit(":", 1)[1]) if running else services.free_port()
        args = servedmodel.predictor_args(
            name, uri, sm.spec.batching, feedback, host=services.HOST, port=port
        )
        if running is not None and (running[1] != args or running[0].process.poll() is not None):
            if running[0].process.poll() is not None:
                self.say(
                    f"! ServedModel/{name}: the predictor exited with code "
                    f"{running[0].process.returncode}; restarting it. Log tail:\n"
                    + services.log_tail(running[0].log_path, 8)
                )
            running[0].stop()
            running = None
        if running is None:
            command = [sys.executable, "-m", "kubeloop.serving", *args]
            log = self.state_dir / "predictors" / f"{name}.log"
            url = f"http://{services.HOST}:{port}"
            service = services.spawn(
                f"predictor {name}", command, url, log, self.state_dir, self.env
            )
            self.predictors[name] = (service, args)
            self.say(f"- ServedModel/{name}: predictor starting at {url} (log: {log})")
            running = (service, args)
        url = running[0].url
        ready = services.is_healthy(f"{url}/v2/health/ready")
        if ready:
            return servedmodel.ServingState(True, url)
        return servedmodel.ServingState(False, url, "PredictorStarting", "loading the model")

    def _reload(self, name: str, state: servedmodel.ServingState) -> None:
        """Ask the predictor to follow the alias now rather than at its next poll."""
        try:
            services.post(f"{state.url}/v1/models/{name}/reload", {})
        except OSError as error:  # it follows the alias on its own timer anyway
            self.say(f"! ServedModel/{name}: reload request failed ({error}); it will poll")

    # --- FeedbackDataset: S3 polls and retrain triggers -----------------------------------------

    def _feedbackdataset(self, body: dict[str, Any]) -> None:
        old = read_status(FeedbackDatasetStatus, body)
        problems = validation.model_errors(body)
        if problems:
            message = "; ".join(problems)
            old.conditions = conditions.set_condition(
                old.conditions,
                "Ready",
                "False",
                "InvalidSpec",
                message,
                body["metadata"]["generation"],
                format_time(self.now()),
            )
            body["status"] = old.to_wire()
            self.say(f"! FeedbackDataset/{body['metadata']['name']}: {message}")
            return
        dataset = FeedbackDataset.model_validate({**spec_body(body), "status": old.to_wire()})
        try:
            outcome = feedbackdataset.reconcile(dataset, _Ports(self, dataset), self.now())
        except StorageUnavailable as error:
            self.say(f"! FeedbackDataset/{dataset.metadata.name}: {error}")
            return
        body["status"] = outcome.status.to_wire()
        self._emit(body, outcome.events)


class _Ports(DatasetStore):
    """S3 (through DatasetStore) and the loop's own objects, as reconcile.feedbackdataset asks."""

    def __init__(self, loop: LocalLoop, dataset: FeedbackDataset) -> None:
        super().__init__(loop.store, dataset.spec)
        self._loop = loop

    def get_training_job(self, name: str) -> dict[str, Any] | None:
        return self._loop.get("TrainingJob", name)

    def create_training_job(self, manifest: dict[str, Any]) -> bool:
        if self._loop.get("TrainingJob", manifest["metadata"]["name"]) is not None:
            return False
        self._loop.apply(manifest)
        return True

    def live_kpi(self, kpi: Kpi) -> feedbackdataset.LiveKpi | None:
        live = self.live_accuracy()
        if live is None or self._loop.get("ServedModel", kpi.served_model) is None:
            return None
        version = self._loop.status("ServedModel", kpi.served_model).get("servingVersion")
        return feedbackdataset.live_kpi(live, version)
