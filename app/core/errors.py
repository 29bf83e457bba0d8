"""Domain errors: what a use case refuses, by a stable code and a message for the client.

Status-free on purpose: the CLI, a Ray job and the HTTP layer can all raise and read them.
Only app/http/errors.py knows which HTTP status and envelope each code becomes.
"""

from __future__ import annotations


class DomainError(Exception):
    """A refusal with a stable ``code`` (the contract's error code) and a client message.

    ``retry_after_s``: when set, the client may retry after that many seconds (rate limits,
    load shedding, a running job)."""

    def __init__(self, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


def overloaded(what: str, retry_after_s: float) -> DomainError:
    """What every admission bound answers (nothing was stored; retrying is safe)."""
    return DomainError(
        "overloaded",
        f"The service is busy ({what}); retry after the Retry-After seconds with the same request.",
        retry_after_s,
    )
