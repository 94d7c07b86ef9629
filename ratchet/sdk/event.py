"""The `Event` users send and receive, and `FunctionFailure`: the failed run an `on_failure` handler gets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    """An event: something that happened, which can trigger functions.

    Args:
        name: The event name, e.g. `"shop/order.created"`.
        data: A JSON object of details.
        id: An optional id; events sent twice with the same id start their functions once.
        ts: Milliseconds since the epoch; 0 means "now" (the server fills it in).
    """

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    ts: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Event.name: must be a non-empty string, got {self.name!r}")
        if not isinstance(self.data, dict):
            raise TypeError(f"Event.data: must be a dict, got {type(self.data).__name__}")
        if not isinstance(self.id, str):
            raise TypeError(f"Event.id: must be a string, got {type(self.id).__name__}")
        if isinstance(self.ts, bool) or not isinstance(self.ts, int) or self.ts < 0:
            raise ValueError(f"Event.ts: must be a non-negative int of milliseconds, got {self.ts!r}")

    def to_wire(self) -> dict[str, Any]:
        """The JSON object sent to the event API (`id` and `ts` left out when unset)."""
        out: dict[str, Any] = {"name": self.name, "data": self.data}
        if self.id:
            out["id"] = self.id
        if self.ts:
            out["ts"] = self.ts
        return out

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> Event:
        """Build from an event object of a call request; tolerant of nulls and extra keys."""
        ts = raw.get("ts")
        return cls(
            name=str(raw.get("name") or ""),
            data=raw.get("data") or {},
            id=str(raw.get("id") or ""),
            ts=int(ts) if isinstance(ts, (int, float)) and not isinstance(ts, bool) and ts >= 0 else 0,
        )


#: Event the server sends when a run fails for good; it triggers the function's `on_failure` handler.
FUNCTION_FAILED_EVENT = "inngest/function.failed"


@dataclass(frozen=True, slots=True)
class FunctionFailure:
    """A run that failed for good, as an `on_failure` handler sees it (`ctx.failure`).

    Read from the `inngest/function.failed` event, whose data is
    `{"function_id", "run_id", "error": {"error", "name", "message", "stack"}, "event": {...}}`.

    Attributes:
        function_id: Composite id (`"{app_id}-{fn_id}"`) of the function that failed.
        run_id: Id of the failed run.
        name: The error's class name, e.g. `"ValueError"` or `"NonRetriableError"`.
        message: The error's message.
        stack: The error's traceback, when the SDK sent one.
        event: The event that triggered the failed run (None when the server did not include it).
        error: The raw `error` object, as the server sent it.
    """

    function_id: str
    run_id: str
    name: str
    message: str
    stack: str | None = None
    event: Event | None = None
    error: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_event(cls, event: Event) -> FunctionFailure | None:
        """The failure described by an `inngest/function.failed` event; None for any other event."""
        if event.name != FUNCTION_FAILED_EVENT:
            return None
        data = event.data
        error = data.get("error") if isinstance(data.get("error"), dict) else {}
        original = data.get("event")
        stack = error.get("stack")
        return cls(
            function_id=str(data.get("function_id") or ""),
            run_id=str(data.get("run_id") or ""),
            name=str(error.get("name") or "Error"),
            message=str(error.get("message") or error.get("error") or ""),
            stack=stack if isinstance(stack, str) else None,
            event=Event.from_wire(original) if isinstance(original, dict) and original.get("name") else None,
            error=dict(error),
        )
