"""ServedModel: serve a registered model, and promote new versions through a quality gate.

    reconcile(body, ports, now)
        refuse an invalid spec, or one the runtime cannot serve     (InvalidSpec, no KServe)
        observe: the version behind the alias, the latest version, and, when `gate_needed`,
                 both versions' metrics for `evaluate_gate`          (ports.registry)
        decide the next rollout step                                (pure)
        record: a new verdict as a tag on the candidate (GATE_TAG); on a promotion the
                alias's PREVIOUS_ALIAS, then the alias (`set_alias`)   (ports.registry)
        run what `plan.deploy` describes: an InferenceService, a Deployment, or a local
        predictor process, observed as a `ServingState`             (ports.predictor)
        finalise: Ready from the ServingState; write the status     (pure; ports.objects)

Canary, and what it means when the predictor follows an alias: the stable predictor runs
`models:/<model>@<alias>` and serves whatever the alias names. During a canary the candidate
runs pinned, `models:/<model>/<candidate>`, and takes `canaryPercent` of the traffic (KServe:
the InferenceService's latest revision with canaryTrafficPercent; Deployment runtime: a second
Deployment behind the same Service, so the share follows the replica ratio). After the last
step the alias moves to the candidate and the spec returns to the alias URI alone: the stable
predictor now serves the candidate, and the pinned revision is gone. A canary whose live
accuracy (the FeedbackDataset's, per version) falls below the stable version's is rolled back
instead (`canary_problem`), and the candidate is tagged ROLLED_BACK_TAG.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from kubeloop import metrics
from kubeloop.api import conditions, validation
from kubeloop.api.common import ConditionStatus
from kubeloop.api.errors import Unavailable
from kubeloop.api.feedbackdataset import FeedbackDataset, FeedbackDatasetSpec
from kubeloop.api.predictor import PredictorConfig
from kubeloop.api.samples import LiveAccuracy
from kubeloop.api.servedmodel import (
    Batching,
    Canary,
    Gate,
    Promotion,
    ServedModel,
    ServedModelSpec,
    ServedModelStatus,
    SliceRecord,
)
from kubeloop.api.times import format_time, parse_time
from kubeloop.api.trainingjob import Metrics
from kubeloop.reconcile import common
from kubeloop.reconcile.common import is_dns_subdomain
from kubeloop.reconcile.ports import (
    Body,
    Deploy,
    Event,
    FeedbackRef,
    Objects,
    Ports,
    Registry,
    ServingState,
)

__all__ = ["Deploy", "ServingState"]

PREDICTOR_COMMAND = ("python", "-m", "kubeloop.serving")
PREDICTOR_PORT = 8080
READINESS_PATH = "/v2/health/ready"
_EPSILON = 1e-9
PREVIOUS_ALIAS = "{alias}-previous"
"""The alias naming the version `alias` named before its last promotion: what a rollback
moves back to."""
ROLLED_BACK_TAG = "kubeloop.rolledBack.{alias}"
"""Model-version tag on a version taken off `alias` (by `kubeloop rollback`, or by a canary
that did worse live than the stable version): it is not promoted through `alias` again."""
ROLLBACK_ANNOTATION = "kubeloop.io/rollback"
"""Annotation asking the operator for what `kubeloop rollback` does; each new value is one
request: kubectl annotate servedmodel NAME kubeloop.io/rollback="$(date +%s)" --overwrite."""
GATE_TAG = "kubeloop.gate.{alias}"
"""Model-version tag holding the gate's verdict (JSON, as in the status) on the version as a
candidate for the alias: the registry keeps why a version was, or was not, promoted."""


def model_uri(registered_model: str, alias: str | None = None, version: str | None = None) -> str:
    """models:/<model>/<version> when a version is given, else models:/<model>@<alias>."""
    if version is not None:
        return f"models:/{registered_model}/{version}"
    if alias is None:
        raise ValueError("model_uri needs an alias or a version")
    return f"models:/{registered_model}@{alias}"


def predictor_args(
    name: str,
    uri: str,
    batching: Batching,
    feedback: tuple[str, FeedbackDatasetSpec] | None = None,
    host: str = "0.0.0.0",
    port: int = PREDICTOR_PORT,
    device: str = "cpu",
) -> list[str]:
    """Arguments of the predictor entrypoint; feedback from the FeedbackDataset's spec.

    Rendered by the predictor's own configuration model, which parses them back the same.
    """
    options: dict[str, object] = {
        "name": name,
        "model_uri": uri,
        "host": host,
        "http_port": port,
        "max_batch_size": batching.max_batch_size,
        "max_latency_ms": batching.max_latency_ms,
    }
    if device != "cpu":
        options["device"] = device
    if feedback is not None:
        dataset, spec = feedback
        options.update(
            feedback_dataset=dataset,
            feedback_bucket=spec.storage.bucket,
            feedback_prefix=spec.storage.prefix,
            classes=spec.classes,
            input_shape=spec.input_shape or None,
            slices=spec.slices,
            review_strategy=spec.review.strategy,
            review_budget=spec.review.budget,
            review_audit_share=spec.review.audit_share,
            review_overlap=spec.review.overlap,
            review_gold_share=spec.review.gold_share,
            retrain_threshold=spec.retrain.threshold if spec.retrain else None,
        )
    return PredictorConfig.model_validate(options).to_args()


def evaluate_gate(
    baseline: Metrics,
    candidate: Metrics,
    promotion: Promotion,
    baseline_version: str,
    candidate_version: str,
    records: dict[str, SliceRecord] | None = None,
) -> Gate:
    """The gate's verdict on `candidate` against the serving `baseline`; no side effects.

    Passes when the overall metric changes by at least promotion.minImprovement (0: must not
    fall) and no slice of the baseline falls by more than promotion.maxSliceRegression, below
    the baseline or below the best value it had among the versions served (`records`, from
    `raise_records`): a slice cannot be forgotten by steps each just under the limit. A
    metric that is not a finite number, and a slice the candidate was not evaluated on, fail:
    they cannot be judged, so forgetting cannot be ruled out.
    """
    metric = promotion.metric
    gate = Gate(
        verdict="Failed",
        candidate_version=candidate_version,
        baseline_version=baseline_version,
    )
    if candidate.overall is None or not math.isfinite(candidate.overall):
        logged = "no" if candidate.overall is None else f"{candidate.overall} as its"
        gate.message = (
            f"candidate version {candidate_version} cannot be judged: its run logged {logged} "
            f"`{metric}`; log a finite {metric} over the evaluation data"
        )
        return gate
    if baseline.overall is None or not math.isfinite(baseline.overall):
        gate.verdict = "Passed"
        gate.message = (
            f"baseline version {baseline_version} has no finite {metric} metric: nothing to "
            f"compare against; candidate {candidate_version} accepted"
        )
        return gate
    gate.overall_delta = round(candidate.overall - baseline.overall, 6)
    reasons = []
    if gate.overall_delta < promotion.min_improvement - _EPSILON:
        reasons.append(
            f"overall {metric} went from {baseline.overall:.4f} to {candidate.overall:.4f} "
            f"({gate.overall_delta:+.4f}; at least {promotion.min_improvement:+.4f} required)"
        )
    for name in sorted(baseline.slices):
        before, after = baseline.slices[name], candidate.slices.get(name)
        if after is not None and math.isfinite(after) and math.isfinite(before):
            gate.slice_deltas[name] = round(after - before, 6)
        record = (records or {}).get(name)
        problem = _slice_problem(name, before, after, record, promotion.max_slice_regression)
        if problem is not None:
            gate.failed_slices.append(name)
            reasons.append(problem)
    if reasons:
        gate.message = f"candidate {candidate_version} failed the gate: " + "; ".join(reasons)
        return gate
    gate.verdict = "Passed"
    worst = min(gate.slice_deltas.items(), key=lambda item: item[1], default=None)
    worst_text = f"; worst slice {worst[0]} {worst[1]:+.4f}" if worst else ""
    gate.message = (
        f"candidate {candidate_version} passed the gate: overall {metric} "
        f"{gate.overall_delta:+.4f}{worst_text}"
    )
    return gate


def _slice_problem(
    name: str, before: float, after: float | None, record: SliceRecord | None, limit: float
) -> str | None:
    """Why slice `name` fails the gate, from the baseline's value `before`, the candidate's
    `after` and the slice's record; None when it passes."""
    if after is None:
        return f"slice {name} was not evaluated for the candidate"
    if not math.isfinite(after):
        return f"slice {name} is {after} for the candidate, not a number the gate can judge"
    allowed = f"at most {limit:.4f} allowed"
    if math.isfinite(before) and after < before - limit - _EPSILON:
        return f"slice {name} fell {before - after:.4f} ({before:.4f} -> {after:.4f}; {allowed})"
    if record is not None and after < record.value - limit - _EPSILON:
        return (
            f"slice {name} at {after:.4f} is {record.value - after:.4f} below its best, "
            f"{record.value:.4f} (version {record.version}; {allowed})"
        )
    return None


def raise_records(
    records: dict[str, SliceRecord], evaluation: Metrics, version: str
) -> dict[str, SliceRecord]:
    """`records` with each finite slice of `version`'s evaluation that beats its record."""
    raised = dict(records)
    for name, value in evaluation.slices.items():
        if math.isfinite(value) and (name not in raised or value > raised[name].value):
            raised[name] = SliceRecord(value=value, version=version)
    return raised


def gate_needed(
    spec: ServedModelSpec, status: ServedModelStatus | None, serving: str | None, latest: str | None
) -> bool:
    """Whether the runtime must evaluate the gate (latest against serving) before deciding:
    there is a newer candidate and the status holds no verdict on exactly this pair."""
    if spec.version is not None or serving is None or latest is None:
        return False
    if int(latest) <= int(serving):
        return False
    gate = status.gate if status is not None else None
    return not (
        gate is not None
        and gate.candidate_version == latest
        and gate.baseline_version == serving
        and gate.verdict != "Pending"
    )


@dataclass(frozen=True)
class RolloutPlan:
    """What `decide_rollout` wants the runtime to do, in this order."""

    status: ServedModelStatus
    """The status after the rollout step; Ready comes from `decide_ready`."""
    set_previous: str | None = None
    """Point the PREVIOUS_ALIAS of spec.alias at this version first: a promotion's old one."""
    set_alias: str | None = None
    """Move spec.alias to this version."""
    deploy: Deploy | None = None
    """What to run; None while there is no version to serve."""
    events: tuple[Event, ...] = ()
    """Transitions worth telling."""
    new_verdict: Gate | None = None
    """A verdict this decision reached (not one read back from the status)."""
    roll_back: str | None = None
    """Tag this candidate ROLLED_BACK_TAG: its canary did worse than the stable version."""


def _settled(status: ServedModelStatus, serving: str, generation: int) -> bool:
    """Whether status already says `serving` is rolled out for this spec generation.

    Then its conditions keep saying how that version got there (FirstVersion, Promoted)
    instead of being rewritten on every reconcile.
    """
    rolled = conditions.get_condition(status.conditions, "RolledOut")
    return (
        status.serving_version == serving
        and status.candidate_version is None
        and rolled is not None
        and rolled.status == "True"
        and rolled.observed_generation == generation
    )


@dataclass(frozen=True)
class Observed:
    """What `reconcile` read from the registry before deciding."""

    generation: int
    """metadata.generation of the spec."""
    serving: str | None
    """The version behind spec.alias; None when the alias is not set (or a version is pinned)."""
    latest: str | None
    """The highest registered version; None when there is none yet."""
    gate: Gate | None
    """The verdict on latest against serving when `gate_needed` said so, else the status's."""
    records: dict[str, SliceRecord] | None = None
    """The slices' records with the serving version's evaluation, when the gate read it;
    None: the status's stand."""
    live: LiveAccuracy | None = None
    """Live accuracy per version during a canary (the FeedbackDataset's), else None."""


def decide(
    spec: ServedModelSpec,
    status: ServedModelStatus | None,
    observed: Observed,
    now: datetime,
) -> RolloutPlan:
    """The next rollout step; no side effects.

    The first version, with no alias set, is promoted at once: there is nothing to compare it
    against. Ready is `finalise`'s, once the runtime has run what the plan deploys.
    """
    generation, serving, latest, gate = (
        observed.generation,
        observed.serving,
        observed.latest,
        observed.gate,
    )
    old = status or ServedModelStatus()
    new = old.model_copy(deep=True)
    new.observed_generation = generation
    if observed.records is not None:
        new.slice_records = observed.records
    model = spec.registered_model
    alias_uri = model_uri(model, alias=spec.alias)
    events: list[Event] = []

    def rolled_out(value: ConditionStatus, reason: str, message: str) -> None:
        new.conditions = conditions.set_condition(
            new.conditions, "RolledOut", value, reason, message, generation, now
        )

    def gate_failed(value: ConditionStatus, reason: str, message: str) -> None:
        new.conditions = conditions.set_condition(
            new.conditions, "GateFailed", value, reason, message, generation, now
        )

    def steady(version: str, reason: str, message: str) -> None:
        new.serving_version = version
        new.candidate_version = None
        new.canary_percent = 0
        new.canary_step_time = None
        rolled_out("True", reason, message)

    if spec.version is not None:
        steady(spec.version, "Pinned", f"serving pinned version {spec.version}; no promotion")
        gate_failed("False", "Pinned", "the gate does not run for a pinned version")
        deploy = Deploy(model_uri(model, version=spec.version), version=spec.version)
        return RolloutPlan(new, deploy=deploy)
    if latest is None:
        new.serving_version = None
        rolled_out(
            "False",
            "NoModelVersion",
            f"registered model {model} has no versions yet; a TrainingJob registers one",
        )
        return RolloutPlan(new)
    if serving is None:
        message = f"first version {latest} promoted to @{spec.alias}: nothing to compare it against"
        steady(latest, "FirstVersion", message)
        gate_failed("False", "FirstVersion", message)
        events.append(Event("Normal", "Promoted", message))
        deploy = Deploy(alias_uri, version=latest)
        return RolloutPlan(new, set_alias=latest, deploy=deploy, events=tuple(events))
    if int(latest) <= int(serving):
        if not _settled(old, serving, generation):
            steady(serving, "RolledOut", f"serving version {serving} (@{spec.alias})")
            gate_failed("False", "NoCandidate", "no version newer than the serving one")
        if new.gate is not None and new.gate.candidate_version != serving:
            # A verdict on a version that is neither serving nor a candidate is history: the
            # Gate column must not say Failed while a later version serves.
            new.gate = None
        return RolloutPlan(new, deploy=Deploy(alias_uri, version=serving), events=tuple(events))

    if gate is None or gate.candidate_version != latest or gate.baseline_version != serving:
        raise ValueError(
            f"decide_rollout needs the gate's verdict on {latest} against {serving}: "
            "evaluate it when gate_needed() says so"
        )
    fresh = old.gate != gate
    new.gate = gate
    new.candidate_version = latest
    if gate.verdict != "Passed":
        new.serving_version = serving
        new.canary_percent = 0
        new.canary_step_time = None
        stopped = "RolledBack" if gate.verdict == "RolledBack" else "GateFailed"
        reason = "SliceRegression" if gate.failed_slices else stopped
        gate_failed("True", reason, gate.message)
        rolled_out("False", stopped, f"keeps serving {serving}: {gate.message}")
        if fresh:
            events.append(Event("Warning", stopped, gate.message))
        return RolloutPlan(
            new,
            deploy=Deploy(alias_uri, version=serving),
            events=tuple(events),
            new_verdict=gate if fresh else None,
        )

    gate_failed("False", "GatePassed", gate.message)
    if fresh:
        events.append(Event("Normal", "GatePassed", gate.message))
    verdict = gate if fresh else None
    if spec.promotion.mode == "manual":
        new.serving_version = serving
        rolled_out(
            "False",
            "AwaitingPromotion",
            f"candidate {latest} passed the gate; promotion is manual: set alias "
            f"{spec.alias} of {model} to {latest} to promote it",
        )
        deploy = Deploy(alias_uri, version=serving)
        return RolloutPlan(new, deploy=deploy, events=tuple(events), new_verdict=verdict)

    steps = spec.canary.steps if spec.canary is not None else []
    percent = old.canary_percent if old.candidate_version == latest else 0
    worse = canary_problem(spec.canary, observed.live, serving, latest) if percent else None
    if worse is not None:
        new.gate = Gate(
            verdict="RolledBack", candidate_version=latest, baseline_version=serving, message=worse
        )
        new.serving_version = serving
        new.canary_percent = 0
        new.canary_step_time = None
        gate_failed("True", "CanaryRolledBack", worse)
        rolled_out("False", "RolledBack", f"keeps serving {serving}: {worse}")
        events.append(Event("Warning", "CanaryRolledBack", worse))
        deploy = Deploy(alias_uri, version=serving)
        return RolloutPlan(new, deploy=deploy, events=tuple(events), roll_back=latest)
    started = parse_time(old.canary_step_time)
    if steps and percent == 0:
        percent, started = steps[0], now
        events.append(
            Event("Normal", "CanaryStarted", f"candidate {latest} takes {percent}% of traffic")
        )
    elif (
        steps
        and started is not None
        and now >= started + timedelta(seconds=spec.canary.step_seconds if spec.canary else 0)
    ):
        later = [p for p in steps if p > percent]
        if later:
            percent, started = later[0], now
            events.append(
                Event("Normal", "CanaryStep", f"candidate {latest} takes {percent}% of traffic")
            )
        else:
            percent = 100
    elif not steps:
        percent = 100

    if percent >= 100:
        message = f"promoted version {latest} to @{spec.alias} (was {serving}): {gate.message}"
        steady(latest, "Promoted", message)
        events.append(Event("Normal", "Promoted", message))
        return RolloutPlan(
            new,
            set_previous=serving,
            set_alias=latest,
            deploy=Deploy(alias_uri, version=latest),
            events=tuple(events),
            new_verdict=verdict,
        )
    new.serving_version = serving
    new.canary_percent = percent
    new.canary_step_time = format_time(started or now)
    rolled_out("False", "Canary", f"candidate {latest} takes {percent}% of traffic")
    deploy = Deploy(alias_uri, model_uri(model, version=latest), percent, version=serving)
    return RolloutPlan(new, deploy=deploy, events=tuple(events), new_verdict=verdict)


def observe(
    spec: ServedModelSpec,
    status: ServedModelStatus | None,
    registry: Registry,
    generation: int,
    live: LiveAccuracy | None = None,
) -> Observed:
    """Read the registry: the serving and latest versions, and both versions' metrics when
    `gate_needed` says the pair has not been judged (the verdict is evaluate_gate's); `live`
    is the live accuracy a canary is judged by."""
    model = spec.registered_model
    serving = registry.alias_version(model, spec.alias) if spec.version is None else None
    latest = registry.latest_version_number(model)
    gate = status.gate if status is not None else None
    records = None
    rolled_back = _rolled_back(spec, status, registry, serving, latest)
    if rolled_back is not None:
        gate = rolled_back
    elif gate_needed(spec, status, serving, latest) and serving is not None and latest is not None:
        metric = spec.promotion.metric
        baseline = registry.version_metrics(model, serving, metric)
        old = status.slice_records if status is not None else {}
        records = raise_records(old, baseline, serving)
        candidate = registry.version_metrics(model, latest, metric)
        gate = evaluate_gate(baseline, candidate, spec.promotion, serving, latest, records)
    return Observed(generation, serving, latest, gate, records, live)


def canary_problem(
    canary: Canary | None, live: LiveAccuracy | None, stable: str, candidate: str
) -> str | None:
    """Why the candidate's canary is rolled back: its live accuracy fell below the stable
    version's by more than canary.maxAccuracyDrop, both judged often enough; else None."""
    if canary is None or live is None:
        return None
    before, after = live.versions.get(stable), live.versions.get(candidate)
    if before is None or after is None or min(before.judged, after.judged) < canary.min_judged:
        return None
    was, now = before.correct / before.judged, after.correct / after.judged
    if now >= was - canary.max_accuracy_drop - _EPSILON:
        return None
    return (
        f"candidate {candidate}'s live accuracy {now:.4f} ({after.judged} judged) "
        f"fell below version {stable}'s {was:.4f} ({before.judged} judged) during "
        f"its canary, more than the {canary.max_accuracy_drop:.4f} allowed: rolled back"
    )


def _rolled_back(
    spec: ServedModelSpec,
    status: ServedModelStatus | None,
    registry: Registry,
    serving: str | None,
    latest: str | None,
) -> Gate | None:
    """The verdict on the newer version waiting to be judged when it was rolled back from
    spec.alias (it is not promoted through it again); None otherwise."""
    if spec.version is not None or serving is None or latest is None:
        return None
    said = status.gate if status is not None else None
    if said and (said.verdict, said.candidate_version, said.baseline_version) == (
        "RolledBack",
        latest,
        serving,
    ):
        return said  # the verdict of the rollback itself, with its reason
    tag = ROLLED_BACK_TAG.format(alias=spec.alias)
    if (
        int(latest) <= int(serving)
        or registry.version_tag(spec.registered_model, latest, tag) is None
    ):
        return None
    message = (
        f"version {latest} was rolled back from @{spec.alias} and is not promoted through it "
        f"again; a newer version is judged against {serving}"
    )
    return Gate(
        verdict="RolledBack", candidate_version=latest, baseline_version=serving, message=message
    )


def reconcile(body: Body, ports: Ports, now: datetime) -> ServedModelStatus:
    """Serve the version behind the alias; judge, canary and promote newer versions.

    The order: refuse what cannot be served; read the registry; decide; move the alias; run
    the predictor; derive Ready from what runs; write the status last. A crash before the
    status write repeats the same decision on the next reconcile (the alias already moved:
    the candidate is then the serving version, which settles the rollout).
    """
    namespace, name = common.name_of(body)
    generation = common.generation(body)
    old = common.read_status(ServedModelStatus, body)
    sm, problems = common.parse(ServedModel, body, lambda sm: spec_problems(sm.spec))
    if sm is None or problems:
        return _refuse(body, ports.objects, old, "InvalidSpec", "; ".join(problems), now)
    refused = ports.predictor.problem(sm)
    if refused is not None:
        return _refuse(body, ports.objects, old, *refused, now)
    feedback, events = _feedback(sm, old, ports.objects)
    try:
        clash = _claim_alias(sm, ports)
        if clash is not None:
            return _refuse(body, ports.objects, old, "AliasInUse", clash, now)
        old, asked = _requested_rollback(sm, old, ports.registry, now)
        events.extend(asked)
        live = _canary_live(sm, old, feedback, ports)
        observed = observe(sm.spec, old, ports.registry, generation, live)
        plan = decide(sm.spec, old, observed, now)
        _record(sm.spec, plan, ports.registry)
    except Unavailable as error:
        status = registry_unavailable(old, generation, str(error), now)
        ports.objects.write_status(body, status)
        news = conditions.is_news(
            old.conditions, "RolledOut", "Unknown", "RegistryUnavailable", generation
        )
        ports.objects.emit(
            body, [Event("Warning", "RegistryUnavailable", str(error))] if news else []
        )
        raise
    state = None
    if plan.deploy is not None:
        spec_changed = old.observed_generation != generation
        state = ports.predictor.apply(sm, body, plan.deploy, feedback, spec_changed)
    status = finalise(plan, state, generation, now)
    ports.objects.write_status(body, status)
    ports.objects.emit(body, [*events, *plan.events])
    metrics.observe_serving(namespace, name, status.serving_version)
    if plan.new_verdict is not None:
        metrics.GATE_VERDICTS.labels(plan.new_verdict.verdict).inc()
        for slice_name, delta in plan.new_verdict.slice_deltas.items():
            metrics.GATE_SLICE_DELTA.labels(namespace, name, slice_name).set(delta)
    return status


def rollback(registry: Registry, model: str, alias: str, now: datetime) -> str:
    """Move `alias` of `model` back to the version its last promotion replaced (PREVIOUS_ALIAS)
    and tag the version it takes off (ROLLED_BACK_TAG), so the ServedModel serving the alias
    goes back to the earlier version and does not promote this one again. What moved, in
    words; ValueError saying why when there is nothing to go back to.

    The tag goes first: a crash before the alias moves leaves a tag on the serving version,
    which changes nothing, and the rollback can be run again.
    """
    serving = registry.alias_version(model, alias)
    previous = registry.alias_version(model, PREVIOUS_ALIAS.format(alias=alias))
    if serving is None:
        raise ValueError(f"@{alias} of {model} names no version: nothing to roll back")
    if previous is None or previous == serving:
        raise ValueError(
            f"@{alias} of {model} serves version {serving} and no promotion through it replaced "
            f"another version since the last rollback: nothing to go back to (set the alias "
            f"to a version yourself to serve it)"
        )
    record = json.dumps({"alias": alias, "to": previous, "at": format_time(now)})
    registry.tag_version(model, serving, ROLLED_BACK_TAG.format(alias=alias), record)
    registry.set_alias(model, alias, previous)
    return (
        f"@{alias} of {model} moved back from version {serving} to {previous}; version "
        f"{serving} will not be promoted through @{alias} again"
    )


def _requested_rollback(
    sm: ServedModel, old: ServedModelStatus, registry: Registry, now: datetime
) -> tuple[ServedModelStatus, list[Event]]:
    """Run the rollback a new ROLLBACK_ANNOTATION value asks for: the status that records the
    value as done, and an Event saying what moved or why nothing could."""
    request = sm.metadata.annotations.get(ROLLBACK_ANNOTATION)
    if not request or request == old.rollback_request:
        return old, []
    model, alias = sm.spec.registered_model, sm.spec.alias
    try:
        event = Event("Normal", "Rollback", rollback(registry, model, alias, now))
    except ValueError as error:
        event = Event("Warning", "RollbackRefused", f"{ROLLBACK_ANNOTATION}={request}: {error}")
    return old.model_copy(update={"rollback_request": request}), [event]


def _record(spec: ServedModelSpec, plan: RolloutPlan, registry: Registry) -> None:
    """What the plan writes to the registry: a new verdict as a tag on its candidate (not a
    rollback's: the version keeps the verdict it was promoted with), then the aliases."""
    model, alias, verdict = spec.registered_model, spec.alias, plan.new_verdict
    if verdict is not None and verdict.candidate_version and verdict.verdict != "RolledBack":
        text = json.dumps(verdict.to_wire(), sort_keys=True)
        registry.tag_version(model, verdict.candidate_version, GATE_TAG.format(alias=alias), text)
    if plan.roll_back is not None and plan.status.gate is not None:
        why = json.dumps({"alias": alias, "reason": plan.status.gate.message})
        registry.tag_version(model, plan.roll_back, ROLLED_BACK_TAG.format(alias=alias), why)
    if plan.set_previous is not None:
        registry.set_alias(model, PREVIOUS_ALIAS.format(alias=alias), plan.set_previous)
    if plan.set_alias is not None:
        registry.set_alias(model, alias, plan.set_alias)


def _canary_live(
    sm: ServedModel, old: ServedModelStatus, feedback: FeedbackRef | None, ports: Ports
) -> LiveAccuracy | None:
    """The FeedbackDataset's live accuracy while a canary runs; None otherwise, or when its
    storage cannot be read now (the canary is judged at a later reconcile)."""
    if feedback is None or not old.canary_percent or sm.spec.canary is None:
        return None
    try:
        return ports.feedback.open(sm.metadata.namespace, feedback[1].storage).live_accuracy()
    except Unavailable:
        return None


def _claim_alias(sm: ServedModel, ports: Ports) -> str | None:
    """Claim spec.alias for this ServedModel; why not, when another one promotes through it.

    Two ServedModels moving one alias would promote for each other. The claim is a tag on
    the registered model; one whose claimant is gone (deleted, or this one recreated) is
    taken over. A claimant that cannot be looked up (another namespace the operator may not
    read) counts as present.
    """
    if sm.spec.version is not None:
        return None  # a pinned version moves no alias
    model, alias = sm.spec.registered_model, sm.spec.alias
    me = f"{sm.metadata.namespace}/{sm.metadata.name}"
    owner = ports.registry.alias_owner(model, alias)
    if owner == me:
        return None
    if owner is not None:
        namespace, _, name = owner.partition("/")
        try:
            present = ports.objects.get("ServedModel", namespace, name) is not None
        except Unavailable:
            present = True
        if present:
            return (
                f"alias {alias} of registered model {model} is moved by ServedModel {owner}: "
                "two ServedModels on one alias would promote versions for each other; give "
                "this one its own spec.alias"
            )
    ports.registry.claim_alias(model, alias, me)
    return None


def _feedback(
    sm: ServedModel, old: ServedModelStatus, objects: Objects
) -> tuple[FeedbackRef | None, list[Event]]:
    """The referenced FeedbackDataset's spec for the predictor's feedback arguments.

    A missing or invalid one does not stop serving; it is said in a Warning event, once.
    """
    name = sm.spec.feedback_dataset
    if name is None:
        return None, []
    body = objects.get("FeedbackDataset", sm.metadata.namespace, name)
    if body is not None and not validation.model_errors(body):
        dataset = FeedbackDataset.model_validate(common.spec_body(body))
        return (name, dataset.spec), []
    if old.observed_generation == sm.metadata.generation and old.conditions:
        return None, []  # said when this generation was first reconciled
    return None, [
        Event(
            "Warning",
            "FeedbackDatasetNotFound",
            f"FeedbackDataset {name} is missing or invalid: serving without collecting feedback",
        )
    ]


def _refuse(
    body: Body, objects: Objects, old: ServedModelStatus, reason: str, message: str, now: datetime
) -> ServedModelStatus:
    """Write Ready=False for `reason` (a Warning when that is news): nothing is served."""
    generation = common.generation(body)
    status = old.model_copy(deep=True)
    status.observed_generation = generation
    status.conditions, events = common.set_failing(
        status.conditions, "Ready", reason, message, generation, now
    )
    objects.write_status(body, status)
    objects.emit(body, events)
    return status


def finalise(
    plan: RolloutPlan, serving: ServingState | None, generation: int, now: datetime
) -> ServedModelStatus:
    """The plan's status with Ready and url set from what the runtime runs; no side effects."""
    status = plan.status.model_copy(deep=True)
    if serving is not None:
        status.url = serving.url
    if plan.deploy is None:
        value: ConditionStatus = "False"
        rolled = conditions.get_condition(status.conditions, "RolledOut")
        reason = "NoModelVersion"
        message = rolled.message if rolled else "no model version to serve yet"
    elif serving is None or not serving.ready:
        value, reason = "False", (serving.reason if serving else "") or "PredictorNotReady"
        message = (serving.message if serving else "") or "the predictor is not ready yet"
    else:
        value, reason = "True", "Serving"
        message = f"serving version {status.serving_version}" + (
            f" at {serving.url}" if serving.url else ""
        )
    status.conditions = conditions.set_condition(
        status.conditions, "Ready", value, reason, message, generation, now
    )
    return status


def spec_problems(spec: ServedModelSpec) -> list[str]:
    """What is wrong with `spec` that the CRD schema could not refuse; empty when fine."""
    problems = []
    if spec.version is not None and not spec.version.isdigit():
        problems.append(f"version: {spec.version!r} is not a model version number")
    if spec.feedback_dataset is not None and not is_dns_subdomain(spec.feedback_dataset):
        problems.append(f"feedbackDataset: {spec.feedback_dataset!r} is not an object name")
    if spec.image is not None and (not spec.image.strip() or any(c.isspace() for c in spec.image)):
        problems.append(f"image: {spec.image!r} is not an image reference")
    if spec.canary is not None and spec.canary.steps and spec.promotion.mode == "manual":
        problems.append("canary: steps need promotion.mode auto; manual promotion moves the alias")
    return problems


def registry_unavailable(
    status: ServedModelStatus | None, generation: int, message: str, now: datetime
) -> ServedModelStatus:
    """The status while the registry cannot be read: serving goes on, rollouts wait."""
    new = (status or ServedModelStatus()).model_copy(deep=True)
    new.observed_generation = generation
    new.conditions = conditions.set_condition(
        new.conditions,
        "RolledOut",
        "Unknown",
        "RegistryUnavailable",
        f"{message}; serving continues, rollouts wait for the registry",
        generation,
        now,
    )
    return new
