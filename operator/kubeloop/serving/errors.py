"""The one refusal type of the predictor's own logic, and the limits every body is held to.

A `Rejected` carries the HTTP status, a one-word reason (a metric label) and a message
naming the problem and what to do; the HTTP layer (serving.asgi) turns every one into
`{"error": message, "reason": reason}` with that status, in one place. No HTTP here.
"""

from __future__ import annotations


class Rejected(Exception):
    """The request is refused; `status` is the HTTP status, `reason` a bounded label."""

    def __init__(
        self, status: int, reason: str, message: str, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


def check_body_size(size: int, limit: int, option: str, declared: bool = True) -> None:
    """Rejected (413) when a body of `size` bytes passes `limit`; `option` names the setting."""
    if size > limit:
        has = f"the body has {size} bytes" if declared else "the body grew past the limit"
        raise Rejected(413, "too-large", f"{has}; the limit is {limit} ({option})")
