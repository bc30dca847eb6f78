"""Benchmark 1, the predictor: throughput and p50/p99 latency, at batch 1 and under load.

Subject: the real predictor process (`python -m kubeloop.serving`) serving the digits
model with the example ServedModel's batching (64 rows, 5 ms) and the feedback API, review
pool and prediction log on, as the operator deploys it; V1 requests of one 8 x 8 image.
Baselines, in the same run and interleaved with it:
- the same model in an onnxruntime session called directly in-process (no HTTP);
- bench/plain_kserve.py, a plain kserve.Model around the same session over the same HTTP.
Scenarios: batch 1 (one caller, one row per request, sequential) and concurrent load
(32 callers, one row each; the predictor micro-batches them). A second predictor with
--max-latency-ms 0 shows how much of the batch-1 latency is the batching wait.
"""

from __future__ import annotations

import json

import numpy as np

from bench import load, models
from bench.common import Latencies, LoadSettings, Result, compare, interleaved, log
from bench.plain_kserve import session as onnx_session
from bench.servers import Stack

SUBJECT = "kubeloop predictor (HTTP V1, micro-batching 64 rows / 5 ms, feedback + log on)"
DIRECT = "onnxruntime session.run in-process, same session options"
EXAMPLE_BATCHING = ("--max-batch-size", "64", "--max-latency-ms", "5")
"""examples/digits/servedmodel.yaml's spec.batching."""
PLAIN = "plain kserve.Model around the same session (HTTP V1, no micro-batching)"


def run(stack: Stack, quick: bool) -> list[Result]:
    settings = LoadSettings.of(quick, concurrency=32)
    model = models.digits_model(settings.model_epochs)
    images = models.image_pool(256, seed=1).astype(np.float32) / 255
    bodies = [json.dumps({"instances": [image.tolist()]}).encode() for image in images]
    rows = images.reshape(len(images), 1, 1, 8, 8)
    ours = stack.predictor(model.onnx, *EXAMPLE_BATCHING)
    no_wait = stack.predictor(model.onnx, "--max-batch-size", "64", "--max-latency-ms", "0")
    plain = stack.plain_kserve(model.onnx)
    session = onnx_session(model.onnx)
    path = "/v1/models/digits:predict"

    def direct(i: int) -> object:
        return session.run(None, {"input": rows[i % len(rows)]})

    def over_http(url: str, concurrency: int) -> Latencies:
        return load.http(url + path, bodies, concurrency, settings.seconds)

    config = {
        "seconds_per_run": settings.seconds,
        "rounds": settings.rounds,
        "request": "V1, one 8x8 image",
    }
    log("predictor: batch 1")
    one = interleaved(
        {
            "ours": lambda: over_http(ours.url, 1),
            "no_wait": lambda: over_http(no_wait.url, 1),
            "plain": lambda: over_http(plain.url, 1),
            "direct": lambda: load.calls(direct, 1, settings.seconds),
        },
        settings.rounds,
    )
    log(f"predictor: {settings.concurrency} concurrent callers")
    many = interleaved(
        {
            "ours": lambda: over_http(ours.url, settings.concurrency),
            "plain": lambda: over_http(plain.url, settings.concurrency),
            "direct": lambda: load.calls(direct, settings.concurrency, settings.seconds),
        },
        settings.rounds,
    )
    one_m = {k: Latencies.merge(v) for k, v in one.items()}
    many_m = {k: Latencies.merge(v) for k, v in many.items()}
    no_wait_m = one_m["no_wait"].summary()
    results = []
    for scenario, merged, concurrency in (
        ("batch1", one_m, 1),
        ("concurrent", many_m, settings.concurrency),
    ):
        for key, name, label in (("direct", DIRECT, "onnxruntime"), ("plain", PLAIN, "kserve")):
            details = _details(merged["ours"], merged[key])
            if scenario == "batch1":
                details["max_latency_0ms"] = {
                    "p50_ms": no_wait_m["p50_ms"],
                    "p99_ms": no_wait_m["p99_ms"],
                    "throughput": no_wait_m["throughput"],
                    "p50_ratio_vs_baseline": no_wait_m["p50_ms"] / merged[key].percentile_ms(50),
                }
            results.append(
                Result(
                    f"predictor.{scenario}.vs_{label}",
                    "throughput",
                    "requests/s",
                    merged["ours"].throughput,
                    merged[key].throughput,
                    SUBJECT,
                    name,
                    details=details,
                    config={**config, "concurrency": concurrency},
                )
            )
    return results


def _details(ours: Latencies, baseline: Latencies) -> dict[str, object]:
    return {
        "p50_ms": compare(ours.percentile_ms(50), baseline.percentile_ms(50)),
        "p99_ms": compare(ours.percentile_ms(99), baseline.percentile_ms(99)),
        "requests": {"figure": len(ours.seconds), "baseline": len(baseline.seconds)},
    }
