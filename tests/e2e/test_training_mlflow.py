"""`python -m kubeloop.training` against real MLflow and S3 servers on 127.0.0.1.

The digits example's base TrainingJob registers a version that is loaded back by URI and
run with onnxruntime; the example's retraining template, on a feedback snapshot in S3,
registers its child, which must learn the new user and keep the base digits (the demo's
promise). Bad data and unreachable servers fail with the documented exit codes and
register nothing.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
import onnxruntime
import pytest
import yaml
from PIL import Image
from ulid import ULID

from kubeloop import digits, manifests, objects
from kubeloop import images as images_module
from kubeloop.api import samples
from kubeloop.api.training_result import TrainingFailure, TrainingResult
from kubeloop.local import services
from kubeloop.reconcile import trainingjob
from kubeloop.registry import Registry
from kubeloop.storage import ObjectStore
from kubeloop.training import splits
from kubeloop_image_classifier import network
from tests.conftest import ACCESS_KEY, SECRET_KEY, unused_url

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MODEL = "tj-digits"
BUCKET = "tj-feedback"
PREFIX = "feedback/digits/"
DDP_MODEL = "tj-digits-ddp"
PHOTO_DDP_TOLERANCE = 0.25
"""The same for 60 photos and 2 epochs, where one image moves accuracy by 1/60."""
DDP_TOLERANCE = 0.03
"""Most the overall accuracy of a two-process run may differ from the one-process run's."""


@pytest.fixture(scope="module")
def env(s3_server: services.Service, mlflow_server: services.Service) -> dict[str, str]:
    return {
        **os.environ,
        "KUBELOOP_MLFLOW_TRACKING_URI": mlflow_server.url,
        "KUBELOOP_S3_ENDPOINT": s3_server.url,
        "KUBELOOP_S3_ACCESS_KEY": ACCESS_KEY,
        "KUBELOOP_S3_SECRET_KEY": SECRET_KEY,
    }


@pytest.fixture(scope="module")
def store(s3_server: services.Service) -> ObjectStore:
    store = ObjectStore(s3_server.url, ACCESS_KEY, SECRET_KEY, retries=1)
    store.ensure_bucket(BUCKET)
    return store


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trainer")


def _job(name: str, model: str = MODEL, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": "tests", "uid": f"uid-{name}"},
        "spec": {
            "plugin": {"name": "image-classifier"},
            "args": {"epochs": 2},
            "datasets": [{"name": "base", "uri": "builtin://digits"}],
            "registeredModel": model,
            "evaluation": {"metric": "accuracy", "slices": ["base", "new-user"]},
            **spec,
        },
    }


def _example(kind: str) -> dict[str, Any]:
    """The digits example's TrainingJob spec, or its FeedbackDataset's training template."""
    for _, manifest in manifests.load(EXAMPLES / "digits"):
        if manifest["kind"] == kind == "TrainingJob":
            return copy.deepcopy(manifest["spec"])
        if manifest["kind"] == kind == "FeedbackDataset":
            return copy.deepcopy(manifest["spec"]["retrain"]["trainingTemplate"])
    raise AssertionError(f"no {kind} in the digits example")


def _train(
    workdir: Path,
    job: dict[str, Any],
    env: dict[str, str],
    timeout: float = 300,
    processes: int = 1,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    name = job["metadata"]["name"]
    spec = workdir / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(job))
    result = workdir / f"{name}.result.json"
    command = [*trainingjob.trainer_command(processes, sys.executable), "--spec", str(spec)]
    process = subprocess.run(
        [*command, "--result", str(result)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return process, result


def _snapshot(
    store: ObjectStore, generation: int, images: Any, labels: Any, last_id: str | None = None
) -> str:
    keys = []
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        sample = samples.FeedbackSample(
            id=last_id if last_id and index == len(labels) - 1 else str(ULID()),
            input=[float(v) for v in np.asarray(image).ravel()],
            shape=list(np.asarray(image).shape),
            label=str(label),
            slice=digits.NEW_USER,
            received_at="2026-01-01T00:00:00Z",
        )
        key = samples.sample_key(PREFIX, sample.id)
        store.put_json(BUCKET, key, sample.to_wire())
        keys.append(key)
    manifest = samples.SnapshotManifest(
        dataset="digits-feedback",
        generation=generation,
        bucket=BUCKET,
        segments=keys,
        created_at="2026-01-01T00:00:00Z",
    )
    key = samples.snapshot_key(PREFIX, generation)
    store.put_json(BUCKET, key, manifest.to_wire())
    return f"s3://{BUCKET}/{key}"


@pytest.fixture(scope="module")
def base(workdir: Path, env: dict[str, str]) -> TrainingResult:
    """The example's base TrainingJob, as `kubectl apply -f examples/digits` would run it."""
    spec = {**_example("TrainingJob"), "registeredModel": MODEL}
    process, result_file = _train(workdir, _job("digits-base", **spec), env)
    assert process.returncode == 0, process.stderr[-3000:]
    result = TrainingResult.parse(process.stdout)
    assert process.stdout.strip().splitlines()[-1] == result.to_line()
    assert TrainingResult.parse(result_file.read_text()) == result
    return result


def test_base_version_is_registered_complete(base: TrainingResult, registry: Registry) -> None:
    assert (base.training_job, base.registered_model, base.device) == ("digits-base", MODEL, "cpu")
    assert base.onnx_max_abs_diff <= 1e-4
    # The demo's starting point: good on the digits it knows, poor on the new user's.
    assert base.metrics.slices["base"] > 0.95
    assert base.metrics.slices["new-user"] < 0.6
    version = registry.resolve(f"models:/{MODEL}/{base.model_version}")
    assert version.run_id == base.mlflow_run_id
    assert version.tags["kubeloop.trainingJob"] == "digits-base"
    assert version.tags["kubeloop.trainingJobUid"] == "uid-digits-base"
    assert version.tags["kubeloop.plugin"] == "image-classifier"
    assert version.tags["kubeloop.device"] == "cpu"
    assert version.tags["kubeloop.classes"] == '["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]'
    assert "kubeloop.parentVersion" not in version.tags
    assert "kubeloop.snapshotGeneration" not in version.tags
    inputs = mlflow.MlflowClient(registry.tracking_uri).get_run(base.mlflow_run_id).inputs
    (dataset,) = [i.dataset for i in inputs.dataset_inputs]
    assert (dataset.name, json.loads(dataset.source)) == (
        "base",
        {"tags": {"uri": "builtin://digits"}},
    )
    metrics = registry.metrics(version, "accuracy")
    assert metrics.slices == pytest.approx(base.metrics.slices, abs=1e-6)
    assert metrics.overall == pytest.approx(base.metrics.overall, abs=1e-6)

    # The registered ONNX file, loaded back by URI, is the model that was evaluated.
    session = onnxruntime.InferenceSession(registry.download_onnx(version))
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["probabilities", "embedding"]
    for slice_ in digits.SLICES:
        images, labels = digits.load_slice(slice_)
        probabilities, embedding = session.run(None, {"input": images[:, None]})
        assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        assert embedding.shape[0] == len(labels)
        accuracy = float(np.mean(np.asarray(digits.CLASSES)[probabilities.argmax(1)] == labels))
        assert accuracy == pytest.approx(base.metrics.slices[slice_], abs=1e-6)

    checkpoint = network.load(registry.download_run_artifact(version, "checkpoint/model.pt"))
    assert checkpoint.shape.classes == digits.CLASSES


def test_a_retried_pod_reports_the_version_instead_of_registering_another(
    base: TrainingResult, workdir: Path, env: dict[str, str], registry: Registry
) -> None:
    # The same TrainingJob (same uid) again: its pod retried after registering.
    spec = {**_example("TrainingJob"), "registeredModel": MODEL}
    process, _ = _train(workdir, _job("digits-base", **spec), env)
    assert process.returncode == 0, process.stderr[-3000:]
    assert TrainingResult.parse(process.stdout) == base
    assert "registered by an earlier attempt" in process.stderr
    assert "epoch" not in process.stderr  # nothing trained
    found = mlflow.MlflowClient(registry.tracking_uri).search_model_versions(
        f"name = '{MODEL}' and tags.`kubeloop.trainingJobUid` = 'uid-digits-base'"
    )
    assert [v.version for v in found] == [base.model_version]


def test_two_processes_train_one_model_and_register_one_version(
    base: TrainingResult, workdir: Path, env: dict[str, str], registry: Registry
) -> None:
    # The example's base job under torchrun: two gloo ranks on the CPU, each half of every
    # epoch; the sockets on the loopback interface, as every server a test starts.
    spec = {**_example("TrainingJob"), "registeredModel": DDP_MODEL}  # MODEL's versions counted
    job = _job("digits-ddp", DDP_MODEL, **spec)
    loopback = {**env, "GLOO_SOCKET_IFNAME": "lo"}
    process, result_file = _train(workdir, job, loopback, processes=2)
    assert process.returncode == 0, process.stderr[-3000:]
    assert "rank 1 of 2: training its shard" in process.stderr
    result = TrainingResult.parse(result_file.read_text())
    assert process.stdout.strip().splitlines()[-1] == result.to_line(), "rank 0's line alone"
    found = mlflow.MlflowClient(registry.tracking_uri).search_model_versions(
        f"name = '{DDP_MODEL}' and tags.`kubeloop.trainingJobUid` = 'uid-digits-ddp'"
    )
    assert [v.version for v in found] == [result.model_version]
    assert result.metrics.overall is not None
    assert base.metrics.overall is not None
    # Each step averages the two ranks' gradients: half the steps of the one-process run.
    assert abs(result.metrics.overall - base.metrics.overall) <= DDP_TOLERANCE, (
        result.metrics,
        base.metrics,
    )
    print(f"one process {base.metrics}, two processes {result.metrics}")


def test_run_holds_epochs_signature_and_card(
    base: TrainingResult, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    client = mlflow.MlflowClient(registry.tracking_uri)
    epochs = _example("TrainingJob")["args"]["epochs"]
    losses = client.get_metric_history(base.mlflow_run_id, "train_loss")
    assert sorted(m.step for m in losses) == list(range(1, epochs + 1))
    assert len(client.get_metric_history(base.mlflow_run_id, "val_accuracy")) == epochs
    run = client.get_run(base.mlflow_run_id)
    assert run.data.params["args.epochs"] == str(epochs)
    assert run.info.status == "FINISHED"
    uri = f"models:/{MODEL}/{base.model_version}"
    signature = mlflow.models.get_model_info(uri).signature.to_dict()
    assert '"name": "input"' in signature["inputs"]
    assert "[-1, 1, 8, 8]" in signature["inputs"]
    assert '"name": "probabilities"' in signature["outputs"]
    requirements = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text().split()
    assert {line.partition("==")[0] for line in requirements} >= {"onnx", "onnxruntime"}
    card_path = mlflow.artifacts.download_artifacts(
        run_id=base.mlflow_run_id, artifact_path="model_card.md", tracking_uri=registry.tracking_uri
    )
    card = Path(card_path).read_text()
    assert "trained from scratch" in card
    assert f"| new-user | {base.metrics.slices['new-user']:.4f} | " in card
    description = client.get_model_version(MODEL, base.model_version).description
    assert description == card


def test_fine_tune_on_a_feedback_snapshot(
    base: TrainingResult, workdir: Path, env: dict[str, str], store: ObjectStore, registry: Registry
) -> None:
    """The example's retraining template on 100 new-user samples, from the champion."""
    registry.set_alias(MODEL, "champion", base.model_version)
    manifest = _snapshot(store, 1, *digits.new_user_feedback(100, seed=0))
    spec = _example("FeedbackDataset")
    spec["registeredModel"] = MODEL
    spec["baseModel"] = f"models:/{MODEL}@champion"
    spec["datasets"].append(
        {"name": "feedback", "feedbackDataset": "digits-feedback", "manifest": manifest}
    )
    process, _ = _train(workdir, _job("digits-feedback-1", **spec), env)
    assert process.returncode == 0, process.stderr[-3000:]
    tuned = TrainingResult.parse(process.stdout)
    assert int(tuned.model_version) == int(base.model_version) + 1
    version = registry.resolve(f"models:/{MODEL}/{tuned.model_version}")
    assert version.tags["kubeloop.parentVersion"] == base.model_version
    assert version.tags["kubeloop.snapshotGeneration"] == "1"
    assert version.tags["kubeloop.trainingJob"] == "digits-feedback-1"
    # The demo's promise: the new user is learnt, the base digits are kept.
    assert tuned.metrics.slices["new-user"] > 0.85
    assert tuned.metrics.slices["base"] >= base.metrics.slices["base"] - 0.02
    card = registry.download_run_artifact(version, "model_card.md").decode()
    assert f"fine-tuned from `models:/{MODEL}/{base.model_version}`" in card
    assert f"`{manifest}` | digits-feedback | 1 |" in card
    inputs = mlflow.MlflowClient(registry.tracking_uri).get_run(tuned.mlflow_run_id).inputs
    lineage = {i.dataset.name: json.loads(i.dataset.source) for i in inputs.dataset_inputs}
    assert lineage["feedback"]["uri"] == manifest  # the frozen snapshot the version learnt


@pytest.mark.parametrize("part", ["train", "test"])
def test_a_label_outside_the_base_classes_registers_nothing(
    part: str,
    base: TrainingResult,
    workdir: Path,
    env: dict[str, str],
    store: ObjectStore,
    registry: Registry,
) -> None:
    """Wherever the bad sample's id hashes to (trained on, or held out for the new-user
    slice, which the plugin never sees), the trainer refuses it before registering."""
    before = registry.latest_version(MODEL)
    images, labels = digits.new_user_feedback(3, seed=9)
    bad_id = next(i for i in (str(ULID()) for _ in range(1000)) if splits.feedback_part(i) == part)
    manifest = _snapshot(store, 2, images, [*labels[:2], "eleven"], last_id=bad_id)
    job = _job(
        f"tj-bad-label-{part}",
        args={"epochs": 1},
        baseModel=f"models:/{MODEL}/{base.model_version}",
        datasets=[{"name": "feedback", "feedbackDataset": "digits-feedback", "manifest": manifest}],
    )
    process, result_file = _train(workdir, job, env)
    assert process.returncode == 2, process.stderr[-3000:]
    assert "labels ['eleven'] are not among the base model's classes" in process.stderr
    assert_failure(result_file, 2, "eleven")
    assert registry.latest_version(MODEL) == before
    runs = mlflow.MlflowClient(registry.tracking_uri).search_runs(
        [mlflow.MlflowClient(registry.tracking_uri).get_experiment_by_name(MODEL).experiment_id],
        filter_string=f"tags.`kubeloop.trainingJob` = 'tj-bad-label-{part}'",
    )
    assert [run.info.status for run in runs] == ["FAILED"]


def assert_failure(result_file: Path, code: int, words: str) -> None:
    """The result file holds the trainer's failure (the pod's termination message), no result."""
    failure = TrainingFailure.parse(result_file.read_text())
    assert failure is not None
    assert failure.exit_code == code
    assert words in failure.message
    with pytest.raises(ValueError, match="no training result"):
        TrainingResult.parse(result_file.read_text())


def test_unreachable_mlflow_exits_3_naming_it(workdir: Path, env: dict[str, str]) -> None:
    url = unused_url()
    started = time.monotonic()
    process, result_file = _train(
        workdir, _job("tj-no-mlflow"), {**env, "KUBELOOP_MLFLOW_TRACKING_URI": url}, timeout=120
    )
    assert process.returncode == 3, process.stderr[-3000:]
    assert f"the MLflow server at {url} could not be reached" in process.stderr
    assert "epoch 1/" not in process.stderr  # nothing was trained
    assert_failure(result_file, 3, "could not be reached")
    assert time.monotonic() - started < 90  # retries are bounded


def test_unreachable_s3_exits_3_and_registers_nothing(
    workdir: Path, env: dict[str, str], registry: Registry
) -> None:
    url = unused_url()
    job = _job(
        "tj-no-s3",
        model="tj-no-s3",
        datasets=[{"name": "feedback", "uri": f"s3://{BUCKET}/{PREFIX}"}],
    )
    process, _ = _train(
        workdir, job, {**env, "KUBELOOP_S3_ENDPOINT": url, "KUBELOOP_S3_RETRIES": "1"}
    )
    assert process.returncode == 3, process.stderr[-3000:]
    assert f"object storage at {url} failed after 2 attempts" in process.stderr
    assert registry.latest_version("tj-no-s3") is None


def test_a_missing_dataset_prefix_fails_naming_it(
    workdir: Path, env: dict[str, str], registry: Registry
) -> None:
    """Issue 11: s3://kubeloop/does-not-exist/ failed in torch with a kernel-size error."""
    uri = f"s3://{BUCKET}/does-not-exist/"
    job = _job("tj-missing-data", model="tj-missing", datasets=[{"name": "base", "uri": uri}])
    process, result_file = _train(workdir, job, env)
    assert process.returncode == 1, process.stderr[-3000:]
    assert f"dataset 'base': {uri} not found or empty" in process.stderr
    assert "Traceback" not in process.stderr
    failure = json.loads(result_file.read_text())
    assert "not found or empty" in failure["message"]
    assert registry.latest_version("tj-missing") is None


PHOTO_ARGS = {
    "backbone": "resnet18",
    "stem": "cifar",
    "baseWidth": 8,
    "height": 32,
    "width": 32,
    "epochs": 2,
    "mean": [0.45, 0.45, 0.45],
    "std": [0.25, 0.25, 0.25],
    "workers": 2,
}


@pytest.fixture(scope="module")
def photos(store: ObjectStore) -> list[dict[str, Any]]:
    """60 RGB JPEGs of three object classes in S3, of 32, 40 and 48 pixels (the transform
    makes them 32 x 32): the TrainingJob datasets that read them."""
    images, labels = objects.load_split("val")
    chosen = np.isin(labels, objects.CLASSES[:3])
    for n, (image, label) in enumerate(zip(images[chosen][:60], labels[chosen][:60], strict=True)):
        size = 32 + 8 * (n % 3)
        picture = Image.fromarray((np.moveaxis(image, 0, -1) * 255).astype(np.uint8))
        buffer = io.BytesIO()
        picture.resize((size, size)).save(buffer, "JPEG", quality=90)
        store.put_bytes(BUCKET, f"photos/{label}/{n:03d}.jpg", buffer.getvalue())
    return [{"name": "base", "uri": f"s3://{BUCKET}/photos/", "classes": list(objects.CLASSES)}]


def _photo_job(name: str, datasets: list[dict[str, Any]], **args: Any) -> dict[str, Any]:
    return _job(
        name,
        model=name,
        args={**PHOTO_ARGS, **args},
        datasets=datasets,
        evaluation={"metric": "accuracy", "slices": ["base"]},
    )


def test_an_image_folder_of_rgb_jpegs_trains_a_resnet(
    workdir: Path,
    env: dict[str, str],
    photos: list[dict[str, Any]],
    registry: Registry,
) -> None:
    """The issue's done-when: a TrainingJob on an S3 image folder of RGB JPEGs (of several
    sizes) trains a ResNet-18 and registers a version whose card names backbone, input size,
    channels and transform, and whose tags let a predictor apply the same transform."""
    process, _ = _train(workdir, _photo_job("tj-photos", photos), env)
    assert process.returncode == 0, process.stderr[-3000:]
    result = TrainingResult.parse(process.stdout)
    version = registry.resolve(f"models:/tj-photos/{result.model_version}")
    assert version.tags["kubeloop.backbone"] == "resnet18"
    assert version.tags["kubeloop.inputShape"] == "[3, 32, 32]"
    transform = images_module.Preprocessing.from_tag(version.tags["kubeloop.preprocessing"])
    assert transform.input_shape == (3, 32, 32)
    assert transform.means == (0.45, 0.45, 0.45)
    assert transform.normalize_in_model
    card = registry.download_run_artifact(version, "model_card.md").decode()
    for fact in (
        "| backbone | resnet18 |",
        "| stem | cifar |",
        "| input size | 32 x 32 |",
        "| channels | 3 (RGB) |",
        "| transform | RGB; resize to cover the crop",
    ):
        assert fact in card, card
    assert "float32 `[batch, 3, 32, 32]`, images in [0, 1]" in card
    run = mlflow.MlflowClient(registry.tracking_uri).get_metric_history(
        result.mlflow_run_id, "images_per_second"
    )
    assert [m.step for m in run] == [1, 2]
    assert all(m.value > 0 for m in run)
    # The registered ONNX model takes [batch, 3, 32, 32] and answers like the evaluation.
    session = onnxruntime.InferenceSession(registry.download_onnx(version))
    assert session.get_inputs()[0].shape[1:] == [3, 32, 32]
    images, labels = objects.load_split("val")
    first = images[np.isin(labels, objects.CLASSES[:3])][0]
    photo = io.BytesIO()
    Image.fromarray((np.moveaxis(first, 0, -1) * 255).astype(np.uint8)).resize((40, 40)).save(
        photo, "JPEG"
    )
    one = images_module.decode(photo.getvalue(), transform)[None]
    probabilities, _ = session.run(None, {"input": one})
    assert probabilities.shape == (1, 3)


def test_two_processes_stream_image_files_through_a_distributed_sampler(
    workdir: Path, env: dict[str, str], photos: list[dict[str, Any]], registry: Registry
) -> None:
    """The ResNet on S3 image files under torchrun: each rank's DataLoader reads its half of
    every epoch (DistributedSampler), batch norm and all; rank 0 registers one version."""
    loopback = {**env, "GLOO_SOCKET_IFNAME": "lo"}
    one, _ = _train(workdir, _photo_job("tj-photos-one", photos, workers=1), env)
    assert one.returncode == 0, one.stderr[-3000:]
    two, _ = _train(workdir, _photo_job("tj-photos-two", photos, workers=1), loopback, processes=2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "rank 1 of 2: training its shard" in two.stderr
    alone, together = TrainingResult.parse(one.stdout), TrainingResult.parse(two.stdout)
    found = mlflow.MlflowClient(registry.tracking_uri).search_model_versions(
        "name = 'tj-photos-two'"
    )
    assert [v.version for v in found] == [together.model_version]
    assert alone.metrics.overall is not None
    assert together.metrics.overall is not None
    print(f"objects: one process {alone.metrics.overall}, two {together.metrics.overall}")
    assert abs(together.metrics.overall - alone.metrics.overall) <= PHOTO_DDP_TOLERANCE
