"""Benchmark 2, active-learning selection over a pool of 40,000 images (the ALaaS setup).

The pool: 40,000 8 x 8 images made from the digits (bench.models.image_pool), stored as
uint8 in a .npy file and read memory-mapped, as an image store would be. The task: score
the whole pool with the digits model and pick 10,000 to label, by least confidence and by
k-center greedy (core-set) over the model's embeddings.

Subject (kubeloop): load batches of 1024, run them through kubeloop.serving.onnx_model,
then kubeloop.selection.select over the pool's probabilities / embeddings.
Baselines, in the same run and interleaved with it:
- inference limit: the same onnxruntime model over the pool, already in float32, batch
  1024, nothing else: how close end-to-end selection gets to raw inference;
- modAL (`modAL-python`): `ActiveLearner(query_strategy=uncertainty_sampling).query` over
  the pool in float32, its estimator the same onnxruntime session (predict_proba in batches
  of 1024), for least confidence; its picks are asserted to be kubeloop's (up to ties);
- naive sequential loop, as pool-based active-learning tools run it: per image load ->
  infer (batch 1) -> score, then rank with a full sort; for k-center the greedy loop
  with scikit-learn's pairwise_distances per pick (the reference core-set
  implementation), timed over its first picks and extrapolated (every pick costs the
  same: one pass over the pool).
Figure: images scored and selected per second, end to end.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bench import models
from bench.common import Result, interleaved, log
from bench.plain_kserve import session as onnx_session
from kubeloop import selection
from kubeloop.serving.onnx_model import OnnxModel

BATCH = 1024
SUBJECT = "kubeloop: OnnxModel batches of 1024 + kubeloop.selection.select"


@dataclass(frozen=True)
class Settings:
    pool: int
    budget: int
    rounds: int
    naive_kcenter_picks: int
    """Picks of the naive k-center loop that are timed; the rest are extrapolated."""
    model_epochs: int = 5

    @classmethod
    def of(cls, quick: bool) -> Settings:
        return cls(8_000, 2_000, 1, 200) if quick else cls(40_000, 10_000, 2, 1_000)


def run(stack: object, quick: bool) -> list[Result]:
    del stack  # no servers needed
    settings = Settings.of(quick)
    model = models.digits_model(settings.model_epochs)
    return measure(model.onnx, settings)


def measure(onnx: bytes, settings: Settings) -> list[Result]:
    """Every figure of this benchmark for the ONNX model `onnx` (the smoke test's entry)."""
    with tempfile.TemporaryDirectory(prefix="kubeloop-bench-pool-") as tmp:
        path = models.save_pool(models.image_pool(settings.pool), Path(tmp) / "pool.npy")
        pool: NDArray[np.uint8] = np.load(path, mmap_mode="r")
        return _measure(onnx, pool, settings)


def _measure(onnx: bytes, pool: NDArray[np.uint8], settings: Settings) -> list[Result]:
    ours = OnnxModel(onnx)
    session = onnx_session(onnx)
    floats = pool.astype(np.float32).reshape(len(pool), 1, 8, 8) / 255
    budget = settings.budget
    n = len(pool)

    def subject(strategy: str) -> float:
        started = time.perf_counter()
        probabilities, embeddings = _score(ours, pool)
        picked = selection.select(strategy, probabilities, embeddings, budget, seed=0)
        assert len(picked) == budget
        return time.perf_counter() - started

    def inference() -> float:
        started = time.perf_counter()
        for start in range(0, n, BATCH):
            session.run(None, {"input": floats[start : start + BATCH]})
        return time.perf_counter() - started

    def naive_least_confidence() -> float:
        started = time.perf_counter()
        scores = []
        for i in range(n):
            image = pool[i].astype(np.float32).reshape(1, 1, 8, 8) / 255  # load
            probabilities = session.run(["probabilities"], {"input": image})[0]  # infer
            scores.append(1.0 - float(probabilities.max()))  # score
        ranked = sorted(range(n), key=scores.__getitem__, reverse=True)[:budget]  # rank
        assert len(ranked) == budget
        return time.perf_counter() - started

    def modal_least_confidence() -> float:
        from modAL.models import ActiveLearner
        from modAL.uncertainty import uncertainty_sampling

        started = time.perf_counter()
        images = pool.astype(np.float32).reshape(n, 1, 8, 8) / 255  # load
        learner = ActiveLearner(
            estimator=_OnnxEstimator(session), query_strategy=uncertainty_sampling
        )
        picked, _ = learner.query(images, n_instances=budget)
        elapsed = time.perf_counter() - started
        modal_picks.append(np.asarray(picked))
        return elapsed

    modal_picks: list[NDArray[np.intp]] = []

    def naive_k_center() -> float:
        from sklearn.metrics import pairwise_distances

        started = time.perf_counter()
        rows = []
        for i in range(n):
            image = pool[i].astype(np.float32).reshape(1, 1, 8, 8) / 255
            rows.append(session.run(["embedding"], {"input": image})[0][0])
        features = np.asarray(rows)
        inferred = time.perf_counter()
        nearest = pairwise_distances(features, features[[0]]).ravel()
        picks = min(settings.naive_kcenter_picks, budget)
        for _ in range(picks):
            pick = int(np.argmax(nearest))
            distances = pairwise_distances(features, features[[pick]]).ravel()
            nearest = np.minimum(nearest, distances)
            nearest[pick] = 0.0
        per_pick = (time.perf_counter() - inferred) / picks
        return inferred - started + per_pick * budget

    log(f"selection: pool {n}, budget {budget}")
    times = interleaved(
        {
            "least-confidence": lambda: subject("least-confidence"),
            "k-center": lambda: subject("k-center"),
            "inference": inference,
            "naive-least-confidence": naive_least_confidence,
            "modal-least-confidence": modal_least_confidence,
            "naive-k-center": naive_k_center,
        },
        settings.rounds,
    )
    _same_picks(ours, pool, modal_picks[-1], budget)
    best = {name: min(values) for name, values in times.items()}  # least disturbed round
    rate = {name: n / seconds for name, seconds in best.items()}
    config = {
        "pool": n,
        "budget": budget,
        "batch": BATCH,
        "rounds": settings.rounds,
        "statistic": "best of the rounds",
        "seconds": best,
    }
    results = []
    for strategy in ("least-confidence", "k-center"):
        naive = f"naive-{strategy}"
        naive_name = (
            "naive loop: load -> infer (batch 1) -> score per image, then sorted()"
            if strategy == "least-confidence"
            else "naive loop: load -> infer (batch 1) per image, then greedy k-center with "
            f"sklearn pairwise_distances per pick ({min(settings.naive_kcenter_picks, budget)} "
            f"of {budget} picks timed, extrapolated)"
        )
        for key, name, label in (
            (
                "inference",
                "onnxruntime batch inference only (float32 in memory, batch 1024)",
                "inference",
            ),
            (naive, naive_name, "naive_loop"),
            *(
                [("modal-least-confidence", MODAL, "modal")]
                if strategy == "least-confidence"
                else []
            ),
        ):
            results.append(
                Result(
                    f"selection.{strategy}.vs_{label}",
                    "throughput",
                    "images/s",
                    rate[strategy],
                    rate[key],
                    SUBJECT,
                    name,
                    details={"seconds": {"figure": best[strategy], "baseline": best[key]}},
                    config=config,
                )
            )
    return results


MODAL = (
    "modAL ActiveLearner.query with uncertainty_sampling, the same onnxruntime session as its "
    "estimator (predict_proba in batches of 1024)"
)


class _OnnxEstimator:
    """The estimator modAL asks for: predict_proba over the session, in batches."""

    def __init__(self, session: object) -> None:
        self.session = session

    def fit(self, x: object, y: object) -> _OnnxEstimator:
        return self

    def predict_proba(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        run = self.session.run  # type: ignore[attr-defined]
        parts = [
            run(["probabilities"], {"input": x[s : s + BATCH]})[0] for s in range(0, len(x), BATCH)
        ]
        return np.concatenate(parts)


def _same_picks(
    model: OnnxModel, pool: NDArray[np.uint8], theirs: NDArray[np.intp], budget: int
) -> None:
    """modAL picked what kubeloop picks: the same least-confidence scores (ties aside)."""
    probabilities, embeddings = _score(model, pool)
    ours = selection.select("least-confidence", probabilities, embeddings, budget, seed=0)
    confidence = probabilities.max(axis=1)
    assert len(theirs) == len(ours) == budget
    assert np.allclose(np.sort(confidence[ours]), np.sort(confidence[theirs]), atol=1e-6)


def _score(model: OnnxModel, pool: NDArray[np.uint8]) -> tuple[NDArray[np.float32], ...]:
    """Probabilities and embeddings of every pool image, loaded and run in batches."""
    probabilities, embeddings = [], []
    for start in range(0, len(pool), BATCH):
        batch = pool[start : start + BATCH].astype(np.float32)  # load
        batch /= 255
        p, e = model.run(batch)
        probabilities.append(p)
        embeddings.append(e)
    return np.concatenate(probabilities), np.concatenate(embeddings)
