"""FeedbackDataset manifests and feedback samples in the real S3 server, as the feedback API
stores them: shared by the operator tests on the emulator and on the real API server."""

from __future__ import annotations

import asyncio
import base64
import itertools
import uuid
from typing import Any

from ulid import ULID

from kubeloop.api.samples import FeedbackSample, sample_key
from kubeloop.storage import ObjectStore
from tests.conftest import ACCESS_KEY, SECRET_KEY
from tests.operator_harness import API

PREFIX = "feedback/digits/"
_clock = itertools.count(1_800_000_000_000, 1000)


def feedback_dataset(name: str, bucket: str, threshold: int, **retrain: Any) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "FeedbackDataset",
        "metadata": {"name": name},
        "spec": {
            "storage": {"bucket": bucket, "prefix": PREFIX},
            "classes": ["0", "1"],
            "slices": ["base", "new-user"],
            "inputShape": [2, 2],
            "retrain": {
                "threshold": threshold,
                "trainingTemplate": {
                    "plugin": {"name": "image-classifier"},
                    "datasets": [{"name": "base", "uri": "builtin://digits"}],
                    "baseModel": "models:/digits@champion",
                    "registeredModel": "digits",
                },
                **retrain,
            },
        },
    }


async def put_samples(store: ObjectStore, bucket: str, count: int) -> list[str]:
    """`count` feedback samples with increasing ULIDs, as the feedback API stores them."""
    keys = []
    for _ in range(count):
        sample_id = str(ULID.from_timestamp(next(_clock) / 1000))
        sample = FeedbackSample(
            id=sample_id,
            input=[0.0, 1.0, 1.0, 0.0],
            shape=[2, 2],
            label="1",
            slice="new-user",
            received_at="2026-01-01T00:00:00Z",
        )
        key = sample_key(PREFIX, sample_id)
        await asyncio.to_thread(store.put_json, bucket, key, sample.to_wire())
        keys.append(key)
    return keys


def new_bucket(store: ObjectStore) -> str:
    bucket = f"fd-{uuid.uuid4().hex[:12]}"
    store.ensure_bucket(bucket)
    return bucket


def s3_settings(store: ObjectStore) -> dict[str, str]:
    """The operator's KUBELOOP_S3_* settings for `store`."""
    return {
        "KUBELOOP_S3_ENDPOINT": store.endpoint,
        "KUBELOOP_S3_ACCESS_KEY": ACCESS_KEY,
        "KUBELOOP_S3_SECRET_KEY": SECRET_KEY,
    }


def s3_secret(name: str) -> dict[str, Any]:
    """A Secret with the S3 keys under the names the operator reads by default (the chart's
    s3.accessKeyKey and s3.secretKeyKey)."""
    data = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }
