from __future__ import annotations

from typing import Any

import pytest

from ratchet import protocol
from ratchet.sdk import _replay, errors
from ratchet.sdk._replay import (
    CallFrame,
    Nested,
    RaiseStepError,
    Replay,
    Report,
    RunNow,
    StepCall,
    Unexpected,
    UseMemo,
)

A = protocol.step_hash("a")
A1 = protocol.step_hash("a", 1)
B = protocol.step_hash("b")
Op = protocol.Opcode


@pytest.mark.parametrize(("memo", "expected"), [
    ({"data": 1}, UseMemo(1)),
    ({"data": None}, UseMemo(None)),
    ({"data": {"error": "x"}}, UseMemo({"error": "x"})),            # data that looks like an error
    (None, UseMemo(None)),                                          # sleep / wait timeout
    ({"name": "e", "data": {}, "id": "1", "ts": 2},                 # raw event from wait_for_event
     UseMemo({"name": "e", "data": {}, "id": "1", "ts": 2})),
    ({"error": {"name": "E", "message": "m", "stack": "s"}}, RaiseStepError("E", "m", "s")),
    ({"error": {"name": "E", "message": "m", "code": "x"}}, RaiseStepError("E", "m", None)),  # extras ignored
    ({"error": {"name": "E", "message": 3}}, UseMemo({"error": {"name": "E", "message": 3}})),  # not strings
    ({"data": 1, "other": 2}, UseMemo({"data": 1, "other": 2})),    # extra top-level key: raw value
    ({}, UseMemo({})),
    ([1, 2], UseMemo([1, 2])),
])
def test_parse_memo(memo: Any, expected: Any) -> None:
    assert _replay.parse_memo(memo) == expected


@pytest.mark.parametrize(("attempt", "max_attempts", "op"), [
    (0, None, Op.STEP_ERROR),   # unknown: the server decides
    (0, 1, Op.STEP_FAILED),     # 0 + 1 >= 1
    (0, 2, Op.STEP_ERROR),      # 1 < 2
    (1, 2, Op.STEP_FAILED),     # 2 >= 2
    (4, 5, Op.STEP_FAILED),
    (5, 5, Op.STEP_FAILED),     # past the end is still final
])
def test_step_error_op(attempt: int, max_attempts: int | None, op: protocol.Opcode) -> None:
    assert _replay.step_error_op(CallFrame(attempt=attempt, max_attempts=max_attempts)) is op


SLEEP = StepCall("a", Op.SLEEP, name="2030-01-01T00:00:00.000Z")


@pytest.mark.parametrize(("frame", "call", "kind", "op"), [
    # memo hits win over everything else
    (CallFrame(memo={A: {"data": 1}}), StepCall("a"), UseMemo, None),
    (CallFrame(memo={A: {"data": 1}}, target=B), StepCall("a"), UseMemo, None),
    (CallFrame(memo={A: {"error": {"name": "E", "message": "m"}}}), StepCall("a"), RaiseStepError, None),
    (CallFrame(memo={A: None}), SLEEP, UseMemo, None),
    # new step.run: run now, unless planning is forced
    (CallFrame(), StepCall("a"), RunNow, None),
    (CallFrame(disable_immediate_execution=True), StepCall("a"), Report, Op.STEP_PLANNED),
    (CallFrame(target=A), StepCall("a"), RunNow, None),
    (CallFrame(target=A, disable_immediate_execution=True), StepCall("a"), RunNow, None),  # targeting wins
    # targeting another step
    (CallFrame(target=B), StepCall("a"), Unexpected, None),
    (CallFrame(target=B), SLEEP, Unexpected, None),
    # other ops are reported as they are
    (CallFrame(), SLEEP, Report, Op.SLEEP),
    (CallFrame(disable_immediate_execution=True), SLEEP, Report, Op.SLEEP),
    (CallFrame(), StepCall("a", Op.WAIT_FOR_EVENT, name="x/y", opts={"if": None, "timeout": "1h"}),
     Report, Op.WAIT_FOR_EVENT),
])
def test_decide(frame: CallFrame, call: StepCall, kind: type, op: protocol.Opcode | None) -> None:
    step, decision = Replay(frame).decide(call)
    assert step.hashed_id == A
    assert isinstance(decision, kind)
    if op is not None:
        assert isinstance(decision, Report)
        (opcode,) = decision.opcodes
        assert opcode["op"] == op and opcode["id"] == A and decision.no_retry is False


def test_repeat_ids_are_indexed_per_call() -> None:
    replay = Replay(CallFrame(memo={A: {"data": 0}, A1: {"data": 1}}))
    results = [replay.decide(StepCall("a")) for _ in range(3)] + [replay.decide(StepCall("b"))]
    assert [s.hashed_id for s, _ in results] == [A, A1, protocol.step_hash("a", 2), B]
    assert [s.index for s, _ in results] == [0, 1, 2, 0]
    assert [d for _, d in results[:2]] == [UseMemo(0), UseMemo(1)]
    assert isinstance(results[2][1], RunNow)


def test_replaying_until_every_memo_is_consumed() -> None:
    replay = Replay(CallFrame(memo={A: {"data": 0}, B: {"data": 1}}))
    assert replay.replaying
    replay.decide(StepCall("a"))
    assert replay.replaying
    replay.decide(StepCall("b"))
    assert not replay.replaying
    assert not Replay(CallFrame()).replaying


def test_nested_step_call() -> None:
    replay = Replay(CallFrame(memo={B: {"data": 1}}))
    outer, decision = replay.decide(StepCall("a"))
    assert isinstance(decision, RunNow)
    replay.enter_step()
    assert isinstance(replay.decide(StepCall("b"))[1], Nested)  # even a memoized step is nested here
    replay.exit_step()
    report = replay.nested(outer)
    assert report.no_retry is True
    (op,) = report.opcodes
    assert op["op"] == "StepError" and op["id"] == A and op["error"]["code"] == "step_nested"


def test_outcome_reports() -> None:
    replay = Replay(CallFrame(attempt=1, max_attempts=2))
    step, _ = replay.decide(StepCall("a"))
    assert replay.succeeded(step, {"x": 1}).opcodes == ({
        "id": A, "name": "a", "displayName": "a", "op": "StepRun", "opts": None, "data": {"x": 1},
        "userland": {"id": "a", "index": None}},)
    try:
        raise KeyError("k")
    except KeyError as exc:
        (op,) = replay.failed(step, exc).opcodes
    assert op["op"] == "StepFailed"
    assert op["error"]["name"] == "KeyError" and op["error"]["code"] == "unknown"
    assert "Traceback" in op["error"]["stack"]


@pytest.mark.parametrize(("decision", "raises"), [
    (RaiseStepError("E", "m"), errors.StepError),
    (Report(()), _replay.StopAndReport),
    (Nested(), _replay.NestedStep),
])
def test_settle_raises(decision: _replay.Decision, raises: type[BaseException]) -> None:
    with pytest.raises(raises):
        _replay.settle(decision)


def test_settle_returns_memo_and_signals_are_base_exceptions() -> None:
    assert _replay.settle(UseMemo(5)) == 5
    for signal in (_replay.StopAndReport, _replay.StopUnexpected, _replay.NestedStep):
        assert not issubclass(signal, Exception)
    with pytest.raises(TypeError):
        _replay.settle(RunNow(Replay(CallFrame()).resolve(StepCall("a"))))
