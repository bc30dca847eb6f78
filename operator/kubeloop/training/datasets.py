"""Loading a TrainingJob's datasets: the bundled digits, and feedback snapshots from S3.

Sources a dataset may name:

    uri: builtin://digits              scikit-learn's digits (kubeloop.digits), with the
                                       slices base and new-user
    manifest: s3://bucket/key.json     a SnapshotManifest (filled in by the FeedbackDataset
                                       controller, beside feedbackDataset)
    uri: s3://bucket/key.json          the same, named directly
    uri: s3://bucket/prefix/           every sample under prefix/samples/, as one snapshot

How they are split and evaluated is kubeloop.training.splits.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image
from pydantic import ValidationError

from kubeloop import digits, feedback_store, plugins
from kubeloop.api import samples
from kubeloop.api.trainingjob import DatasetSource
from kubeloop.storage import ObjectNotFound, ObjectStore, S3Uri
from kubeloop.training.splits import Feedback, Reference

BUILTIN = "builtin://"


class DatasetError(RuntimeError):
    """A dataset could not be read as labelled images."""


def source_problems(source: DatasetSource) -> list[str]:
    """What makes `source` unloadable before anything is read; no side effects."""
    where = f"datasets[{source.name}]"
    if source.feedback_dataset is not None:
        if source.manifest is None:
            return [
                f"{where}: feedbackDataset {source.feedback_dataset!r} has no manifest; the "
                "FeedbackDataset controller fills it in when it creates the job (or give "
                "uri: s3://bucket/key of a snapshot manifest)"
            ]
        return _s3_problems(where + ".manifest", source.manifest)
    uri = source.uri or ""
    if uri.startswith(BUILTIN):
        name = uri.removeprefix(BUILTIN)
        if name not in _BUILTINS:
            return [f"{where}.uri: unknown builtin dataset {uri!r} (known: {_builtin_names()})"]
        return []
    if uri.startswith("s3://"):
        return _s3_problems(where + ".uri", uri)
    return [
        f"{where}.uri: {uri!r} is neither builtin://NAME ({_builtin_names()}) nor "
        "s3://bucket/key of a snapshot manifest or feedback prefix"
    ]


def is_feedback(source: DatasetSource) -> bool:
    return not (source.uri or "").startswith(BUILTIN)


def load_reference(source: DatasetSource) -> Reference:
    name = (source.uri or "").removeprefix(BUILTIN)
    return _BUILTINS[name](source.name)


def load_feedback(source: DatasetSource, store: ObjectStore) -> Feedback:
    """The samples of a snapshot manifest, or of every sample under an S3 prefix."""
    uri = S3Uri.parse(source.manifest or source.uri or "")
    try:
        found = feedback_store.read_samples(store, uri)
    except feedback_store.UnreadableSample as error:
        raise DatasetError(str(error)) from error
    except ValidationError as error:
        raise DatasetError(f"{uri}: not a snapshot manifest or feedback sample: {error}") from error
    except ObjectNotFound as error:
        raise DatasetError(f"dataset {source.name!r}: {error.args[0]} does not exist") from error
    bucket, generation = found.bucket, found.generation or source.generation
    loaded = [_sample(bucket, key, value) for key, value in found.samples]
    shapes = {image.shape for _, image in loaded}
    if len(shapes) > 1:
        raise DatasetError(f"{uri}: samples of different shapes {sorted(shapes)}")
    images = (
        np.stack([image for _, image in loaded]).astype(np.float32)
        if loaded
        else np.zeros((0, 0, 0), np.float32)
    )
    data = plugins.LabelledImages(
        images,
        np.asarray([s.label for s, _ in loaded], dtype=np.str_),
        np.asarray([s.slice or "" for s, _ in loaded], dtype=np.str_),
    )
    return Feedback(
        source.name,
        str(uri),
        tuple(s.id for s, _ in loaded),
        data,
        source.feedback_dataset,
        generation,
    )


def _sample(
    bucket: str, key: str, sample: samples.FeedbackSample
) -> tuple[samples.FeedbackSample, np.ndarray[Any, Any]]:
    try:
        image = (
            _decoded(sample.image)
            if sample.image is not None
            else np.asarray(sample.input, dtype=np.float32).reshape(sample.shape)
        )
    except (ValueError, OSError) as error:
        raise DatasetError(
            f"s3://{bucket}/{key}: sample {sample.id} is unreadable: {error}"
        ) from error
    while image.ndim > 2 and image.shape[0] == 1:  # (1, H, W) is a grayscale (H, W)
        image = image[0]
    if image.ndim != 2:
        raise DatasetError(
            f"s3://{bucket}/{key}: shape {sample.shape} is not a grayscale image (H, W)"
        )
    return sample, image


def _decoded(encoded: str) -> np.ndarray[Any, Any]:
    """A sample's image as it was sent (base64 PNG or JPEG): grayscale in [0, 1]."""
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def _digits(name: str) -> Reference:
    def part(split: str) -> plugins.LabelledImages:
        images, labels = digits.load_split(split)
        return plugins.LabelledImages.of(images, labels, "base")

    test = part("test")
    return Reference(
        name=name,
        source=BUILTIN + "digits",
        train=part("train"),
        validation=part("val"),
        test=test,
        slices={
            slice_: plugins.LabelledImages.of(*digits.load_slice(slice_), slice_)
            for slice_ in digits.SLICES
        },
    )


_BUILTINS: dict[str, Callable[[str], Reference]] = {"digits": _digits}


def _builtin_names() -> str:
    return ", ".join(BUILTIN + name for name in sorted(_BUILTINS))


def _s3_problems(where: str, uri: str) -> list[str]:
    try:
        S3Uri.parse(uri)
    except ValueError as error:
        return [f"{where}: {error}"]
    return []
