"""Benchmark 3, feedback ingest: acknowledged samples per second.

Subject: POST /v1/feedback/DATASET on the real predictor (JSON: an 8 x 8 input, a label, a
slice), 16 concurrent callers; a sample counts once the predictor answered 201, which it
does only after S3 acknowledged the write.
Baseline, in the same run and interleaved with it: raw S3 put_object (the minio client
the predictor uses, without kubeloop around it) of the same samples as the API would
store them (api.samples.FeedbackSample JSON under a ULID key), from 16 threads, to the
same S3 server; each put also waits for S3's acknowledgement, so durability is the same.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from urllib.parse import urlparse

import numpy as np
import urllib3
from minio import Minio
from ulid import ULID

from bench import load, models
from bench.common import Latencies, LoadSettings, Result, compare, interleaved, log
from bench.predictor import EXAMPLE_BATCHING
from bench.servers import ACCESS_KEY, BUCKET, DATASET, PREFIX, SECRET_KEY, Stack
from kubeloop import digits
from kubeloop.api import samples
from kubeloop.storage import ObjectStore

SUBJECT = "kubeloop feedback API: POST /v1/feedback/DATASET (JSON), 201 after the S3 write"
BASELINE = "raw S3 put_object (minio client) of the same sample JSON, same S3 server"


def run(stack: Stack, quick: bool) -> list[Result]:
    settings = LoadSettings.of(quick, concurrency=16)
    model = models.digits_model(settings.model_epochs)
    predictor = stack.predictor(model.onnx, *EXAMPLE_BATCHING)
    ObjectStore(stack.s3(), ACCESS_KEY, SECRET_KEY).ensure_bucket(BUCKET)
    images, labels = digits.new_user_feedback(256, seed=2)
    bodies = [
        json.dumps({"input": x.tolist(), "label": str(y), "slice": digits.NEW_USER}).encode()
        for x, y in zip(images, labels, strict=True)
    ]
    stored = [_stored(image, str(label)) for image, label in zip(images, labels, strict=True)]
    client = _client(stack.s3(), settings.concurrency)

    def put(i: int) -> object:
        body = stored[i % len(stored)]
        key = samples.sample_key(f"{PREFIX}raw/", str(ULID()))
        return client.put_object(BUCKET, key, io.BytesIO(body), len(body), "application/json")

    log(f"feedback: {settings.concurrency} concurrent callers")
    url = f"{predictor.url}/v1/feedback/{DATASET}"
    measured = interleaved(
        {
            "api": lambda: load.http(url, bodies, settings.concurrency, settings.seconds, 201),
            "s3": lambda: load.calls(put, settings.concurrency, settings.seconds),
        },
        settings.rounds,
    )
    api, s3 = Latencies.merge(measured["api"]), Latencies.merge(measured["s3"])
    return [
        Result(
            "feedback.ingest.vs_s3_put",
            "throughput",
            "acknowledged samples/s",
            api.throughput,
            s3.throughput,
            SUBJECT,
            BASELINE,
            details={
                "p50_ms": compare(api.percentile_ms(50), s3.percentile_ms(50)),
                "p99_ms": compare(api.percentile_ms(99), s3.percentile_ms(99)),
                "bytes_per_sample": {
                    "request": float(np.mean([len(b) for b in bodies])),
                    "stored": float(np.mean([len(b) for b in stored])),
                },
            },
            config={
                "concurrency": settings.concurrency,
                "seconds_per_run": settings.seconds,
                "rounds": settings.rounds,
                "s3": "SeaweedFS (weed mini) on 127.0.0.1",
            },
        )
    ]


def _stored(image: np.ndarray, label: str) -> bytes:
    """The object the feedback API writes for this sample (FeedbackSample's wire JSON)."""
    sample = samples.FeedbackSample(
        id=str(ULID()),
        input=image.reshape(-1).tolist(),
        shape=list(image.shape),
        label=label,
        slice=digits.NEW_USER,
        received_at=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    )
    return json.dumps(sample.to_wire()).encode()


def _client(endpoint: str, connections: int) -> Minio:
    parsed = urlparse(endpoint)
    http = urllib3.PoolManager(maxsize=connections, retries=urllib3.Retry(total=0))
    return Minio(
        parsed.netloc,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        region="us-east-1",
        secure=False,
        http_client=http,
    )
