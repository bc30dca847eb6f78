"""Standard Kubernetes conditions, set through one pure function, and the warn-once rule."""

from __future__ import annotations

from datetime import datetime

from kubeloop.api.common import Condition, ConditionStatus
from kubeloop.api.times import format_time


def set_condition(
    conditions: list[Condition],
    type: str,  # noqa: A002 - the Kubernetes field is called type
    status: ConditionStatus,
    reason: str,
    message: str,
    observed_generation: int,
    now: datetime,
) -> list[Condition]:
    """Return conditions with `type` set; no side effects.

    lastTransitionTime moves to `now` only when the status changes, so a condition that
    keeps its status keeps the time it first took it, whatever its reason or message.
    """
    previous = get_condition(conditions, type)
    transition = (
        format_time(now)
        if previous is None or previous.status != status
        else previous.last_transition_time
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


def is_news(
    conditions: list[Condition],
    type: str,  # noqa: A002
    status: ConditionStatus,
    reason: str,
    observed_generation: int,
) -> bool:
    """Whether setting `type` to (status, reason) tells something the conditions do not say
    yet for this spec generation: the warn-once rule. A person hears of a problem once per
    reason and spec, not at every reconcile."""
    previous = get_condition(conditions, type)
    return (
        previous is None
        or previous.status != status
        or previous.reason != reason
        or previous.observed_generation != observed_generation
    )
