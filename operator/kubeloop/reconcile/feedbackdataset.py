"""FeedbackDataset: count new samples, and retrain exactly once per threshold.

Pure pieces (`count_inbox`, `decide`, `build_snapshot_manifest`, `build_training_job`,
`record_snapshot`) and `reconcile`, which runs them in a crash-safe order through the
runtime's ports (object storage, and the objects of the Kubernetes API or of `kubeloop up`).

Why no acknowledged sample is ever left out of every snapshot: a predictor acknowledges a
sample only after S3 acknowledged the segment holding it, and from then on the segment is in
`{prefix}inbox/` until a snapshot takes it (S3 lists what was written before the listing
began). Every snapshot takes everything the inbox lists, and nothing leaves the inbox except
into a snapshot: it is copied to that snapshot's archive and named in its manifest, and the
original is deleted only once the snapshot is recorded. No write order, clock or latency is
assumed, so any number of writers, replicas and slow writes are fine: a segment a listing
missed is simply taken by the next snapshot. Counting reads the inbox's listing (each key
names its sample count), so it is exact too, and O(new) per poll.

The trigger order, and why a crash at any point is harmless:

1. Clean up: the latest snapshot's segments are deleted from the inbox (their copies are in
   its archive), once; then count what the inbox holds.
2. Generation n = last snapshot's generation + 1; the TrainingJob is `<dataset>-gen-<n>`.
3. If that TrainingJob already exists (created by this dataset: its labels say so), a previous
   run crashed after creating it: adopt it - record snapshot n from its manifest - and stop.
4. Otherwise decide (threshold, cooldown, KPI). To trigger:
   a. copy the inbox's segments to `{prefix}archive/gen-<n>/` (copying again is harmless);
   b. write the manifest to its deterministic key `{prefix}snapshots/gen-<n>.json`
      (overwriting is safe: no TrainingJob refers to generation n yet);
   c. create TrainingJob `<dataset>-gen-<n>` ("already exists" counts as created);
   d. write the status recording snapshot n, last; step 1 of a later reconcile deletes the
      originals.
A crash before (c) leaves at most unreferenced copies and a manifest that the next trigger
overwrites, and every sample still in the inbox; a crash after (c) is adopted by step 3; a
lost status write is adopted the same way. No step creates a second TrainingJob for
generation n, and the threshold stays reached until the status records the snapshot, so no
trigger is lost.

spec.storage does not change: the counts and snapshots describe one location
(status.storage). A changed location is refused (Ready=False, StorageChanged) and nothing is
counted until it is set back; a new location is a new FeedbackDataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kubeloop import metrics
from kubeloop.api import conditions, validation
from kubeloop.api.common import API_VERSION, ConditionStatus
from kubeloop.api.errors import Unavailable
from kubeloop.api.feedbackdataset import (
    FeedbackDataset,
    FeedbackDatasetSpec,
    FeedbackDatasetStatus,
    Snapshot,
    Storage,
)
from kubeloop.api.samples import LiveAccuracy, SnapshotManifest, samples_in, snapshot_key
from kubeloop.api.times import format_time, parse_time
from kubeloop.api.trainingjob import DatasetSource
from kubeloop.reconcile import common, trainingjob
from kubeloop.reconcile.common import (
    LABEL_FEEDBACKDATASET,
    LABEL_GENERATION,
    LABEL_MANAGED_BY,
    MANAGED_BY,
)
from kubeloop.reconcile.ports import Body, Event, FeedbackStore, Objects, Ports

FEEDBACK_DATASET_NAME = "feedback"
"""Name the new snapshot gets among the TrainingJob's datasets, unless the template names it."""


@dataclass(frozen=True)
class LiveKpi:
    """Live accuracy of the served version on feedback, as the predictor recorded it."""

    version: str | None
    """Model version the ServedModel serves; None when it serves none yet."""
    accuracy: float | None
    """Correct / judged for that version; None when nothing was judged."""
    judged: int = 0
    """Predictions of that version that feedback judged."""


@dataclass(frozen=True)
class TriggerDecision:
    """Whether to retrain now, and why (or why not) in the Retraining condition's words."""

    trigger: bool
    reason: str
    message: str


@dataclass(frozen=True)
class FeedbackOutcome:
    """What `reconcile` did and the status to write."""

    status: FeedbackDatasetStatus
    events: tuple[Event, ...] = ()
    new_samples: int = 0
    """Samples counted by this poll."""
    created: str | None = None
    """TrainingJob created by this reconcile (not an adopted one)."""
    adopted: str | None = None
    """TrainingJob a previous, interrupted reconcile had created, now recorded."""


def manifest_uri(spec: FeedbackDatasetSpec, generation: int) -> str:
    return f"s3://{spec.storage.bucket}/{snapshot_key(spec.storage.prefix, generation)}"


def training_job_name(dataset: str, generation: int) -> str:
    """The deterministic name of the TrainingJob of snapshot `generation`."""
    return f"{dataset}-gen-{generation}"


def next_generation(status: FeedbackDatasetStatus) -> int:
    return max((s.generation for s in status.snapshots), default=0) + 1


def is_sample_object(key: str) -> bool:
    """Whether an inbox key is a segment or a sample (not, say, an upload's temporary part)."""
    return key.endswith((".json", ".jsonl"))


def count_inbox(status: FeedbackDatasetStatus, inbox: list[str]) -> FeedbackDatasetStatus:
    """The status counting the samples in `inbox` (none of them in a snapshot yet) as new,
    after those of the latest snapshot; no side effects."""
    since = sum(samples_in(k) for k in inbox if is_sample_object(k))
    taken = status.snapshots[-1].samples if status.snapshots else 0
    return status.model_copy(update={"samples": taken + since, "samples_since_snapshot": since})


def live_kpi(live: LiveAccuracy, version: str | None) -> LiveKpi:
    """The KPI reading of `version` in the predictor's live-accuracy record."""
    counts = live.versions.get(version or "")
    if counts is None:
        return LiveKpi(version, None, 0)
    return LiveKpi(version, counts.accuracy, counts.judged)


def decide(
    spec: FeedbackDatasetSpec,
    status: FeedbackDatasetStatus,
    now: datetime,
    live: LiveKpi | None = None,
) -> TriggerDecision:
    """Retrain now? Threshold reached, cooldown over, and the KPI (if any) not met.

    Without a reading of the KPI (`live` None, or fewer than kpi.minSamples judged) the KPI
    holds nothing back: retraining is never skipped without evidence that the model does well.
    """
    retrain = spec.retrain
    if retrain is None:
        return TriggerDecision(False, "NotConfigured", "spec.retrain is not set: only counting")
    since = status.samples_since_snapshot
    if since < retrain.threshold:
        return TriggerDecision(
            False,
            "BelowThreshold",
            f"{since}/{retrain.threshold} new samples since the last snapshot",
        )
    last = parse_time(status.last_trigger_time)
    if last is not None and now < last + timedelta(seconds=retrain.cooldown_seconds):
        until = format_time(last + timedelta(seconds=retrain.cooldown_seconds))
        return TriggerDecision(
            False, "Cooldown", f"{since} new samples; the cooldown lasts until {until}"
        )
    kpi = retrain.kpi
    if kpi is not None and live is not None and live.accuracy is not None:
        reading = (
            f"live accuracy {live.accuracy:.3f} of {kpi.served_model} version {live.version} "
            f"on {live.judged} judged predictions"
        )
        if live.judged >= kpi.min_samples and live.accuracy >= kpi.min_accuracy:
            return TriggerDecision(
                False, "KpiMet", f"{reading} meets the KPI ({kpi.min_accuracy}); not retraining"
            )
        if live.judged >= kpi.min_samples:
            return TriggerDecision(
                True, "Threshold", f"{since} new samples and {reading} is below {kpi.min_accuracy}"
            )
    return TriggerDecision(True, "Threshold", f"{since}/{retrain.threshold} new samples")


def build_snapshot_manifest(
    dataset: str,
    spec: FeedbackDatasetSpec,
    generation: int,
    inbox: list[str],
    archived: list[str],
    previous: Snapshot | None,
    now: datetime,
) -> SnapshotManifest:
    """Snapshot `generation`: the segments of `inbox` (copied to `archived`), after `previous`."""
    taken = [k for k in inbox if is_sample_object(k)]
    count = sum(samples_in(k) for k in taken)
    return SnapshotManifest(
        dataset=dataset,
        generation=generation,
        bucket=spec.storage.bucket,
        segments=[a for k, a in zip(inbox, archived, strict=True) if is_sample_object(k)],
        moved=taken,
        samples=count,
        total=(previous.samples if previous else 0) + count,
        previous=previous.manifest if previous else None,
        created_at=format_time(now),
    )


def build_training_job(
    dataset: FeedbackDataset,
    generation: int,
    manifest: str,
) -> dict[str, Any]:
    """The TrainingJob manifest of snapshot `generation`, from spec.retrain.trainingTemplate.

    Template datasets that reference this FeedbackDataset get the generation and manifest;
    when none does, the snapshot is added as dataset `feedback`.
    """
    retrain = dataset.spec.retrain
    if retrain is None:
        raise ValueError(f"FeedbackDataset {dataset.metadata.name} has no spec.retrain")
    name = dataset.metadata.name
    spec = retrain.training_template.model_copy(deep=True)
    pinned = False
    for source in spec.datasets:
        if source.feedback_dataset == name:
            source.generation, source.manifest, pinned = generation, manifest, True
    if not pinned:
        spec.datasets.append(
            DatasetSource(
                name=FEEDBACK_DATASET_NAME,
                feedback_dataset=name,
                generation=generation,
                manifest=manifest,
            )
        )
    metadata: dict[str, Any] = {
        "name": training_job_name(name, generation),
        "namespace": dataset.metadata.namespace,
        "labels": {
            LABEL_FEEDBACKDATASET: name,
            LABEL_GENERATION: str(generation),
            LABEL_MANAGED_BY: MANAGED_BY,
        },
        "annotations": {"kubeloop.io/snapshot-manifest": manifest},
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainingJob",
        "metadata": metadata,
        "spec": spec.to_wire(),
    }


def is_own_training_job(training_job: dict[str, Any], dataset: str, generation: int) -> bool:
    """Whether `training_job` is the one this dataset created for `generation`."""
    labels = training_job.get("metadata", {}).get("labels") or {}
    return bool(
        labels.get(LABEL_FEEDBACKDATASET) == dataset
        and labels.get(LABEL_GENERATION) == str(generation)
    )


def record_snapshot(
    status: FeedbackDatasetStatus,
    manifest: SnapshotManifest,
    uri: str,
    training_job: str,
    now: datetime,
) -> FeedbackDatasetStatus:
    """The status with snapshot `manifest` recorded and its TrainingJob named; no side effects.

    Samples that arrived after the snapshot was cut stay counted as new.
    """
    snapshots = [s for s in status.snapshots if s.generation != manifest.generation]
    snapshots.append(
        Snapshot(
            generation=manifest.generation,
            manifest=uri,
            samples=manifest.total,
            created_at=manifest.created_at,
        )
    )
    return status.model_copy(
        update={
            "snapshots": sorted(snapshots, key=lambda s: s.generation),
            "samples": max(status.samples, manifest.total),
            "samples_since_snapshot": max(0, status.samples - manifest.total),
            "last_training_job": training_job,
            "last_trigger_time": format_time(now),
        }
    )


def spec_problems(spec: FeedbackDatasetSpec, name: str) -> list[str]:
    """What is wrong with `spec` that the CRD schema could not refuse; empty when fine."""
    problems: list[str] = []
    if spec.retrain is None:
        return problems
    template = spec.retrain.training_template
    problems += [f"retrain.trainingTemplate.{p}" for p in trainingjob.spec_problems(template)]
    own = [d for d in template.datasets if d.feedback_dataset == name]
    clash = [d for d in template.datasets if d.name == FEEDBACK_DATASET_NAME and d not in own]
    if not own and clash:
        problems.append(
            f"retrain.trainingTemplate.datasets: the name {FEEDBACK_DATASET_NAME!r} is taken by "
            f"another dataset; the snapshot is added under it - rename that dataset, or add "
            f"one with feedbackDataset: {name} to choose the snapshot's name"
        )
    if len(training_job_name(name, 99999)) > 253:
        problems.append("metadata.name: too long to name its TrainingJobs (<name>-gen-<n>)")
    return problems


def location(storage: Storage) -> str:
    """Where a dataset's samples live, as status.storage records it."""
    where = f"s3://{storage.bucket}/{storage.prefix}"
    return f"{where} at {storage.endpoint}" if storage.endpoint else where


def reconcile(body: Body, ports: Ports, now: datetime) -> FeedbackOutcome:
    """Count new samples; at the threshold, freeze a snapshot and create its TrainingJob, in
    the order the module docstring explains; then write the status and tell the events."""
    namespace, name = common.name_of(body)
    old = common.read_status(FeedbackDatasetStatus, body)
    errors = validation.model_errors(body)
    if errors:
        return _refuse(body, ports.objects, old, "InvalidSpec", "; ".join(errors), now)
    dataset = FeedbackDataset.model_validate({**common.spec_body(body), "status": old.to_wire()})
    where = location(dataset.spec.storage)
    if old.storage is not None and old.storage != where:
        message = (
            f"spec.storage moved from {old.storage} to {where}: the counts and snapshots belong "
            "to the old location. Set spec.storage back, or create a new FeedbackDataset for "
            "the new location"
        )
        return _refuse(body, ports.objects, old, "StorageChanged", message, now)
    try:
        store = ports.feedback.open(namespace, dataset.spec.storage)
        outcome = count_and_trigger(dataset, body, store, ports.objects, now)
    except Unavailable as error:
        _refuse(body, ports.objects, old, error.reason, str(error), now)
        raise
    ports.objects.write_status(body, outcome.status)
    ports.objects.emit(body, outcome.events)
    threshold = dataset.spec.retrain.threshold if dataset.spec.retrain else None
    status = outcome.status
    metrics.observe_feedback_dataset(
        namespace, name, status.samples, status.samples_since_snapshot, threshold
    )
    if outcome.created or outcome.adopted:
        # An adopted trigger was never counted: its reconcile crashed before this line.
        metrics.RETRAIN_TRIGGERS.labels(namespace, name).inc()
    return outcome


def count_and_trigger(
    dataset: FeedbackDataset, body: Body, store: FeedbackStore, objects: Objects, now: datetime
) -> FeedbackOutcome:
    """Steps 1-4 of the module docstring; the status is the caller's to write, last."""
    name = dataset.metadata.name
    namespace = dataset.metadata.namespace
    spec = dataset.spec
    before = dataset.status or FeedbackDatasetStatus()
    inbox = store.list_inbox()
    latest = before.snapshots[-1] if before.snapshots else None
    archived = before.archived_generation
    if latest is not None and archived < latest.generation:
        taken = store.read_manifest(latest.generation)
        moved = set(taken.moved) if taken is not None else set()
        store.delete([k for k in inbox if k in moved])
        inbox = [k for k in inbox if k not in moved]
        archived = latest.generation
    status = count_inbox(before, inbox).model_copy(
        update={
            "observed_generation": dataset.metadata.generation,
            "storage": location(spec.storage),
            "archived_generation": archived,
        }
    )
    new_samples = max(0, status.samples - before.samples)
    problems = spec_problems(spec, name)
    if problems:
        message = "; ".join(problems)
        news = conditions.is_news(
            before.conditions, "Ready", "False", "InvalidSpec", status.observed_generation
        )
        status = _with_conditions(status, ("False", "InvalidSpec", message), None, now)
        events = (Event("Warning", "InvalidSpec", message),) if news else ()
        return FeedbackOutcome(status, events, new_samples)

    ready = _ready(status)
    if spec.retrain is None:
        decision = decide(spec, status, now)
        status = _with_conditions(status, ready, decision, now)
        return FeedbackOutcome(status, (), new_samples)

    generation = next_generation(status)
    job_name = training_job_name(name, generation)
    existing = objects.get("TrainingJob", namespace, job_name)
    if existing is not None:
        if not is_own_training_job(existing, name, generation):
            message = (
                f"TrainingJob {job_name} exists but was not created by FeedbackDataset {name} "
                "for this generation; delete or rename it so the next retrain can use the name"
            )
            news = conditions.is_news(
                before.conditions, "Ready", "False", "NameConflict", status.observed_generation
            )
            status = _with_conditions(status, ("False", "NameConflict", message), None, now)
            events = (Event("Warning", "NameConflict", message),) if news else ()
            return FeedbackOutcome(status, events, new_samples)
        return _adopt(dataset, status, store, generation, job_name, now, new_samples)

    pre = decide(spec, status, now)
    live = None
    if pre.trigger and spec.retrain.kpi is not None:
        live = _live_kpi(spec.retrain.kpi.served_model, namespace, store, objects)
    decision = decide(spec, status, now, live)
    if not decision.trigger:
        status = _with_conditions(status, ready, decision, now)
        return FeedbackOutcome(status, (), new_samples)

    previous = status.snapshots[-1] if status.snapshots else None
    copies = store.archive(inbox, generation)
    manifest = build_snapshot_manifest(name, spec, generation, inbox, copies, previous, now)
    uri = manifest_uri(spec, generation)
    store.write_manifest(manifest)
    created = objects.create(build_training_job(dataset, generation, uri), body)
    status = record_snapshot(status, manifest, uri, job_name, now)
    triggered = TriggerDecision(
        True,
        "Triggered",
        f"created TrainingJob {job_name} from snapshot {generation} ({manifest.samples} new "
        f"samples, {manifest.total} in all): {decision.message}",
    )
    status = _with_conditions(status, _ready(status), triggered, now)
    events = (Event("Normal", "RetrainTriggered", triggered.message),)
    return FeedbackOutcome(
        status,
        events,
        new_samples,
        created=job_name if created else None,
        adopted=None if created else job_name,
    )


def _live_kpi(
    served_model: str, namespace: str, store: FeedbackStore, objects: Objects
) -> LiveKpi | None:
    """The KPI's reading: the served version's live accuracy, or None when it cannot be known."""
    served = objects.get("ServedModel", namespace, served_model)
    live = store.live_accuracy()
    if served is None or live is None:
        return None
    return live_kpi(live, (served.get("status") or {}).get("servingVersion"))


def _refuse(
    body: Body,
    objects: Objects,
    old: FeedbackDatasetStatus,
    reason: str,
    message: str,
    now: datetime,
) -> FeedbackOutcome:
    """Write Ready=False for `reason` (a Warning when that is news); nothing is counted."""
    generation = common.generation(body)
    status = old.model_copy(deep=True)
    status.observed_generation = generation
    status.conditions, events = common.set_failing(
        status.conditions, "Ready", reason, message, generation, now
    )
    objects.write_status(body, status)
    objects.emit(body, events)
    return FeedbackOutcome(status, events)


def _adopt(
    dataset: FeedbackDataset,
    status: FeedbackDatasetStatus,
    store: FeedbackStore,
    generation: int,
    job_name: str,
    now: datetime,
    new_samples: int,
) -> FeedbackOutcome:
    manifest = store.read_manifest(generation)
    if manifest is None:
        # The manifest is written before the TrainingJob is created; only an outside hand
        # (a wiped bucket) gets here. Record the generation anyway so counting goes on.
        manifest = SnapshotManifest(
            dataset=dataset.metadata.name,
            generation=generation,
            bucket=dataset.spec.storage.bucket,
            created_at=format_time(now),
        )
    uri = manifest_uri(dataset.spec, generation)
    status = record_snapshot(status, manifest, uri, job_name, now)
    message = (
        f"recorded TrainingJob {job_name} of snapshot {generation}, created before an interruption"
    )
    decision = TriggerDecision(True, "Triggered", message)
    status = _with_conditions(status, _ready(status), decision, now)
    return FeedbackOutcome(
        status, (Event("Normal", "RetrainAdopted", message),), new_samples, adopted=job_name
    )


def _ready(status: FeedbackDatasetStatus) -> tuple[ConditionStatus, str, str]:
    last = f" since snapshot {status.snapshots[-1].generation}" if status.snapshots else ""
    message = f"{status.samples} samples, {status.samples_since_snapshot} new{last}"
    return ("True", "Counting", message)


def _with_conditions(
    status: FeedbackDatasetStatus,
    ready: tuple[ConditionStatus, str, str],
    retraining: TriggerDecision | None,
    now: datetime,
) -> FeedbackDatasetStatus:
    generation = status.observed_generation
    result = conditions.set_condition(status.conditions, "Ready", *ready, generation, now)
    if retraining is not None:
        result = conditions.set_condition(
            result,
            "Retraining",
            "True" if retraining.trigger else "False",
            retraining.reason,
            retraining.message,
            generation,
            now,
        )
    return status.model_copy(update={"conditions": result})
