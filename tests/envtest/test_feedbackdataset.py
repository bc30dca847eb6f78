"""FeedbackDataset on a real API server with samples in the real S3 server: each trigger
creates exactly one TrainingJob, and no sample is left out of a snapshot, while the operator
is SIGKILLed again and again at random points of its life (starting, listing, counting,
triggering, writing the status)."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
from typing import Any

import pytest

from kubeloop.storage import ObjectStore
from tests.envtest import audit
from tests.envtest.releases import Release
from tests.feedback_samples import feedback_dataset, new_bucket, put_samples, s3_settings
from tests.operator_harness import FD, TJ, Cluster, Operator, Operators, eventually, status_of

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]
KILLS = 12
BATCHES = (0, 4, 8)
"""Before these restarts, a threshold's worth of samples arrives (up to three triggers: fewer
when no operator lived long enough to trigger between two batches)."""
THRESHOLD = 5
LONGEST_LIFE = 5.0
"""Seconds an operator may live before its SIGKILL: about its start-up (imports, kopf's
first lists) and a few reconciles on this machine, so kills land before, in and after them."""


async def test_each_trigger_creates_one_training_job_through_random_sigkills(
    cluster: Cluster,
    operators: Operators,
    object_store: ObjectStore,
    audit_log: audit.AuditLog,
    chart_releases: dict[str, Release],
) -> None:
    seed = int(os.environ.get("KUBELOOP_TEST_SEED") or random.SystemRandom().randrange(2**32))
    print(f"kill times drawn with KUBELOOP_TEST_SEED={seed}")
    draw = random.Random(seed)
    since = audit_log.mark()
    bucket = new_bucket(object_store)
    settings = s3_settings(object_store)
    await cluster.create(FD, feedback_dataset("crashy", bucket, threshold=THRESHOLD))

    timeline = []
    for kill in range(KILLS):
        if kill in BATCHES:
            await put_samples(object_store, bucket, THRESHOLD)
        running = await operators.spawn(**settings)
        life = draw.uniform(0.0, LONGEST_LIFE)
        await asyncio.sleep(life)  # the random point of the crash, not a wait for a condition
        await running.kill()
        jobs = await training_jobs(cluster)
        status = await status_of(cluster, FD, "crashy")
        timeline.append((round(life, 2), len(jobs), len(status.get("snapshots") or [])))
        # At no point may a generation have two TrainingJobs, or a TrainingJob no generation.
        assert jobs == [f"crashy-gen-{n}" for n in range(1, len(jobs) + 1)], timeline
    print("kills (life in s, TrainingJobs, snapshots recorded):", timeline)

    final = await operators.start(**settings)
    total = THRESHOLD * len(BATCHES)
    await eventually(lambda: _all_in_snapshots(cluster, total), "every sample in a snapshot", 60)
    # More polls after the last trigger: nothing more is created.
    more = await final.reconciles("FeedbackDataset") + 3
    await eventually(lambda: _reconciles(final, more), "three more reconciles")
    status = await status_of(cluster, FD, "crashy")
    # One snapshot per trigger; a trigger that came late took every sample since the last.
    snapshots = status["snapshots"]
    generations = len(snapshots)
    assert [s["generation"] for s in snapshots] == list(range(1, generations + 1))
    counts = [0, *(s["samples"] for s in snapshots)]
    assert all(b - a >= THRESHOLD for a, b in itertools.pairwise(counts)), counts
    assert await training_jobs(cluster) == [f"crashy-gen-{n}" for n in range(1, generations + 1)]
    assert status["lastTrainingJob"] == f"crashy-gen-{generations}"
    print(f"{generations} triggers; samples per snapshot {counts[1:]}")

    users = {r.user for r in chart_releases.values()}
    # Writes that made a TrainingJob (201: a create, or a server-side apply that created).
    created = [
        r
        for r in audit_log.read(since, users)
        if (r.group, r.resource, r.subresource) == ("kubeloop.io", "trainingjobs", "")
        and r.code == 201
    ]
    assert len(created) == generations, "\n".join(map(str, created))


async def training_jobs(cluster: Cluster) -> list[str]:
    return sorted(tj["metadata"]["name"] for tj in await cluster.list_objects(TJ))


async def _all_in_snapshots(cluster: Cluster, total: int) -> dict[str, Any] | None:
    status = await status_of(cluster, FD, "crashy")
    snapshots = status.get("snapshots") or []
    done = snapshots and snapshots[-1]["samples"] == total and status["samplesSinceSnapshot"] == 0
    return status if done else None


async def _reconciles(running: Operator, at_least: float) -> float | None:
    found = await running.reconciles("FeedbackDataset")
    return found if found >= at_least else None
