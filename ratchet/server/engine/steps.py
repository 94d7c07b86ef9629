"""What to do with an app's reply to a call: the heart of the engine, as a pure function.

`decide` takes what the executor knows about the call (`Call`), the app's reply (or why there was
none) and `now`, and returns the store commands that record the outcome. The executor applies them in
one transaction together with releasing the queue item. The table in docs/execution-model.md walks
through each case.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import orjson
import pydantic

from ratchet import protocol
from ratchet.server.engine import lifecycle, retry, waits
from ratchet.server.store import base

#: Most steps a run may record before it fails (protects the store from runaway loops).
MAX_STEPS_PER_RUN = 1000
#: Largest output one step may record.
MAX_STEP_OUTPUT_BYTES = 4 * 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP reply from the app. Header names are lower case."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class NoReply:
    """The call got no reply: the app was unreachable, reset the connection or timed out."""

    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """The facts about one call that the decision depends on."""

    target: str  #: `step` (discovery) or the hash of the targeted step
    attempt: int  #: 0-based attempt of this queue item
    max_attempts: int
    step_count: int  #: steps the run has recorded so far
    sent_at: int  #: when the call went out (ms)
    run_id: str = ""
    function_slug: str = ""
    app_id: str = ""
    events: tuple[dict[str, Any], ...] = ()  #: the run's triggering events (wire form)
    race: bool = False  #: the targeted step belongs to a race-mode parallel group
    emit_finished: bool = True  #: something listens for `inngest/function.finished` (see lifecycle)


def decide(call: Call, reply: Reply | NoReply, *, now: int, policy: retry.RetryPolicy,
           rand: float) -> list[base.Command]:
    """The commands that record `reply`. Never raises on bad input from the app: that fails or retries.

    A decision that ends the run also emits the run's lifecycle events (`lifecycle.run_ended_events`).
    """
    commands = _decide(call, reply, now=now, policy=policy, rand=rand)
    # A run the app's reply failed says which status it replied with (a non-retriable error may be a 400).
    summary = f"invalid status code: {reply.status}" if isinstance(reply, Reply) and reply.status >= 300 else None
    for cmd in commands:
        if isinstance(cmd, base.FinishRun):
            ended = lifecycle.run_ended_events(run_id=call.run_id, function_slug=call.function_slug,
                                               events=list(call.events), status=cmd.status, output=cmd.output,
                                               finished=call.emit_finished, summary=summary)
            if ended:
                commands.append(base.Emit(ended))
            break
    return commands


def _decide(call: Call, reply: Reply | NoReply, *, now: int, policy: retry.RetryPolicy,
            rand: float) -> list[base.Command]:
    if isinstance(reply, NoReply):
        return _function_error(call, {"name": "CallError", "message": reply.reason}, now=now, policy=policy,
                               rand=rand, no_retry=False, retry_after=None)
    if reply.status == 201:
        reply = unwrap_stream(reply)
    no_retry = reply.headers.get(protocol.Header.NO_RETRY, "").lower() == "true"
    retry_after = retry.parse_retry_after(reply.headers.get(protocol.Header.RETRY_AFTER), now)
    if 200 <= reply.status < 300 and protocol.Header.SDK not in reply.headers:
        return _function_error(
            call, {"name": "CallError", "message": f"the reply (status {reply.status}) did not come from an SDK: "
                   f"no {protocol.Header.SDK} header"},
            now=now, policy=policy, rand=rand, no_retry=False, retry_after=None)
    if reply.status == 200:
        try:
            output = orjson.loads(reply.body) if reply.body.strip() else None
        except orjson.JSONDecodeError:
            output = reply.body.decode(errors="replace")
        return [base.FinishRun(protocol.RunStatus.COMPLETED, output)]
    if reply.status == 206:
        try:
            ops = parse_opcodes(reply.body)
        except ValueError as exc:
            return _function_error(call, {"name": "ProtocolError", "message": str(exc)}, now=now, policy=policy,
                                   rand=rand, no_retry=False, retry_after=None)
        return _on_ops(call, ops, now=now, policy=policy, rand=rand, no_retry=no_retry, retry_after=retry_after,
                       body_size=len(reply.body))
    error = _error_body(reply)
    return _function_error(call, error, now=now, policy=policy, rand=rand, no_retry=no_retry,
                           retry_after=retry_after)


def unwrap_stream(reply: Reply) -> Reply:
    """Turn a 201 streaming reply (keep-alive spaces, then `{"status","headers","body"}`) into the real one."""
    try:
        wrapper = orjson.loads(reply.body.strip())
        status = int(wrapper["status"])
        headers = {str(k).lower(): str(v) for k, v in (wrapper.get("headers") or {}).items()}
        body = wrapper.get("body")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return Reply(500, reply.headers, orjson.dumps({"name": "ProtocolError",
                                                       "message": "invalid streaming (201) reply"}))
    raw = body.encode() if isinstance(body, str) else orjson.dumps(body)
    merged = {**reply.headers, **headers}
    return Reply(status, merged, raw)


def parse_opcodes(body: bytes) -> list[protocol.GeneratorOpcode]:
    """The opcodes of a 206 body: an array, or a single object. Raises ValueError naming the problem."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"206 reply is not JSON: {exc}") from None
    items = value if isinstance(value, list) else [value]
    try:
        return [protocol.GeneratorOpcode.model_validate(item) for item in items]
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"invalid opcode in 206 reply: {loc}: {first['msg']}") from None


def _step_name(op: protocol.GeneratorOpcode) -> str:
    if op.userland is not None:
        return op.userland.id
    return op.display_name or op.name or op.id


def _error_dict(err: protocol.StepErrorBody | None) -> dict[str, Any]:
    if err is None:
        return {"name": "Error", "message": "step failed without an error body"}
    out: dict[str, Any] = {"name": err.name, "message": err.message}
    if err.stack is not None:
        out["stack"] = err.stack
    return out


def _on_ops(call: Call, ops: list[protocol.GeneratorOpcode], *, now: int, policy: retry.RetryPolicy,
            rand: float, no_retry: bool, retry_after: int | None, body_size: int) -> list[base.Command]:
    if not ops:
        return _function_error(call, {"name": "ProtocolError", "message": "206 reply with no opcodes"},
                               now=now, policy=policy, rand=rand, no_retry=False, retry_after=None)
    commands: list[base.Command] = []
    discover = False
    attempts = call.attempt + 1
    if call.step_count + len(ops) > MAX_STEPS_PER_RUN:
        return _fail_run("StepLimitExceeded", f"the run exceeded the limit of {MAX_STEPS_PER_RUN} steps")
    planned = 0
    for op in ops:
        kind = op.op
        if kind in (protocol.Opcode.STEP_RUN, protocol.Opcode.STEP):
            # Measuring every output would cost a second serialization per step; only a large reply can
            # hold a large output.
            if body_size > MAX_STEP_OUTPUT_BYTES and len(orjson.dumps(op.data)) > MAX_STEP_OUTPUT_BYTES:
                return _fail_run("StepOutputTooLarge", f"the output of step {_step_name(op)!r} is over the "
                                 f"limit of {MAX_STEP_OUTPUT_BYTES} bytes")
            commands.append(base.SaveStep(op.id, _step_name(op), kind, base.StepStatus.COMPLETED,
                                          {"data": op.data}, call.sent_at, now, attempts, waits.step_input(op)))
            discover = True
        elif kind == protocol.Opcode.STEP_ERROR and not no_retry and attempts < call.max_attempts:
            due = retry_after if retry_after is not None else now + policy.delay_ms(call.attempt, rand)
            return [base.RetryItem(due, _error_dict(op.error))]
        elif kind in (protocol.Opcode.STEP_ERROR, protocol.Opcode.STEP_FAILED):
            commands.append(base.SaveStep(op.id, _step_name(op), kind, base.StepStatus.FAILED,
                                          {"error": _error_dict(op.error)}, call.sent_at, now, attempts,
                                          waits.step_input(op)))
            discover = True
        elif kind == protocol.Opcode.STEP_PLANNED:
            race = (op.opts or {}).get("parallelMode") == "race"
            commands.append(base.Enqueue(op.id, now, race=race))
            planned += 1
        elif kind == protocol.Opcode.SLEEP:
            try:
                wake = _wake_time(op, now)
            except ValueError as exc:
                return _fail_run("ProtocolError", str(exc))
            commands.append(base.SaveStep(op.id, _step_name(op), kind, base.StepStatus.SLEEPING, None, now, wake,
                                          input=waits.step_input(op)))
            commands.append(base.Enqueue(protocol.DISCOVERY_STEP_ID, max(wake, now)))
        elif kind == protocol.Opcode.WAIT_FOR_EVENT:
            commands += waits.wait_for_event(call, op, now)
        elif kind == protocol.Opcode.INVOKE_FUNCTION:
            commands += waits.invoke(call, op, now)
        elif kind == protocol.Opcode.RUN_COMPLETE:
            # The TS SDK ends a reply with this op instead of a 200 when it checkpoints: the steps before it
            # are recorded, then the run completes with `data` as its output. Nothing after it counts.
            commands.append(base.FinishRun(protocol.RunStatus.COMPLETED, op.data))
            return commands
        else:
            return _fail_run("UnsupportedOpcode", f"opcode {kind!r} is not supported by this server")
    if planned and (planned > 1 or len(ops) > 1):
        # Several ops at once: from now on the SDK must plan steps instead of running them inline.
        commands.append(base.SetForceStepPlan(True))
    if discover:
        # WAIT mode: discovery once no planned step is pending; RACE: after every completion.
        commands.append(base.Enqueue(protocol.DISCOVERY_STEP_ID, now, when_idle=not call.race))
    return commands


def _fail_run(name: str, message: str) -> list[base.Command]:
    return [base.FinishRun(protocol.RunStatus.FAILED, {"name": name, "message": message}, error=message)]


def _wake_time(op: protocol.GeneratorOpcode, now: int) -> int:
    """When a Sleep op ends: `opts.duration` if given, else `name` as a timestamp or a duration."""
    opts = op.opts or {}
    if isinstance(opts.get("duration"), str):
        return now + int(protocol.parse_duration(opts["duration"]).total_seconds() * 1000)
    try:
        return int(protocol.parse_time(op.name).timestamp() * 1000)
    except ValueError:
        pass
    try:
        return now + int(protocol.parse_duration(op.name).total_seconds() * 1000)
    except ValueError:
        raise ValueError(f"Sleep opcode with an unreadable wake time {op.name!r}") from None


def _error_body(reply: Reply) -> Any:
    try:
        body = orjson.loads(reply.body) if reply.body.strip() else None
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        return body
    text = reply.body.decode(errors="replace")[:2000]
    return {"name": "Error", "message": f"invalid status code: {reply.status}" + (f": {text}" if text else "")}


def _function_error(call: Call, error: Any, *, now: int, policy: retry.RetryPolicy, rand: float,
                    no_retry: bool, retry_after: int | None) -> list[base.Command]:
    """A call failed as a whole: retry the same item if allowed, else fail the run with `error`."""
    if not no_retry and call.attempt + 1 < call.max_attempts:
        due = retry_after if retry_after is not None else now + policy.delay_ms(call.attempt, rand)
        return [base.RetryItem(due, error)]
    message = error.get("message") if isinstance(error, dict) else None
    return [base.FinishRun(protocol.RunStatus.FAILED, error, error=str(message) if message else "failed")]
