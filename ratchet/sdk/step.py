"""Durable steps: `ctx.step.run`, `sleep`, `sleep_until`, `wait_for_event`, `invoke`, `send_event`.

Parallel steps (`ctx.group.parallel`) live in group.py.

`Step` (for `async def` functions) and `StepSync` (for `def` functions) are thin drivers over the pure
decisions of `_replay.Replay`; the argument checking and opcode building they share live in module-level
helpers here.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ratchet import protocol
from ratchet.sdk import _replay, errors
from ratchet.sdk import event as event_lib

if TYPE_CHECKING:
    from ratchet.sdk import client as client_lib
    from ratchet.sdk import function as function_lib

T = TypeVar("T")

Events = event_lib.Event | list[event_lib.Event]


class _StepBase:
    def __init__(self, replay: _replay.Replay, client: client_lib.Client) -> None:
        self._replay = replay
        self._client = client

    def _sleep_call(self, step_id: str, until: datetime) -> _replay.StepCall:
        _check_id(step_id, "sleep_until")
        if not isinstance(until, datetime):
            raise TypeError(f"sleep_until(until=...): expected a datetime, got {type(until).__name__}")
        if until.tzinfo is None:
            until = until.replace(tzinfo=UTC)
        return _replay.StepCall(step_id, protocol.Opcode.SLEEP, name=protocol.format_time(until))

    def _wait_call(self, step_id: str, event: str, if_exp: str | None,
                   timeout: timedelta | int) -> _replay.StepCall:
        _check_id(step_id, "wait_for_event")
        if not isinstance(event, str) or not event:
            raise ValueError(f"wait_for_event(event=...): must be a non-empty string, got {event!r}")
        opts = {"if": if_exp, "timeout": protocol.format_duration(_delay(timeout, "wait_for_event(timeout=...)"))}
        return _replay.StepCall(step_id, protocol.Opcode.WAIT_FOR_EVENT, name=event, opts=opts)

    def _invoke_call(self, step_id: str, function_id: str, data: dict[str, Any] | None,
                     timeout: timedelta | int | None, v: str | None) -> _replay.StepCall:
        _check_id(step_id, "invoke")
        if data is not None and not isinstance(data, dict):
            raise TypeError(f"invoke(data=...): must be a dict, got {type(data).__name__}")
        if v is not None and not isinstance(v, str):
            raise TypeError(f"invoke(v=...): must be a string, got {type(v).__name__}")
        opts = {
            "function_id": function_id,
            "payload": {"data": data or {}, "v": v},
            "timeout": None if timeout is None else protocol.format_duration(_delay(timeout, "invoke(timeout=...)")),
        }
        return _replay.StepCall(step_id, protocol.Opcode.INVOKE_FUNCTION, opts=opts)

    def _function_id(self, function: function_lib.Function[Any] | None, app_id: str | None,
                     function_id: str | None) -> str:
        if function is not None:
            return function.fully_qualified_id(self._client.app_id)
        if not function_id:
            raise ValueError("invoke: pass function=... or function_id=...")
        return f"{app_id or self._client.app_id}-{function_id}"

    def _run_outcome(self, step: _replay.StepInfo, output: Any = None,
                     exc: BaseException | None = None) -> _replay.StopAndReport:
        """The stop signal after running a handler: its output, or its failure."""
        if exc is None:
            return _replay.StopAndReport(self._replay.succeeded(step, output))
        if isinstance(exc, _replay.NestedStep):
            return _replay.StopAndReport(self._replay.nested(step))
        return _replay.StopAndReport(self._replay.failed(step, exc))


class Step(_StepBase):
    """Steps of an `async def` function (`ctx.step`). Every method must be awaited."""

    async def run(self, step_id: str, handler: Callable[..., Awaitable[T]] | Callable[..., T],
                  *args: Any) -> T:
        """Run `handler(*args)` once, durably: later calls of the function get its memoized result.

        Args:
            step_id: Unique (per function) id of the step; reuse within one run gets `id:1`, `id:2`, ...
            handler: A function or coroutine function returning a JSON-serializable value.
            *args: Arguments passed to `handler`.

        Raises:
            StepError: When the step failed for good (its error is replayed).
        """
        _check_id(step_id, "run")
        if not callable(handler):
            raise TypeError(f"run(handler=...): must be callable, got {type(handler).__name__}")
        step, decision = self._replay.decide(_replay.StepCall(step_id))
        if not isinstance(decision, _replay.RunNow):
            return cast(T, _replay.settle(decision))
        self._replay.enter_step()
        try:
            output = handler(*args)
            if inspect.isawaitable(output):
                output = await output
        except (errors.NonRetriableError, errors.RetryAfterError):
            raise
        except (Exception, _replay.NestedStep) as exc:  # noqa: BLE001 - any failure of user code is the step's outcome
            raise self._run_outcome(step, exc=exc) from None
        finally:
            self._replay.exit_step()
        raise self._run_outcome(step, output)

    async def sleep(self, step_id: str, duration: timedelta | int) -> None:
        """Pause the run for `duration` (a timedelta, or an int of milliseconds as in the inngest SDK)."""
        _check_id(step_id, "sleep")
        await self.sleep_until(step_id, datetime.now(UTC) + _delay(duration, "sleep(duration=...)"))

    async def sleep_until(self, step_id: str, until: datetime) -> None:
        """Pause the run until `until` (naive datetimes are taken as UTC)."""
        _replay.settle(self._replay.decide(self._sleep_call(step_id, until))[1])

    async def wait_for_event(
        self,
        step_id: str,
        *,
        event: str,
        timeout: timedelta | int,
        if_exp: str | None = None,
    ) -> event_lib.Event | None:
        """Pause until an event named `event` (matching `if_exp`) arrives; None after `timeout`.

        Args:
            step_id: Id of the step.
            event: Name of the event to wait for.
            timeout: How long to wait (timedelta or int milliseconds).
            if_exp: A CEL expression over `event` (the run's trigger) and `async` (the candidate).
        """
        value = _replay.settle(self._replay.decide(self._wait_call(step_id, event, if_exp, timeout))[1])
        return event_lib.Event.from_wire(value) if isinstance(value, dict) else None

    async def invoke(
        self,
        step_id: str,
        *,
        function: function_lib.Function[Any] | None = None,
        function_id: str | None = None,
        app_id: str | None = None,
        data: dict[str, Any] | None = None,
        timeout: timedelta | int | None = None,
        v: str | None = None,
    ) -> Any:
        """Run another function as a child and return its result.

        Args:
            step_id: Id of the step.
            function: The function to invoke (of this client's app); or give `function_id` (and `app_id`).
            function_id: Id of the function within `app_id` (default: this app).
            app_id: The invoked function's app.
            data: The `data` of the invocation event.
            timeout: How long to wait for the child before the step fails (timedelta or int
                milliseconds); None lets the server choose (a year on Inngest's).
            v: The `v` (version) of the invocation event.

        Raises:
            StepError: When the child failed for good, or did not finish within `timeout` (then
                `name == "InngestInvokeTimeoutError"`).
        """
        fqid = self._function_id(function, app_id, function_id)
        return _replay.settle(self._replay.decide(self._invoke_call(step_id, fqid, data, timeout, v))[1])

    async def invoke_by_id(self, step_id: str, *, function_id: str, app_id: str | None = None,
                           data: dict[str, Any] | None = None, timeout: timedelta | int | None = None,
                           v: str | None = None) -> Any:
        """`invoke` by id, as in the inngest SDK: `invoke_by_id("i", app_id="other", function_id="fn")`."""
        return await self.invoke(step_id, function_id=function_id, app_id=app_id, data=data, timeout=timeout, v=v)

    async def send_event(self, step_id: str, events: Events) -> list[str]:
        """Send one or more events durably (once per run); returns their ids."""
        batch = _events(events)
        return await self.run(step_id, self._client.send, batch)


class StepSync(_StepBase):
    """Steps of a plain `def` function (`ctx.step`); same methods as `Step`, without `await`."""

    def run(self, step_id: str, handler: Callable[..., T], *args: Any) -> T:
        """Run `handler(*args)` once, durably. See `Step.run`."""
        _check_id(step_id, "run")
        if not callable(handler):
            raise TypeError(f"run(handler=...): must be callable, got {type(handler).__name__}")
        if inspect.iscoroutinefunction(handler):
            raise TypeError("run(handler=...): a coroutine function needs an `async def` ratchet function")
        step, decision = self._replay.decide(_replay.StepCall(step_id))
        if not isinstance(decision, _replay.RunNow):
            return cast(T, _replay.settle(decision))
        self._replay.enter_step()
        try:
            output = handler(*args)
        except (errors.NonRetriableError, errors.RetryAfterError):
            raise
        except (Exception, _replay.NestedStep) as exc:  # noqa: BLE001 - any failure of user code is the step's outcome
            raise self._run_outcome(step, exc=exc) from None
        finally:
            self._replay.exit_step()
        raise self._run_outcome(step, output)

    def sleep(self, step_id: str, duration: timedelta | int) -> None:
        """Pause the run for `duration` (timedelta or int milliseconds)."""
        _check_id(step_id, "sleep")
        self.sleep_until(step_id, datetime.now(UTC) + _delay(duration, "sleep(duration=...)"))

    def sleep_until(self, step_id: str, until: datetime) -> None:
        """Pause the run until `until` (naive datetimes are taken as UTC)."""
        _replay.settle(self._replay.decide(self._sleep_call(step_id, until))[1])

    def wait_for_event(self, step_id: str, *, event: str, timeout: timedelta | int,
                       if_exp: str | None = None) -> event_lib.Event | None:
        """Pause until a matching event arrives; None after `timeout`. See `Step.wait_for_event`."""
        value = _replay.settle(self._replay.decide(self._wait_call(step_id, event, if_exp, timeout))[1])
        return event_lib.Event.from_wire(value) if isinstance(value, dict) else None

    def invoke(self, step_id: str, *, function: function_lib.Function[Any] | None = None,
               function_id: str | None = None, app_id: str | None = None,
               data: dict[str, Any] | None = None, timeout: timedelta | int | None = None,
               v: str | None = None) -> Any:
        """Run another function as a child and return its result. See `Step.invoke`."""
        fqid = self._function_id(function, app_id, function_id)
        return _replay.settle(self._replay.decide(self._invoke_call(step_id, fqid, data, timeout, v))[1])

    def invoke_by_id(self, step_id: str, *, function_id: str, app_id: str | None = None,
                     data: dict[str, Any] | None = None, timeout: timedelta | int | None = None,
                     v: str | None = None) -> Any:
        """`invoke` by id. See `Step.invoke_by_id`."""
        return self.invoke(step_id, function_id=function_id, app_id=app_id, data=data, timeout=timeout, v=v)

    def send_event(self, step_id: str, events: Events) -> list[str]:
        """Send one or more events durably (once per run); returns their ids."""
        batch = _events(events)
        return self.run(step_id, self._client.send_sync, batch)


def _check_id(step_id: object, method: str) -> None:
    if not isinstance(step_id, str) or not step_id:
        raise ValueError(f"step.{method}(step_id=...): must be a non-empty string, got {step_id!r}")


def _delay(value: timedelta | int, where: str) -> timedelta:
    """A delay from a timedelta or int milliseconds (the inngest SDK's convention)."""
    if isinstance(value, bool) or not isinstance(value, (timedelta, int)):
        raise TypeError(f"{where}: expected a timedelta or int milliseconds, got {type(value).__name__}")
    delay = value if isinstance(value, timedelta) else timedelta(milliseconds=value)
    if delay < timedelta(0):
        raise ValueError(f"{where}: must not be negative, got {delay}")
    return delay


def _events(events: Events) -> list[event_lib.Event]:
    batch = events if isinstance(events, list) else [events]
    for ev in batch:
        if not isinstance(ev, event_lib.Event):
            raise TypeError(f"send_event(events=...): expected ratchet.Event or a list of them, got {ev!r}")
    return batch
