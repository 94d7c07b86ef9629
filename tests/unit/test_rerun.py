"""Reruns' pure decisions (`engine/rerun.py`): which steps a rerun keeps, and its flow control; and the
invoker of an invocation (`lifecycle.invoker`)."""

from __future__ import annotations

import pytest

from ratchet.server.engine import lifecycle
from ratchet.server.engine import rerun as decide
from ratchet.server.store import base

NOW = 1_700_000_000_000
S = base.StepStatus


def step(name: str, status: base.StepStatus = S.COMPLETED, *, hash_: str | None = None,
         ended_at: int | None = NOW) -> base.StepRecord:
    memo = {"data": name} if status == S.COMPLETED else {"error": {"name": "E"}} if status == S.FAILED else None
    return base.StepRecord(run_id="r", hash=hash_ or f"h-{name}", name=name, op="StepRun", status=status, memo=memo,
                           started_at=NOW, ended_at=ended_at)


def names(steps: list[base.StepRecord]) -> list[str]:
    return [s.name for s in steps]


def test_steps_before_the_chosen_one_are_copied_in_recorded_order() -> None:
    a, b, c = step("a"), step("b"), step("c")
    # Listed out of order: the run's stack is the recorded order.
    chosen, memo = decide.memo_to_copy([c, a, b], ["h-a", "h-b", "h-c"], "c", NOW)
    assert chosen == c and memo == [a, b]


def test_the_first_step_or_its_hash_copies_nothing() -> None:
    a, b = step("a"), step("b")
    assert decide.memo_to_copy([a, b], ["h-a", "h-b"], "a", NOW) == (a, [])
    assert decide.memo_to_copy([a, b], ["h-a", "h-b"], "h-b", NOW) == (b, [a])


def test_a_hash_wins_over_an_id_and_a_repeated_id_means_its_first_occurrence() -> None:
    first, again = step("loop", hash_="h1"), step("loop", hash_="h2")
    other = step("h2", hash_="h3")  # a step whose id looks like another step's hash
    stack = ["h1", "h2", "h3"]
    assert decide.memo_to_copy([first, again, other], stack, "loop", NOW) == (first, [])
    assert decide.memo_to_copy([first, again, other], stack, "h2", NOW) == (again, [first])


def test_failed_steps_are_copied_but_unfinished_ones_are_not() -> None:
    ok, failed = step("ok"), step("failed", S.FAILED)
    slept = step("slept", S.SLEEPING, ended_at=NOW - 1)
    napping = step("napping", S.SLEEPING, ended_at=NOW + 60_000)
    waiting = step("waiting", S.WAITING, ended_at=None)
    last = step("last")
    steps = [ok, failed, slept, napping, waiting, last]
    _, memo = decide.memo_to_copy(steps, [s.hash for s in steps], "last", NOW)
    assert memo == [ok, failed, slept]
    assert memo[1].memo == {"error": {"name": "E"}}  # exactly as stored


def test_an_unknown_step_names_the_ids_there_are() -> None:
    a, b = step("a"), step("b")
    with pytest.raises(decide.UnknownStep) as info:
        decide.memo_to_copy([a, b], ["h-a", "h-b"], "nope", NOW)
    assert "'nope'" in str(info.value) and "'a', 'b'" in str(info.value)
    with pytest.raises(decide.UnknownStep, match="recorded no steps"):
        decide.memo_to_copy([], [], "a", NOW)


def test_rerun_flow_keeps_only_what_delays_or_orders_runs() -> None:
    full = base.RunFlow(priority_ms=5000, rate_limit=("rk", 1, 60_000), throttle=("tk", 1, 1000, 1),
                        singleton=("sk", "skip"), concurrency=(("ck", 2),), debounce=("dk", 1000, None),
                        batch=("bk", 10, 1000))
    assert decide.rerun_flow(full) == base.RunFlow(priority_ms=5000, throttle=("tk", 1, 1000, 1),
                                                   concurrency=(("ck", 2),))
    assert decide.rerun_flow(base.RunFlow(rate_limit=("rk", 1, 60_000), singleton=("sk", "cancel"))) is None
    assert decide.rerun_flow(None) is None


def test_invoker_reads_the_parent_run_and_step_of_an_invocation() -> None:
    event = lifecycle.invoked_event(target_fn="app-child", payload={"data": {"x": 1}}, correlation_id="RUN1.abc",
                                    expires_at=NOW, run_id="RUN1", step_name="call-child", source_fn="app-p",
                                    source_app="app")
    assert lifecycle.invoker(lifecycle.invoke_meta(event)) == ("RUN1", "abc")
    assert lifecycle.invoker({}) is None
    assert lifecycle.invoker({"gid": "RUN1", "correlation_id": "OTHER.abc"}) is None
    assert lifecycle.invoker({"gid": "RUN1", "correlation_id": "RUN1."}) is None
    assert lifecycle.invoker({"gid": 5, "correlation_id": "5.abc"}) is None
