"""The image-classifier on RGB images: the CUDA code path (bf16 autocast, channels_last) run on
the CPU, image files streamed from a real S3 server through DataLoader worker processes, an
undecodable file named, pretrained weights fetched by URI, and the checks of the arguments."""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from kubeloop import objects, plugins
from kubeloop.storage import ObjectStore
from kubeloop.training import datasets, onnx_check
from kubeloop_image_classifier import backbones, fit, network

PLUGIN = plugins.load("image-classifier")
LOG = logging.getLogger("test")
BUCKET = "tj-rgb"
TINY = {"height": 32, "width": 32, "backbone": "resnet18", "stem": "cifar", "baseWidth": 8}


def _context(
    args: dict[str, Any],
    data: tuple[plugins.Dataset, ...],
    reports: list[plugins.Progress] | None = None,
    fetch: Any = None,
) -> plugins.TrainingContext[Any]:
    resolved = plugins.parse_args(PLUGIN.info(), args)
    sink = reports if reports is not None else []
    extra = {"fetch": fetch} if fetch else {}
    return plugins.TrainingContext(resolved, data, "accuracy", None, LOG, sink.append, **extra)


def _objects(count: int) -> plugins.Dataset:
    images, labels = objects.load_split("train")
    train = plugins.LabelledImages.of(images[:count], labels[:count], "base")
    val = plugins.LabelledImages.of(images[count : count + 40], labels[count : count + 40], "base")
    return plugins.Dataset("base", False, train, val)


def test_the_cuda_code_path_runs_on_the_cpu() -> None:
    """precision bf16 takes the path a GPU takes (autocast, channels_last) on the CPU."""
    args = {**TINY, "epochs": 1, "precision": "bf16", "device": "cpu"}
    runtime = fit.Runtime.resolve(plugins.parse_args(PLUGIN.info(), args))  # type: ignore[arg-type]
    assert (runtime.bf16, runtime.channels_last, runtime.device.type) == (True, True, "cpu")
    reports: list[plugins.Progress] = []
    model = PLUGIN.train(_context(args, (_objects(120),), reports))
    assert model.input_shape == (3, 32, 32)
    assert model.architecture["backbone"] == "resnet18"
    assert model.architecture["precision"] == "bf16 autocast"
    assert reports[0].metrics["images_per_second"] > 0
    assert model.preprocessing is not None
    assert model.preprocessing.channels == 3
    # The weights stay float32 and contiguous: the export (on the CPU, in fp32) matches.
    assert all(p.dtype == torch.float32 for p in model.model.parameters())
    batch = objects.load_split("val")[0][:8]
    diff = onnx_check.max_abs_diff(
        PLUGIN.export(model), batch, (3, 32, 32), PLUGIN.predict(model, batch)
    )
    assert diff <= onnx_check.TOLERANCE


def test_cuda_without_a_gpu_is_refused() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(plugins.InvalidArguments, match=r"args\.device: cuda, but torch"):
        PLUGIN.train(_context({**TINY, "device": "cuda"}, (_objects(20),)))


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.moveaxis(image, 0, -1) * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _folder(store: ObjectStore, prefix: str, count: int) -> None:
    images, labels = objects.load_split("val")
    for n in range(count):
        store.put_bytes(BUCKET, f"{prefix}{labels[n]}/{n}.png", _png(images[n]))


def _files(store: ObjectStore, prefix: str) -> plugins.Dataset:
    loaded = datasets.load(
        datasets.DatasetSource(name="base", uri=f"s3://{BUCKET}/{prefix}"), lambda: store
    )
    assert not isinstance(loaded, datasets.Feedback)
    return plugins.Dataset("base", False, loaded.train, loaded.validation)


def test_image_files_stream_through_worker_processes(object_store: ObjectStore) -> None:
    object_store.ensure_bucket(BUCKET)
    _folder(object_store, "stream/", 60)
    dataset = _files(object_store, "stream/")
    assert isinstance(dataset.train, plugins.ImageFiles)
    model = PLUGIN.train(_context({**TINY, "epochs": 1, "workers": 2}, (dataset,)))
    assert model.input_shape == (3, 32, 32)  # image files: RGB by default
    assert len(model.classes) == len(set(dataset.train.labels) | set(dataset.validation.labels))
    evaluation = PLUGIN.evaluate(model, {"base": dataset.validation}, "accuracy")
    assert 0.0 <= evaluation.overall <= 1.0


def test_an_undecodable_file_is_named(object_store: ObjectStore) -> None:
    object_store.ensure_bucket(BUCKET)
    _folder(object_store, "broken/", 30)
    dataset = _files(object_store, "broken/")
    assert isinstance(dataset.train, plugins.ImageFiles)
    bad = str(dataset.train.keys[0])
    object_store.put_bytes(BUCKET, bad, b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(plugins.ImageUnreadable, match=rf"s3://{BUCKET}/{bad}: not a decodable"):
        PLUGIN.train(_context({**TINY, "epochs": 1, "workers": 2}, (dataset,)))


def test_pretrained_weights_are_fetched_by_uri() -> None:
    torch.manual_seed(5)
    published = backbones.build(
        backbones.Shape(32, 32, tuple("abcd"), backbone="resnet18", input_channels=3, base_width=8)
    )
    asked: list[str] = []

    def fetch(uri: str) -> bytes:
        asked.append(uri)
        return network.save(published)

    uri = "s3://weights/resnet18.pth"
    args = {**TINY, "stem": "imagenet", "epochs": 1, "learningRate": 1e-6, "pretrained": uri}
    model = PLUGIN.train(_context(args, (_objects(40),), fetch=fetch))
    assert asked == [uri]
    assert model.architecture["pretrained"] == uri
    before = published.state_dict()["layer2.0.conv1.weight"]
    assert torch.allclose(model.model.state_dict()["layer2.0.conv1.weight"], before, atol=1e-3)


@pytest.mark.parametrize(
    ("args", "base", "problem"),
    [
        ({"backbone": "efficientnet-b0", "baseWidth": 16}, None, "baseWidth: efficientnet-b0 has"),
        ({"channels": 3, "mean": [0.5]}, None, "mean: give one value per channel"),
        ({"std": [0.0, 1.0, 1.0]}, None, "std: every value must be positive"),
        ({"pretrained": "https://hub/r.pth"}, None, "neither s3://bucket/key.pth nor models:/"),
        ({"pretrained": "s3://w/r.pth"}, "models:/m/1", "a fine-tune starts from spec.baseModel"),
        ({"device": "tpu"}, None, "args.device"),
    ],
)
def test_arguments_that_do_not_fit_are_refused(
    args: dict[str, Any], base: str | None, problem: str
) -> None:
    with pytest.raises(plugins.InvalidArguments, match=problem):
        plugins.parse_args(PLUGIN.info(), args, base)


def test_a_head_fine_tune_of_a_resnet_keeps_its_body_and_statistics() -> None:
    base = PLUGIN.train(_context({**TINY, "epochs": 1}, (_objects(60),)))
    parent = plugins.BaseModel("models:/objects/1", "1", PLUGIN.checkpoint(base))
    args = {"height": 32, "width": 32, "epochs": 1, "fineTune": "head"}
    resolved = plugins.parse_args(PLUGIN.info(), args, parent.uri)
    images, labels = objects.new_user_feedback(20, seed=3)
    feedback = plugins.LabelledImages.of(images, labels, "new-user")
    data = (
        _objects(60),
        plugins.Dataset("feedback", True, feedback, feedback.subset(np.arange(4))),
    )
    tuned = PLUGIN.train(
        plugins.TrainingContext(resolved, data, "accuracy", parent, LOG, lambda _: None)
    )
    before, after = base.model.state_dict(), tuned.model.state_dict()
    body = [k for k in before if not k.startswith("fc.")]
    assert any(k.endswith("running_mean") for k in body)
    assert all(torch.equal(before[k], after[k]) for k in body)
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert tuned.architecture["backbone"] == "resnet18"  # the base model's, not the default
