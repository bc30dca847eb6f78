"""Loading from a real S3 server: feedback snapshots, image folders and manifests (PNG and
JPEG of mixed sizes and modes), the errors that name what is missing; the bundled data."""

import base64
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from kubeloop import digits, images, plugins
from kubeloop.api import samples
from kubeloop.api.trainingjob import DatasetSource
from kubeloop.images import Preprocessing
from kubeloop.storage import ObjectStore
from kubeloop.training import datasets, splits

BUCKET = "tj-datasets"


def _put_samples(store: ObjectStore, prefix: str, count: int) -> list[str]:
    images, labels = digits.new_user_feedback(count, seed=2)
    keys = []
    for n, (image, label) in enumerate(zip(images, labels, strict=True)):
        sample = samples.FeedbackSample(
            id=f"01JTEST{n:019d}",
            input=image.ravel().tolist(),
            shape=[1, 8, 8],  # a channel axis of 1 is still a grayscale image
            label=str(label),
            slice="new-user" if n % 2 else None,
            received_at="2026-01-01T00:00:00Z",
        )
        keys.append(samples.sample_key(prefix, sample.id))
        store.put_json(BUCKET, keys[-1], sample.to_wire())
    return keys


def test_a_manifest_and_a_prefix_load_the_same_samples(object_store: ObjectStore) -> None:
    object_store.ensure_bucket(BUCKET)
    prefix = "loading/"
    keys = _put_samples(object_store, prefix, 6)
    # Snapshot 4 took samples 2 and 3; snapshot 3, before it, samples 0 and 1: the chain.
    third = samples.SnapshotManifest(
        dataset="fd", generation=3, bucket=BUCKET, segments=keys[:2], created_at="T"
    )
    object_store.put_json(BUCKET, samples.snapshot_key(prefix, 3), third.to_wire())
    manifest = samples.SnapshotManifest(
        dataset="fd",
        generation=4,
        bucket=BUCKET,
        segments=keys[2:4],
        previous=f"s3://{BUCKET}/{samples.snapshot_key(prefix, 3)}",
        created_at="2026-01-01T00:00:00Z",
    )
    object_store.put_json(BUCKET, samples.snapshot_key(prefix, 4), manifest.to_wire())
    uri = f"s3://{BUCKET}/{samples.snapshot_key(prefix, 4)}"

    frozen = datasets.load_feedback(
        DatasetSource(name="feedback", feedback_dataset="fd", manifest=uri), object_store
    )
    assert frozen.generation == 4
    assert len(frozen.ids) == 4
    assert frozen.samples.images.shape == (4, 8, 8)
    assert frozen.samples.slices.tolist() == ["", "new-user", "", "new-user"]
    expected, labels = digits.new_user_feedback(6, seed=2)
    assert np.array_equal(frozen.samples.images, expected[:4])
    assert frozen.samples.labels.tolist() == labels[:4].tolist()

    everything = datasets.load_feedback(
        DatasetSource(name="feedback", uri=f"s3://{BUCKET}/loading"), object_store
    )
    assert everything.ids == tuple(key.rsplit("/", 1)[1].removesuffix(".json") for key in keys)
    assert everything.generation is None


def test_broken_data_is_named(object_store: ObjectStore) -> None:
    object_store.ensure_bucket(BUCKET)
    object_store.put_json(BUCKET, "broken/samples/01JBAD.json", {"id": "01JBAD", "label": "3"})
    with pytest.raises(datasets.DatasetError, match=r"s3://tj-datasets/broken/samples/01JBAD"):
        datasets.load_feedback(DatasetSource(name="f", uri=f"s3://{BUCKET}/broken/"), object_store)
    with pytest.raises(datasets.DatasetError, match="does not exist"):
        datasets.load_feedback(
            DatasetSource(name="f", uri=f"s3://{BUCKET}/absent/gen-1.json"), object_store
        )


def test_the_bundled_digits_provide_both_slices() -> None:
    reference = datasets.load_reference(DatasetSource(name="base", uri="builtin://digits"))
    assert set(reference.slices) == {"base", "new-user"}
    assert set(reference.train.slices) == {"base"}
    assert len(reference.train) + len(reference.validation) + len(reference.test) == 1797
    assert datasets.source_problems(DatasetSource(name="base", uri="builtin://digits")) == []


def test_the_bundled_digits_are_scikit_learns_read_without_importing_it() -> None:
    from sklearn.datasets import load_digits

    expected = load_digits()
    split_images = [digits.load_split(name)[0] for name in digits.SPLITS]
    split_labels = [digits.load_split(name)[1] for name in digits.SPLITS]
    assert sum(len(labels) for labels in split_labels) == len(expected.target)
    ours = {
        (image.tobytes(), str(label))
        for images, labels in zip(split_images, split_labels, strict=True)
        for image, label in zip(images, labels, strict=True)
    }
    theirs = {
        ((image / 16.0).astype(np.float32).tobytes(), str(target))
        for image, target in zip(expected.images, expected.target, strict=True)
    }
    assert ours == theirs
    loaded = "from kubeloop import digits; import sys; digits.load_split('train'); "
    loaded += "print('sklearn' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", loaded], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def _image(rng: np.random.Generator, size: tuple[int, int], mode: str, format_: str) -> bytes:
    pixels = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").convert(mode).save(buffer, format=format_)
    return buffer.getvalue()


def _image_folder(store: ObjectStore, prefix: str, per_class: int = 6) -> dict[str, str]:
    """cat/ and dog/ of PNG and JPEG files in several sizes and colour modes, plus files that
    are no images of a class; returns key -> class."""
    rng = np.random.default_rng(0)
    labels = {}
    for label in ("cat", "dog"):
        for n in range(per_class):
            format_, suffix = ("JPEG", "jpg") if n % 2 else ("PNG", "png")
            mode = "L" if n % 3 == 0 else "RGB"
            key = f"{prefix}{label}/sub/{n}.{suffix}" if n == 5 else f"{prefix}{label}/{n}.{suffix}"
            store.put_bytes(BUCKET, key, _image(rng, (10 + 7 * n, 12 + 3 * n), mode, format_))
            labels[key] = label
    store.put_bytes(BUCKET, f"{prefix}README.txt", b"not a class")
    store.put_bytes(BUCKET, f"{prefix}cat/notes.txt", b"not an image")
    return labels


def _connect(store: ObjectStore) -> datasets.Connect:
    return lambda: store


def test_an_image_folder_is_listed_split_and_read_on_demand(object_store: ObjectStore) -> None:
    object_store.ensure_bucket(BUCKET)
    labels = _image_folder(object_store, "pets/")
    source = DatasetSource(name="base", uri=f"s3://{BUCKET}/pets/")
    loaded = datasets.load(source, _connect(object_store))
    assert isinstance(loaded, splits.Reference)
    parts = [loaded.train, loaded.validation, loaded.test]
    assert all(isinstance(p, plugins.ImageFiles) for p in parts)
    listed = {str(k): str(v) for p in parts for k, v in zip(p.keys, p.labels, strict=True)}  # type: ignore[union-attr]
    assert listed == labels  # every image, in its class; no stray file
    for part, name in zip(parts, ("train", "val", "test"), strict=True):
        assert all(splits.feedback_part(str(k)) == name for k in part.keys)  # type: ignore[union-attr]
    assert set(loaded.slices) <= {"base"}  # untagged images are the dataset's own slice
    transform = images.Preprocessing(channels=3, height=8, width=8)
    batch = loaded.train.load(np.arange(len(loaded.train)), transform)
    assert batch.shape == (len(loaded.train), 3, 8, 8)  # every size and mode, one shape


def test_an_unknown_class_folder_is_refused_naming_it(object_store: ObjectStore) -> None:
    object_store.ensure_bucket(BUCKET)
    _image_folder(object_store, "zoo/", per_class=1)
    source = DatasetSource(name="base", uri=f"s3://{BUCKET}/zoo/", classes=["cat", "cow"])
    with pytest.raises(datasets.DatasetError, match=r"class folders \['dog'\] are not among"):
        datasets.load(source, _connect(object_store))


@pytest.mark.parametrize("uri", [f"s3://{BUCKET}/does-not-exist/", "s3://no-such-bucket/x/"])
def test_a_missing_or_empty_prefix_says_so(object_store: ObjectStore, uri: str) -> None:
    """Issue 11: this failed in torch with a kernel-size error, far from the cause."""
    object_store.ensure_bucket(BUCKET)
    with pytest.raises(datasets.DatasetError, match=rf"{uri} not found or empty"):
        datasets.load(DatasetSource(name="base", uri=uri), _connect(object_store))


def test_manifests_in_csv_and_json_lines(object_store: ObjectStore) -> None:
    object_store.ensure_bucket(BUCKET)
    labels = _image_folder(object_store, "listed/images/", per_class=3)
    keys = sorted(labels)
    rows = ["key,label,slice"]
    rows += [
        f"{k.removeprefix('listed/')},{labels[k]},{'night' if i % 2 else ''}"
        for i, k in enumerate(keys[:3])
    ]
    rows += [f"s3://{BUCKET}/{k},{labels[k]}," for k in keys[3:]]
    object_store.put_bytes(BUCKET, "listed/train.csv", "\n".join(rows).encode())
    loaded = datasets.load(
        DatasetSource(name="base", uri=f"s3://{BUCKET}/listed/train.csv"), _connect(object_store)
    )
    assert isinstance(loaded, splits.Reference)
    everything = plugins.concat([loaded.train, loaded.validation, loaded.test])
    assert sorted(everything.labels.tolist()) == sorted(labels[k] for k in keys)
    assert sorted(set(everything.slices.tolist())) == ["base", "night"]

    lines = [json.dumps({"key": k.removeprefix("listed/"), "label": labels[k]}) for k in keys]
    object_store.put_bytes(BUCKET, "listed/all.jsonl", "\n".join(lines).encode())
    jsonl = datasets.load(
        DatasetSource(name="b", uri=f"s3://{BUCKET}/listed/all.jsonl"), _connect(object_store)
    )
    assert isinstance(jsonl, splits.Reference)
    assert len(jsonl.train) + len(jsonl.validation) + len(jsonl.test) == len(keys)

    object_store.put_bytes(BUCKET, "listed/bad.csv", b"path,class\na.png,cat\n")
    with pytest.raises(datasets.DatasetError, match="header must name key and label"):
        datasets.load(
            DatasetSource(name="b", uri=f"s3://{BUCKET}/listed/bad.csv"), _connect(object_store)
        )


def test_a_feedback_prefix_is_still_feedback(object_store: ObjectStore) -> None:
    object_store.ensure_bucket(BUCKET)
    _put_samples(object_store, "inferred/", 3)
    loaded = datasets.load(
        DatasetSource(name="f", uri=f"s3://{BUCKET}/inferred/"), _connect(object_store)
    )
    assert isinstance(loaded, splits.Feedback)
    assert len(loaded.ids) == 3


def test_formats_that_cannot_apply_are_problems() -> None:
    assert datasets.source_problems(
        DatasetSource(name="b", uri="s3://b/images/", format="manifest")
    ) == ["datasets[b].uri: a manifest is a .csv or .jsonl file, not 's3://b/images/'"]
    assert datasets.source_problems(
        DatasetSource(name="b", uri="builtin://objects", format="image-folder")
    ) == ["datasets[b].format: builtin datasets have no format; remove it"]


def test_segments_and_images_as_sent_are_read(object_store: ObjectStore) -> None:
    object_store.ensure_bucket(BUCKET)
    images, labels = digits.new_user_feedback(3, seed=3)
    png = io.BytesIO()
    Image.fromarray((images[2] * 255).round().astype(np.uint8)).save(png, format="PNG")
    lines = [
        samples.FeedbackSample(
            id=f"01JSEG{n:020d}",
            input=images[n].ravel().tolist(),
            shape=[8, 8],
            label=str(labels[n]),
            received_at="T",
        )
        for n in range(2)
    ]
    lines.append(
        samples.FeedbackSample(
            id="01JSEG00000000000000000002",
            image=base64.b64encode(png.getvalue()).decode(),
            content_type="image/png",
            label=str(labels[2]),
            received_at="T",
        )
    )
    key = samples.segment_key("segments/", "01JSEG", len(lines))
    body = b"\n".join(line.model_dump_json(by_alias=True).encode() for line in lines)
    object_store.put_bytes(BUCKET, key, body)
    loaded = datasets.load_feedback(
        DatasetSource(name="feedback", uri=f"s3://{BUCKET}/segments/"), object_store
    )
    assert len(loaded.ids) == 3
    assert loaded.samples.labels.tolist() == [str(label) for label in labels]
    # The image sent as a PNG stays encoded until the model's transform decodes it.
    assert [type(p).__name__ for p in plugins.parts(loaded.samples)] == [
        "LabelledImages",
        "ImageFiles",
    ]
    as_inputs = loaded.samples.load(np.arange(3), Preprocessing(channels=1, height=8, width=8))
    assert np.allclose(as_inputs[:, 0], images, atol=1 / 255)


def test_colour_images_sent_as_feedback_keep_their_colour(object_store: ObjectStore) -> None:
    """An RGB JPEG of any size, kept as sent, becomes an RGB input of the model's size."""
    object_store.ensure_bucket(BUCKET)
    pixels = np.zeros((20, 30, 3), np.uint8)
    pixels[..., 0] = 250  # red
    jpeg = io.BytesIO()
    Image.fromarray(pixels).save(jpeg, format="JPEG")
    sample = samples.FeedbackSample(
        id="01JRGB00000000000000000000",
        image=base64.b64encode(jpeg.getvalue()).decode(),
        content_type="image/jpeg",
        label="red",
        received_at="T",
    )
    key = samples.segment_key("colour/", "01JRGB", 1)
    object_store.put_bytes(BUCKET, key, sample.model_dump_json(by_alias=True).encode())
    loaded = datasets.load_feedback(
        DatasetSource(name="feedback", uri=f"s3://{BUCKET}/colour/"), object_store
    )
    rgb = loaded.samples.load(np.arange(1), Preprocessing(channels=3, height=8, width=8))
    assert rgb.shape == (1, 3, 8, 8)
    assert rgb[0, 0].mean() > 0.9
    assert rgb[0, 1:].mean() < 0.1
