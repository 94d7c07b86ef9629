"""Pauses: what a run waiting for an event (`wait_for_event`, `invoke`, `cancel`) stores, and what an
incoming event or an expiry does to it. Pure: callers pass `now` and get store commands back.

A pause keeps its `if` expression as a *residual*: the run's own event (`event.*`) is substituted when
the pause is created, so matching an incoming event evaluates only `async.*`. When the residual holds an
`async.<path> == <literal>` conjunct, the pause is indexed by that path and value, and an incoming event
meets only the pauses whose value equals its own (10,000 waits on one event name cost one lookup, not
10,000 evaluations).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ratchet import protocol
from ratchet.server.engine import expressions, lifecycle
from ratchet.server.store import base

if TYPE_CHECKING:
    from ratchet.server.engine.steps import Call

#: How long an invoke (or a wait) lasts when the SDK gives no timeout.
DEFAULT_INVOKE_TIMEOUT = timedelta(days=365)
DEFAULT_WAIT_TIMEOUT = DEFAULT_INVOKE_TIMEOUT
INVOKE_TIMEOUT_ERROR = {"name": "InngestInvokeTimeoutError",
                        "message": "Timed out waiting for invoked function to complete"}


def pause_id(run_id: str, step_hash: str) -> str:
    """Deterministic per step, so a step reported twice creates one pause; also the invoke correlation id."""
    return f"{run_id}.{step_hash}"


def _step_name(op: protocol.GeneratorOpcode) -> str:
    if op.userland is not None:
        return op.userland.id
    return op.display_name or op.name or op.id


def step_input(op: protocol.GeneratorOpcode) -> Any:
    """What a step was given, recorded with it for people to read (`StepRecord.input`): its opcode's
    options, with what the protocol carries in `name` instead (a sleep's wake time, a wait's event)."""
    opts = op.opts if isinstance(op.opts, dict) else None
    if op.op == protocol.Opcode.SLEEP:
        return {"until": op.name, **(opts or {})}
    if op.op == protocol.Opcode.WAIT_FOR_EVENT:
        return {"event": op.name, **(opts or {})}
    return opts or None


def _ms(d: timedelta) -> int:
    return int(d.total_seconds() * 1000)


def make_pause(*, pid: str, run_id: str, kind: base.PauseKind, event_name: str, if_exp: str | None,
               trigger: dict[str, Any], now: int, expires_at: int | None, step_hash: str | None = None,
               step_name: str | None = None) -> base.PauseRecord:
    """A pause with its residual expression and index. Raises ExpressionError for a bad `if_exp`."""
    residual = expressions.residual(if_exp, trigger) if if_exp else None
    index = expressions.equality_index(residual) if residual else None
    path, value = index[0] if index else (None, None)
    return base.PauseRecord(id=pid, run_id=run_id, kind=kind, event_name=event_name, expression=residual,
                            created_at=now, expires_at=expires_at, step_hash=step_hash, step_name=step_name,
                            index_path=path, index_value=value)


def _failed_step(op: protocol.GeneratorOpcode, call: Call, now: int, message: str) -> list[base.Command]:
    error = {"name": "InvalidStep", "message": message}
    return [base.SaveStep(op.id, _step_name(op), op.op, base.StepStatus.FAILED, {"error": error}, now, now,
                          input=step_input(op)),
            base.Enqueue(protocol.DISCOVERY_STEP_ID, now, when_idle=not call.race)]


def _timeout(opts: dict[str, Any], default: timedelta) -> timedelta:
    """`opts.timeout` as a duration (`default` when absent); ValueError when unreadable."""
    raw = opts.get("timeout")
    return protocol.parse_duration(raw) if raw else default


def wait_for_event(call: Call, op: protocol.GeneratorOpcode, now: int) -> list[base.Command]:
    """`WaitForEvent`: the event name is in `name` (or `opts.event`), `opts.if` and `opts.timeout`."""
    opts = op.opts or {}
    event_name = opts.get("event") or op.name
    if not isinstance(event_name, str) or not event_name:
        return _failed_step(op, call, now, "wait_for_event needs an event name")
    try:
        timeout = _timeout(opts, DEFAULT_WAIT_TIMEOUT)
    except ValueError as exc:
        return _failed_step(op, call, now, f"wait_for_event timeout: {exc}")
    trigger = call.events[0] if call.events else {}
    try:
        pause = make_pause(pid=pause_id(call.run_id, op.id), run_id=call.run_id, kind=base.PauseKind.WAIT,
                           event_name=event_name, if_exp=opts.get("if"), trigger=trigger, now=now,
                           expires_at=now + _ms(timeout), step_hash=op.id, step_name=_step_name(op))
    except expressions.ExpressionError as exc:
        return _failed_step(op, call, now, f"wait_for_event if: {exc}")
    return [base.SaveStep(op.id, _step_name(op), op.op, base.StepStatus.WAITING, None, now, None,
                          input=step_input(op)),
            base.CreatePause(pause)]


def invoke(call: Call, op: protocol.GeneratorOpcode, now: int) -> list[base.Command]:
    """`InvokeFunction`: pause until the child's `function.finished`, and emit the invocation event."""
    opts = op.opts or {}
    target = opts.get("function_id")
    if not isinstance(target, str) or not target:
        return _failed_step(op, call, now, "invoke needs opts.function_id")
    try:
        timeout = _timeout(opts, DEFAULT_INVOKE_TIMEOUT)
    except ValueError as exc:
        return _failed_step(op, call, now, f"invoke timeout: {exc}")
    payload = opts.get("payload") if isinstance(opts.get("payload"), dict) else {}
    correlation = pause_id(call.run_id, op.id)  # a JSON string literal is a valid CEL string literal
    expires = now + _ms(timeout)
    path = "data.correlation_id"
    pause = base.PauseRecord(
        id=correlation, run_id=call.run_id, kind=base.PauseKind.INVOKE, event_name=lifecycle.FINISHED,
        expression=f"async.{path} == {json.dumps(correlation)}", created_at=now, expires_at=expires,
        step_hash=op.id, step_name=_step_name(op), index_path=path,
        index_value=expressions.index_values({"data": {"correlation_id": correlation}}, path))
    event = lifecycle.invoked_event(target_fn=target, payload=payload, correlation_id=correlation,
                                    expires_at=expires, run_id=call.run_id, step_name=_step_name(op),
                                    source_fn=call.function_slug, source_app=call.app_id)
    return [base.SaveStep(op.id, _step_name(op), op.op, base.StepStatus.WAITING, None, now, None,
                          input=step_input(op)),
            base.CreatePause(pause), base.Emit((event,))]


def resolves(pause: base.PauseRecord, incoming: expressions.Bindings) -> bool:
    """Does the incoming event (bound as `async`; its name is the pause's event name) resolve the pause?"""
    if pause.expression is None:
        return True
    return expressions.compile(pause.expression).matches(incoming)


def _discovery_after_pause(now: int) -> base.Enqueue:
    """Discovery once the run is idle. Unlike a step's completion, a pause's does not end parallel mode
    (Inngest's executor resets ForceStepPlan only for steps): after a group whose last step was a wait or
    an invoke, the next step is planned, then called (the official SDK's parallel_mode_default test
    expects those 7 calls)."""
    return base.Enqueue(protocol.DISCOVERY_STEP_ID, now, when_idle=True, end_parallel=False)


def resume(pause: base.PauseRecord, event: dict[str, Any], now: int, *,
           ended: tuple[dict[str, Any], ...] = ()) -> base.Resume:
    """The commands an event that resolves `pause` applies to its run.

    `ended` are the lifecycle events to emit when the pause is a cancel (the run ends).
    """
    consume = base.ConsumePause(pause.id)
    if pause.kind == base.PauseKind.CANCEL:
        reason = f"cancelled by event {event.get('name')!r}"
        finish = base.FinishRun(protocol.RunStatus.CANCELLED, {"name": "FunctionCancelled", "message": reason},
                                error=reason)
        return base.Resume(pause.run_id, (consume, finish, base.Emit(ended)))
    assert pause.step_hash is not None
    if pause.kind == base.PauseKind.INVOKE:
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        if "error" in data:
            memo: Any = {"error": data["error"]}
            status = base.StepStatus.FAILED
        else:
            memo = {"data": data.get("result")}
            status = base.StepStatus.COMPLETED
        op = protocol.Opcode.INVOKE_FUNCTION
    else:
        memo, status, op = event, base.StepStatus.COMPLETED, protocol.Opcode.WAIT_FOR_EVENT
    save = base.SaveStep(pause.step_hash, pause.step_name or pause.step_hash, op, status, memo,
                         pause.created_at, now)
    return base.Resume(pause.run_id, (consume, save, _discovery_after_pause(now)))


def expire(pause: base.PauseRecord, now: int) -> list[base.Command]:
    """The commands when a pause's time runs out: a wait resumes with `null`, an invoke with the
    timeout error; a cancel pause just goes away."""
    consume = base.ConsumePause(pause.id)
    if pause.kind == base.PauseKind.CANCEL or pause.step_hash is None:
        return [consume]
    if pause.kind == base.PauseKind.INVOKE:
        save = base.SaveStep(pause.step_hash, pause.step_name or pause.step_hash, protocol.Opcode.INVOKE_FUNCTION,
                             base.StepStatus.FAILED, {"error": INVOKE_TIMEOUT_ERROR}, pause.created_at, now)
    else:
        save = base.SaveStep(pause.step_hash, pause.step_name or pause.step_hash, protocol.Opcode.WAIT_FOR_EVENT,
                             base.StepStatus.COMPLETED, None, pause.created_at, now)
    return [consume, save, _discovery_after_pause(now)]


def cancel_pauses(run_id: str, config: protocol.FunctionConfig, trigger: dict[str, Any],
                  now: int) -> tuple[base.PauseRecord, ...]:
    """The cancel-on pauses a new run starts with (one per `cancel` entry)."""
    out = []
    for i, cancel in enumerate(config.cancel or []):
        expires = now + _ms(protocol.parse_duration(cancel.timeout)) if cancel.timeout else None
        out.append(make_pause(pid=f"{run_id}.cancel.{i}", run_id=run_id, kind=base.PauseKind.CANCEL,
                              event_name=cancel.event, if_exp=cancel.if_exp, trigger=trigger, now=now,
                              expires_at=expires))
    return tuple(out)
