"""Feedback durability: the S3 server is killed mid-stream and restarted on its data. Every
acknowledged sample is readable afterwards; while storage is down feedback gets 503 with
Retry-After and predictions go on; the prediction log catches up; live accuracy counts
exactly the acknowledged judgements and is written at shutdown."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from kubeloop import feedback_store
from kubeloop.api import samples
from kubeloop.local import services
from kubeloop.storage import ObjectStore
from tests import serving_models
from tests.conftest import ACCESS_KEY, SECRET_KEY
from tests.serving_process import shared_model, start_predictor

pytestmark = pytest.mark.slow

BUCKET = "durable"
PREFIX = "fb/"
DATASET = "durable-fb"
X = serving_models.digit_like_inputs(1, seed=5)[0].tolist()
PREDICTOR_ARGS = [
    "--feedback-dataset", DATASET, "--feedback-bucket", BUCKET, "--feedback-prefix", PREFIX,
    "--classes", ",".join(serving_models.CLASSES), "--input-shape", "8,8",
    "--log-flush-seconds", "0.5", "--stats-flush-seconds", "600",
]  # fmt: skip


def test_every_acknowledged_sample_survives_a_storage_crash(
    tmp_path: Path, mlflow_server: services.Service
) -> None:
    model = shared_model(mlflow_server.url)
    port = services.free_port()
    s3 = services.start_s3(tmp_path / "s3", port=port)
    store = ObjectStore(s3.url, ACCESS_KEY, SECRET_KEY, retries=1)
    store.ensure_bucket(BUCKET)
    predictor = start_predictor(
        tmp_path / "predictor",
        f"models:/{model.name}/{model.version}",
        mlflow_server.url,
        s3.url,
        args=PREDICTOR_ARGS,
        env={"KUBELOOP_S3_RETRIES": "1", "KUBELOOP_S3_TIMEOUT_SECONDS": "2"},
    )
    acknowledged: list[dict[str, object]] = []
    refusals: list[httpx.Response] = []
    try:
        with httpx.Client(base_url=predictor.url, timeout=30) as http:
            predictions = http.post("/v1/models/digits:predict", json={"instances": [X] * 100})
            queue = list(predictions.json()["predictions"])

            def send() -> httpx.Response:
                prediction = queue.pop()
                answer = http.post(
                    f"/v1/feedback/{DATASET}",
                    json={"input": X, "label": "3", "prediction_id": prediction["prediction_id"]},
                )
                if answer.status_code == 201:
                    acknowledged.append(answer.json())
                else:
                    refusals.append(answer)
                return answer

            while len(acknowledged) < 10:
                assert send().status_code == 201
            s3.kill()
            for _ in range(3):
                assert send().status_code == 503
            during = http.post("/v1/models/digits:predict", json={"instances": [X] * 5})
            assert during.status_code == 200  # serving does not need storage
            logged_during = [p["prediction_id"] for p in during.json()["predictions"]]
            s3 = services.start_s3(tmp_path / "s3", port=port)
            deadline = time.monotonic() + 60
            while len(acknowledged) < 20 and time.monotonic() < deadline:
                send()
            assert len(acknowledged) >= 20
            # The prediction log catches up on what was predicted during the outage.
            deadline = time.monotonic() + 30
            found: set[str] = set()
            while not set(logged_during) <= found and time.monotonic() < deadline:
                for key in store.list_keys(BUCKET, PREFIX + samples.PREDICTIONS):
                    lines = store.get_bytes(BUCKET, key).decode().splitlines()
                    found.update(json.loads(line)["id"] for line in lines)
                time.sleep(0.3)
            assert set(logged_during) <= found
        predictor.stop()  # SIGTERM: live accuracy is flushed on the way out
        assert predictor.process.returncode == 0, services.log_tail(predictor.log_path)
        # Samples acknowledged before the crash are read from the restarted server.
        for ack in acknowledged:
            lines = store.get_bytes(BUCKET, str(ack["key"])).splitlines()
            (sample,) = [
                s
                for s in map(samples.FeedbackSample.model_validate_json, lines)
                if s.id == ack["id"]
            ]
            assert sample.label == "3"
            assert sample.prediction_id == ack["prediction_id"]
        for refusal in refusals:
            assert refusal.status_code == 503
            assert refusal.json()["reason"] == "storage-unavailable"
            assert int(refusal.headers["Retry-After"]) > 0
        stored = store.list_keys(BUCKET, PREFIX + samples.INBOX)
        # ... and nothing refused was stored
        assert sum(samples.samples_in(key) for key in stored) == len(acknowledged)
        records = store.list_keys(BUCKET, PREFIX + samples.LIVE_ACCURACY_BY_WRITER)
        accuracy = feedback_store.merged(
            [samples.LiveAccuracy.model_validate(store.get_json(BUCKET, k)) for k in records]
        )
        judged = accuracy.versions[model.version]
        assert judged.judged == len(acknowledged)  # exactly the acknowledged judgements
        assert judged.correct == sum(1 for ack in acknowledged if ack["correct"])
    finally:
        predictor.kill()
        s3.stop()
