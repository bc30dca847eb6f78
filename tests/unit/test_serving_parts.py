"""The predictor's parts in process, on a real exported ONNX model: the model contract,
input decoding, micro-batching, atomic swaps and the review pool."""

from __future__ import annotations

import asyncio
import base64
import re
import threading

import numpy as np
import onnx
import pytest

from kubeloop.registry import ModelVersion
from kubeloop.serving import inputs, onnx_model
from kubeloop.serving.batching import MicroBatcher
from kubeloop.serving.holder import LoadedModel, ModelHolder
from kubeloop.serving.prediction_pool import PredictionBatch, PredictionPool
from kubeloop.serving.predictor import Predictor
from kubeloop.serving.review import ReviewQueue, UnknownPrediction
from tests import serving_models


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return serving_models.tiny_classifier_onnx(seed=0)


def loaded(data: bytes, version: str) -> LoadedModel:
    model = onnx_model.OnnxModel(data)
    model.warm_up(4)
    mv = ModelVersion("tiny", version, run_id="", source="")
    return LoadedModel(mv, tuple(serving_models.CLASSES), model, loaded_at=0.0)


def test_model_contract_shapes(model_bytes: bytes) -> None:
    model = onnx_model.OnnxModel(model_bytes)
    assert model.input_shape == (8, 8)
    probabilities, embeddings = model.run(serving_models.digit_like_inputs(5))
    assert probabilities.shape == (5, 10)
    assert embeddings.shape == (5, 16)
    assert probabilities.sum(axis=1) == pytest.approx(np.ones(5), abs=1e-5)
    # A [-1, 1, H, W] model takes the same (N, H, W) rows.
    channel = onnx_model.OnnxModel(serving_models.tiny_classifier_onnx(0, channel_axis=True))
    assert channel.input_shape == (1, 8, 8)
    assert channel.run(serving_models.digit_like_inputs(3).reshape(3, 1, 8, 8))[0].shape == (3, 10)


def test_model_contract_violations_are_named(model_bytes: bytes) -> None:
    with pytest.raises(onnx_model.ModelFormatError, match="cannot load"):
        onnx_model.OnnxModel(b"not a model")
    proto = onnx.load_from_string(model_bytes)
    proto.graph.output[1].name = "features"
    for node in proto.graph.node:
        node.input[:] = ["features" if i == "embedding" else i for i in node.input]
        node.output[:] = ["features" if o == "embedding" else o for o in node.output]
    with pytest.raises(onnx_model.ModelFormatError, match=r"lacks outputs \['embedding'\]"):
        onnx_model.OnnxModel(proto.SerializeToString())


def test_class_names_from_tag_dataset_or_index() -> None:
    assert onnx_model.class_names({"kubeloop.classes": '["a", "b"]'}, 2, None) == ("a", "b")
    assert onnx_model.class_names({}, 2, ("x", "y")) == ("x", "y")
    assert onnx_model.class_names({}, 3, ("x", "y")) == ("0", "1", "2")
    with pytest.raises(
        onnx_model.ModelFormatError, match="names 2 classes but the model outputs 3"
    ):
        onnx_model.class_names({"kubeloop.classes": '["a", "b"]'}, 3, None)


def test_inputs_accept_the_instance_shape_and_its_equivalents() -> None:
    x = np.arange(64, dtype=np.float32).reshape(8, 8) / 64
    assert inputs.one(x.tolist(), (8, 8)).shape == (8, 8)
    assert inputs.one(x.reshape(1, 8, 8).tolist(), (8, 8)).shape == (8, 8)
    assert inputs.one(x.reshape(64).tolist(), (8, 8)).shape == (8, 8)
    assert inputs.rows(np.stack([x, x]), (1, 8, 8)).shape == (2, 1, 8, 8)
    with pytest.raises(inputs.InputError, match=r"shape \[8, 8\] \(or 64 values\), got \[4, 16\]"):
        inputs.one(x.reshape(4, 16).tolist(), (8, 8))
    with pytest.raises(inputs.InputError, match="finite"):
        inputs.one([[float("nan")] * 8] * 8, (8, 8))
    with pytest.raises(inputs.InputError, match="not a numeric array"):
        inputs.one([["a"] * 8] * 8, (8, 8))
    with pytest.raises(inputs.InputError, match="non-empty list"):
        inputs.instances([], (8, 8), max_rows=10)


def test_png_inputs_are_grayscale_in_unit_range() -> None:
    pixels = np.eye(8, dtype=np.float32)
    png = serving_models.png_bytes(pixels)
    assert inputs.png(png, (8, 8)) == pytest.approx(pixels)
    assert inputs.png(png, (1, 8, 8)).shape == (1, 8, 8)
    both = inputs.instances(
        [{"b64": base64.b64encode(png).decode()}, pixels.tolist()], (8, 8), max_rows=10
    )
    assert both[0] == pytest.approx(both[1])
    with pytest.raises(inputs.InputError, match="9x8 pixels; expected 8x8") as wrong:
        inputs.png(serving_models.png_bytes(np.zeros((8, 9))), (8, 8))
    assert wrong.value.reason == "bad-shape"
    with pytest.raises(inputs.InputError, match="not a PNG") as garbage:
        inputs.png(b"GIF89a....", (8, 8))
    assert garbage.value.reason == "bad-image"
    with pytest.raises(inputs.InputError, match="cannot be decoded"):
        inputs.png(png[:40], (8, 8))  # truncated after the header
    with pytest.raises(inputs.InputError, match="instance 0: the image is not valid base64"):
        inputs.instances([{"b64": "%%%"}], (8, 8), max_rows=10)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ([["0.5", 0.5]], "holds a string"),
        ([[True, 0.5]], "holds a boolean"),
        ([[1, None]], "holds a null"),
        ([[1, {"v": 1}]], "holds an object"),
        ([[1.0, 2.0], 3.0], "nest unevenly"),
        ([[1.0, 2.0], [3.0]], "not a numeric array"),
        ([[10**400]], "not a numeric array"),
    ],
)
def test_inputs_are_json_numbers_and_nothing_numpy_would_coerce(
    value: object, problem: str
) -> None:
    with pytest.raises(inputs.InputError, match=problem) as refused:
        inputs.numbers(value, "instances")
    assert str(refused.value).startswith("instances is not a numeric array")
    assert inputs.numbers([[1, 2.5], [0, -1]], "x").tolist() == [[1.0, 2.5], [0.0, -1.0]]
    assert inputs.numbers([[]], "x").shape == (1, 0)


def tensor(**fields: object) -> inputs.Tensor:
    base: dict[str, object] = {
        "name": "input", "shape": [2, 8, 8], "datatype": "FP32", "data": [0.5] * 128,
    }  # fmt: skip
    return inputs.Tensor(**{**base, **fields})  # type: ignore[arg-type]


def test_v2_tensors_are_checked_against_what_they_declare() -> None:
    assert inputs.tensor_rows([tensor()], (8, 8), max_rows=2).shape == (2, 8, 8)
    binary = np.full(128, 0.25, dtype=np.float32).tobytes()
    assert inputs.tensor_rows([tensor(data=binary)], (8, 8), 2)[0, 0, 0] == pytest.approx(0.25)
    assert inputs.tensor_rows([tensor(name="x")], (8, 8), 2).shape == (2, 8, 8)  # the only one
    problems = {
        "positive sizes": [tensor(shape=[-1, 8, 8])],
        "holds 64 values; its shape [2, 8, 8] needs 128": [tensor(data=[0.5] * 64)],
        "2 tensors are named 'input'": [tensor(), tensor()],
        "unknown tensors ['extra']": [tensor(), tensor(name="extra")],
        "one input tensor": [tensor(name="a"), tensor(name="b")],
        "'BOOL' is not supported": [tensor(datatype="BOOL", data=[True] * 128)],
        "not whole float32s": [tensor(data=b"\x00" * 3)],
    }
    for problem, tensors in problems.items():
        with pytest.raises(inputs.InputError, match=re.escape(problem)):
            inputs.tensor_rows(tensors, (8, 8), max_rows=2)
    with pytest.raises(inputs.InputError, match="--max-request-rows") as too_many:
        inputs.tensor_rows([tensor(shape=[3, 8, 8], data=[])], (8, 8), max_rows=2)
    assert too_many.value.reason == inputs.TOO_MANY_ROWS  # before the data is looked at


class Rows:
    """A batch output that remembers which batch it came from."""

    def __init__(self, values: np.ndarray, batch: int) -> None:
        self.values, self.batch = values, batch

    def rows(self, start: int, stop: int) -> Rows:
        return Rows(self.values[start:stop], self.batch)


@pytest.mark.asyncio
async def test_micro_batcher_groups_concurrent_requests_and_splits_answers() -> None:
    sizes: list[int] = []

    def run(batch: np.ndarray) -> Rows:
        sizes.append(len(batch))
        return Rows(batch * 2, len(sizes))

    batcher: MicroBatcher[Rows] = MicroBatcher(run, max_batch_size=8, max_latency_seconds=0.05)
    requests = [np.full((1 + i % 3, 2), i, dtype=np.float32) for i in range(12)]
    answers = await asyncio.gather(*[batcher.submit(r) for r in requests])
    for request, answer in zip(requests, answers, strict=True):
        assert answer.values == pytest.approx(request * 2)  # each caller gets its own rows
    assert max(sizes) <= 8
    assert len(sizes) < len(requests)  # requests shared batches
    assert sum(sizes) == sum(len(r) for r in requests)
    await batcher.close()


@pytest.mark.asyncio
async def test_micro_batcher_does_not_make_a_lone_caller_wait_for_company() -> None:
    sizes: list[int] = []

    def run(batch: np.ndarray) -> Rows:
        sizes.append(len(batch))
        return Rows(batch, len(sizes))

    # A 30 s batching window: a lone caller that waited for it would time out below.
    batcher: MicroBatcher[Rows] = MicroBatcher(run, max_batch_size=8, max_latency_seconds=30)
    for value in range(3):
        rows = np.full((1, 2), value, dtype=np.float32)
        answer = await asyncio.wait_for(batcher.submit(rows), timeout=5)
        assert answer.values == pytest.approx(rows)
    assert sizes == [1, 1, 1]
    await batcher.close()


@pytest.mark.asyncio
async def test_micro_batcher_runs_a_lone_cheap_request_on_the_event_loop() -> None:
    threads: list[str] = []

    def run(batch: np.ndarray) -> Rows:
        threads.append(threading.current_thread().name)
        return Rows(batch, len(threads))

    batcher: MicroBatcher[Rows] = MicroBatcher(
        run, max_batch_size=8, max_latency_seconds=0, inline_seconds=60.0
    )
    rows = np.ones((1, 2), dtype=np.float32)
    await batcher.submit(rows, alone=True)  # the first run's cost is unknown: the thread
    await batcher.submit(rows, alone=True)  # cheap and alone: inline
    await batcher.submit(rows)  # the caller knows of others in flight: a batch
    here = threading.current_thread().name
    assert [name == here for name in threads] == [False, True, False]
    await batcher.close()


@pytest.mark.asyncio
async def test_micro_batcher_passes_errors_to_the_batch_and_lives_on() -> None:
    def run(batch: np.ndarray) -> Rows:
        if (batch < 0).any():
            raise ValueError("negative input")
        return Rows(batch, 0)

    batcher: MicroBatcher[Rows] = MicroBatcher(run, max_batch_size=1, max_latency_seconds=0)
    with pytest.raises(ValueError, match="negative input"):
        await batcher.submit(-np.ones((1, 2), dtype=np.float32))
    assert (await batcher.submit(np.ones((1, 2), dtype=np.float32))).values.shape == (1, 2)
    await batcher.close()


@pytest.mark.asyncio
async def test_swap_mid_stream_answers_every_request_from_one_whole_version(
    model_bytes: bytes,
) -> None:
    v1, v2 = loaded(model_bytes, "1"), loaded(serving_models.tiny_classifier_onnx(seed=1), "2")
    x = serving_models.digit_like_inputs(1)
    expected = {"1": v1.onnx.run(x)[0][0], "2": v2.onnx.run(x)[0][0]}
    holder = ModelHolder()
    holder.swap(v1)
    predictor = Predictor(holder, max_batch_size=4, max_latency_seconds=0.001)

    async def swap_later() -> None:
        await asyncio.sleep(0.02)
        holder.swap(v2)

    swapping = asyncio.create_task(swap_later())
    answers = []
    for _ in range(20):
        answers += await asyncio.gather(*[predictor.predict(x) for _ in range(8)])
        await asyncio.sleep(0.002)
    await swapping
    versions = [a.version for a in answers]
    assert versions[0] == "1"
    assert versions[-1] == "2"
    for answer in answers:  # the version an answer names is the one that computed it
        assert answer.probabilities[0] == pytest.approx(expected[answer.version], abs=1e-6)
    await predictor.close()


def batch(ids: list[str], version: str = "1", t: float = 0.0, dim: int = 4) -> PredictionBatch:
    n = len(ids)
    rng = np.random.default_rng(len(ids))
    return PredictionBatch(
        ids=tuple(ids),
        time=t,
        model="tiny",
        version=version,
        labels=tuple("a" for _ in ids),
        probabilities=rng.dirichlet(np.ones(3), n).astype(np.float32),
        embeddings=rng.standard_normal((n, dim)).astype(np.float32),
        inputs=np.zeros((n, 4), dtype=np.float32),
        shape=(2, 2),
    )


def test_pool_is_a_ring_with_lookup_and_reviewed_rows() -> None:
    pool = PredictionPool(capacity=5)
    pool.add(batch(["a", "b", "c"], t=1))
    pool.add(batch(["d", "e", "f", "g"], t=2))
    assert len(pool) == 5
    assert pool.find("a") is None  # overwritten
    assert pool.find("b") is None
    found = pool.find("e")
    assert found is not None
    assert found.model_version == "1"
    assert pool.view().ids.tolist() == ["c", "d", "e", "f", "g"]
    pool.mark_reviewed("e")
    assert pool.view().ids.tolist() == ["c", "d", "f", "g"]
    assert len(pool.view(include_reviewed=True)) == 5
    pool.add(batch([f"x{i}" for i in range(7)], t=3))  # bigger than the pool: its tail
    assert pool.view().ids.tolist() == ["x2", "x3", "x4", "x5", "x6"]
    pool.add(batch(["new"], dim=8))  # another embedding size: the pool restarts
    assert pool.view().ids.tolist() == ["new"]


@pytest.mark.asyncio
async def test_review_queue_and_similar_search() -> None:
    pool = PredictionPool(capacity=100)
    first = batch([f"a{i}" for i in range(10)], version="1")
    pool.add(first)
    pool.add(batch([f"b{i}" for i in range(10)], version="2"))
    queue = ReviewQueue(pool, "least-confidence", 3)
    chosen = await queue.select()
    assert chosen["strategy"] == "least-confidence"
    assert len(chosen["items"]) == 3
    confidences = [max(item["probabilities"]) for item in chosen["items"]]
    assert confidences == sorted(confidences)
    assert {"prediction_id", "predicted_label", "entropy", "margin", "input"} <= set(
        chosen["items"][0]
    )
    # Embedding strategies stay within the newest version.
    by_embedding = await queue.select("k-center", 5, seed=0)
    assert all(item["model_version"] == "2" for item in by_embedding["items"])
    with pytest.raises(ValueError, match="unknown strategy"):
        await queue.select("nope")
    similar = await queue.similar("a0", 3)
    assert [item["model_version"] for item in similar["items"]] == ["1"] * 3
    assert "a0" not in [item["prediction_id"] for item in similar["items"]]
    distances = [item["distance"] for item in similar["items"]]
    assert distances == sorted(distances)
    nearest = np.linalg.norm(first.embeddings[1:] - first.embeddings[0], axis=1).min()
    assert distances[0] == pytest.approx(nearest, rel=1e-4)
    with pytest.raises(UnknownPrediction):
        await queue.similar("zzz", 3)


@pytest.mark.asyncio
async def test_an_audit_share_of_the_queue_is_random_and_spread() -> None:
    pool = PredictionPool(capacity=100)
    pool.add(batch([f"a{i}" for i in range(40)], version="1"))
    hardest = await ReviewQueue(pool, "least-confidence", 30).select(budget=40)
    by_confidence = [item["prediction_id"] for item in hardest["items"]]
    queue = ReviewQueue(pool, "least-confidence", 10, audit_share=0.2)
    chosen = (await queue.select())["items"]
    assert [item["rank"] for item in chosen] == list(range(10))
    audits = [i for i, item in enumerate(chosen) if item["audit"]]
    assert audits == [2, 7]  # two of ten, spread through the queue
    picked = [item["prediction_id"] for item in chosen if not item["audit"]]
    assert picked == by_confidence[:8]  # the strategy's eight, in its order
    drawn = {chosen[i]["prediction_id"] for i in audits}
    assert not drawn & set(picked)
    draws = [
        frozenset(i["prediction_id"] for i in (await queue.select())["items"] if i["audit"])
        for _ in range(20)
    ]
    assert len(set(draws)) > 1  # drawn at random, not the strategy's next ones
    assert all(len(d) == 2 for d in draws)
    none = await ReviewQueue(pool, "least-confidence", 10).select()
    assert not any(item["audit"] for item in none["items"])
