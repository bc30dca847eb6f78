"""Errors every layer shares: a dependency that cannot be reached now.

The I/O clients (storage, registry, the runtimes' API clients) raise subclasses; the
reconciles catch `Unavailable`, say so in a condition and leave the retry to the runtime, so
they need not import the clients. No side effects.
"""

from __future__ import annotations


class Unavailable(RuntimeError):
    """A dependency (object storage, the registry, a Secret) cannot be used now; retry later.

    `reason` is the one CamelCase word the condition carries.
    """

    reason = "Unavailable"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
