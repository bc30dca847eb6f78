"""set_condition: Kubernetes condition semantics, as a pure function."""

from datetime import UTC, datetime

from kubeloop.api import conditions
from kubeloop.api.common import Condition

T1 = datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)
T2 = datetime(2026, 1, 1, 12, 0, 2, tzinfo=UTC)


def test_adds_a_new_condition_with_the_transition_time() -> None:
    result = conditions.set_condition([], "Ready", "False", "Pending", "waiting", 3, T1)
    assert result == [
        Condition(
            type="Ready",
            status="False",
            reason="Pending",
            message="waiting",
            last_transition_time="2026-01-01T12:00:01Z",
            observed_generation=3,
        )
    ]


def test_same_status_keeps_the_transition_time_but_updates_the_rest() -> None:
    first = conditions.set_condition([], "Ready", "False", "Pending", "waiting", 1, T1)
    second = conditions.set_condition(first, "Ready", "False", "Starting", "pulling image", 2, T2)
    (ready,) = second
    assert ready.last_transition_time == "2026-01-01T12:00:01Z"
    assert (ready.reason, ready.message, ready.observed_generation) == (
        "Starting",
        "pulling image",
        2,
    )


def test_status_change_moves_the_transition_time() -> None:
    first = conditions.set_condition([], "Ready", "False", "Pending", "", 1, T1)
    second = conditions.set_condition(first, "Ready", "True", "Serving", "", 1, T2)
    assert second[0].last_transition_time == "2026-01-01T12:00:02Z"
    assert second[0].status == "True"


def test_other_conditions_are_kept_in_place_and_input_is_not_mutated() -> None:
    start = conditions.set_condition([], "Ready", "True", "Serving", "", 1, T1)
    start = conditions.set_condition(start, "GateFailed", "False", "Passed", "", 1, T1)
    before = [c.model_copy() for c in start]
    result = conditions.set_condition(start, "Ready", "False", "Down", "crashed", 1, T2)
    assert [c.type for c in result] == ["Ready", "GateFailed"]
    assert result[1] == start[1]
    assert start == before
    assert conditions.is_true(result, "Ready") is False
    assert conditions.get_condition(result, "Missing") is None
