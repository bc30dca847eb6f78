"""Standard Kubernetes conditions, set through one pure function."""

from __future__ import annotations

from datetime import UTC, datetime

from kubeloop.api.common import Condition, ConditionStatus


def now_rfc3339() -> str:
    """Current UTC time in the form Kubernetes writes timestamps."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[Condition],
    type: str,  # noqa: A002 - the Kubernetes field is called type
    status: ConditionStatus,
    reason: str,
    message: str,
    observed_generation: int,
    now: str,
) -> list[Condition]:
    """Return conditions with `type` set; no side effects.

    lastTransitionTime moves to `now` only when the status changes, so a condition that
    keeps its status keeps the time it first took it, whatever its reason or message.
    """
    previous = next((c for c in conditions if c.type == type), None)
    transition = (
        now if previous is None or previous.status != status else previous.last_transition_time
    )
    updated = Condition(
        type=type,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=transition,
        observed_generation=observed_generation,
    )
    if previous is None:
        return [*conditions, updated]
    return [updated if c.type == type else c for c in conditions]


def get_condition(conditions: list[Condition], type: str) -> Condition | None:  # noqa: A002
    """The condition of `type`, or None."""
    return next((c for c in conditions if c.type == type), None)


def is_true(conditions: list[Condition], type: str) -> bool:  # noqa: A002
    """Whether the condition of `type` is present with status True."""
    condition = get_condition(conditions, type)
    return condition is not None and condition.status == "True"
