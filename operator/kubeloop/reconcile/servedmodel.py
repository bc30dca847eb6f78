"""ServedModel decisions: the quality gate, the rollout of a new version, and readiness.

A runtime reads the registry (the version behind the alias, the latest version, and, when
`gate_needed`, both versions' metrics for `evaluate_gate`), then calls `decide_rollout`. It
moves the alias when the plan says `set_alias`, runs what `plan.deploy` describes (an
InferenceService, a Deployment, or a local predictor process), observes it as a
`ServingState`, and calls `decide_ready` for the status it writes. No side effects here.

Canary, and what it means when the predictor follows an alias: the stable predictor runs
`models:/<model>@<alias>` and serves whatever the alias names. During a canary the candidate
runs pinned, `models:/<model>/<candidate>`, and takes `canaryPercent` of the traffic (KServe:
the InferenceService's latest revision with canaryTrafficPercent; Deployment runtime: a second
Deployment behind the same Service, so the share follows the replica ratio). After the last
step the alias moves to the candidate and the spec returns to the alias URI alone: the stable
predictor now serves the candidate, and the pinned revision is gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from kubeloop.api import conditions
from kubeloop.api.common import ConditionStatus
from kubeloop.api.feedbackdataset import FeedbackDatasetSpec
from kubeloop.api.predictor import PredictorConfig
from kubeloop.api.servedmodel import Batching, Gate, Promotion, ServedModelSpec, ServedModelStatus
from kubeloop.api.trainingjob import Metrics
from kubeloop.reconcile.common import Event, format_time, is_dns_subdomain, parse_time

PREDICTOR_COMMAND = ("python", "-m", "kubeloop.serving")
PREDICTOR_PORT = 8080
READINESS_PATH = "/v2/health/ready"
_EPSILON = 1e-9


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
        )
    return PredictorConfig.model_validate(options).to_args()


def evaluate_gate(
    baseline: Metrics,
    candidate: Metrics,
    promotion: Promotion,
    baseline_version: str,
    candidate_version: str,
) -> Gate:
    """The gate's verdict on `candidate` against the serving `baseline`; no side effects.

    Passes when the overall metric changes by at least promotion.minImprovement (0: must not
    fall) and no slice of the baseline falls by more than promotion.maxSliceRegression. A
    slice the candidate was not evaluated on fails: forgetting cannot be ruled out.
    """
    metric = promotion.metric
    gate = Gate(
        verdict="Failed",
        candidate_version=candidate_version,
        baseline_version=baseline_version,
    )
    if candidate.overall is None:
        gate.message = (
            f"candidate version {candidate_version} has no {metric} metric: its run logged "
            f"no `{metric}`, so it cannot be judged"
        )
        return gate
    if baseline.overall is None:
        gate.verdict = "Passed"
        gate.message = (
            f"baseline version {baseline_version} has no {metric} metric: nothing to compare "
            f"against; candidate {candidate_version} accepted"
        )
        return gate
    gate.overall_delta = round(candidate.overall - baseline.overall, 6)
    missing = sorted(set(baseline.slices) - set(candidate.slices))
    gate.slice_deltas = {
        s: round(candidate.slices[s] - baseline.slices[s], 6)
        for s in sorted(baseline.slices)
        if s in candidate.slices
    }
    limit = promotion.max_slice_regression
    regressed = [s for s, d in gate.slice_deltas.items() if d < -limit - _EPSILON]
    gate.failed_slices = sorted([*regressed, *missing])
    reasons = []
    if gate.overall_delta < promotion.min_improvement - _EPSILON:
        reasons.append(
            f"overall {metric} went from {baseline.overall:.4f} to {candidate.overall:.4f} "
            f"({gate.overall_delta:+.4f}; at least {promotion.min_improvement:+.4f} required)"
        )
    reasons += [
        f"slice {s} fell {-gate.slice_deltas[s]:.4f} "
        f"({baseline.slices[s]:.4f} -> {candidate.slices[s]:.4f}; at most {limit:.4f} allowed)"
        for s in regressed
    ]
    reasons += [f"slice {s} was not evaluated for the candidate" for s in missing]
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


def is_gate_passed(gate: Gate | None) -> bool:
    return gate is not None and gate.verdict == "Passed"


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
class Deploy:
    """What the predictor should run."""

    stable_uri: str
    """Model URI of the stable predictor (the alias, or a pinned version)."""
    canary_uri: str | None = None
    """Model URI of the canary (a pinned candidate), during a canary."""
    canary_percent: int = 0
    """Traffic share of the canary."""


@dataclass(frozen=True)
class RolloutPlan:
    """What `decide_rollout` wants the runtime to do, in this order."""

    status: ServedModelStatus
    """The status after the rollout step; Ready comes from `decide_ready`."""
    set_alias: str | None = None
    """Move spec.alias to this version first."""
    deploy: Deploy | None = None
    """What to run; None while there is no version to serve."""
    events: tuple[Event, ...] = ()
    """Transitions worth telling."""
    new_verdict: Gate | None = None
    """A verdict this decision reached (not one read back from the status)."""


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


def decide_rollout(
    spec: ServedModelSpec,
    status: ServedModelStatus | None,
    generation: int,
    serving: str | None,
    latest: str | None,
    gate: Gate | None,
    now: datetime,
) -> RolloutPlan:
    """The next rollout step; no side effects.

    `serving` is the version behind spec.alias (None: alias not set), `latest` the highest
    registered version (None: none yet), `gate` the verdict on latest against serving when
    `gate_needed` said so (else the status's). The first version, with no alias set, is
    promoted at once: there is nothing to compare it against.
    """
    old = status or ServedModelStatus()
    new = old.model_copy(deep=True)
    new.observed_generation = generation
    stamp = format_time(now)
    model = spec.registered_model
    alias_uri = model_uri(model, alias=spec.alias)
    events: list[Event] = []

    def rolled_out(value: ConditionStatus, reason: str, message: str) -> None:
        new.conditions = conditions.set_condition(
            new.conditions, "RolledOut", value, reason, message, generation, stamp
        )

    def gate_failed(value: ConditionStatus, reason: str, message: str) -> None:
        new.conditions = conditions.set_condition(
            new.conditions, "GateFailed", value, reason, message, generation, stamp
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
        return RolloutPlan(new, deploy=Deploy(model_uri(model, version=spec.version)))
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
        return RolloutPlan(new, set_alias=latest, deploy=Deploy(alias_uri), events=tuple(events))
    if int(latest) <= int(serving):
        if not _settled(old, serving, generation):
            steady(serving, "RolledOut", f"serving version {serving} (@{spec.alias})")
            gate_failed("False", "NoCandidate", "no version newer than the serving one")
        return RolloutPlan(new, deploy=Deploy(alias_uri), events=tuple(events))

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
        reason = "SliceRegression" if gate.failed_slices else "GateFailed"
        gate_failed("True", reason, gate.message)
        rolled_out("False", "GateFailed", f"keeps serving {serving}: {gate.message}")
        if fresh:
            events.append(Event("Warning", "GateFailed", gate.message))
        return RolloutPlan(
            new, deploy=Deploy(alias_uri), events=tuple(events), new_verdict=gate if fresh else None
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
        return RolloutPlan(new, deploy=Deploy(alias_uri), events=tuple(events), new_verdict=verdict)

    steps = spec.canary.steps if spec.canary is not None else []
    percent = old.canary_percent if old.candidate_version == latest else 0
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
            set_alias=latest,
            deploy=Deploy(alias_uri),
            events=tuple(events),
            new_verdict=verdict,
        )
    new.serving_version = serving
    new.canary_percent = percent
    new.canary_step_time = format_time(started or now)
    rolled_out("False", "Canary", f"candidate {latest} takes {percent}% of traffic")
    deploy = Deploy(alias_uri, model_uri(model, version=latest), percent)
    return RolloutPlan(new, deploy=deploy, events=tuple(events), new_verdict=verdict)


class RegistryPort(Protocol):
    """The registry reads and the alias move `roll_out` needs; any call may raise."""

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version behind `alias`, or None when it is not set."""
        ...

    def latest_version_number(self, name: str) -> str | None:
        """The highest version of `name`, or None when it has none."""
        ...

    def version_metrics(self, name: str, version: str, metric: str) -> Metrics:
        """The version's evaluation; empty when its run is gone."""
        ...

    def set_alias(self, name: str, alias: str, version: str) -> None: ...


def roll_out(
    spec: ServedModelSpec,
    status: ServedModelStatus | None,
    generation: int,
    registry: RegistryPort,
    now: datetime,
) -> RolloutPlan:
    """Read the registry, judge a newer version when needed, decide the next rollout step and
    move the alias when it says so. Calls `registry`; the decisions are the pure ones above."""
    model = spec.registered_model
    serving = registry.alias_version(model, spec.alias) if spec.version is None else None
    latest = registry.latest_version_number(model)
    gate = status.gate if status is not None else None
    if gate_needed(spec, status, serving, latest) and serving is not None and latest is not None:
        metric = spec.promotion.metric
        gate = evaluate_gate(
            registry.version_metrics(model, serving, metric),
            registry.version_metrics(model, latest, metric),
            spec.promotion,
            serving,
            latest,
        )
    plan = decide_rollout(spec, status, generation, serving, latest, gate, now)
    if plan.set_alias is not None:
        registry.set_alias(model, spec.alias, plan.set_alias)
    return plan


@dataclass(frozen=True)
class ServingState:
    """What a runtime saw of its predictor (InferenceService, Deployment, local process)."""

    ready: bool
    url: str | None = None
    reason: str = ""
    """Why it is not ready: one CamelCase word."""
    message: str = ""


def decide_ready(
    plan: RolloutPlan, serving: ServingState | None, generation: int, now: datetime
) -> ServedModelStatus:
    """The status with Ready and url set from what the runtime saw; no side effects."""
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
        status.conditions, "Ready", value, reason, message, generation, format_time(now)
    )
    return status


def not_servable(
    status: ServedModelStatus | None, generation: int, reason: str, message: str, now: datetime
) -> ServedModelStatus:
    """The status when the spec or the cluster stops serving (InvalidSpec, KServeNotInstalled)."""
    new = (status or ServedModelStatus()).model_copy(deep=True)
    new.observed_generation = generation
    new.conditions = conditions.set_condition(
        new.conditions, "Ready", "False", reason, message, generation, format_time(now)
    )
    return new


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
        format_time(now),
    )
    return new
