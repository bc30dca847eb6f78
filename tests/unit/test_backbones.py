"""The image-classifier's backbones: torchvision's state_dict keys, shapes and outputs (on
fixed weights, from tests/fixtures/torchvision_backbones.json), ONNX export of each checked
with onnxruntime, pretrained weights, and the checkpoint formats."""

from __future__ import annotations

import io
import json
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

from kubeloop import plugins
from kubeloop.training import onnx_check
from kubeloop_image_classifier import arguments, backbones, network
from tests.backbone_weights import fixed_input, fixed_weights

REFERENCE = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "torchvision_backbones.json").read_text()
)
IMAGENET = tuple(str(i) for i in range(1000))


def _net(backbone: str, **shape: typing.Any) -> backbones.Network:
    fields = {"height": 32, "width": 32, "classes": ("a", "b", "c"), "input_channels": 3}
    return backbones.build(backbones.Shape(**{**fields, **shape, "backbone": backbone}))


def test_every_argument_choice_builds() -> None:
    assert set(backbones.BACKBONES) == set(typing.get_args(arguments.Backbone))
    assert set(arguments.WIDENABLE) < set(backbones.BACKBONES)


@pytest.mark.parametrize("name", sorted(REFERENCE["models"]))
def test_keys_shapes_and_outputs_are_torchvision_s(name: str) -> None:
    reference = REFERENCE["models"][name]
    net = _net(name, height=64, width=64, classes=IMAGENET).eval()
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == reference["shapes"]
    shapes = {k: tuple(v) for k, v in reference["shapes"].items()}
    net.load_state_dict(fixed_weights(shapes))
    with torch.no_grad():
        logits, embedding = net(fixed_input())
    assert torch.allclose(logits[:, :32], torch.tensor(reference["logits"]), atol=1e-4, rtol=1e-4)
    assert logits.double().sum(dim=1).tolist() == pytest.approx(reference["logits_sum"], rel=1e-4)
    assert embedding.shape == (2, net.head.in_features)


@pytest.mark.parametrize("name", backbones.BACKBONES)
def test_every_backbone_exports_to_onnx_that_matches(name: str) -> None:
    torch.manual_seed(0)
    stem = "cifar" if name != "small-cnn" else "imagenet"
    net = _net(name, stem=stem, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)).eval()
    model = plugins.TrainedModel(net, net.shape.classes, (3, 32, 32), "cpu")
    batch = np.random.default_rng(0).random((5, 3, 32, 32), dtype=np.float32)
    plugin = plugins.load("image-classifier")
    reference = plugin.predict(model, batch)
    diff = onnx_check.max_abs_diff(plugin.export(model), batch, (3, 32, 32), reference)
    assert diff <= onnx_check.TOLERANCE
    assert reference[plugins.PROBABILITIES].shape == (5, 3)


def test_grayscale_and_imagenet_stems_fit_their_inputs() -> None:
    gray = _net("resnet18", input_channels=1, base_width=8).eval()
    logits, _ = gray(torch.zeros(2, 1, 32, 32))
    assert logits.shape == (2, 3)
    assert gray.state_dict()["conv1.weight"].shape == (8, 1, 7, 7)
    cifar = _net("resnet18", stem="cifar", base_width=8)
    assert cifar.state_dict()["conv1.weight"].shape == (8, 3, 3, 3)
    assert isinstance(cifar.maxpool, torch.nn.Identity)


def test_pretrained_weights_fill_all_but_the_head() -> None:
    torch.manual_seed(1)
    published = _net("resnet18", classes=IMAGENET).state_dict()  # as torchvision saves it
    buffer = io.BytesIO()
    torch.save({f"module.{k}": v for k, v in published.items()}, buffer)  # DataParallel's
    torch.manual_seed(2)
    net = _net("resnet18")
    kept = network.load_pretrained(net, buffer.getvalue(), "s3://w/resnet18.pth")
    assert kept == []
    own = net.state_dict()
    assert torch.equal(own["layer3.0.conv1.weight"], published["layer3.0.conv1.weight"])
    assert own["fc.weight"].shape == (3, 512)  # the job's classes, freshly initialised
    # A CIFAR stem keeps its own first convolution; a grayscale one sums the colours.
    cifar = _net("resnet18", stem="cifar")
    assert network.load_pretrained(cifar, buffer.getvalue(), "s3://w/r.pth") == ["conv1.weight"]
    gray = _net("resnet18", input_channels=1)
    network.load_pretrained(gray, buffer.getvalue(), "s3://w/r.pth")
    summed = published["conv1.weight"].sum(dim=1, keepdim=True)
    assert torch.allclose(gray.state_dict()["conv1.weight"], summed)


def test_weights_of_another_backbone_are_refused_naming_the_uri() -> None:
    buffer = io.BytesIO()
    torch.save(_net("mobilenet-v3-small").state_dict(), buffer)
    with pytest.raises(plugins.InvalidArguments, match=r"s3://w/m.pth fits only 0 of the"):
        network.load_pretrained(_net("resnet18"), buffer.getvalue(), "s3://w/m.pth")
    empty = io.BytesIO()
    torch.save({"epoch": 3}, empty)
    with pytest.raises(plugins.InvalidArguments, match="holds no state_dict"):
        network.load_pretrained(_net("resnet18"), empty.getvalue(), "s3://w/e.pth")


def test_checkpoints_round_trip_and_format_1_still_loads() -> None:
    net = _net("efficientnet-b0", mean=(0.5,) * 3, std=(0.5,) * 3).eval()
    again = network.load(network.save(net)).eval()
    assert again.shape == net.shape
    batch = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(batch)[0], again(batch)[0])
    old = backbones.build(backbones.Shape(8, 8, ("0", "1"), channels=4, embedding=6))
    buffer = io.BytesIO()
    torch.save(
        {
            "format": "kubeloop-image-classifier/1",
            "height": 8,
            "width": 8,
            "classes": ["0", "1"],
            "channels": 4,
            "embedding": 6,
            "state_dict": old.state_dict(),
        },
        buffer,
    )
    loaded = network.load(buffer.getvalue())
    assert (loaded.shape.backbone, loaded.shape.input_channels) == ("small-cnn", 1)
    assert torch.equal(
        loaded.state_dict()["classifier.weight"], old.state_dict()["classifier.weight"]
    )
