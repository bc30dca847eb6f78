"""ServedModel decisions as pure functions: the quality gate, the rollout (first version,
promotion, gate failure, manual promotion, canary steps, pinned versions) and readiness."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubeloop.api import conditions, predictor, samples
from kubeloop.api.feedbackdataset import FeedbackDatasetSpec
from kubeloop.api.servedmodel import (
    Batching,
    Gate,
    Promotion,
    ServedModelSpec,
    ServedModelStatus,
    SliceRecord,
)
from kubeloop.api.trainingjob import Metrics
from kubeloop.reconcile import observations, servedmodel
from kubeloop.reconcile.servedmodel import Deploy, Observed, RolloutPlan, ServingState
from tests.feedback_samples import feedback_dataset
from tests.memory_ports import Memory

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
BASE = Metrics(overall=0.90, slices={"base": 0.95, "new-user": 0.60})


def decide_rollout(
    spec: ServedModelSpec,
    status: ServedModelStatus | None,
    generation: int,
    serving: str | None,
    latest: str | None,
    gate: Gate | None,
    now: datetime,
) -> RolloutPlan:
    observed = Observed(generation, serving, latest, gate)
    return servedmodel.decide(spec, status, observed, now)


def spec(**fields: Any) -> ServedModelSpec:
    return ServedModelSpec.model_validate({"registeredModel": "digits", **fields})


def gate(candidate: Metrics, **promotion: Any) -> Gate:
    return servedmodel.evaluate_gate(BASE, candidate, Promotion(**promotion), "1", "2")


def cond(status: ServedModelStatus, type_: str) -> tuple[str, str]:
    found = conditions.get_condition(status.conditions, type_)
    assert found is not None
    return found.status, found.reason


def test_gate_passes_when_nothing_falls() -> None:
    verdict = gate(Metrics(overall=0.92, slices={"base": 0.94, "new-user": 0.75, "extra": 0.1}))
    assert verdict.verdict == "Passed"
    assert verdict.overall_delta == pytest.approx(0.02)
    assert verdict.slice_deltas == pytest.approx({"base": -0.01, "new-user": 0.15})
    assert verdict.failed_slices == []
    assert "worst slice base -0.0100" in verdict.message


def test_gate_fails_on_a_slice_that_drops_too_far_even_if_overall_rises() -> None:
    verdict = gate(Metrics(overall=0.95, slices={"base": 0.99, "new-user": 0.55}))
    assert verdict.verdict == "Failed"
    assert verdict.failed_slices == ["new-user"]
    assert "slice new-user fell 0.0500" in verdict.message


def test_gate_boundaries() -> None:
    exactly = Metrics(overall=0.90, slices={"base": 0.93, "new-user": 0.60})
    assert gate(exactly).verdict == "Passed"  # a drop of exactly maxSliceRegression is allowed
    assert gate(exactly, max_slice_regression=0.019).verdict == "Failed"
    lower = Metrics(overall=0.899, slices=BASE.slices)
    assert gate(lower).verdict == "Failed"  # overall must not fall
    assert gate(lower, min_improvement=-0.01).verdict == "Passed"
    assert (
        gate(Metrics(overall=0.905, slices=BASE.slices), min_improvement=0.01).verdict == "Failed"
    )


def test_gate_without_metrics() -> None:
    missing = gate(Metrics(overall=0.99, slices={"base": 0.99}))
    assert (missing.verdict, missing.failed_slices) == ("Failed", ["new-user"])
    assert "not evaluated" in missing.message
    assert gate(Metrics()).verdict == "Failed"
    unjudged = servedmodel.evaluate_gate(Metrics(), Metrics(overall=0.5), Promotion(), "1", "2")
    assert unjudged.verdict == "Passed"
    assert "nothing to compare" in unjudged.message


def test_gate_refuses_metrics_that_are_not_numbers() -> None:
    nan, inf = float("nan"), float("inf")
    for overall in (nan, inf, -inf):
        verdict = gate(Metrics(overall=overall, slices=BASE.slices))
        assert verdict.verdict == "Failed"
        assert f"logged {overall} as its `accuracy`" in verdict.message
        assert verdict.overall_delta is None
    sliced = gate(Metrics(overall=0.95, slices={"base": nan, "new-user": 0.70}))
    assert (sliced.verdict, sliced.failed_slices) == ("Failed", ["base"])
    assert "slice base is nan for the candidate" in sliced.message
    assert sliced.slice_deltas == pytest.approx({"new-user": 0.10})
    # A baseline that is not a number leaves nothing to compare against; its slice is skipped.
    promotion = Promotion()
    unjudged = servedmodel.evaluate_gate(
        Metrics(overall=nan), Metrics(overall=0.5), promotion, "1", "2"
    )
    assert (unjudged.verdict, unjudged.overall_delta) == ("Passed", None)
    assert "no finite accuracy" in unjudged.message
    skipped = Metrics(overall=0.90, slices={"base": nan})
    verdict = servedmodel.evaluate_gate(skipped, BASE, promotion, "1", "2")
    assert (verdict.verdict, verdict.slice_deltas) == ("Passed", {})


def test_slice_records_keep_the_best_finite_value() -> None:
    records = servedmodel.raise_records(
        {}, Metrics(slices={"base": 0.95, "odd": float("nan")}), "1"
    )
    assert records == {"base": SliceRecord(value=0.95, version="1")}
    lower = servedmodel.raise_records(records, Metrics(slices={"base": 0.94, "new": 0.5}), "2")
    assert lower == {
        "base": SliceRecord(value=0.95, version="1"),
        "new": SliceRecord(value=0.5, version="2"),
    }
    higher = servedmodel.raise_records(lower, Metrics(slices={"base": 0.96}), "3")
    assert higher["base"] == SliceRecord(value=0.96, version="3")


def test_a_slice_cannot_be_forgotten_by_small_steps() -> None:
    """Each candidate is 0.019 lower on slice base than the one before (maxSliceRegression
    0.02) and better overall: against the serving version alone all four would pass, ending
    0.057 below the first; the third falls 0.038 below the best the slice had, and is refused."""
    memory = Memory()
    key = ("ServedModel", "default", "digits")
    memory.objects.put(served_body("digits"))
    served, verdicts = [], []
    for number in range(1, 5):
        base = round(0.95 - 0.019 * (number - 1), 3)
        slices = {"base": base, "new-user": 0.60 + 0.05 * number}
        metrics = Metrics(overall=0.90 + 0.01 * number, slices=slices)
        memory.registry.versions[str(number)] = metrics
        status = servedmodel.reconcile(memory.objects.items[key], memory.ports, NOW)
        served.append(status.serving_version)
        verdicts.append(status.gate.message if status.gate is not None else "")
    assert served == ["1", "2", "2", "2"]
    assert "candidate 2 passed the gate" in verdicts[1]
    assert "slice base at 0.9120 is 0.0380 below its best, 0.9500 (version 1;" in verdicts[2]
    assert "slice base fell 0.0380 (0.9310 -> 0.8930" in verdicts[3]
    assert status.slice_records["base"] == SliceRecord(value=0.95, version="1")
    assert status.slice_records["new-user"].version == "2"
    tagged = json.loads(memory.registry.tags[("3", "kubeloop.gate.champion")])
    assert (tagged["verdict"], tagged["baselineVersion"], tagged["failedSlices"]) == (
        "Failed",
        "2",
        ["base"],
    )
    assert sorted(v for v, _ in memory.registry.tags) == ["2", "3", "4"]  # once per verdict
    versions = memory.registry.versions
    alone = servedmodel.evaluate_gate(versions["2"], versions["3"], Promotion(), "2", "3")
    assert alone.verdict == "Passed"  # what the records guard against


def test_gate_needed_only_for_a_new_pair() -> None:
    s = spec()
    assert not servedmodel.gate_needed(s, None, "2", "2")
    assert not servedmodel.gate_needed(s, None, None, "1")
    assert servedmodel.gate_needed(s, None, "1", "2")
    judged = ServedModelStatus(
        gate=Gate(verdict="Failed", candidate_version="2", baseline_version="1")
    )
    assert not servedmodel.gate_needed(s, judged, "1", "2")
    assert servedmodel.gate_needed(s, judged, "1", "3")
    assert not servedmodel.gate_needed(spec(version="1"), None, "1", "2")


def test_no_version_yet() -> None:
    plan = decide_rollout(spec(), None, 1, None, None, None, NOW)
    assert plan.deploy is None
    assert cond(plan.status, "RolledOut") == ("False", "NoModelVersion")
    status = servedmodel.finalise(plan, None, 1, NOW)
    assert cond(status, "Ready") == ("False", "NoModelVersion")


def test_first_version_is_promoted_without_a_gate() -> None:
    plan = decide_rollout(spec(), None, 1, None, "1", None, NOW)
    assert plan.set_alias == "1"
    assert plan.deploy == Deploy("models:/digits@champion", version="1")
    assert plan.status.serving_version == "1"
    assert cond(plan.status, "RolledOut") == ("True", "FirstVersion")
    assert "nothing to compare" in plan.events[0].message


def test_steady_state_deploys_the_alias() -> None:
    plan = decide_rollout(spec(), None, 1, "3", "3", None, NOW)
    assert (plan.set_alias, plan.deploy, plan.events) == (
        None,
        Deploy("models:/digits@champion", version="3"),
        (),
    )
    assert cond(plan.status, "RolledOut") == ("True", "RolledOut")
    assert cond(plan.status, "GateFailed") == ("False", "NoCandidate")


def test_a_settled_rollout_keeps_saying_how_the_version_got_there() -> None:
    first = decide_rollout(spec(), None, 1, None, "1", None, NOW)
    later = NOW + timedelta(minutes=5)
    again = decide_rollout(spec(), first.status, 1, "1", "1", None, later)
    assert again.status == first.status  # no status churn on every poll
    assert cond(again.status, "RolledOut") == ("True", "FirstVersion")
    # A new spec generation, or an alias moved by hand, is described afresh.
    edited = decide_rollout(spec(), first.status, 2, "1", "1", None, later)
    assert cond(edited.status, "RolledOut") == ("True", "RolledOut")
    moved = decide_rollout(spec(), first.status, 1, "2", "2", None, later)
    assert (moved.status.serving_version, cond(moved.status, "RolledOut")) == (
        "2",
        ("True", "RolledOut"),
    )


def test_a_passed_candidate_is_promoted_and_the_verdict_counted_once() -> None:
    passed = gate(Metrics(overall=0.92, slices={"base": 0.95, "new-user": 0.7}))
    plan = decide_rollout(spec(), ServedModelStatus(serving_version="1"), 1, "1", "2", passed, NOW)
    assert plan.set_alias == "2"
    assert (plan.status.serving_version, plan.status.candidate_version) == ("2", None)
    assert [e.reason for e in plan.events] == ["GatePassed", "Promoted"]
    assert plan.new_verdict == passed
    # The alias has moved: the next poll sees serving == latest.
    after = decide_rollout(spec(), plan.status, 1, "2", "2", None, NOW)
    assert (after.set_alias, after.events, after.new_verdict) == (None, (), None)


def test_a_failed_candidate_keeps_serving_and_warns_once() -> None:
    failed = gate(Metrics(overall=0.95, slices={"base": 0.99, "new-user": 0.5}))
    plan = decide_rollout(spec(), None, 1, "1", "2", failed, NOW)
    assert plan.set_alias is None
    assert plan.deploy == Deploy("models:/digits@champion", version="1")
    assert (plan.status.serving_version, plan.status.candidate_version) == ("1", "2")
    assert cond(plan.status, "GateFailed") == ("True", "SliceRegression")
    assert cond(plan.status, "RolledOut") == ("False", "GateFailed")
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "GateFailed")]
    again = decide_rollout(spec(), plan.status, 1, "1", "2", plan.status.gate, NOW)
    assert (again.events, again.new_verdict) == ((), None)


def test_manual_promotion_only_reports() -> None:
    passed = gate(Metrics(overall=0.92, slices=BASE.slices))
    plan = decide_rollout(spec(promotion={"mode": "manual"}), None, 1, "1", "2", passed, NOW)
    assert plan.set_alias is None
    assert cond(plan.status, "RolledOut") == ("False", "AwaitingPromotion")


def test_canary_steps_hold_then_advance_then_promote() -> None:
    s = spec(canary={"steps": [10, 50], "stepSeconds": 60})
    passed = gate(Metrics(overall=0.92, slices=BASE.slices))
    start = decide_rollout(s, None, 1, "1", "2", passed, NOW)
    assert start.deploy == Deploy("models:/digits@champion", "models:/digits/2", 10, version="1")
    assert (start.status.canary_percent, start.status.canary_step_time) == (
        10,
        "2026-01-01T12:00:00Z",
    )
    assert [e.reason for e in start.events] == ["GatePassed", "CanaryStarted"]
    assert cond(start.status, "RolledOut") == ("False", "Canary")
    hold = decide_rollout(s, start.status, 1, "1", "2", passed, NOW + timedelta(seconds=59))
    assert (hold.status.canary_percent, hold.events) == (10, ())
    step = decide_rollout(s, hold.status, 1, "1", "2", passed, NOW + timedelta(seconds=60))
    assert step.deploy == Deploy("models:/digits@champion", "models:/digits/2", 50, version="1")
    assert [e.reason for e in step.events] == ["CanaryStep"]
    done = decide_rollout(s, step.status, 1, "1", "2", passed, NOW + timedelta(seconds=121))
    assert done.set_alias == "2"
    assert done.deploy == Deploy("models:/digits@champion", version="2")
    assert (done.status.canary_percent, done.status.serving_version) == (0, "2")


def test_a_newer_candidate_during_a_canary_starts_over() -> None:
    s = spec(canary={"steps": [10, 50], "stepSeconds": 60})
    passed2 = gate(Metrics(overall=0.92, slices=BASE.slices))
    canary = decide_rollout(s, None, 1, "1", "2", passed2, NOW).status
    passed3 = servedmodel.evaluate_gate(
        BASE, Metrics(overall=0.93, slices=BASE.slices), Promotion(), "1", "3"
    )
    plan = decide_rollout(s, canary, 1, "1", "3", passed3, NOW + timedelta(seconds=90))
    assert plan.deploy == Deploy("models:/digits@champion", "models:/digits/3", 10, version="1")


def test_pinned_version_is_served_as_is() -> None:
    plan = decide_rollout(spec(version="4"), None, 1, None, "9", None, NOW)
    assert plan.deploy == Deploy("models:/digits/4", version="4")
    assert plan.set_alias is None
    assert cond(plan.status, "RolledOut") == ("True", "Pinned")


def test_deciding_without_the_needed_verdict_is_a_bug() -> None:
    with pytest.raises(ValueError, match="gate_needed"):
        decide_rollout(spec(), None, 1, "1", "2", None, NOW)


def test_ready_follows_the_predictor() -> None:
    plan = decide_rollout(spec(), None, 3, "1", "1", None, NOW)
    waiting = servedmodel.finalise(plan, ServingState(False, None, "RevisionMissing", "x"), 3, NOW)
    assert cond(waiting, "Ready") == ("False", "RevisionMissing")
    ready = servedmodel.finalise(plan, ServingState(True, "http://m"), 3, NOW)
    assert cond(ready, "Ready") == ("True", "Serving")
    assert ready.url == "http://m"
    found = conditions.get_condition(ready.conditions, "Ready")
    assert found is not None
    assert found.observed_generation == 3


def test_predictor_args_follow_the_contract() -> None:
    feedback = FeedbackDatasetSpec.model_validate(
        {
            "storage": {"bucket": "bkt", "prefix": "p/"},
            "classes": ["0", "1"],
            "inputShape": [8, 8],
            "slices": ["base", "new-user"],
        }
    )
    args = servedmodel.predictor_args(
        "sm", "models:/m@champion", Batching(max_batch_size=64), ("fd", feedback)
    )
    assert args == [
        "--name",
        "sm",
        "--model-uri",
        "models:/m@champion",
        "--host",
        "0.0.0.0",
        "--http-port",
        "8080",
        "--max-batch-size",
        "64",
        "--max-latency-ms",
        "5",
        "--feedback-dataset",
        "fd",
        "--feedback-bucket",
        "bkt",
        "--feedback-prefix",
        "p/",
        "--classes",
        "0,1",
        "--input-shape",
        "8,8",
        "--slices",
        "base,new-user",
        "--review-strategy",
        "least-confidence",
        "--review-budget",
        "50",
        "--review-audit-share",
        "0",
        "--review-overlap",
        "1",
        "--review-gold-share",
        "0",
    ]
    # The predictor's own command line accepts them (the serving side of the contract).
    parsed = predictor.parse_command_line(args)
    assert (parsed.model_uri, parsed.classes, parsed.max_batch_size) == (
        "models:/m@champion",
        ("0", "1"),
        64,
    )
    assert "--feedback-dataset" not in servedmodel.predictor_args("sm", "models:/m/1", Batching())


def test_spec_problems() -> None:
    assert servedmodel.spec_problems(spec()) == []
    problems = servedmodel.spec_problems(
        spec(version="v2", canary={"steps": [10]}, promotion={"mode": "manual"})
    )
    assert len(problems) == 2


def test_inference_service_and_deployment_states() -> None:
    isvc = {"status": {"url": "http://x", "conditions": [{"type": "Ready", "status": "True"}]}}
    assert observations.inference_service_state(isvc) == ServingState(True, "http://x")
    failing = {
        "status": {
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "RevisionFailed", "message": "crash"}
            ]
        }
    }
    assert observations.inference_service_state(failing) == ServingState(
        False, None, "RevisionFailed", "crash"
    )
    assert not observations.inference_service_state({}).ready
    available = {"status": {"availableReplicas": 1}}
    assert observations.deployment_state(available, "http://svc").ready
    stuck = {
        "status": {
            "conditions": [
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
            ]
        }
    }
    assert observations.deployment_state(stuck, "u").reason == "ProgressDeadlineExceeded"


def test_a_verdict_on_a_version_no_longer_in_question_is_cleared() -> None:
    failed_v2 = Gate(verdict="Failed", candidate_version="2", baseline_version="1")
    stale = ServedModelStatus(serving_version="3", gate=failed_v2)
    plan = decide_rollout(spec(), stale, 1, "3", "3", None, NOW)
    assert plan.status.gate is None  # the Gate column no longer says Failed while 3 serves
    passed_v3 = Gate(verdict="Passed", candidate_version="3", baseline_version="2")
    kept = decide_rollout(
        spec(), ServedModelStatus(serving_version="3", gate=passed_v3), 1, "3", "3", None, NOW
    )
    assert kept.status.gate == passed_v3  # the verdict that promoted the serving version stays


def served_body(name: str, namespace: str = "default", **fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubeloop.io/v1alpha1",
        "kind": "ServedModel",
        "metadata": {"name": name, "namespace": namespace, "generation": 1, "uid": f"u-{name}"},
        "spec": {"registeredModel": "digits", **fields},
    }


def test_two_served_models_on_one_alias_the_second_is_refused_until_the_first_goes() -> None:
    memory = Memory()
    memory.registry.versions = {"1": BASE, "2": Metrics(overall=0.95, slices=BASE.slices)}
    first = memory.objects.put(served_body("digits", "team-a"))
    second = memory.objects.put(served_body("digits", "team-b"))
    servedmodel.reconcile(first, memory.ports, NOW)
    assert memory.registry.owners == {"champion": "team-a/digits"}
    refused = servedmodel.reconcile(second, memory.ports, NOW)
    assert cond(refused, "Ready") == ("False", "AliasInUse")
    ready = conditions.get_condition(refused.conditions, "Ready")
    assert ready is not None
    assert "team-a/digits" in ready.message
    assert "spec.alias" in ready.message
    assert [e.reason for e in memory.objects.events].count("AliasInUse") == 1
    assert memory.registry.aliases == {"champion": "2"}  # set by the first one only

    # Its own alias works; and once the first is gone, its alias can be taken over.
    own = memory.objects.put(served_body("digits", "team-b", alias="team-b"))
    assert cond(servedmodel.reconcile(own, memory.ports, NOW), "Ready") == ("True", "Serving")
    del memory.objects.items[("ServedModel", "team-a", "digits")]
    taken = memory.objects.put(served_body("other", "team-b"))
    assert cond(servedmodel.reconcile(taken, memory.ports, NOW), "Ready") == ("True", "Serving")
    assert memory.registry.owners["champion"] == "team-b/other"


def test_a_rollback_goes_back_one_promotion_and_holds_the_version_back() -> None:
    memory = Memory()
    key = ("ServedModel", "default", "digits")
    memory.objects.put(served_body("digits"))
    better = Metrics(overall=0.95, slices=BASE.slices)

    def served() -> ServedModelStatus:
        return servedmodel.reconcile(memory.objects.items[key], memory.ports, NOW)

    memory.registry.versions["1"] = BASE
    served()
    with pytest.raises(ValueError, match="nothing to go back to"):
        servedmodel.rollback(memory.registry, "digits", "champion", NOW)
    memory.registry.versions["2"] = better
    assert served().serving_version == "2"
    assert memory.registry.aliases == {"champion": "2", "champion-previous": "1"}

    message = servedmodel.rollback(memory.registry, "digits", "champion", NOW)
    assert message.startswith("@champion of digits moved back from version 2 to 1")
    assert memory.registry.aliases["champion"] == "1"
    assert json.loads(memory.registry.tags[("2", "kubeloop.rolledBack.champion")])["to"] == "1"
    for _ in range(2):  # held back, said once
        status = served()
        assert status.serving_version == "1"
        assert status.gate is not None
        assert (status.gate.verdict, status.gate.candidate_version) == ("RolledBack", "2")
        assert cond(status, "RolledOut") == ("False", "RolledBack")
        assert cond(status, "GateFailed") == ("True", "RolledBack")
    assert [e.reason for e in memory.objects.events].count("RolledBack") == 1
    assert memory.predictor.deployed[-1].version == "1"
    assert json.loads(memory.registry.tags[("2", "kubeloop.gate.champion")])["verdict"] == "Passed"
    with pytest.raises(ValueError, match="nothing to go back to"):
        servedmodel.rollback(memory.registry, "digits", "champion", NOW)

    memory.registry.versions["3"] = Metrics(overall=0.96, slices=BASE.slices)
    status = served()  # a newer version is judged against the one served
    assert status.gate is not None
    assert (status.gate.baseline_version, status.serving_version) == ("1", "3")
    assert memory.registry.aliases == {"champion": "3", "champion-previous": "1"}


def test_the_rollback_annotation_rolls_back_once_per_value() -> None:
    memory = Memory()
    key = ("ServedModel", "default", "digits")
    memory.objects.put(served_body("digits"))

    def served(request: str | None = None) -> ServedModelStatus:
        body = memory.objects.items[key]
        if request is not None:
            body["metadata"]["annotations"] = {servedmodel.ROLLBACK_ANNOTATION: request}
        return servedmodel.reconcile(body, memory.ports, NOW)

    def reasons() -> list[str]:
        return [e.reason for e in memory.objects.events]

    memory.registry.versions["1"] = BASE
    assert served("early").rollback_request == "early"  # nothing to go back to: said, done
    refused = [e for e in memory.objects.events if e.reason == "RollbackRefused"]
    assert len(refused) == 1
    assert refused[0].message.startswith("kubeloop.io/rollback=early: @champion of digits")
    assert "names no version: nothing to roll back" in refused[0].message
    memory.registry.versions["2"] = Metrics(overall=0.95, slices=BASE.slices)
    assert served().serving_version == "2"

    status = served("1733000000")
    assert (status.serving_version, status.rollback_request) == ("1", "1733000000")
    assert memory.registry.aliases["champion"] == "1"
    assert reasons().count("Rollback") == 1
    assert served("1733000000").serving_version == "1"  # the same value: not again
    assert reasons().count("Rollback") == 1
    assert reasons().count("RollbackRefused") == 1


def test_a_canary_that_does_worse_live_is_rolled_back_once() -> None:
    memory = Memory()
    fd = feedback_dataset("fb", "bucket", 100)
    memory.objects.put({**fd, "metadata": {"name": "fb", "namespace": "default"}})
    canary = {"steps": [10], "stepSeconds": 3600, "minJudged": 20, "maxAccuracyDrop": 0.05}
    key = ("ServedModel", "default", "digits")
    memory.objects.put(served_body("digits", feedbackDataset="fb", canary=canary))

    def served() -> ServedModelStatus:
        return servedmodel.reconcile(memory.objects.items[key], memory.ports, NOW)

    memory.registry.versions["1"] = BASE
    served()
    memory.registry.versions["2"] = Metrics(overall=0.95, slices=BASE.slices)
    assert served().canary_percent == 10

    def live(one: tuple[int, int], two: tuple[int, int]) -> samples.LiveAccuracy:
        counts = {v: {"judged": j, "correct": c} for v, (j, c) in (("1", one), ("2", two))}
        return samples.LiveAccuracy.model_validate({"versions": counts})

    memory.store.live = live((30, 27), (19, 0))  # too few judged to tell yet
    assert served().canary_percent == 10
    memory.store.live = live((30, 27), (30, 26))  # 0.867 vs 0.9: within the 0.05 allowed
    assert served().canary_percent == 10
    memory.store.live = live((30, 27), (30, 24))  # 0.8 vs 0.9
    for _ in range(2):
        status = served()
        assert (status.serving_version, status.canary_percent) == ("1", 0)
        assert status.gate is not None
        assert status.gate.verdict == "RolledBack"
        assert "live accuracy 0.8000 (30 judged) fell below version 1's 0.9000" in (
            status.gate.message
        )
        assert memory.predictor.deployed[-1] == Deploy("models:/digits@champion", version="1")
    assert [e.reason for e in memory.objects.events].count("CanaryRolledBack") == 1
    tag = json.loads(memory.registry.tags[("2", "kubeloop.rolledBack.champion")])
    assert "fell below version 1's" in tag["reason"]
    assert memory.registry.aliases["champion"] == "1"
