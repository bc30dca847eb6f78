"""Loading a TrainingJob's datasets: bundled data, image folders and manifests in S3, and
feedback snapshots.

Sources a dataset may name (`format` says which when the URI does not):

    uri: builtin://digits              scikit-learn's digits (kubeloop.digits), with the
                                       slices base and new-user
    uri: builtin://objects             coloured objects, RGB 32 x 32 (kubeloop.objects), with
                                       the slices base and new-user
    uri: s3://bucket/prefix/           an image folder: prefix/<class>/**/*.png|jpg|jpeg, one
      (format: image-folder)           sub-folder per class (torchvision's ImageFolder layout)
    uri: s3://bucket/images.csv        a manifest: CSV with a header naming key, label and
      (format: manifest)               optionally slice; or .jsonl, one {"key", "label",
                                       "slice"} per line. A key is s3://bucket/key, or a key
                                       relative to the manifest's folder
    manifest: s3://bucket/key.json     a SnapshotManifest of feedback samples (filled in by
                                       the FeedbackDataset controller, beside feedbackDataset)
    uri: s3://bucket/key.json          the same, named directly
    uri: s3://bucket/prefix/           every feedback sample under the prefix (inbox/,
      (format: feedback)               archive/, samples/), as one snapshot (inferred when
                                       one of those has any)

Image folders and manifests are reference data: only their keys are listed here, and the
plugin reads the images on demand (plugins.ImageFiles; a DataLoader streams them), so a
dataset larger than memory trains. Their examples are split by a hash of the key as feedback
is (kubeloop.training.splits), and an example without a slice tag is tagged with the
dataset's name (a dataset named base provides the slice base). Feedback samples
(kubeloop.feedback_store) are read whole: those sent as numbers become images in memory,
those sent as PNG or JPEG stay encoded and are decoded by the model's transform. How they
are split and evaluated is kubeloop.training.splits.

A source that lists nothing fails with "dataset not found or empty" naming the URI; a class
folder or label outside the dataset's `classes` is refused naming it, before any training.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import ValidationError

from kubeloop import digits, feedback_store, images, objects, plugins
from kubeloop.api import samples
from kubeloop.api.trainingjob import DatasetSource
from kubeloop.storage import ObjectNotFound, ObjectStore, S3Uri
from kubeloop.training import splits
from kubeloop.training.splits import Feedback, Reference

BUILTIN = "builtin://"
MANIFEST_SUFFIXES = (".csv", ".jsonl")
_FEEDBACK_FOLDERS = (samples.INBOX, samples.ARCHIVE, samples.SAMPLES)
Kind = Literal["builtin", "image-folder", "manifest", "feedback"]
Connect = Callable[[], ObjectStore]
"""Makes an ObjectStore; picklable (functools.partial), so each DataLoader worker opens its own."""


class DatasetError(RuntimeError):
    """A dataset could not be read as labelled images."""


def source_problems(source: DatasetSource) -> list[str]:
    """What makes `source` unloadable before anything is read; no side effects."""
    where = f"datasets[{source.name}]"
    if source.feedback_dataset is not None:
        problems = []
        if source.format not in (None, "feedback"):
            problems.append(
                f"{where}.format: a feedbackDataset is read as feedback, not {source.format}"
            )
        if source.manifest is None:
            return [
                *problems,
                f"{where}: feedbackDataset {source.feedback_dataset!r} has no manifest; the "
                "FeedbackDataset controller fills it in when it creates the job (or give "
                "uri: s3://bucket/key of a snapshot manifest)",
            ]
        return problems + _s3_problems(where + ".manifest", source.manifest)
    uri = source.uri or ""
    if uri.startswith(BUILTIN):
        name = uri.removeprefix(BUILTIN)
        if name not in _BUILTINS:
            return [f"{where}.uri: unknown builtin dataset {uri!r} (known: {_builtin_names()})"]
        if source.format is not None:
            return [f"{where}.format: builtin datasets have no format; remove it"]
        return []
    if uri.startswith("s3://"):
        problems = _s3_problems(where + ".uri", uri)
        key = uri.removeprefix("s3://").partition("/")[2]
        if source.format == "manifest" and not key.lower().endswith(MANIFEST_SUFFIXES):
            problems.append(f"{where}.uri: a manifest is a .csv or .jsonl file, not {uri!r}")
        if source.format == "image-folder" and key.lower().endswith((".json", *MANIFEST_SUFFIXES)):
            problems.append(f"{where}.uri: an image folder is a prefix (s3://bucket/folder/)")
        return problems
    return [
        f"{where}.uri: {uri!r} is neither builtin://NAME ({_builtin_names()}) nor s3://bucket/"
        "prefix/ of an image folder or feedback, nor s3://bucket/key of a manifest"
    ]


def is_feedback(source: DatasetSource) -> bool:
    """Whether `source` is FeedbackDataset samples, as far as the spec alone tells."""
    if source.feedback_dataset is not None or source.format == "feedback":
        return True
    uri = source.uri or ""
    return source.format is None and uri.startswith("s3://") and uri.endswith(".json")


def load(source: DatasetSource, connect: Connect) -> Reference | Feedback:
    """The dataset `source` names; DatasetError when it is missing, empty or broken."""
    kind = _declared_kind(source)
    store = connect() if kind != "builtin" else None
    inferred = kind is None
    if kind is None:
        assert store is not None
        kind = _listed_kind(source, store)
    if kind == "builtin":
        return load_reference(source)
    assert store is not None
    if kind == "feedback":
        return load_feedback(source, store)
    return load_files(source, store, connect, kind, inferred)


def load_reference(source: DatasetSource) -> Reference:
    """A bundled dataset (builtin://NAME)."""
    name = (source.uri or "").removeprefix(BUILTIN)
    return _BUILTINS[name](source.name)


def load_feedback(source: DatasetSource, store: ObjectStore) -> Feedback:
    """The samples of a snapshot manifest, or of every sample under an S3 prefix.

    Samples sent as numbers become images in memory, (H, W) or (C, H, W), which must all have
    one shape; samples sent as images (PNG or JPEG, kept as sent) stay encoded, to be decoded
    in colour and at the model's size by its transform like any image file.
    """
    uri = S3Uri.parse(source.manifest or source.uri or "")
    try:
        found = feedback_store.read_samples(store, uri)
    except feedback_store.UnreadableSample as error:
        raise DatasetError(str(error)) from error
    except ValidationError as error:
        raise DatasetError(f"{uri}: not a snapshot manifest or feedback sample: {error}") from error
    except ObjectNotFound as error:
        raise DatasetError(f"dataset {source.name!r}: {error.args[0]} does not exist") from error
    if not found.samples:
        raise _not_found(source, str(uri), "no feedback samples")
    bucket, generation = found.bucket, found.generation or source.generation
    numeric = [(k, s) for k, s in found.samples if s.image is None]
    encoded = [(k, s) for k, s in found.samples if s.image is not None]
    loaded = [_sample(bucket, key, value) for key, value in numeric]
    shapes = {image.shape for _, image in loaded}
    if len(shapes) > 1:
        raise DatasetError(f"{uri}: samples of different shapes {sorted(shapes)}")
    parts: list[plugins.Examples] = []
    if loaded:
        parts.append(
            plugins.LabelledImages(
                np.stack([image for _, image in loaded]).astype(np.float32),
                _labels([s for s, _ in loaded]),
                _tags([s for s, _ in loaded]),
            )
        )
    if encoded:
        parts.append(_encoded(bucket, encoded))
    data = plugins.concat(parts)
    _check_classes(source, str(uri), data.labels, "label")
    ordered = [s for s, _ in loaded] + [s for _, s in encoded]  # the order of `data`
    return Feedback(
        source.name,
        str(uri),
        tuple(s.id for s in ordered),
        data,
        source.feedback_dataset,
        generation,
    )


@dataclass(frozen=True)
class EncodedImages:
    """Images held as their encoded bytes (feedback samples kept as sent), by sample id."""

    where_from: str
    data: dict[str, bytes] = field(repr=False)

    def read(self, key: str) -> bytes:
        return self.data[key]

    def where(self, key: str) -> str:
        return f"{self.where_from} sample {key}"


def _encoded(bucket: str, found: list[tuple[str, samples.FeedbackSample]]) -> plugins.ImageFiles:
    data = {}
    for key, sample in found:
        try:
            data[sample.id] = base64.b64decode(sample.image or "", validate=True)
        except (binascii.Error, ValueError) as error:
            raise DatasetError(
                f"s3://{bucket}/{key}: sample {sample.id}'s image is not base64: {error}"
            ) from None
    chosen = [s for _, s in found]
    return plugins.ImageFiles(
        np.asarray([s.id for s in chosen], dtype=np.str_),
        _labels(chosen),
        _tags(chosen),
        EncodedImages(f"s3://{bucket}", data),
    )


def _labels(found: list[samples.FeedbackSample]) -> np.ndarray[Any, np.dtype[np.str_]]:
    return np.asarray([s.label for s in found], dtype=np.str_)


def _tags(found: list[samples.FeedbackSample]) -> np.ndarray[Any, np.dtype[np.str_]]:
    return np.asarray([s.slice or "" for s in found], dtype=np.str_)


@dataclass(frozen=True)
class S3Images:
    """Reads images of one bucket; each process (DataLoader worker) opens its own client."""

    connect: Connect
    bucket: str

    def read(self, key: str) -> bytes:
        return _store(self.connect).get_bytes(self.bucket, key)

    def where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def load_files(
    source: DatasetSource, store: ObjectStore, connect: Connect, kind: Kind, inferred: bool = False
) -> Reference:
    """An image folder or a manifest as reference data: keys listed here, images read later.

    `inferred`: the URI did not say it is an image folder (it may have been meant as feedback).
    """
    uri = S3Uri.parse(source.uri or "")
    if kind == "image-folder":
        keys, labels, tags = _image_folder(source, store, uri, inferred)
        bucket = uri.bucket
    else:
        bucket, keys, labels, tags = _manifest(source, store, uri)
    _check_classes(source, str(uri), labels, "class folder" if kind == "image-folder" else "label")
    files = plugins.ImageFiles(
        np.asarray(keys, dtype=np.str_),
        np.asarray(labels, dtype=np.str_),
        np.asarray([tag or source.name for tag in tags], dtype=np.str_),
        S3Images(connect, bucket),
    )
    parts = np.asarray([splits.feedback_part(key) for key in keys], dtype=np.str_)
    test = files.subset(parts == "test")
    return Reference(
        name=source.name,
        source=str(uri),
        train=files.subset(parts == "train"),
        validation=files.subset(parts == "val"),
        test=test,
        slices={str(tag): test.subset(test.slices == tag) for tag in np.unique(test.slices)},
    )


def _image_folder(
    source: DatasetSource, store: ObjectStore, uri: S3Uri, inferred: bool
) -> tuple[list[str], list[str], list[str]]:
    prefix = _folder(uri.key)
    keys, labels = [], []
    for key in store.list_keys(uri.bucket, prefix):
        relative = key[len(prefix) :]
        label, _, rest = relative.partition("/")
        if rest and images.is_image_name(rest):  # files beside the class folders are no class
            keys.append(key)
            labels.append(label)
    if not keys:
        why = "no class folders of PNG or JPEG images (prefix/<class>/*.png)"
        if inferred:
            why = f"no feedback samples ({', '.join(_FEEDBACK_FOLDERS)}) and {why}"
        raise _not_found(source, str(uri), why)
    return keys, labels, [""] * len(keys)


def _manifest(
    source: DatasetSource, store: ObjectStore, uri: S3Uri
) -> tuple[str, list[str], list[str], list[str]]:
    try:
        text = store.get_bytes(uri.bucket, uri.key).decode("utf-8-sig")
    except ObjectNotFound:
        raise _not_found(source, str(uri), "the manifest does not exist") from None
    except UnicodeDecodeError as error:
        raise DatasetError(f"manifest {uri} is not UTF-8 text: {error}") from None
    rows = _jsonl_rows(text, uri) if uri.key.lower().endswith(".jsonl") else _csv_rows(text, uri)
    if not rows:
        raise _not_found(source, str(uri), "the manifest lists no images")
    folder = uri.key.rpartition("/")[0]
    buckets, keys = set(), []
    for line, row in rows:
        bucket, key = _image_key(row["key"], uri.bucket, folder)
        if not images.is_image_name(key):
            raise DatasetError(f"manifest {uri} line {line}: {row['key']!r} is not a .png or .jpg")
        buckets.add(bucket)
        keys.append(key)
    if len(buckets) > 1:
        raise DatasetError(f"manifest {uri}: images in several buckets {sorted(buckets)}; use one")
    return buckets.pop(), keys, [r["label"] for _, r in rows], [r.get("slice", "") for _, r in rows]


def _csv_rows(text: str, uri: S3Uri) -> list[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    fields = set(reader.fieldnames or [])
    if not {"key", "label"} <= fields or not fields <= {"key", "label", "slice"}:
        raise DatasetError(
            f"manifest {uri}: the header must name key and label (and optionally slice), "
            f"got {reader.fieldnames}"
        )
    return [(number, _row(dict(row), uri, number)) for number, row in enumerate(reader, start=2)]


def _jsonl_rows(text: str, uri: S3Uri) -> list[tuple[int, dict[str, str]]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetError(f"manifest {uri} line {number}: not JSON ({error})") from None
        if not isinstance(value, dict) or not set(value) <= {"key", "label", "slice"}:
            raise DatasetError(
                f"manifest {uri} line {number}: expected an object with key, label and "
                "optionally slice"
            )
        rows.append((number, _row(value, uri, number)))
    return rows


def _row(value: dict[str, Any], uri: S3Uri, number: int) -> dict[str, str]:
    row = {k: v for k, v in value.items() if v not in (None, "")}
    for name in ("key", "label"):
        if not isinstance(row.get(name), str):
            raise DatasetError(f"manifest {uri} line {number}: {name} is missing or not text")
    if not isinstance(row.get("slice", ""), str):
        raise DatasetError(f"manifest {uri} line {number}: slice is not text")
    return row


def _image_key(key: str, bucket: str, folder: str) -> tuple[str, str]:
    if key.startswith("s3://"):
        parsed = S3Uri.parse(key)
        return parsed.bucket, parsed.key
    return bucket, f"{folder}/{key.lstrip('/')}" if folder else key.lstrip("/")


def _check_classes(source: DatasetSource, uri: str, labels: Any, what: str) -> None:
    if not source.classes:
        return
    unknown = sorted(set(np.asarray(labels, dtype=np.str_).tolist()) - set(source.classes))
    if unknown:
        raise DatasetError(
            f"dataset {source.name!r} at {uri}: {what}s {unknown} are not among its classes "
            f"{list(source.classes)}; rename or remove them, or add them to classes"
        )


def _declared_kind(source: DatasetSource) -> Kind | None:
    if source.feedback_dataset is not None:
        return "feedback"
    uri = source.uri or ""
    if uri.startswith(BUILTIN):
        return "builtin"
    if source.format is not None:
        return source.format
    key = uri.lower()
    if key.endswith(MANIFEST_SUFFIXES):
        return "manifest"
    if key.endswith(".json"):
        return "feedback"
    return None


def _listed_kind(source: DatasetSource, store: ObjectStore) -> Kind:
    """A prefix holding feedback (inbox/, archive/ or samples/) is feedback, anything else an
    image folder."""
    uri = S3Uri.parse(source.uri or "")
    if any(store.list_keys(uri.bucket, _folder(uri.key) + f) for f in _FEEDBACK_FOLDERS):
        return "feedback"
    return "image-folder"


def _not_found(source: DatasetSource, uri: str, why: str) -> DatasetError:
    return DatasetError(
        f"dataset {source.name!r}: {uri} not found or empty ({why}); check the bucket and "
        "prefix, and that the data was uploaded there"
    )


def _folder(key: str) -> str:
    return key if key.endswith("/") or not key else key + "/"


_STORES: dict[tuple[int, int], ObjectStore] = {}


def _store(connect: Connect) -> ObjectStore:
    """One ObjectStore per process and reader: a forked worker must not share the parent's
    connections."""
    slot = (os.getpid(), id(connect))
    if slot not in _STORES:
        _STORES[slot] = connect()
    return _STORES[slot]


def _sample(
    bucket: str, key: str, sample: samples.FeedbackSample
) -> tuple[samples.FeedbackSample, np.ndarray[Any, Any]]:
    """A numeric sample's image: (H, W) grayscale, or (C, H, W) for C > 1 channels."""
    try:
        image = np.asarray(sample.input, dtype=np.float32).reshape(sample.shape)
    except (ValueError, TypeError) as error:
        raise DatasetError(
            f"s3://{bucket}/{key}: sample {sample.id} is unreadable: {error}"
        ) from error
    while image.ndim > 2 and image.shape[0] == 1:  # (1, H, W) is a grayscale (H, W)
        image = image[0]
    if image.ndim not in (2, 3):
        raise DatasetError(
            f"s3://{bucket}/{key}: shape {sample.shape} is not an image (H, W) or (C, H, W)"
        )
    return sample, image


Arrays = tuple[np.ndarray[Any, np.dtype[np.float32]], np.ndarray[Any, np.dtype[np.str_]]]


def _bundled(
    name: str,
    source: str,
    split: Callable[[str], Arrays],
    slice_: Callable[[str], Arrays],
    names: tuple[str, ...],
) -> Reference:
    def part(which: str) -> plugins.LabelledImages:
        return plugins.LabelledImages.of(*split(which), "base")

    def tagged(tag: str) -> plugins.LabelledImages:
        images, labels = slice_(tag)
        return plugins.LabelledImages.of(images, labels, tag)

    return Reference(
        name=name,
        source=source,
        train=part("train"),
        validation=part("val"),
        test=part("test"),
        slices={tag: tagged(tag) for tag in names},
    )


def _digits(name: str) -> Reference:
    return _bundled(name, BUILTIN + "digits", digits.load_split, digits.load_slice, digits.SLICES)


def _objects(name: str) -> Reference:
    return _bundled(
        name, BUILTIN + "objects", objects.load_split, objects.load_slice, objects.SLICES
    )


_BUILTINS: dict[str, Callable[[str], Reference]] = {"digits": _digits, "objects": _objects}


def _builtin_names() -> str:
    return ", ".join(BUILTIN + name for name in sorted(_BUILTINS))


def _s3_problems(where: str, uri: str) -> list[str]:
    try:
        S3Uri.parse(uri)
    except ValueError as error:
        return [f"{where}: {error}"]
    return []
