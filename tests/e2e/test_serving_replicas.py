"""Two predictor processes behind one FeedbackDataset: every prediction is reviewable from
either, feedback on one judges the other's prediction, live accuracy counts over both, and
every sample either acknowledged is in the dataset's next snapshot."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from ulid import ULID

from kubeloop import feedback_store
from kubeloop.api.times import utc_now
from kubeloop.local import services
from kubeloop.local.loop import LocalFeedbackStores
from kubeloop.reconcile import feedbackdataset
from kubeloop.storage import ObjectStore, S3Uri
from tests import serving_models
from tests.conftest import ACCESS_KEY, SECRET_KEY
from tests.memory_ports import Memory
from tests.serving_process import AUTH, TOKEN, shared_model, start_predictor

pytestmark = pytest.mark.slow
BUCKET = "replicas"
DATASET = "shared-fb"
X = serving_models.digit_like_inputs(12, seed=5)


@pytest.fixture
def replicas(
    tmp_path: Path, mlflow_server: services.Service, s3_server: services.Service
) -> Iterator[tuple[str, list[str]]]:
    model = shared_model(mlflow_server.url)
    prefix = f"fb-{ULID()}/"
    args = [
        "--feedback-dataset", DATASET, "--feedback-bucket", BUCKET, "--feedback-prefix", prefix,
        "--classes", ",".join(serving_models.CLASSES), "--input-shape", "8,8",
        "--log-flush-seconds", "0.3", "--stats-flush-seconds", "0.3",
    ]  # fmt: skip
    ObjectStore(s3_server.url, ACCESS_KEY, SECRET_KEY).ensure_bucket(BUCKET)
    started = [
        start_predictor(
            tmp_path / f"replica-{n}",
            f"models:/{model.name}@champion",
            mlflow_server.url,
            s3_server.url,
            args,
            env={"KUBELOOP_FEEDBACK_TOKEN": TOKEN},
        )
        for n in range(2)
    ]
    try:
        yield prefix, [p.url for p in started]
    finally:
        for process in started:
            process.stop()


def eventually(probe: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_replicas_share_the_queue_the_judgements_and_the_snapshot(
    replicas: tuple[str, list[str]], s3_server: services.Service
) -> None:
    prefix, (a, b) = replicas
    predicted = {
        url: httpx.post(
            f"{url}/v1/models/digits:predict", json={"instances": [x.tolist() for x in xs]}
        ).json()["predictions"]
        for url, xs in ((a, X[:6]), (b, X[6:]))
    }
    ids = {url: {p["prediction_id"] for p in found} for url, found in predicted.items()}

    def queue(url: str) -> set[str]:
        answer = httpx.get(f"{url}/v1/review/{DATASET}", params={"budget": 100}, headers=AUTH)
        return {item["prediction_id"] for item in answer.json()["items"]}

    for url in (a, b):  # every prediction is reviewable from either replica
        eventually(lambda url=url: ids[a] | ids[b] <= queue(url), f"both replicas in {url}'s queue")

    # Feedback on A names a prediction B made, without its input: A finds it in the log.
    judged = []
    for url, prediction in [(a, predicted[b][0]), (b, predicted[a][0]), (a, predicted[a][1])]:
        answer = httpx.post(
            f"{url}/v1/feedback/{DATASET}",
            json={"label": prediction["class"], "prediction_id": prediction["prediction_id"]},
            headers=AUTH,
        )
        assert answer.status_code == 201, answer.text
        assert answer.json()["correct"] is True
        judged.append(answer.json()["id"])
    # A prediction labelled on one replica leaves the other's queue too.
    eventually(lambda: predicted[b][0]["prediction_id"] not in queue(b), "B's queue updated")

    store = ObjectStore(s3_server.url, ACCESS_KEY, SECRET_KEY)
    storage = feedback_store.DatasetStore(
        store, feedbackdataset.FeedbackDatasetSpec.model_validate(
            {"storage": {"bucket": BUCKET, "prefix": prefix}, "classes": ["0"]}
        ).storage
    )  # fmt: skip

    def live() -> Any:
        counts = storage.live_accuracy()
        found = counts.versions.get("1") if counts else None
        return found if found is not None and found.judged == 3 else None

    counts = eventually(live, "live accuracy over both replicas")
    assert (counts.judged, counts.correct) == (3, 3)  # the sum of both replicas' records

    # The FeedbackDataset's next snapshot holds every sample either replica acknowledged.
    memory = Memory()
    ports = replace(memory.ports, feedback=LocalFeedbackStores(store))
    body = memory.objects.put(
        {
            "apiVersion": "kubeloop.io/v1alpha1",
            "kind": "FeedbackDataset",
            "metadata": {"name": "ds", "generation": 1, "uid": "u"},
            "spec": {
                "storage": {"bucket": BUCKET, "prefix": prefix},
                "classes": list(serving_models.CLASSES),
                "retrain": {
                    "threshold": 3,
                    "trainingTemplate": {
                        "plugin": {"name": "image-classifier"},
                        "datasets": [{"name": "base", "uri": "builtin://digits"}],
                        "registeredModel": "m",
                    },
                },
            },
        }
    )
    outcome = feedbackdataset.reconcile(body, ports, utc_now())
    assert outcome.created == "ds-gen-1"
    manifest = outcome.status.snapshots[0].manifest
    found = feedback_store.read_samples(store, S3Uri.parse(manifest))
    assert sorted(s.id for _, s in found.samples) == sorted(judged)
    inputs = {s.prediction_id: s.input for _, s in found.samples}
    first_of_b = predicted[b][0]["prediction_id"]
    assert np.allclose(inputs[first_of_b] or [], X[6].ravel(), atol=1e-4)  # B's logged input
