"""The benchmark suite runs: one tiny selection benchmark end to end (no timing asserted),
and every result, skipped ones included, carries figure, baseline and ratio."""

from __future__ import annotations

import json

from bench import common, selection
from kubeloop.storage import ObjectStore
from tests import serving_models


def test_selection_benchmark_reports_figure_baseline_and_ratio() -> None:
    onnx = serving_models.tiny_classifier_onnx(seed=0, channel_axis=True)
    settings = selection.Settings(pool=512, budget=64, rounds=1, naive_kcenter_picks=8)

    results = [json.loads(json.dumps(r.to_json())) for r in selection.measure(onnx, settings)]

    assert {r["benchmark"] for r in results} == {
        "selection.least-confidence.vs_inference",
        "selection.least-confidence.vs_naive_loop",
        "selection.least-confidence.vs_modal",
        "selection.k-center.vs_inference",
        "selection.k-center.vs_naive_loop",
    }
    for result in results:
        assert {"figure", "baseline", "ratio"} <= result.keys()
        assert result["figure"] > 0
        assert result["baseline"] > 0
        assert result["ratio"] > 0


def test_a_skipped_benchmark_still_has_the_keys() -> None:
    result = common.skipped("gpu", "skipped: no CUDA device").to_json()

    assert result["skipped"] == "skipped: no CUDA device"
    assert (result["figure"], result["baseline"], result["ratio"]) == (None, None, None)


def test_the_gpu_benchmark_s_code_runs_on_the_cpu() -> None:
    """bench/gpu.py runs on a GPU machine later; its code path is exercised here, tiny."""
    from bench import gpu

    settings = gpu.Settings(images=64, rounds=1, batches=(32,), base_width=4)
    results = [r.to_json() for r in gpu.measure("cpu", settings)]
    assert [r["benchmark"] for r in results] == [
        "gpu.training.batch32.vs_raw_torch",
        "gpu.inference.batch32.vs_raw_torch",
    ]
    assert all(r["figure"] > 0 for r in results)
    assert all(r["baseline"] > 0 for r in results)


def test_the_replicas_benchmark_reports_figure_baseline_and_ratio(
    object_store: ObjectStore,
) -> None:
    from bench import replicas

    settings = replicas.Settings(segments=4, log_objects=1, rounds=1)
    result = replicas.measure(object_store, settings).to_json()
    assert result["benchmark"] == "replicas.peer_sync.own_writes"
    assert result["figure"] > 0
    assert result["baseline"] > 0
    assert result["ratio"] > 0
