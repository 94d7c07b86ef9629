"""Errors of the Ratchet SDK.

The hierarchy::

    Exception
     └── RatchetError                    root of every error the SDK raises on purpose
          ├── NonRetriableError          user code: fail the run now (500 + x-inngest-no-retry)
          ├── RetryAfterError            user code: retry no earlier than a given time (500 + retry-after)
          ├── StepError                  a step failed for good; raised in user code on replay
          ├── SendEventsError            the event API refused (some of) the events
          ├── EventKeyMissingError       sending events in production without an event key
          ├── SigningKeyMissingError     serving in production without a signing key
          └── RegistrationError          the server refused a sync
    ValueError / TypeError               bad arguments to the public API (named field and problem)

Control-flow signals of the replay machinery (in `_replay.py`) subclass `BaseException`, so that a user's
`except Exception` cannot swallow them; they never escape the SDK.
"""

from __future__ import annotations

import traceback
from datetime import UTC, datetime, timedelta

from ratchet import protocol


class RatchetError(Exception):
    """Root of the errors the SDK raises on purpose."""

    #: The wire code of the error, as sent in a 500 body.
    code: protocol.ErrorCode = protocol.ErrorCode.UNKNOWN


class NonRetriableError(RatchetError):
    """Raise in a function (or inside a step) to fail the run without further retries.

    Args:
        message: What went wrong; shown in the run's output.
    """

    code = protocol.ErrorCode.NON_RETRIABLE_ERROR

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class RetryAfterError(RatchetError):
    """Raise in a function (or inside a step) to be retried no earlier than `retry_after`.

    Args:
        message: What went wrong.
        retry_after: When to retry: a delay (`timedelta`, or an `int` of milliseconds, as in the
            inngest SDK) or an absolute `datetime` (naive datetimes are taken as UTC).
    """

    code = protocol.ErrorCode.RETRY_AFTER_ERROR

    def __init__(self, message: str, retry_after: timedelta | datetime | int) -> None:
        super().__init__(message)
        self.message = message
        if isinstance(retry_after, bool) or not isinstance(retry_after, (timedelta, datetime, int)):
            raise TypeError(
                f"retry_after: expected timedelta, datetime or int milliseconds, got {type(retry_after).__name__}"
            )
        if isinstance(retry_after, int):
            retry_after = timedelta(milliseconds=retry_after)
        if isinstance(retry_after, timedelta):
            if retry_after < timedelta(0):
                raise ValueError(f"retry_after: must not be negative, got {retry_after}")
            retry_after = datetime.now(UTC) + retry_after
        elif retry_after.tzinfo is None:
            retry_after = retry_after.replace(tzinfo=UTC)
        #: The aware UTC time before which the run must not be retried.
        self.retry_at: datetime = retry_after.astimezone(UTC)


class StepError(RatchetError):
    """A step failed for good. Raised in user code when the step's memoized error is replayed.

    Catch it to recover; re-raising it (or letting it escape) fails the run without retries.

    Args:
        message: The original error's message.
        name: The original error's class name (e.g. `"ValueError"`).
        stack: The original traceback as text, when known.
    """

    code = protocol.ErrorCode.STEP_ERRORED

    def __init__(self, message: str, name: str = "Error", stack: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.stack = stack


class SendEventsError(RatchetError):
    """The event API refused events. `ids` holds the ids of the events accepted before the failure.

    Args:
        message: The server's error.
        ids: Ids of the events that were accepted.
    """

    code = protocol.ErrorCode.SEND_EVENT_FAILED

    def __init__(self, message: str, ids: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.ids = ids or []


class EventKeyMissingError(RatchetError):
    """Events cannot be sent in production mode without an event key (`event_key=` or INNGEST_EVENT_KEY)."""


class SigningKeyMissingError(RatchetError):
    """Functions cannot be served in production mode without a signing key (INNGEST_SIGNING_KEY)."""


class RegistrationError(RatchetError):
    """The server refused or failed a sync (`PUT` of the serve endpoint)."""

    code = protocol.ErrorCode.REGISTRATION_FAILED


def error_body(exc: BaseException, *, code: protocol.ErrorCode | None = None) -> dict[str, object]:
    """The wire form `{code, message, name, stack}` of an exception (a 500 body or a step's error)."""
    if isinstance(exc, StepError):
        name, message, stack = exc.name, exc.message, exc.stack
    else:
        name = type(exc).__name__
        message = getattr(exc, "message", None) or str(exc)
        stack = "".join(traceback.format_exception(exc))
    if code is None:
        code = exc.code if isinstance(exc, RatchetError) else protocol.ErrorCode.UNKNOWN
    return {"code": str(code), "message": message, "name": name, "stack": stack}
