"""The predictor as a real process (kserve ModelServer on 127.0.0.1) serving a real model
from a real MLflow registry, with feedback in a real S3 server: V1 and V2 round trips,
readiness and version, bad inputs, feedback storage and refusals, live accuracy, the
batched prediction log, the review queue, similarity search and the metrics."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http
import tritonclient.utils

from kubeloop import feedback_store
from kubeloop.api import samples
from kubeloop.local import services
from kubeloop.serving import onnx_model
from kubeloop.storage import ObjectStore
from tests import serving_models
from tests.conftest import ACCESS_KEY, SECRET_KEY
from tests.serving_process import AUTH, TOKEN, shared_model, start_predictor

pytestmark = pytest.mark.slow

BUCKET = "serving-e2e"
PREFIX = "feedback/digits/"
DATASET = "digits-fb"
X = serving_models.digit_like_inputs(6, seed=1)
PREDICTOR_ARGS = [
    "--feedback-dataset", DATASET, "--feedback-bucket", BUCKET, "--feedback-prefix", PREFIX,
    "--classes", ",".join(serving_models.CLASSES), "--input-shape", "8,8",
    "--slices", "base,new-user", "--max-payload-bytes", "20000", "--log-flush-seconds", "0.5",
    "--log-batch-size", "50", "--stats-flush-seconds", "0.5",
]  # fmt: skip


def as_png(x: np.ndarray) -> np.ndarray:
    """What a PNG of `x` holds: 8-bit levels."""
    return (np.round(x * 255) / 255).astype(np.float32)


@dataclass
class Served:
    url: str
    store: ObjectStore
    reference: onnx_model.OnnxModel
    """The same model in onnxruntime, to check answers against."""
    process: services.Service

    def predict_v1(self, instances: list[object]) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/models/digits:predict", json={"instances": instances})

    def feedback(self, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        """POST feedback with the bearer token (plus `headers`)."""
        url = f"{self.url}/v1/feedback/{DATASET}"
        return httpx.post(url, headers={**AUTH, **(headers or {})}, **kwargs)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
    mlflow_server: services.Service,
    s3_server: services.Service,
) -> Iterator[Served]:
    model = shared_model(mlflow_server.url)
    store = ObjectStore(s3_server.url, ACCESS_KEY, SECRET_KEY, retries=1)
    store.ensure_bucket(BUCKET)
    process = start_predictor(
        tmp_path_factory.mktemp("predictor"),
        f"models:/{model.name}@champion",
        mlflow_server.url,
        s3_server.url,
        args=PREDICTOR_ARGS,
        env={"KUBELOOP_FEEDBACK_TOKEN": TOKEN},
    )
    reference = onnx_model.OnnxModel(serving_models.tiny_classifier_onnx(seed=0))
    yield Served(process.url, store, reference, process)
    process.stop()


def test_v1_round_trip_matches_onnxruntime(served: Served) -> None:
    png = base64.b64encode(serving_models.png_bytes(X[1])).decode()
    answer = served.predict_v1([X[0].tolist(), {"b64": png}, X[2].reshape(64).tolist()])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"] == "1"
    assert body["model_name"] == "digits"
    predictions = body["predictions"]
    assert len(predictions) == 3
    expected, _ = served.reference.run(np.stack([X[0], as_png(X[1]), X[2]]))
    for prediction, probabilities in zip(predictions, expected, strict=True):
        assert prediction["probabilities"] == pytest.approx(probabilities.tolist(), abs=1e-5)
        assert prediction["class_index"] == int(probabilities.argmax())
        assert prediction["class"] == serving_models.CLASSES[int(probabilities.argmax())]
        p = probabilities.astype(np.float64)
        assert prediction["entropy"] == pytest.approx(-(p * np.log(p)).sum(), abs=1e-4)
        top = np.sort(p)[::-1]
        assert prediction["margin"] == pytest.approx(top[0] - top[1], abs=1e-5)
        assert len(prediction["prediction_id"]) == 26
    assert len({p["prediction_id"] for p in predictions}) == 3


def test_the_v1_fast_path_answers_as_kserves_route_does(served: Served) -> None:
    # A JSON body takes serving.fast_path; one without a JSON content type (which kserve
    # still reads as JSON) goes through FastAPI and kserve's data plane.
    body = json.dumps({"instances": [X[3].tolist(), X[4].tolist()]}).encode()
    url = f"{served.url}/v1/models/digits:predict"
    answers = [
        httpx.post(url, content=body, headers={"content-type": media})
        for media in ("application/json", "text/plain")
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/json"
    fast, framework = (answer.json() for answer in answers)
    for answer in (fast, framework):  # the ids differ: one per prediction made
        assert [len(p.pop("prediction_id")) for p in answer["predictions"]] == [26, 26]
    assert fast == framework
    metrics = httpx.get(f"{served.url}/metrics").text
    assert 'kubeloop_predictor_request_seconds_count{protocol="v1"}' in metrics


def test_v2_round_trip_with_a_tensor_and_with_pngs(served: Served) -> None:
    request = {
        "id": "req-1",
        "inputs": [
            {
                "name": "input",
                "shape": [2, 8, 8],
                "datatype": "FP32",
                "data": X[:2].ravel().tolist(),
            }
        ],
    }
    answer = httpx.post(f"{served.url}/v2/models/digits/infer", json=request)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"] == "req-1"
    assert body["model_version"] == "1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert set(outputs) == {
        "class",
        "class_index",
        "probabilities",
        "entropy",
        "margin",
        "prediction_id",
    }
    expected, _ = served.reference.run(X[:2])
    assert outputs["probabilities"]["shape"] == [2, 10]
    assert outputs["probabilities"]["data"] == pytest.approx(expected.ravel().tolist(), abs=1e-5)
    assert outputs["class"]["data"] == [serving_models.CLASSES[i] for i in expected.argmax(1)]
    assert len(outputs["prediction_id"]["data"]) == 2
    pngs = [base64.b64encode(serving_models.png_bytes(x)).decode() for x in X[:2]]
    images = {"inputs": [{"name": "input", "shape": [2], "datatype": "BYTES", "data": pngs}]}
    answer = httpx.post(f"{served.url}/v2/models/digits/infer", json=images)
    assert answer.status_code == 200, answer.text
    from_png = {o["name"]: o for o in answer.json()["outputs"]}
    decoded, _ = served.reference.run(as_png(X[:2]))
    assert from_png["probabilities"]["data"] == pytest.approx(decoded.ravel().tolist(), abs=1e-5)


@pytest.mark.parametrize(
    ("instances", "problem"),
    [
        ([[[0.0] * 16] * 4], "got [4, 16]"),
        ([], "non-empty list"),
        ([{"b64": "AAAA"}], "not a PNG"),
        ([{"b64": base64.b64encode(serving_models.png_bytes(np.zeros((4, 4)))).decode()}], "4x4"),
    ],
)
def test_predict_refuses_bad_inputs(served: Served, instances: list[object], problem: str) -> None:
    answer = served.predict_v1(instances)
    assert answer.status_code == 400
    assert problem in answer.json()["error"]


def test_predict_refuses_malformed_requests(served: Served) -> None:
    no_instances = httpx.post(f"{served.url}/v1/models/digits:predict", json={"rows": []})
    assert no_instances.status_code == 400
    assert "instances" in no_instances.json()["error"]
    v2_short = {
        "inputs": [{"name": "input", "shape": [2, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]
    }
    answer = httpx.post(f"{served.url}/v2/models/digits/infer", json=v2_short)
    assert answer.status_code == 400
    unknown = served.predict_v1([X[0].tolist()])
    assert unknown.status_code == 200
    assert (
        httpx.post(f"{served.url}/v1/models/other:predict", json={"instances": []}).status_code
        == 404
    )


def test_readiness_version_and_metadata(served: Served) -> None:
    assert httpx.get(f"{served.url}/v2/health/ready").status_code == 200
    assert httpx.get(f"{served.url}/v2/models/digits/ready").json()["ready"] is True
    version = httpx.get(f"{served.url}/v1/models/digits/version").json()
    assert version["model_version"] == "1"
    assert version["model_uri"] == "models:/serving-shared@champion"
    assert version["follows_alias"] is True
    assert version["classes"] == serving_models.CLASSES
    assert httpx.get(f"{served.url}/v1/models/other/version").status_code == 404
    metadata = httpx.get(f"{served.url}/v2/models/digits").json()
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 8, 8]}]
    reload = httpx.post(f"{served.url}/v1/models/digits/reload", headers=AUTH, timeout=30)
    assert reload.status_code == 200
    assert reload.json()["swapped"] is False


def stored_sample(served: Served, ack: dict[str, Any]) -> samples.FeedbackSample:
    """The acknowledged sample, read from the segment its acknowledgement names."""
    lines = served.store.get_bytes(BUCKET, ack["key"]).splitlines()
    found = [samples.FeedbackSample.model_validate_json(line) for line in lines]
    (sample,) = [s for s in found if s.id == ack["id"]]
    return sample


def test_feedback_is_stored_and_judges_the_prediction(served: Served) -> None:
    prediction = served.predict_v1([X[3].tolist(), X[4].tolist()]).json()["predictions"]
    right, wrong = prediction[0], prediction[1]
    wrong_label = serving_models.CLASSES[(wrong["class_index"] + 1) % 10]
    by_input = served.feedback(
        json={
            "input": X[3].tolist(),
            "label": right["class"],
            "prediction_id": right["prediction_id"],
            "slice": "new-user",
        }
    )
    assert by_input.status_code == 201, by_input.text
    ack = by_input.json()
    assert ack["correct"] is True
    assert ack["model_version"] == "1"
    stored = stored_sample(served, ack)
    assert ack["key"].startswith(f"{PREFIX}inbox/")  # a segment, acknowledged once written
    assert stored.input == pytest.approx(X[3].ravel().tolist(), abs=1e-6)
    assert stored.shape == [8, 8]
    assert stored.slice == "new-user"
    assert stored.predicted_label == right["class"]
    # By prediction id alone: the logged input is used.
    by_id = served.feedback(json={"label": wrong_label, "prediction_id": wrong["prediction_id"]})
    assert by_id.status_code == 201, by_id.text
    assert by_id.json()["correct"] is False
    from_log = stored_sample(served, by_id.json())
    assert from_log.input == pytest.approx(X[4].ravel().tolist(), abs=1e-4)
    # A raw PNG body, fields as query parameters.
    png = served.feedback(
        content=serving_models.png_bytes(X[5]),
        params={"label": "5", "slice": "base"},
        headers={"Content-Type": "image/png"},
    )
    assert png.status_code == 201, png.text
    as_sent = stored_sample(served, png.json())
    assert (as_sent.input, as_sent.content_type) == (None, "image/png")  # the PNG as sent
    assert base64.b64decode(as_sent.image or "") == serving_models.png_bytes(X[5])
    # Live accuracy reaches S3 within a few flush intervals: this process's own record.
    deadline = time.monotonic() + 20
    judged = 0
    while time.monotonic() < deadline:
        records = served.store.list_keys(BUCKET, PREFIX + samples.LIVE_ACCURACY_BY_WRITER)
        if records:
            counts = feedback_store.merged(
                [
                    samples.LiveAccuracy.model_validate(served.store.get_json(BUCKET, k))
                    for k in records
                ]
            )
            judged = counts.versions["1"].judged
            if judged >= 2:
                break
        time.sleep(0.3)
    assert judged >= 2
    assert counts.versions["1"].correct >= 1
    metrics = httpx.get(f"{served.url}/metrics").text
    assert 'kubeloop_live_accuracy{model="serving-shared",version="1"}' in metrics


@pytest.mark.parametrize(
    ("request_kwargs", "status", "reason"),
    [
        (
            {
                "json": {"label": "1", "input": X[0].tolist()},
                "headers": {"Authorization": "Bearer wrong"},
            },
            401,
            "unauthorized",
        ),
        ({"json": {"label": "12", "input": X[0].tolist()}}, 422, "bad-label"),
        ({"json": {"label": "1", "input": [[0.0] * 4] * 4}}, 422, "bad-shape"),
        ({"json": {"label": "1", "input": X[0].tolist(), "slice": "vip"}}, 422, "bad-slice"),
        ({"json": {"label": "1"}}, 422, "missing-input"),
        ({"json": {"label": "1", "input": X[0].tolist(), "labeller": "a\nb"}}, 422, "bad-labeller"),
        (
            {"json": {"label": "1", "input": X[0].tolist(), "labeller": "x" * 129}},
            422,
            "bad-labeller",
        ),
        ({"content": b"{oops", "headers": {"Content-Type": "application/json"}}, 400, "bad-json"),
        (
            {
                "content": b"not a png",
                "params": {"label": "1"},
                "headers": {"Content-Type": "image/png"},
            },
            400,
            "bad-image",
        ),
        (
            {"content": b"label=1", "headers": {"Content-Type": "text/plain"}},
            415,
            "unsupported-media-type",
        ),
        (
            {"content": b"x" * 30000, "headers": {"Content-Type": "application/json"}},
            413,
            "too-large",
        ),
    ],
)
def test_feedback_refusals_name_the_problem(
    served: Served, request_kwargs: dict[str, Any], status: int, reason: str
) -> None:
    answer = served.feedback(**request_kwargs)
    assert answer.status_code == status, answer.text
    assert answer.json()["reason"] == reason
    assert answer.json()["error"]
    if status == 401:
        assert answer.headers["WWW-Authenticate"] == "Bearer"


def test_feedback_records_the_labeller_the_request_names(served: Served) -> None:
    ack = served.feedback(json={"label": "3", "input": X[0].tolist(), "labeller": "bob"})
    assert ack.status_code == 201, ack.text
    assert stored_sample(served, ack.json()).labeller == "bob"
    anonymous = served.feedback(json={"label": "3", "input": X[0].tolist()})
    assert stored_sample(served, anonymous.json()).labeller is None


def test_feedback_without_a_token_or_for_another_dataset_is_refused(served: Served) -> None:
    body = {"label": "1", "input": X[0].tolist()}
    no_token = httpx.post(f"{served.url}/v1/feedback/{DATASET}", json=body)
    assert no_token.status_code == 401
    other = httpx.post(f"{served.url}/v1/feedback/other", json=body, headers=AUTH)
    assert other.status_code == 404
    assert DATASET in other.json()["error"]
    assert httpx.get(f"{served.url}/v1/review/{DATASET}").status_code == 401


def test_prediction_log_is_written_in_batches(served: Served) -> None:
    before = set(served.store.list_keys(BUCKET, PREFIX + samples.PREDICTIONS))
    ids = []
    for _ in range(4):
        answer = served.predict_v1(serving_models.digit_like_inputs(10, seed=7).tolist())
        ids += [p["prediction_id"] for p in answer.json()["predictions"]]
    deadline = time.monotonic() + 20
    logged: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline and not set(ids) <= set(logged):
        for key in sorted(
            set(served.store.list_keys(BUCKET, PREFIX + samples.PREDICTIONS)) - before
        ):
            for line in served.store.get_bytes(BUCKET, key).decode().splitlines():
                record = json.loads(line)
                logged[record["id"]] = record
        time.sleep(0.3)
    assert set(ids) <= set(logged)
    new_objects = set(served.store.list_keys(BUCKET, PREFIX + samples.PREDICTIONS)) - before
    assert len(new_objects) < len(ids) / 2  # batches, not one object per prediction
    record = logged[ids[0]]
    assert record["modelVersion"] == "1"
    assert len(record["embedding"]) == 16
    assert len(record["input"]) == 64


@pytest.mark.parametrize(
    "strategy",
    ["random", "least-confidence", "margin", "ratio", "entropy", "k-center", "k-means",
     "every-nth", "time-sampled", "confidence-threshold"],
)  # fmt: skip
def test_review_queue_serves_every_strategy(served: Served, strategy: str) -> None:
    served.predict_v1(serving_models.digit_like_inputs(20, seed=11).tolist())
    answer = httpx.get(
        f"{served.url}/v1/review/{DATASET}",
        params={"strategy": strategy, "budget": 5, "seed": 1, "threshold": 0.99},
        headers=AUTH,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["strategy"] == strategy
    assert body["pool"] >= 20
    assert 0 < len(body["items"]) <= 5
    for item in body["items"]:
        assert item["predicted_label"] in serving_models.CLASSES  # the pre-annotation
        assert len(item["input"]) == 64
    if strategy == "least-confidence":
        confidences = [max(item["probabilities"]) for item in body["items"]]
        assert confidences == sorted(confidences)


def test_reviewed_predictions_leave_the_queue_and_bad_review_requests(served: Served) -> None:
    queue = httpx.get(
        f"{served.url}/v1/review/{DATASET}", params={"budget": 3}, headers=AUTH
    ).json()
    first = queue["items"][0]
    ack = served.feedback(
        json={"label": first["predicted_label"], "prediction_id": first["prediction_id"]}
    )
    assert ack.status_code == 201
    again = httpx.get(
        f"{served.url}/v1/review/{DATASET}", params={"budget": 3}, headers=AUTH
    ).json()
    assert first["prediction_id"] not in [item["prediction_id"] for item in again["items"]]
    bad = httpx.get(f"{served.url}/v1/review/{DATASET}", params={"strategy": "best"}, headers=AUTH)
    assert bad.status_code == 400
    assert "unknown strategy" in bad.json()["error"]
    assert (
        httpx.get(
            f"{served.url}/v1/review/{DATASET}", params={"budget": -1}, headers=AUTH
        ).status_code
        == 422
    )


def test_similar_finds_the_same_input_first(served: Served) -> None:
    twins = served.predict_v1([X[0].tolist(), X[0].tolist(), X[5].tolist()]).json()["predictions"]
    answer = httpx.get(
        f"{served.url}/v1/similar/{twins[0]['prediction_id']}", params={"k": 3}, headers=AUTH
    )
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert items[0]["distance"] == pytest.approx(0.0, abs=1e-3)  # the identical input
    assert [i["distance"] for i in items] == sorted(i["distance"] for i in items)
    missing = httpx.get(f"{served.url}/v1/similar/01J0000000000000000000000Z", headers=AUTH)
    assert missing.status_code == 404


def test_metrics_are_exported_next_to_kserve_s(served: Served) -> None:
    served.predict_v1([X[0].tolist()])
    v2 = {
        "inputs": [
            {"name": "input", "shape": [1, 64], "datatype": "FP32", "data": X[0].ravel().tolist()}
        ]
    }
    assert httpx.post(f"{served.url}/v2/models/digits/infer", json=v2).status_code == 200
    assert served.feedback(json={"label": "ten", "input": X[0].tolist()}).status_code == 422
    assert served.feedback(json={"label": "1", "input": X[0].tolist()}).status_code == 201
    text = httpx.get(f"{served.url}/metrics").text
    for sample in (
        'kubeloop_predictor_request_seconds_count{protocol="v1"}',
        'kubeloop_predictor_request_seconds_count{protocol="v2"}',
        "kubeloop_predictor_batch_size_bucket",
        "kubeloop_predictions_total{class=",
        'version="1"}',  # predictions and entropy by the version that made them
        'kubeloop_feedback_total{dataset="digits-fb",reason="ok",result="accepted"}',
        'kubeloop_feedback_total{dataset="digits-fb",reason="bad-label",result="rejected"}',
        'kubeloop_prediction_entropy_bucket{le="0.05",version="1"}',
        "request_predict_seconds",  # kserve's own
    ):
        assert sample in text, sample


def test_tritonclient_http_calls_of_the_v2_protocol(served: Served) -> None:
    """Every call of tritonclient's HTTP client that the V2 protocol defines, with JSON and
    with binary tensors, unversioned and for the served version; another version is 404."""
    client = tritonclient.http.InferenceServerClient(served.url.removeprefix("http://"))
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.get_server_metadata()["name"]
    for version in ("", "1"):
        assert client.is_model_ready("digits", version)
        metadata = client.get_model_metadata("digits", version)
        assert (metadata["name"], metadata["versions"]) == ("digits", ["1"])
    expected, _ = served.reference.run(X[:2])
    for binary in (False, True):
        tensor = tritonclient.http.InferInput("input", [2, 8, 8], "FP32")
        tensor.set_data_from_numpy(X[:2], binary_data=binary)
        outputs = [
            tritonclient.http.InferRequestedOutput(name, binary_data=binary)
            for name in ("class_index", "probabilities")
        ]
        for version in ("", "1"):
            result = client.infer("digits", [tensor], model_version=version, outputs=outputs)
            assert result.get_response()["model_version"] == "1"
            assert result.as_numpy("class_index").tolist() == expected.argmax(axis=1).tolist()
            probabilities = result.as_numpy("probabilities")
            np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    assert not client.is_model_ready("digits", "7")
    with pytest.raises(tritonclient.utils.InferenceServerException, match="serves version 1"):
        client.infer("digits", [tensor], model_version="7")
    client.close()
