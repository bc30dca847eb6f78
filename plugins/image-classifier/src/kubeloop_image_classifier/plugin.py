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

from kubeloop import plugins
from kubeloop_image_classifier.arguments import ImageClassifierArgs

if TYPE_CHECKING:
    from kubeloop_image_classifier.network import Network

NAME = "image-classifier"


class ImageClassifier(plugins.Plugin["Network", ImageClassifierArgs]):
    """A small CNN for grayscale H x W images, trained from scratch or fine-tuned."""

    def info(self) -> plugins.PluginInfo:
        return plugins.PluginInfo(
            name=NAME,
            version=importlib.metadata.version("kubeloop-image-classifier"),
            description=self.__doc__ or "",
            arguments=ImageClassifierArgs,
            datasets=(
                plugins.DatasetRequirement(
                    plugins.LABELLED_IMAGES,
                    "grayscale images by class; reference data and feedback snapshots",
                ),
            ),
        )

    def train(
        self, context: plugins.TrainingContext[ImageClassifierArgs]
    ) -> plugins.TrainedModel[Network]:
        import torch

        from kubeloop_image_classifier import fit, network

        mode = context.args.mode(fine_tuning=context.base_model is not None)
        args = context.args.model_copy(update={"fine_tune": mode})
        height, width = args.height, args.width
        fit.seed_everything(args.seed)
        torch.set_num_threads(fit.cpu_threads(height, width))
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        labels = {
            str(label)
            for d in context.datasets
            for label in np.concatenate([d.train.labels, d.validation.labels])
        }
        _check_images(context.datasets, height, width)
        if context.base_model is None:
            net = network.Network(network.Shape(height, width, natural_sort(labels)))
        else:
            net = network.load(context.base_model.checkpoint)
            _check_base(net, height, width, labels, context.base_model.uri)
        context.logger.info(
            "training %s on %s: %d classes, fine-tune %s, %d threads",
            NAME,
            device,
            len(net.shape.classes),
            mode,
            torch.get_num_threads(),
        )
        best_epoch, history = fit.fit(net, context, args, device)
        net.cpu().eval()
        return plugins.TrainedModel(
            model=net,
            classes=net.shape.classes,
            input_shape=(1, height, width),
            device=device.type,
            best_epoch=best_epoch,
            history=history,
        )

    def predict(
        self, model: plugins.TrainedModel[Network], images: NDArray[np.float32]
    ) -> dict[str, Any]:
        import torch

        from kubeloop_image_classifier.network import Served

        served = Served(model.model).cpu().eval()
        with torch.no_grad():
            batch = torch.from_numpy(np.asarray(images, dtype=np.float32)[:, None])
            probabilities, embedding = served(batch)
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


def _check_images(datasets: tuple[plugins.Dataset, ...], height: int, width: int) -> None:
    for dataset in datasets:
        for part in (dataset.train, dataset.validation):
            if len(part) and part.images.shape[1:] != (height, width):
                raise plugins.InvalidArguments(
                    f"dataset {dataset.name!r} has images of shape "
                    f"{list(part.images.shape[1:])}, but args.height x args.width is "
                    f"{height} x {width}"
                )


def _check_base(net: Network, height: int, width: int, labels: set[str], uri: str) -> None:
    shape = net.shape
    problems = []
    if (shape.height, shape.width) != (height, width):
        problems.append(
            f"args.height x args.width is {height} x {width} but the base model {uri} takes "
            f"{shape.height} x {shape.width}"
        )
    unknown = labels - set(shape.classes)
    if unknown:
        problems.append(
            f"labels {sorted(unknown)} are not among the base model's classes "
            f"{list(shape.classes)}; train from scratch (fineTune: none) to add classes"
        )
    if problems:
        raise plugins.InvalidArguments("; ".join(problems))
