"""Replay: what a step call does, given the memo of a call request. Pure: no I/O, no clock.

Every call of a function re-runs its code from the top. Each step the code meets is looked up in the memo
the server sent (by its hashed id), and one of these decisions follows (protocol reference §2.5):

==============================================  ==========================================================
situation                                       decision
==============================================  ==========================================================
a step call inside another step's handler       `Nested`: the outer step reports StepError `step_nested`
memo `{"data": x}` (or any other JSON value)    `UseMemo(x)`: the step returns x
memo `{"error": {name, message, ...}}`          `RaiseStepError`: user code gets a `StepError`
targeting another step (`stepId=<hash>`)         `Unexpected`: the call fails with `step_unexpected`
                                                (inside a parallel group: the step is skipped)
inside a parallel group, not targeting          `Report` the step (`step.run` as StepPlanned); the group
                                                gathers every such report into one 206
`step.run` and `disable_immediate_execution`    `Report` StepPlanned: the server calls back targeting it
`step.run` otherwise                            `RunNow`: run the handler, then `Report` StepRun/StepError
any other op (sleep, wait, invoke)              `Report` the op and stop
==============================================  ==========================================================

Parallel groups (`ctx.group.parallel`, reference §2.5): `Replay.enter_group` marks the code as inside a
group, and `GroupRun` collects the outcome of each callable of the group: a value, a report (gathered), or a
skipped step. In race mode every opcode a step of the group reports carries `opts.parallelMode = "race"`,
which tells the server to run discovery after each step of the group completes.

`Replay` is the small state machine that assigns repeat indexes (`"id"`, `"id:1"`, ...) and tracks whether
a step handler is running. The sync and async `Step` classes (step.py) are thin drivers over it, and they
stop a function with the `Interrupt` signals below, which subclass `BaseException` so user code's
`except Exception` cannot swallow them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ratchet import protocol
from ratchet.sdk import errors

# --------------------------------------------------------------------------------------------- inputs


class ParallelMode(enum.StrEnum):
    """How the server schedules discovery after the steps of a parallel group (`ctx.group.parallel`).

    The group returns the results of all its callables in both modes; the mode only changes when the
    server calls the function again.
    """

    #: Call the function again once every step of the group has completed (fewest calls).
    WAIT = "wait"
    #: Call the function again after each step of the group completes, so that a callable with several
    #: steps in sequence advances without waiting for the other callables.
    RACE = "race"


#: The opts key that marks a step of a race-mode group.
PARALLEL_MODE_OPT = "parallelMode"


@dataclass(frozen=True, slots=True)
class StepCall:
    """A step as user code asked for it.

    `name` is the wire name (the user id for `step.run`, the wake time for a sleep, the event name for
    a wait); it defaults to the user id.
    """

    id: str
    op: protocol.Opcode = protocol.Opcode.STEP_RUN
    name: str | None = None
    opts: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StepInfo:
    """A step call with its wire identity resolved."""

    hashed_id: str
    user_id: str
    index: int
    op: protocol.Opcode
    name: str
    opts: dict[str, Any] | None = None

    def opcode(self, op: protocol.Opcode | None = None, *, data: Any = None,
               error: dict[str, Any] | None = None) -> dict[str, Any]:
        """The opcode object of a 206 reply for this step (reference §2.4)."""
        out: dict[str, Any] = {
            "id": self.hashed_id,
            "name": self.name,
            "displayName": self.user_id,
            "op": str(op or self.op),
            "opts": self.opts,
            "data": data,
            "userland": {"id": self.user_id, "index": self.index or None},
        }
        if error is not None:
            out["error"] = error
        return out


@dataclass(frozen=True, slots=True)
class CallFrame:
    """The parts of a call request that drive replay."""

    memo: Mapping[str, Any] = field(default_factory=dict)
    #: The hashed step id the server targets, or None for a discovery call (`stepId=step`).
    target: str | None = None
    disable_immediate_execution: bool = False
    attempt: int = 0
    max_attempts: int | None = None


# --------------------------------------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class UseMemo:
    """The step already ran: return its memoized value."""

    value: Any


@dataclass(frozen=True, slots=True)
class RaiseStepError:
    """The step already failed for good: raise `StepError` in user code."""

    name: str
    message: str
    stack: str | None = None

    def exception(self) -> errors.StepError:
        return errors.StepError(self.message, name=self.name, stack=self.stack)


@dataclass(frozen=True, slots=True)
class RunNow:
    """Run the step's handler in this call, then report its outcome."""

    step: StepInfo


@dataclass(frozen=True, slots=True)
class Report:
    """Stop the function and reply 206 with these opcodes; `no_retry` adds `x-inngest-no-retry: true`."""

    opcodes: tuple[dict[str, Any], ...]
    no_retry: bool = False


@dataclass(frozen=True, slots=True)
class Unexpected:
    """A new step was met while the server targets a different one: the code is not deterministic."""

    step: StepInfo

    @property
    def message(self) -> str:
        return f'found step "{self.step.user_id}" when targeting a different step'


@dataclass(frozen=True, slots=True)
class Nested:
    """A step was called inside another step's handler; the outer step fails for good (`step_nested`)."""


Decision = UseMemo | RaiseStepError | RunNow | Report | Unexpected | Nested


# --------------------------------------------------------------------------------------------- signals


class Interrupt(BaseException):
    """Base of the control-flow signals that stop user code; never seen by users."""


class StopAndReport(Interrupt):
    """Stop the function and reply with a 206 `Report`."""

    def __init__(self, report: Report) -> None:
        super().__init__("step reported")
        self.report = report


class StopUnexpected(Interrupt):
    """Stop the function and fail the call with `step_unexpected`."""

    def __init__(self, unexpected: Unexpected) -> None:
        super().__init__(unexpected.message)
        self.unexpected = unexpected


class NestedStep(Interrupt):
    """A step was called from inside another step's handler; the outer step reports it."""

    def __init__(self) -> None:
        super().__init__("nested step")


# --------------------------------------------------------------------------------------------- logic


def parse_memo(value: Any) -> UseMemo | RaiseStepError:
    """Read one memo value (reference §2.2).

    `{"data": x}` gives x; `{"error": {"name": str, "message": str, ...}}` gives a step error; anything else
    (a raw event from `wait_for_event`, `null` from a sleep) is the value itself.
    """
    if isinstance(value, dict) and value and set(value) <= {"data", "error"}:
        err = value.get("error")
        if (isinstance(err, dict) and isinstance(err.get("name"), str)
                and isinstance(err.get("message"), str)):
            stack = err.get("stack")
            return RaiseStepError(err["name"], err["message"], stack if isinstance(stack, str) else None)
        if "data" in value:
            return UseMemo(value["data"])
    return UseMemo(value)


def step_error_op(frame: CallFrame) -> protocol.Opcode:
    """StepFailed on the last attempt, StepError while retries remain (or when max_attempts is unknown)."""
    if frame.max_attempts is not None and frame.attempt + 1 >= frame.max_attempts:
        return protocol.Opcode.STEP_FAILED
    return protocol.Opcode.STEP_ERROR


class Replay:
    """The replay state of one call: repeat counts, consumed memos, and whether a handler is running.

    Args:
        frame: The memo and targeting of the call request.
    """

    def __init__(self, frame: CallFrame) -> None:
        self.frame = frame
        self._counts: dict[str, int] = {}
        self._consumed: set[str] = set()
        self._in_step = False
        #: The mode of the innermost parallel group being run, or None outside groups.
        self._group: ParallelMode | None = None

    @property
    def replaying(self) -> bool:
        """True while the code is still meeting memoized steps (used to mute `ctx.logger`)."""
        return len(self._consumed) < len(self.frame.memo)

    def resolve(self, call: StepCall) -> StepInfo:
        """Give the call its wire id: the n-th use of a user id within this call hashes `"id:n"`."""
        index = self._counts.get(call.id, 0)
        self._counts[call.id] = index + 1
        opts = call.opts
        if self._group is ParallelMode.RACE:
            opts = {**(opts or {}), PARALLEL_MODE_OPT: str(ParallelMode.RACE)}
        return StepInfo(
            hashed_id=protocol.step_hash(call.id, index),
            user_id=call.id,
            index=index,
            op=call.op,
            name=call.id if call.name is None else call.name,
            opts=opts,
        )

    def decide(self, call: StepCall) -> tuple[StepInfo, Decision]:
        """The decision for a step call (see the module table)."""
        step = self.resolve(call)
        frame = self.frame
        if self._in_step:
            return step, Nested()
        if step.hashed_id in frame.memo:
            self._consumed.add(step.hashed_id)
            return step, parse_memo(frame.memo[step.hashed_id])
        if frame.target is not None and frame.target != step.hashed_id:
            return step, Unexpected(step)
        if self._group is not None and frame.target is None:
            planned = protocol.Opcode.STEP_PLANNED if step.op is protocol.Opcode.STEP_RUN else step.op
            return step, Report((step.opcode(planned),))
        if step.op is protocol.Opcode.STEP_RUN:
            if frame.disable_immediate_execution and frame.target is None:
                return step, Report((step.opcode(protocol.Opcode.STEP_PLANNED),))
            return step, RunNow(step)
        return step, Report((step.opcode(),))

    def nested(self, step: StepInfo) -> Report:
        """The final StepError reported for a step whose handler called another step."""
        error = {"code": str(protocol.ErrorCode.STEP_NESTED), "name": "StepError",
                 "message": "Nested steps are not supported.", "stack": None}
        return Report((step.opcode(protocol.Opcode.STEP_ERROR, error=error),), no_retry=True)

    def succeeded(self, step: StepInfo, output: Any) -> Report:
        """Report a handler that returned `output`."""
        return Report((step.opcode(protocol.Opcode.STEP_RUN, data=output),))

    def failed(self, step: StepInfo, exc: BaseException) -> Report:
        """Report a handler that raised: StepError while retries remain, else StepFailed."""
        return Report((step.opcode(step_error_op(self.frame), error=errors.error_body(exc)),))

    def enter_step(self) -> None:
        """Mark a step handler as running, so that a step called inside it is reported as nested."""
        self._in_step = True

    def exit_step(self) -> None:
        self._in_step = False

    def enter_group(self, mode: ParallelMode) -> GroupRun:
        """Start running the callables of a parallel group; pair with `exit_group`."""
        run = GroupRun(outer=self._group)
        # A group nested in a race group is raced too (its opcodes end up in the outer group's report).
        self._group = ParallelMode.RACE if self._group is ParallelMode.RACE else mode
        return run

    def exit_group(self, run: GroupRun) -> None:
        self._group = run.outer


@dataclass(slots=True)
class GroupRun:
    """The outcome of a parallel group, callable by callable.

    Each callable of the group either returns (a memoized or just-run value), reports opcodes (a new step:
    planned, or run because it is the target), or meets a step that is not the target (skipped). `result`
    then decides for the whole group, as the official SDK does: any reports → one 206 with all of them;
    otherwise the values in order. Unlike the official SDK, which returns a shorter tuple, a group whose
    steps were skipped and none ran fails the call with `step_unexpected`: the targeted step was not in it.
    """

    outer: ParallelMode | None = None
    values: list[Any] = field(default_factory=list)
    opcodes: list[dict[str, Any]] = field(default_factory=list)
    no_retry: bool = False
    skipped: Unexpected | None = None

    def returned(self, value: Any) -> None:
        self.values.append(value)

    def reported(self, report: Report) -> None:
        self.opcodes.extend(report.opcodes)
        self.no_retry = self.no_retry or report.no_retry

    def skip(self, unexpected: Unexpected) -> None:
        if self.skipped is None:
            self.skipped = unexpected

    def result(self) -> tuple[Any, ...]:
        """The group's values in order, or raise the stop signal that ends the call."""
        if self.opcodes:
            raise StopAndReport(Report(tuple(self.opcodes), self.no_retry))
        if self.skipped is not None:
            raise StopUnexpected(self.skipped)
        return tuple(self.values)


def settle(decision: Decision) -> Any:
    """Carry out a decision other than `RunNow`: return the memo, or raise the error or stop signal."""
    if isinstance(decision, UseMemo):
        return decision.value
    if isinstance(decision, RaiseStepError):
        raise decision.exception()
    if isinstance(decision, Report):
        raise StopAndReport(decision)
    if isinstance(decision, Unexpected):
        raise StopUnexpected(decision)
    if isinstance(decision, Nested):
        raise NestedStep()
    raise TypeError(f"settle() cannot carry out {decision!r}")
