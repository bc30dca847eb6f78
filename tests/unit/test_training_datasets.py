"""Loading feedback snapshots from a real S3 server, and the bundled digits."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from kubeloop import digits
from kubeloop.api import samples
from kubeloop.api.trainingjob import DatasetSource
from kubeloop.storage import ObjectStore
from kubeloop.training import datasets

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
    assert np.allclose(loaded.samples.images, images, atol=1 / 255)
