"""The image-classifier plugin in-process: training, ONNX export and its check, checkpoints,
head fine-tuning, determinism."""

import io
import logging
import os
from typing import Any

import numpy as np
import onnxruntime
import pytest
import torch

from kubeloop import digits, plugins
from kubeloop.training import onnx_check
from kubeloop_image_classifier import fit, network
from kubeloop_image_classifier.arguments import ImageClassifierArgs

PLUGIN = plugins.load("image-classifier")
LOG = logging.getLogger("test")


def _context(
    args: dict[str, Any],
    datasets: tuple[plugins.Dataset, ...],
    base: plugins.BaseModel | None = None,
    reports: list[plugins.Progress] | None = None,
) -> plugins.TrainingContext:
    resolved = plugins.parse_args(PLUGIN.info(), args, base.uri if base else None)
    sink = reports if reports is not None else []
    return plugins.TrainingContext(resolved, datasets, "accuracy", base, LOG, sink.append)


def _digits(count: int | None = None) -> plugins.Dataset:
    train = plugins.LabelledImages.of(*digits.load_split("train"), "base")
    val = plugins.LabelledImages.of(*digits.load_split("val"), "base")
    if count is not None:
        train = plugins.LabelledImages(
            train.images[:count], train.labels[:count], train.slices[:count]
        )
    return plugins.Dataset("base", False, train, val)


def _new_user(count: int) -> plugins.Dataset:
    images, labels = digits.new_user_feedback(count, seed=1)
    data = plugins.LabelledImages.of(images, labels, digits.NEW_USER)
    empty = plugins.LabelledImages.of(images[:0], labels[:0], digits.NEW_USER)
    return plugins.Dataset("feedback", True, data, empty)


@pytest.fixture(scope="module")
def trained() -> plugins.TrainedModel[Any]:
    reports: list[plugins.Progress] = []
    model = PLUGIN.train(_context({"epochs": 4}, (_digits(),), reports=reports))
    assert [r.epoch for r in reports] == [1, 2, 3, 4]
    assert set(reports[0].metrics) == {"train_loss", "val_accuracy", "images_per_second"}
    assert reports[0].metrics["images_per_second"] > 0
    return model


def test_training_learns_and_keeps_the_best_epoch(trained: plugins.TrainedModel[Any]) -> None:
    assert trained.classes == digits.CLASSES
    assert trained.input_shape == (1, 8, 8)
    scores = [h["val_accuracy"] for h in trained.history]
    assert trained.history[trained.best_epoch - 1]["val_accuracy"] == max(scores)
    evaluation = PLUGIN.evaluate(
        trained, {"base": plugins.LabelledImages.of(*digits.load_slice("base"), "base")}, "accuracy"
    )
    assert evaluation.slices["base"] > 0.5  # four epochs already beat chance (0.1) by far
    assert evaluation.overall == evaluation.slices["base"]


def test_onnx_export_matches_torch_at_any_batch_size(trained: plugins.TrainedModel[Any]) -> None:
    exported = PLUGIN.export(trained)
    session = onnxruntime.InferenceSession(exported, providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape[1:]) for i in session.get_inputs()] == [("input", [1, 8, 8])]
    assert [o.name for o in session.get_outputs()] == ["probabilities", "embedding"]
    images, _ = digits.load_split("test")
    for count in (1, 7, 64):
        batch = images[:count]
        diff = onnx_check.max_abs_diff(exported, batch, (1, 8, 8), PLUGIN.predict(trained, batch))
        assert diff <= onnx_check.TOLERANCE
        probabilities, embedding = session.run(None, {"input": batch[:, None]})
        assert probabilities.shape == (count, 10)
        assert embedding.shape[0] == count
        assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_onnx_check_catches_a_different_model(trained: plugins.TrainedModel[Any]) -> None:
    batch = digits.load_split("val")[0][:16]
    reference = PLUGIN.predict(trained, batch)
    reference[plugins.EMBEDDING] = reference[plugins.EMBEDDING] + 1e-3
    with pytest.raises(onnx_check.OnnxMismatch, match="differ from the trained model"):
        onnx_check.max_abs_diff(PLUGIN.export(trained), batch, (1, 8, 8), reference)


def test_checkpoint_round_trip(trained: plugins.TrainedModel[Any]) -> None:
    restored = network.load(PLUGIN.checkpoint(trained))
    assert restored.shape == trained.model.shape
    again = plugins.TrainedModel(restored, trained.classes, trained.input_shape, "cpu")
    batch = digits.load_split("val")[0][:32]
    first, second = PLUGIN.predict(trained, batch), PLUGIN.predict(again, batch)
    assert np.array_equal(first[plugins.PROBABILITIES], second[plugins.PROBABILITIES])
    buffer = io.BytesIO()
    torch.save({"format": "other"}, buffer)
    with pytest.raises(plugins.PluginError, match="not an image-classifier checkpoint"):
        network.load(buffer.getvalue())


def test_head_fine_tune_changes_only_the_classifier(trained: plugins.TrainedModel[Any]) -> None:
    base = plugins.BaseModel("models:/digits/1", "1", PLUGIN.checkpoint(trained))
    tuned = PLUGIN.train(
        _context({"epochs": 1, "fineTune": "head"}, (_digits(200), _new_user(40)), base)
    )
    before, after = trained.model.state_dict(), tuned.model.state_dict()
    features = [k for k in before if k.startswith("features.")]
    assert features
    assert all(torch.equal(before[k], after[k]) for k in features)
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])


def test_fine_tune_refuses_labels_the_base_model_lacks(
    trained: plugins.TrainedModel[Any],
) -> None:
    base = plugins.BaseModel("models:/digits/1", "1", PLUGIN.checkpoint(trained))
    odd = plugins.LabelledImages.of(np.zeros((2, 8, 8), np.float32), ["x", "x"], "")
    dataset = plugins.Dataset("feedback", True, odd, odd)
    with pytest.raises(plugins.InvalidArguments, match=r"labels \['x'\] are not among"):
        PLUGIN.train(_context({"epochs": 1}, (_digits(50), dataset), base))
    small = plugins.LabelledImages.of(np.zeros((2, 6, 6), np.float32), ["1", "2"], "")
    context = _context(
        {"epochs": 1, "height": 6, "width": 6}, (plugins.Dataset("b", False, small, small),), base
    )
    with pytest.raises(plugins.InvalidArguments, match="takes 8 x 8"):
        PLUGIN.train(context)


def test_training_is_reproducible() -> None:
    first = PLUGIN.train(_context({"epochs": 1, "seed": 7}, (_digits(120),)))
    second = PLUGIN.train(_context({"epochs": 1, "seed": 7}, (_digits(120),)))
    third = PLUGIN.train(_context({"epochs": 1, "seed": 8}, (_digits(120),)))
    a, b, c = (m.model.state_dict() for m in (first, second, third))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_feedback_is_repeated_to_its_share() -> None:
    args = ImageClassifierArgs(fine_tune="full", feedback_share=0.5, replay=0.5)
    mix = fit.training_mix((_digits(400), _new_user(50)), args, np.random.default_rng(0))
    from_feedback = int(np.sum(mix.slices == digits.NEW_USER))
    assert len(mix) - from_feedback == 200  # half of the reference data replayed
    assert from_feedback == 200  # 50 samples, four times: half of each epoch


def test_fine_tune_mode_defaults_to_the_base_model_and_must_fit_it() -> None:
    info = PLUGIN.info()
    assert plugins.parse_args(info, {}).mode(fine_tuning=False) == "none"
    assert plugins.parse_args(info, {}, "models:/digits/1").mode(fine_tuning=True) == "full"
    assert plugins.parse_args(info, {"fineTune": "head"}, "models:/digits/1").mode(True) == "head"
    with pytest.raises(plugins.InvalidArguments, match=r"args\.fineTune: 'head' needs spec\.base"):
        plugins.parse_args(info, {"fineTune": "head"})
    with pytest.raises(plugins.InvalidArguments, match=r"args\.fineTune: 'none' trains from scr"):
        plugins.parse_args(info, {"fineTune": "none"}, "models:/digits/1")


def test_cpu_threads_grow_with_the_image_within_the_cpus() -> None:
    assert fit.cpu_threads(8, 8) == 1
    cpus = len(os.sched_getaffinity(0))
    assert fit.cpu_threads(64, 64) == min(cpus, 4)
    assert 1 <= fit.cpu_threads(32, 16) <= min(cpus, 2)


def test_other_image_sizes_train_and_export() -> None:
    rng = np.random.default_rng(0)
    images = rng.random((40, 12, 10), dtype=np.float32)
    labels = np.array(["cat", "dog"])[np.arange(40) % 2]
    data = plugins.LabelledImages.of(images, labels, "")
    dataset = plugins.Dataset("d", False, data, data)
    model = PLUGIN.train(_context({"epochs": 1, "height": 12, "width": 10}, (dataset,)))
    assert model.classes == ("cat", "dog")
    diff = onnx_check.max_abs_diff(
        PLUGIN.export(model), images[:5], (1, 12, 10), PLUGIN.predict(model, images[:5])
    )
    assert diff <= onnx_check.TOLERANCE
