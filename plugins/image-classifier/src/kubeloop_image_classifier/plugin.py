"""The `image-classifier` plugin: declares its arguments (`arguments.py`), trains, predicts,
exports.

torch is imported only when a model is trained or used, so `kubeloop plugins list` and
argument checks stay fast.
"""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from kubeloop import images, plugins
from kubeloop_image_classifier.arguments import ImageClassifierArgs

if TYPE_CHECKING:
    from kubeloop_image_classifier.backbones import Network, Shape

NAME = "image-classifier"


class ImageClassifier(plugins.Plugin["Network", ImageClassifierArgs]):
    """Image classification (grayscale or RGB, any size): a small CNN for tiny images, or
    ResNet-18/34/50, MobileNetV3 or EfficientNet-B0 with torchvision's layer names, trained
    from scratch, from pretrained weights, or fine-tuned from a served version."""

    def info(self) -> plugins.PluginInfo:
        return plugins.PluginInfo(
            name=NAME,
            version=importlib.metadata.version("kubeloop-image-classifier"),
            description=" ".join((self.__doc__ or "").split()),
            arguments=ImageClassifierArgs,
            datasets=(
                plugins.DatasetRequirement(
                    plugins.LABELLED_IMAGES,
                    "images by class (in memory, or PNG/JPEG files read as they are needed); "
                    "reference data and feedback snapshots",
                ),
            ),
        )

    def train(
        self, context: plugins.TrainingContext[ImageClassifierArgs]
    ) -> plugins.TrainedModel[Network]:
        import torch

        from kubeloop_image_classifier import backbones, fit, network

        mode = context.args.mode(fine_tuning=context.base_model is not None)
        args = context.args.model_copy(update={"fine_tune": mode})
        fit.seed_everything(args.seed)
        runtime = fit.Runtime.resolve(args, context.ranks)
        torch.set_num_threads(fit.cpu_threads(args.height, args.width))
        labels = {
            str(label)
            for d in context.datasets
            for label in np.concatenate([d.train.labels, d.validation.labels])
        }
        kept: list[str] = []
        if context.base_model is None:
            shape = _shape(args, natural_sort(labels), _data_channels(context.datasets))
            net = backbones.build(shape)
            if args.pretrained is not None:
                kept = network.load_pretrained(net, context.fetch(args.pretrained), args.pretrained)
                context.logger.info(
                    "initialised from %s; left as initialised: %s",
                    args.pretrained,
                    ", ".join(kept) or "only the head",
                )
        else:
            net = network.load(context.base_model.checkpoint)
            _check_base(net.shape, args, labels, context.base_model.uri)
        preprocessing = preprocessing_of(net.shape, args)
        _check_images(context.datasets, preprocessing)
        context.logger.info(
            "training %s %s on %s (%s%s): %d classes, input %s, fine-tune %s, %d threads",
            NAME,
            net.shape.backbone,
            runtime.device,
            "bf16" if runtime.bf16 else "fp32",
            ", channels_last" if runtime.channels_last else "",
            len(net.shape.classes),
            list(preprocessing.input_shape),
            mode,
            torch.get_num_threads(),
        )
        with runtime.process_group():
            best_epoch, history = fit.fit(net, context, args, runtime, preprocessing)
        net.cpu().to(memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]  # stubs lack it
        return plugins.TrainedModel(
            model=net,
            classes=net.shape.classes,
            input_shape=preprocessing.input_shape,
            device=runtime.device.type,
            best_epoch=best_epoch,
            history=history,
            preprocessing=preprocessing,
            architecture=_architecture(net.shape, args, runtime, kept),
        )

    def predict(
        self, model: plugins.TrainedModel[Network], images: NDArray[np.float32]
    ) -> dict[str, Any]:
        import torch

        from kubeloop_image_classifier.network import Served

        served = Served(model.model).cpu().eval()
        batch = np.asarray(images, dtype=np.float32)
        if batch.ndim == 3:  # grayscale (N, H, W)
            batch = batch[:, None]
        with torch.no_grad():
            probabilities, embedding = served(torch.from_numpy(batch))
        return {
            plugins.PROBABILITIES: probabilities.numpy(),
            plugins.EMBEDDING: embedding.numpy(),
        }

    def export(self, model: plugins.TrainedModel[Network]) -> bytes:
        from kubeloop_image_classifier import network

        return network.export_onnx(model.model)

    def checkpoint(self, model: plugins.TrainedModel[Network]) -> bytes:
        from kubeloop_image_classifier import network

        return network.save(model.model)


def natural_sort(labels: set[str]) -> tuple[str, ...]:
    """Class order: numbers by value ("2" before "10"), then names alphabetically."""
    return tuple(
        sorted(labels, key=lambda label: (0, int(label), "") if label.isdigit() else (1, 0, label))
    )


def preprocessing_of(shape: Shape, args: ImageClassifierArgs) -> images.Preprocessing:
    """The transform images go through: the model's sizes and normalisation, the resize of
    `args`."""
    return images.Preprocessing(
        channels=shape.input_channels,
        height=shape.height,
        width=shape.width,
        resize=args.resize,
        interpolation=args.interpolation,
        mean=shape.mean,
        std=shape.std,
    )


def _shape(args: ImageClassifierArgs, classes: tuple[str, ...], data_channels: int) -> Shape:
    from kubeloop_image_classifier.backbones import Shape

    backbone = args.backbone or "small-cnn"
    channels = args.channels or data_channels
    for name in ("mean", "std"):
        values = getattr(args, name)
        if values is not None and len(values) != channels:
            raise plugins.InvalidArguments(
                f"args.{name}: {len(values)} values for {channels} channels; give one per channel"
            )
    width = {"channels" if backbone == "small-cnn" else "base_width": args.base_width}
    return Shape(
        height=args.height,
        width=args.width,
        classes=classes,
        backbone=backbone,
        input_channels=channels,
        stem=args.stem or "imagenet",
        mean=tuple(args.mean or ()),
        std=tuple(args.std or ()),
        **{k: v for k, v in width.items() if v is not None},
    )


def _data_channels(datasets: tuple[plugins.Dataset, ...]) -> int:
    """3 when any data is image files or RGB arrays, else 1."""
    for dataset in datasets:
        for part in (*plugins.parts(dataset.train), *plugins.parts(dataset.validation)):
            if isinstance(part, plugins.ImageFiles) or (
                part.images.ndim == 4 and part.images.shape[1] == 3
            ):
                return 3
    return 1


def _check_images(
    datasets: tuple[plugins.Dataset, ...], preprocessing: images.Preprocessing
) -> None:
    """Images in memory must be of the input's size (files are resized as they are read)."""
    height, width = preprocessing.height, preprocessing.width
    for dataset in datasets:
        for part in (*plugins.parts(dataset.train), *plugins.parts(dataset.validation)):
            if isinstance(part, plugins.ImageFiles):
                continue
            if part.images.shape[-2:] != (height, width) or part.images.ndim not in (3, 4):
                raise plugins.InvalidArguments(
                    f"dataset {dataset.name!r} has images of shape "
                    f"{list(part.images.shape[1:])}, but args.height x args.width is "
                    f"{height} x {width}"
                )


def _check_base(shape: Shape, args: ImageClassifierArgs, labels: set[str], uri: str) -> None:
    problems = []
    if (shape.height, shape.width) != (args.height, args.width):
        problems.append(
            f"args.height x args.width is {args.height} x {args.width} but the base model "
            f"{uri} takes {shape.height} x {shape.width}"
        )
    given: dict[str, tuple[object, object]] = {
        "backbone": (args.backbone, shape.backbone),
        "stem": (args.stem, shape.stem),
        "channels": (args.channels, shape.input_channels),
        "mean": (tuple(args.mean) if args.mean else None, shape.mean or None),
        "std": (tuple(args.std) if args.std else None, shape.std or None),
    }
    if args.base_width is not None:
        own = shape.channels if shape.backbone == "small-cnn" else shape.base_width
        given["baseWidth"] = (args.base_width, own)
    for name, (asked, base) in given.items():
        if asked is not None and asked != base:
            problems.append(
                f"args.{name} is {asked!r} but the base model {uri} has {base!r}; a fine-tune "
                "keeps the base model's architecture (leave it out, or train from scratch)"
            )
    unknown = labels - set(shape.classes)
    if unknown:
        problems.append(
            f"labels {sorted(unknown)} are not among the base model's classes "
            f"{list(shape.classes)}; train from scratch (fineTune: none) to add classes"
        )
    if problems:
        raise plugins.InvalidArguments("; ".join(problems))


def _architecture(
    shape: Shape, args: ImageClassifierArgs, runtime: Any, kept: list[str]
) -> dict[str, str]:
    facts = {
        "backbone": shape.backbone,
        "stem": shape.stem if shape.backbone != "small-cnn" else "-",
        "input size": f"{shape.height} x {shape.width}",
        "channels": f"{shape.input_channels} ({'RGB' if shape.input_channels == 3 else 'gray'})",
        "precision": "bf16 autocast" if runtime.bf16 else "fp32",
    }
    if shape.backbone == "small-cnn":
        facts["width"] = str(shape.channels)
    elif shape.backbone.startswith("resnet"):
        facts["width"] = str(shape.base_width)
    if args.pretrained:
        facts["pretrained"] = args.pretrained + (
            f" (left as initialised: {', '.join(kept)})" if kept else ""
        )
    return facts
