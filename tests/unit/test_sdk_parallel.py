"""Parallel groups: the pure decisions of `_replay` inside a group, `GroupRun`, and the `Group` drivers."""

from __future__ import annotations

from typing import Any

import pytest

import ratchet
from ratchet import protocol
from ratchet.sdk import _replay
from ratchet.sdk._replay import (
    CallFrame,
    GroupRun,
    ParallelMode,
    Replay,
    Report,
    RunNow,
    StepCall,
    Unexpected,
)
from ratchet.sdk.group import Group, GroupSync
from ratchet.sdk.step import Step, StepSync

Op = protocol.Opcode
A, B = protocol.step_hash("a"), protocol.step_hash("b")
CLIENT = ratchet.Client(app_id="app", is_production=False, environ={})
WAIT = StepCall("w", Op.WAIT_FOR_EVENT, name="x/w", opts={"if": None, "timeout": "1h"})


def in_group(frame: CallFrame, mode: ParallelMode, call: StepCall) -> tuple[Replay, _replay.Decision]:
    replay = Replay(frame)
    run = replay.enter_group(mode)
    decision = replay.decide(call)[1]
    replay.exit_group(run)
    return replay, decision


@pytest.mark.parametrize("die", [False, True])
def test_new_step_run_in_a_group_is_planned(die: bool) -> None:
    _, decision = in_group(CallFrame(disable_immediate_execution=die), ParallelMode.WAIT, StepCall("a"))
    assert isinstance(decision, Report)
    (op,) = decision.opcodes
    assert (op["op"], op["id"], op["opts"], op["data"]) == ("StepPlanned", A, None, None)


def test_race_mode_adds_the_opt_to_every_op_and_keeps_existing_opts() -> None:
    _, decision = in_group(CallFrame(), ParallelMode.RACE, StepCall("a"))
    assert isinstance(decision, Report) and decision.opcodes[0]["opts"] == {"parallelMode": "race"}
    _, decision = in_group(CallFrame(), ParallelMode.RACE, WAIT)
    assert isinstance(decision, Report)
    assert decision.opcodes[0]["op"] == "WaitForEvent"
    assert decision.opcodes[0]["opts"] == {"if": None, "timeout": "1h", "parallelMode": "race"}
    assert WAIT.opts == {"if": None, "timeout": "1h"}  # the call itself is not modified


def test_targeting_in_a_group_runs_the_target_and_skips_the_rest() -> None:
    _, decision = in_group(CallFrame(target=A, disable_immediate_execution=True), ParallelMode.RACE, StepCall("a"))
    assert isinstance(decision, RunNow) and decision.step.opts == {"parallelMode": "race"}
    _, decision = in_group(CallFrame(target=B), ParallelMode.WAIT, StepCall("a"))
    assert isinstance(decision, Unexpected)


def test_memo_wins_inside_a_group() -> None:
    _, decision = in_group(CallFrame(memo={A: {"data": 1}}), ParallelMode.RACE, StepCall("a"))
    assert decision == _replay.UseMemo(1)


def test_leaving_a_group_restores_the_outer_state() -> None:
    replay = Replay(CallFrame())
    outer = replay.enter_group(ParallelMode.RACE)
    inner = replay.enter_group(ParallelMode.WAIT)  # nested in a race group: raced too
    step, _ = replay.decide(StepCall("x"))
    assert step.opts == {"parallelMode": "race"}
    replay.exit_group(inner)
    replay.exit_group(outer)
    _, decision = replay.decide(StepCall("a"))
    assert isinstance(decision, RunNow) and decision.step.opts is None


def test_group_run_result() -> None:
    run = GroupRun()
    run.returned(1)
    run.returned(None)
    assert run.result() == (1, None)

    run = GroupRun()
    run.returned(1)
    run.reported(Report(({"id": "a"},)))
    run.skip(Unexpected(Replay(CallFrame()).resolve(StepCall("s"))))
    run.reported(Report(({"id": "b"}, {"id": "c"}), no_retry=True))
    with pytest.raises(_replay.StopAndReport) as info:
        run.result()
    assert info.value.report == Report(({"id": "a"}, {"id": "b"}, {"id": "c"}), no_retry=True)

    run = GroupRun()
    run.returned(1)
    first = Unexpected(Replay(CallFrame()).resolve(StepCall("first")))
    run.skip(first)
    run.skip(Unexpected(Replay(CallFrame()).resolve(StepCall("second"))))
    with pytest.raises(_replay.StopUnexpected) as unexpected:
        run.result()
    assert unexpected.value.unexpected is first


def drivers(memo: dict[str, Any] | None = None, **frame: Any) -> tuple[Step, Group, StepSync, GroupSync]:
    r1, r2 = Replay(CallFrame(memo=memo or {}, **frame)), Replay(CallFrame(memo=memo or {}, **frame))
    return Step(r1, CLIENT), Group(r1), StepSync(r2, CLIENT), GroupSync(r2)


async def test_group_drivers_plan_together_and_return_a_tuple() -> None:
    step, group, step_s, group_s = drivers()
    with pytest.raises(_replay.StopAndReport) as info:
        await group.parallel((lambda: step.run("a", lambda: 1), lambda: step.run("b", lambda: 2)))
    assert [op["id"] for op in info.value.report.opcodes] == [A, B]
    with pytest.raises(_replay.StopAndReport) as info:
        group_s.parallel([lambda: step_s.run("a", lambda: 1), lambda: step_s.run("b", lambda: 2)], "race")
    assert [op["opts"] for op in info.value.report.opcodes] == [{"parallelMode": "race"}] * 2

    step, group, step_s, group_s = drivers({A: {"data": 1}, B: {"data": 2}})
    assert await group.parallel((lambda: step.run("a", lambda: 0), lambda: step.run("b", lambda: 0))) == (1, 2)
    assert group_s.parallel((lambda: step_s.run("a", lambda: 0), lambda: step_s.run("b", lambda: 0))) == (1, 2)
    assert await group.parallel(()) == ()


async def test_group_after_a_group_and_a_step_error_propagates() -> None:
    memo = {A: {"error": {"name": "E", "message": "m"}}, B: {"data": 2}}
    step, group, step_s, group_s = drivers(memo)
    with pytest.raises(ratchet.StepError, match="m"):
        await group.parallel((lambda: step.run("a", lambda: 0), lambda: step.run("b", lambda: 0)))
    with pytest.raises(ratchet.StepError, match="m"):
        group_s.parallel((lambda: step_s.run("a", lambda: 0), lambda: step_s.run("b", lambda: 0)))


@pytest.mark.parametrize(("args", "error", "fragment"), [
    ((lambda: 1,), TypeError, "tuple or list of callables"),
    (((1,),), TypeError, "item 0 is not callable"),
    (((), "fastest"), ValueError, "ParallelMode.WAIT or RACE"),
])
async def test_bad_group_arguments(args: tuple[Any, ...], error: type[Exception], fragment: str) -> None:
    _, group, _, group_s = drivers()
    with pytest.raises(error, match=fragment):
        await group.parallel(*args)
    with pytest.raises(error, match=fragment):
        group_s.parallel(*args)


def test_parallel_mode_accepts_the_official_enum() -> None:
    inngest = pytest.importorskip("inngest")
    _, _, step_s, group_s = drivers()
    with pytest.raises(_replay.StopAndReport) as info:
        group_s.parallel((lambda: step_s.run("a", lambda: 1),), parallel_mode=inngest.ParallelMode.RACE)
    assert info.value.report.opcodes[0]["opts"] == {"parallelMode": "race"}


def test_sync_group_rejects_awaitables() -> None:
    _, _, _, group_s = drivers()

    async def coro() -> int:
        return 1

    with pytest.raises(TypeError, match="async def"):
        group_s.parallel((coro,))
