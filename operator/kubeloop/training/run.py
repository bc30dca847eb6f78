"""One TrainingJob, start to finish: check, load, train, evaluate, export, log, register.

The order keeps failures cheap and nothing half-done: every check and the reachability of
MLflow come before any data is read or any epoch is trained, and the model version is
registered last, once its ONNX model, checkpoint, card and metrics are all logged.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from typing import Any

import numpy as np

from kubeloop import images, plugins, redaction
from kubeloop.api.training_result import TrainingResult
from kubeloop.api.trainingjob import Metrics, TrainingJob
from kubeloop.registry import ModelVersion, Registry, evaluation_of
from kubeloop.settings import Settings
from kubeloop.storage import ObjectNotFound, ObjectStore, S3Uri
from kubeloop.training import card, checks, datasets, onnx_check, splits, tracking

CHECKPOINT = "checkpoint/model.pt"
"""Run artifact a later fine-tune starts from."""
MODEL_CARD = "model_card.md"
"""Run artifact with the model card; also the version's description."""
_CHECK_BATCH = 64
_DESCRIPTION_LIMIT = 5000  # MLflow keeps at most this many characters of a description

# Model version tags.
TAG_JOB = "kubeloop.trainingJob"
TAG_NAMESPACE = "kubeloop.namespace"
TAG_JOB_UID = "kubeloop.trainingJobUid"
TAG_PLUGIN = "kubeloop.plugin"
TAG_PLUGIN_VERSION = "kubeloop.pluginVersion"
TAG_CLASSES = "kubeloop.classes"
TAG_INPUT_SHAPE = "kubeloop.inputShape"
TAG_SNAPSHOT = "kubeloop.snapshotGeneration"
TAG_PARENT = "kubeloop.parentVersion"
TAG_BASE_MODEL = "kubeloop.baseModel"
TAG_DEVICE = "kubeloop.device"
TAG_PREPROCESSING = images.TAG
"""JSON of the transform an image goes through before the model (kubeloop.images)."""
TAG_BACKBONE = "kubeloop.backbone"


def train_job(job: TrainingJob, settings: Settings, log: logging.Logger) -> TrainingResult | None:
    """Run `job` and register its model version; raises on the first thing that fails.

    Under torchrun every rank loads the data and trains its shard; only rank 0 logs to
    MLflow, evaluates, exports and registers. The others return None once trained.
    """
    ranks = plugins.Ranks.from_env()
    plugin, args = checks.check_job(job)
    info = plugin.info()
    spec = job.spec
    registry = Registry(settings.mlflow_tracking_uri)
    registry.check_reachable()
    earlier = _registered_earlier(job, registry)
    if earlier is not None:
        log.info(
            "%s was registered by an earlier attempt of this TrainingJob: reporting it "
            "instead of training and registering again",
            earlier.uri,
        )
        return _result_of(job, earlier, registry)
    parent: ModelVersion | None = None
    base_model = None
    if spec.base_model is not None:
        parent = registry.resolve(spec.base_model)
        checkpoint = registry.download_run_artifact(parent, CHECKPOINT)
        base_model = plugins.BaseModel(spec.base_model, parent.version, checkpoint)
        log.info("fine-tuning from %s (version %s)", spec.base_model, parent.version)
    assembled = _load(job, settings, log)
    epochs: list[dict[str, float]] = []

    def progress(report: plugins.Progress) -> None:
        epochs.append(dict(report.metrics))
        shown = " ".join(f"{k}={v:.4f}" for k, v in report.metrics.items())
        log.info("epoch %d/%d %s", report.epoch, report.epochs, shown)

    metric = spec.evaluation.metric
    context = plugins.TrainingContext(
        args=args,
        datasets=assembled.datasets,
        metric=metric,
        base_model=base_model,
        logger=log,
        progress=progress if ranks.leader else lambda _: None,  # rank 0 reports the epochs
        fetch=functools.partial(_fetch, registry, settings),
        ranks=ranks,
    )
    if not ranks.leader:
        log.info(
            "rank %d of %d: training its shard; rank 0 registers", ranks.rank, ranks.world_size
        )
        plugin.train(context)
        return None
    for name in assembled.unevaluated:
        log.warning("slice %r is not evaluated: no dataset provides held-out data for it", name)
    name = job.metadata.name
    run_tags = {TAG_JOB: name, TAG_NAMESPACE: job.metadata.namespace, TAG_PLUGIN: info.name}
    with tracking.Run(settings.mlflow_tracking_uri).start(
        spec.registered_model, name, run_tags
    ) as run:
        shown = redaction.redact(settings.mlflow_tracking_uri)
        log.info("MLflow run %s at %s", run.run_id, shown)
        run.log_params(_params(job, info, args.to_wire()))
        run.log_datasets([(part.name, part.source) for part in assembled.lineage])
        started = time.perf_counter()
        trained = plugin.train(context)
        train_seconds = time.perf_counter() - started
        _check_labels(assembled, trained.classes, base_model is not None)
        run.log_epochs(epochs)
        evaluation = plugin.evaluate(trained, assembled.evaluation, metric)
        slices = {k: v for k, v in evaluation.slices.items() if k in spec.evaluation.slices}
        onnx_model = plugin.export(trained)
        batch = _check_batch(assembled.datasets, trained.preprocessing)
        reference = plugin.predict(trained, batch)
        diff = onnx_check.max_abs_diff(onnx_model, batch, trained.input_shape, reference)
        log.info("ONNX export matches the trained model (max abs diff %.2e)", diff)
        run.log_metrics(
            {
                metric: evaluation.overall,
                **{f"{metric}.{k}": v for k, v in slices.items()},
                "onnx_max_abs_diff": diff,
                "train_seconds": train_seconds,
                "best_epoch": trained.best_epoch,
            }
        )
        embedding = int(np.asarray(reference[plugins.EMBEDDING]).shape[1])
        logged = run.log_onnx(onnx_model, trained.input_shape, len(trained.classes), embedding)
        run.log_file(plugin.checkpoint(trained), CHECKPOINT)
        text = card.render(
            card.Facts(
                training_job=f"{job.metadata.namespace}/{name}",
                registered_model=spec.registered_model,
                plugin=info,
                args=args.to_wire(),
                lineage=assembled.lineage,
                metric=metric,
                evaluation=plugins.Evaluation(evaluation.overall, slices),
                slice_sizes={k: len(v) for k, v in assembled.evaluation.items()},
                unevaluated=assembled.unevaluated,
                parent=parent.uri if parent else None,
                classes=trained.classes,
                input_shape=trained.input_shape,
                embedding_size=embedding,
                onnx_max_abs_diff=diff,
                train_seconds=train_seconds,
                device=trained.device,
                best_epoch=trained.best_epoch,
                epochs=len(trained.history),
                architecture=trained.architecture,
                preprocessing=trained.preprocessing,
                images_per_second=_mean_rate(trained.history),
            )
        )
        run.log_file(text.encode(), MODEL_CARD)
        tags = version_tags(job, info, trained, assembled, parent)
        version = registry.register_version(
            spec.registered_model,
            logged.model_uri,
            run.run_id,
            tags,
            description=text[:_DESCRIPTION_LIMIT],
            model_id=logged.model_id,
        )
    log.info("registered %s", version.uri)
    return TrainingResult(
        training_job=name,
        registered_model=spec.registered_model,
        model_version=version.version,
        mlflow_run_id=run.run_id,
        metrics=Metrics(
            overall=round(evaluation.overall, 6), slices={k: round(v, 6) for k, v in slices.items()}
        ),
        onnx_max_abs_diff=float(f"{diff:.3g}"),
        train_seconds=round(train_seconds, 3),
        device=trained.device,
    )


def job_uid(job: TrainingJob) -> str | None:
    """The TrainingJob's metadata.uid (the operator passes it on; the local mode has none)."""
    uid = (job.metadata.model_extra or {}).get("uid")
    return str(uid) if uid else None


def _registered_earlier(job: TrainingJob, registry: Registry) -> ModelVersion | None:
    """The version an earlier attempt of this very TrainingJob registered, if one did.

    A pod retried (backoffLimit) or restarted after registration must not register a
    second version; without a uid there is no telling attempts apart, so None.
    """
    uid = job_uid(job)
    if uid is None:
        return None
    return registry.find_version(job.spec.registered_model, TAG_JOB_UID, uid)


def _result_of(job: TrainingJob, version: ModelVersion, registry: Registry) -> TrainingResult:
    """The result of the run that registered `version`, read back from MLflow."""
    logged = registry.run_metrics(version)
    evaluation = evaluation_of(logged, job.spec.evaluation.metric)
    slices = {k: v for k, v in evaluation.slices.items() if k in job.spec.evaluation.slices}
    overall = evaluation.overall
    return TrainingResult(
        training_job=job.metadata.name,
        registered_model=version.name,
        model_version=version.version,
        mlflow_run_id=version.run_id,
        metrics=Metrics(
            overall=round(overall, 6) if overall is not None else None,
            slices={k: round(v, 6) for k, v in slices.items()},
        ),
        onnx_max_abs_diff=float(f"{logged.get('onnx_max_abs_diff', 0.0):.3g}"),
        train_seconds=round(logged.get("train_seconds", 0.0), 3),
        device=version.tags.get(TAG_DEVICE, "unknown"),
    )


def version_tags(
    job: TrainingJob,
    info: plugins.PluginInfo,
    trained: plugins.TrainedModel[Any],
    assembled: splits.Assembled,
    parent: ModelVersion | None,
) -> dict[str, str]:
    """The new version's tags: lineage and interface; no side effects."""
    tags = {
        TAG_JOB: job.metadata.name,
        TAG_NAMESPACE: job.metadata.namespace,
        TAG_PLUGIN: info.name,
        TAG_PLUGIN_VERSION: info.version,
        TAG_CLASSES: json.dumps(list(trained.classes)),
        TAG_INPUT_SHAPE: json.dumps(list(trained.input_shape)),
        TAG_DEVICE: trained.device,
    }
    if trained.preprocessing is not None:
        tags[TAG_PREPROCESSING] = trained.preprocessing.to_tag()
    if "backbone" in trained.architecture:
        tags[TAG_BACKBONE] = trained.architecture["backbone"]
    uid = job_uid(job)
    if uid:
        tags[TAG_JOB_UID] = uid
    generations = [str(d.generation) for d in assembled.lineage if d.generation is not None]
    if generations:
        tags[TAG_SNAPSHOT] = ",".join(generations)
    if parent is not None:
        tags[TAG_PARENT] = parent.version
        tags[TAG_BASE_MODEL] = parent.uri
    return tags


def _load(job: TrainingJob, settings: Settings, log: logging.Logger) -> splits.Assembled:
    references, feedback = [], []
    connect = functools.partial(ObjectStore.from_settings, settings)
    for source in job.spec.datasets:
        loaded = datasets.load(source, connect)
        if isinstance(loaded, splits.Feedback):
            log.info(
                "dataset %s: %d feedback samples from %s",
                source.name,
                len(loaded.ids),
                loaded.source,
            )
            feedback.append(loaded)
        else:
            log.info(
                "dataset %s: %d train, %d validation, %d test examples from %s",
                source.name,
                len(loaded.train),
                len(loaded.validation),
                len(loaded.test),
                loaded.source,
            )
            references.append(loaded)
    return splits.assemble(references, feedback, job.spec.evaluation.slices)


def _fetch(registry: Registry, settings: Settings, uri: str) -> bytes:
    """A file the plugin's arguments name: s3://bucket/key, or models:/ (its checkpoint)."""
    if uri.startswith("models:/"):
        return registry.download_run_artifact(registry.resolve(uri), CHECKPOINT)
    location = S3Uri.parse(uri)
    try:
        return ObjectStore.from_settings(settings).get_bytes(location.bucket, location.key)
    except ObjectNotFound:
        raise plugins.InvalidArguments(f"{uri} does not exist (named by the job's args)") from None


def _mean_rate(history: list[dict[str, float]]) -> float | None:
    rates = [h["images_per_second"] for h in history if "images_per_second" in h]
    return sum(rates) / len(rates) if rates else None


def _check_batch(
    loaded: tuple[plugins.Dataset, ...], preprocessing: images.Preprocessing | None
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Up to 64 validation images (training images when there are none) for the ONNX check,
    as model inputs."""
    parts = [d.validation for d in loaded if len(d.validation)] or [
        d.train for d in loaded if len(d.train)
    ]
    examples = plugins.concat(parts)
    return examples.load(np.arange(min(_CHECK_BATCH, len(examples))), preprocessing)


def _params(job: TrainingJob, info: plugins.PluginInfo, args: dict[str, Any]) -> dict[str, Any]:
    spec = job.spec
    return {
        **{f"args.{k}": v for k, v in args.items()},
        "plugin": f"{info.name} {info.version}",
        "baseModel": spec.base_model or "",
        "datasets": json.dumps([d.to_wire() for d in spec.datasets]),
        "metric": spec.evaluation.metric,
        "slices": ",".join(spec.evaluation.slices),
        "trainingJob": f"{job.metadata.namespace}/{job.metadata.name}",
    }


def _check_labels(assembled: splits.Assembled, classes: tuple[str, ...], fine_tuned: bool) -> None:
    """Every label, held-out evaluation data included, must be one the model can answer:
    a plugin sees only training and validation data, so it cannot check the held-out part."""
    parts = [*assembled.evaluation.values()]
    parts += [p for d in assembled.datasets for p in (d.train, d.validation)]
    unknown = {str(label) for part in parts for label in part.labels} - set(classes)
    if unknown:
        whose = "the base model's" if fine_tuned else "the model's"
        raise plugins.InvalidArguments(
            f"labels {sorted(unknown)} are not among {whose} classes {list(classes)}; "
            "fix the samples' labels, or train from scratch (fineTune: none) to add classes"
        )
