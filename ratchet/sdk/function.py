"""Functions: their triggers, their configuration objects, and how they serialize for a sync.

`Client.function(...)` builds a `Function`; `Function.configs(app_url)` gives the wire objects of the
`functions` list of a sync (reference §1.2): composite ids `"{app_id}-{id}"`, camelCase keys, durations as
protocol strings, `None`s left out, and an `on_failure` handler as a second function `"{fqid}-failure"`.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar
from urllib.parse import urlencode

from ratchet import protocol
from ratchet.sdk import event as event_lib

if TYPE_CHECKING:
    from ratchet.sdk import group as group_lib
    from ratchet.sdk import step as step_lib

T = TypeVar("T")

#: Event that triggers on-failure handlers.
FUNCTION_FAILED_EVENT = event_lib.FUNCTION_FAILED_EVENT
#: Largest `retries` the server honours.
MAX_RETRIES = 20

Duration = timedelta | str

# --------------------------------------------------------------------------------------------- triggers


@dataclass(frozen=True, slots=True)
class TriggerEvent:
    """Run the function for each event named `event` (that matches `if_exp`, when given)."""

    event: str
    if_exp: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _strip({"event": self.event, "expression": self.if_exp})


@dataclass(frozen=True, slots=True)
class TriggerCron:
    """Run the function on a cron schedule (5 fields, optionally prefixed by `TZ=Area/City`)."""

    cron: str
    jitter: Duration | None = None

    def to_wire(self) -> dict[str, Any]:
        return _strip({"cron": self.cron, "jitter": _duration(self.jitter, "jitter")})


Trigger = TriggerEvent | TriggerCron


def on_event(event: str, if_exp: str | None = None) -> TriggerEvent:
    """Trigger on an event.

    Args:
        event: The event name, e.g. `"shop/order.created"`; `"shop/*"` matches a prefix.
        if_exp: An optional CEL filter over `event`, e.g. `"event.data.total > 100"`.
    """
    if not isinstance(event, str) or not event.strip():
        raise ValueError(f"on_event(event=...): must be a non-empty string, got {event!r}")
    if if_exp is not None and (not isinstance(if_exp, str) or not if_exp.strip()):
        raise ValueError(f"on_event(if_exp=...): must be a non-empty string or None, got {if_exp!r}")
    return TriggerEvent(event, if_exp)


_CRON_FIELDS = re.compile(r"^(TZ=\S+\s+)?(\S+\s+){4,5}\S+$|^@\w+$")


def on_cron(cron: str, jitter: Duration | None = None) -> TriggerCron:
    """Trigger on a schedule.

    Args:
        cron: A cron expression, e.g. `"*/5 * * * *"` or `"TZ=Europe/Paris 0 9 * * 1"`.
        jitter: An optional random delay added to each firing.
    """
    if not isinstance(cron, str) or not _CRON_FIELDS.match(cron.strip()):
        raise ValueError(f"on_cron(cron=...): expected a 5-field cron expression, got {cron!r}")
    _duration(jitter, "on_cron(jitter=...)")
    return TriggerCron(cron.strip(), jitter)


# --------------------------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class Concurrency:
    """At most `limit` steps of the function run at once (per `key`, within `scope`)."""

    limit: int
    key: str | None = None
    scope: Literal["fn", "env", "account"] | None = None

    def to_wire(self) -> dict[str, Any]:
        _positive(self.limit, "concurrency.limit")
        _choice(self.scope, ("fn", "env", "account"), "concurrency.scope")
        return _strip({"limit": self.limit, "key": self.key, "scope": self.scope})


@dataclass(frozen=True, slots=True)
class Throttle:
    """Start at most `limit` runs per `period` (per `key`); excess runs wait."""

    limit: int
    period: Duration
    key: str | None = None
    burst: int = 1

    def to_wire(self) -> dict[str, Any]:
        _positive(self.limit, "throttle.limit")
        _positive(self.burst, "throttle.burst")
        return _strip({"limit": self.limit, "period": _duration(self.period, "throttle.period"),
                       "key": self.key, "burst": self.burst})


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Start at most `limit` runs per `period` (per `key`); excess runs are dropped."""

    limit: int
    period: Duration
    key: str | None = None

    def to_wire(self) -> dict[str, Any]:
        _positive(self.limit, "rate_limit.limit")
        return _strip({"limit": self.limit, "period": _duration(self.period, "rate_limit.period"),
                       "key": self.key})


@dataclass(frozen=True, slots=True)
class Debounce:
    """Run once `period` after the last event (per `key`), at most `timeout` after the first."""

    period: Duration
    key: str | None = None
    timeout: Duration | None = None

    def to_wire(self) -> dict[str, Any]:
        return _strip({"period": _duration(self.period, "debounce.period"), "key": self.key,
                       "timeout": _duration(self.timeout, "debounce.timeout")})


@dataclass(frozen=True, slots=True)
class Batch:
    """Run with up to `max_size` events at once, collected for at most `timeout`."""

    max_size: int
    timeout: Duration | None = None
    key: str | None = None
    if_exp: str | None = None

    def to_wire(self) -> dict[str, Any]:
        _positive(self.max_size, "batch_events.max_size")
        return _strip({"maxSize": self.max_size, "timeout": _duration(self.timeout, "batch_events.timeout"),
                       "key": self.key, "if": self.if_exp})


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cancel a run when an `event` arrives (matching `if_exp`, within `timeout` of the run's start)."""

    event: str
    if_exp: str | None = None
    timeout: Duration | None = None

    def to_wire(self) -> dict[str, Any]:
        if not isinstance(self.event, str) or not self.event:
            raise ValueError(f"cancel.event: must be a non-empty string, got {self.event!r}")
        return _strip({"event": self.event, "if": self.if_exp,
                       "timeout": _duration(self.timeout, "cancel.timeout")})


@dataclass(frozen=True, slots=True)
class Priority:
    """`run` is an expression giving seconds (±600) by which to move a run up or down the queue."""

    run: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _strip({"run": self.run})


@dataclass(frozen=True, slots=True)
class Singleton:
    """At most one run at a time (per `key`): a new run is skipped, or cancels the running one."""

    key: str | None = None
    mode: Literal["skip", "cancel"] = "skip"

    def to_wire(self) -> dict[str, Any]:
        _choice(self.mode, ("skip", "cancel"), "singleton.mode")
        return _strip({"key": self.key, "mode": self.mode})


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Cancel runs not started within `start`, or not finished within `finish`."""

    start: Duration | None = None
    finish: Duration | None = None

    def to_wire(self) -> dict[str, Any]:
        return _strip({"start": _duration(self.start, "timeouts.start"),
                       "finish": _duration(self.finish, "timeouts.finish")})


@dataclass(frozen=True, slots=True)
class FunctionOptions:
    """Everything `Client.function(...)` was given besides the handler."""

    id: str
    name: str | None = None
    triggers: tuple[Trigger, ...] = ()
    retries: int | None = None
    concurrency: tuple[Concurrency, ...] = ()
    throttle: Throttle | None = None
    rate_limit: RateLimit | None = None
    debounce: Debounce | None = None
    batch_events: Batch | None = None
    cancel: tuple[Cancel, ...] = ()
    priority: Priority | None = None
    idempotency: str | None = None
    singleton: Singleton | None = None
    timeouts: Timeouts | None = None


# --------------------------------------------------------------------------------------------- context


@dataclass(slots=True)
class Context:
    """What a function receives: its triggering event(s), run identity, steps and a logger.

    In an `async def` function the step methods are coroutines (`await ctx.step.run(...)`); in a plain
    `def` function they are ordinary calls.
    """

    #: The triggering event (the first one of a batch).
    event: event_lib.Event
    #: All triggering events (more than one only with `batch_events`).
    events: list[event_lib.Event]
    #: The run's id (a ULID).
    run_id: str
    #: 0-based attempt of this call.
    attempt: int
    #: Durable steps: `run`, `sleep`, `sleep_until`, `wait_for_event`, `invoke`, `send_event`.
    step: step_lib.Step | step_lib.StepSync
    #: Parallel steps: `ctx.group.parallel((lambda: ctx.step.run("a", fa), lambda: ...))`.
    group: group_lib.Group | group_lib.GroupSync
    #: A logger that stays silent while memoized code is replayed.
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = field(
        default_factory=lambda: logging.getLogger("ratchet"))

    @property
    def failure(self) -> event_lib.FunctionFailure | None:
        """In an `on_failure` handler: the failed run (its function, run id, error and triggering event).

        None when the triggering event is not `inngest/function.failed`. The raw data stays available as
        `ctx.event.data` (`function_id`, `run_id`, `error`, `event`).
        """
        return event_lib.FunctionFailure.from_event(self.event)


Handler = Callable[[Context], Awaitable[T]] | Callable[[Context], T]


class Function(Generic[T]):
    """A durable function, as built by `Client.function(...)`.

    Args:
        options: The function's id, triggers and configuration.
        handler: The user's function (`async def` or `def`), called with a `Context`.
        on_failure: Optional handler run (as function `"{id}-failure"`) after the function fails for good.
    """

    def __init__(self, options: FunctionOptions, handler: Handler[T],
                 on_failure: Handler[Any] | None = None) -> None:
        self.options = options
        self.handler = handler
        self.on_failure = on_failure
        self.is_async = _is_async(handler)
        if on_failure is not None and _is_async(on_failure) != self.is_async:
            raise TypeError(f"function {options.id!r}: on_failure must be async exactly when the function is")
        self.__name__ = getattr(handler, "__name__", options.id)
        self.__doc__ = getattr(handler, "__doc__", None)

    @property
    def id(self) -> str:
        """The function's id within its app (the composite id is `"{app_id}-{id}"`)."""
        return self.options.id

    @property
    def name(self) -> str:
        return self.options.name or self.options.id

    def __repr__(self) -> str:
        return f"<ratchet.Function {self.id!r}>"

    def fully_qualified_id(self, app_id: str) -> str:
        return f"{app_id}-{self.options.id}"

    def handlers(self, app_id: str) -> dict[str, Handler[Any]]:
        """The handlers this function serves, by composite id (two when `on_failure` is set)."""
        fqid = self.fully_qualified_id(app_id)
        out: dict[str, Handler[Any]] = {fqid: self.handler}
        if self.on_failure is not None:
            out[f"{fqid}-failure"] = self.on_failure
        return out

    def configs(self, app_id: str, app_url: str) -> list[dict[str, Any]]:
        """The wire configs of this function (and of its failure handler) for a sync."""
        fqid = self.fully_qualified_id(app_id)
        o = self.options
        main: dict[str, Any] = {
            "id": fqid,
            "name": self.name,
            "triggers": [t.to_wire() for t in o.triggers],
            "steps": _steps(app_url, fqid, o.retries),
            "concurrency": [c.to_wire() for c in o.concurrency] or None,
            "throttle": o.throttle.to_wire() if o.throttle else None,
            "rateLimit": o.rate_limit.to_wire() if o.rate_limit else None,
            "debounce": o.debounce.to_wire() if o.debounce else None,
            "batchEvents": o.batch_events.to_wire() if o.batch_events else None,
            "cancel": [c.to_wire() for c in o.cancel] or None,
            "priority": o.priority.to_wire() if o.priority else None,
            "idempotency": o.idempotency,
            "singleton": o.singleton.to_wire() if o.singleton else None,
            "timeouts": o.timeouts.to_wire() if o.timeouts else None,
        }
        out = [_strip(main)]
        if self.on_failure is not None:
            failure_id = f"{fqid}-failure"
            out.append({
                "id": failure_id,
                "name": f"{self.name} (failure)",
                "triggers": [{"event": FUNCTION_FAILED_EVENT,
                              "expression": f"event.data.function_id == '{fqid}'"}],
                "steps": _steps(app_url, failure_id, 0),
            })
        return out


def build_options(
    *,
    id: str,
    name: str | None,
    trigger: Trigger | Sequence[Trigger],
    retries: int | None,
    concurrency: Concurrency | Sequence[Concurrency] | None,
    throttle: Throttle | None,
    rate_limit: RateLimit | None,
    debounce: Debounce | None,
    batch_events: Batch | None,
    cancel: Cancel | Sequence[Cancel] | None,
    priority: Priority | None,
    idempotency: str | None,
    singleton: Singleton | None,
    timeouts: Timeouts | None,
) -> FunctionOptions:
    """Validate `Client.function(...)` arguments; errors name the argument and the problem."""
    if not isinstance(id, str) or not id.strip() or any(ch.isspace() for ch in id):
        raise ValueError(f"function(id=...): must be a non-empty string without spaces, got {id!r}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"function(name=...): must be a string, got {type(name).__name__}")
    triggers = _as_tuple(trigger, (TriggerEvent, TriggerCron), "trigger", "ratchet.on_event(...) or ratchet.on_cron(...)")
    if not triggers:
        raise ValueError("function(trigger=...): at least one trigger is required")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int)
                                or not 0 <= retries <= MAX_RETRIES):
        raise ValueError(f"function(retries=...): must be an int from 0 to {MAX_RETRIES}, got {retries!r}")
    conc = _as_tuple(concurrency, (Concurrency,), "concurrency", "ratchet.Concurrency(...)")
    if len(conc) > 2:
        raise ValueError(f"function(concurrency=...): at most 2 limits, got {len(conc)}")
    for value, cls, arg in ((throttle, Throttle, "throttle"), (rate_limit, RateLimit, "rate_limit"),
                            (debounce, Debounce, "debounce"), (batch_events, Batch, "batch_events"),
                            (priority, Priority, "priority"), (singleton, Singleton, "singleton"),
                            (timeouts, Timeouts, "timeouts")):
        if value is not None and not isinstance(value, cls):
            raise TypeError(f"function({arg}=...): expected ratchet.{cls.__name__}, got {type(value).__name__}")
    if idempotency is not None and (not isinstance(idempotency, str) or not idempotency.strip()):
        raise ValueError(f"function(idempotency=...): must be a non-empty expression, got {idempotency!r}")
    options = FunctionOptions(
        id=id, name=name, triggers=triggers, retries=retries, concurrency=conc, throttle=throttle,
        rate_limit=rate_limit, debounce=debounce, batch_events=batch_events,
        cancel=_as_tuple(cancel, (Cancel,), "cancel", "ratchet.Cancel(...)"), priority=priority,
        idempotency=idempotency, singleton=singleton, timeouts=timeouts,
    )
    # Serialize once now so that bad values (a negative period, an unknown scope) fail at decoration time.
    Function(options, _noop).configs("app", "http://validate.invalid/")
    return options


# --------------------------------------------------------------------------------------------- helpers


def _noop(ctx: Context) -> None:
    return None


def _is_async(handler: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None))  # noqa: B004 - callable objects with async __call__


def _steps(app_url: str, fqid: str, retries: int | None) -> dict[str, Any]:
    sep = "&" if "?" in app_url else "?"
    url = f"{app_url}{sep}{urlencode({'fnId': fqid, 'stepId': protocol.DISCOVERY_STEP_ID})}"
    step: dict[str, Any] = {"id": "step", "name": "step", "runtime": {"type": "http", "url": url}}
    if retries is not None:
        step["retries"] = {"attempts": retries}
    return {"step": step}


def _strip(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _duration(value: Duration | None, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = protocol.parse_duration(value)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    if not isinstance(value, timedelta):
        raise TypeError(f"{where}: expected a timedelta or a duration string like '5m', got {type(value).__name__}")
    if value <= timedelta(0):
        raise ValueError(f"{where}: must be positive, got {value}")
    return protocol.format_duration(value)


def _positive(value: object, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: must be a positive int, got {value!r}")


def _choice(value: object, choices: tuple[str, ...], where: str) -> None:
    if value is not None and value not in choices:
        raise ValueError(f"{where}: must be one of {', '.join(choices)}, got {value!r}")


def _as_tuple(value: Any, types: tuple[type, ...], arg: str, hint: str) -> tuple[Any, ...]:
    if value is None:
        return ()
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if not isinstance(item, types):
            raise TypeError(f"function({arg}=...): expected {hint} or a list of them, got {item!r}")
    return tuple(items)
