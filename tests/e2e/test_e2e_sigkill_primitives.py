"""Durability of waits, invoke, parallel steps and cron: SIGKILL the real `ratchet dev` while they are
pending, restart it on the same database, and check every run ends right with each step recorded once."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import httpx
import pytest

from tests.harness import (
    cron_items,
    make_cron_due_now,
    send_and_get_run,
    wait_run,
    wait_runs_for_event,
    wait_until,
)

pytestmark = pytest.mark.e2e


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _assert_steps_once(run: dict, expected: list[str]) -> None:
    ids = sorted(s["id"] for s in run["steps"])
    assert ids == sorted(expected), f"steps recorded {ids}, expected each of {sorted(expected)} once"
    hashes = Counter(s["hash"] for s in run["steps"])
    assert all(n == 1 for n in hashes.values()), hashes


def _step(api, run_id: str, step_id: str) -> dict | None:
    return next((s for s in api.run(run_id)["steps"] if s["id"] == step_id), None)


def _wait_step(api, run_id: str, step_id: str, status: str, timeout: float = 10) -> dict:
    return wait_until(lambda: (s := _step(api, run_id, step_id)) is not None and s["status"] == status and s,
                      timeout, f"step {step_id!r} of run {run_id} to be {status}")


def test_kill9_while_runs_wait_for_an_event_then_the_event_resumes_them(e2e_prim) -> None:
    api = e2e_prim.api
    keys = [uuid.uuid4().hex for _ in range(3)]
    runs = [send_and_get_run(api, "e2e/wait", {"id": k}) for k in keys]
    for run_id in runs:
        _wait_step(api, run_id, "wait", "waiting")

    e2e_prim.server.kill9()
    # Nothing can accept an event while the server is down: the sender sees the failure.
    with pytest.raises(httpx.TransportError):
        api.http.post("/e/test-key", json={"name": "e2e/resume", "data": {"id": keys[0]}})
    e2e_prim.server.restart()

    api.send({"name": "e2e/resume", "data": {"id": uuid.uuid4().hex}})  # matches none of them
    for n, key in enumerate(keys):
        api.send({"name": "e2e/resume", "data": {"id": key, "n": n}})
    for n, (key, run_id) in enumerate(zip(keys, runs, strict=True)):
        run = wait_run(api, run_id, "COMPLETED", timeout=15)
        assert run["output"] == {"got": {"id": key, "n": n}, "after": "after"}, run
        _assert_steps_once(run, ["wait", "after"])
        assert e2e_prim.count(run_id, "after") == 1


def test_kill9_while_a_wait_times_out_resumes_with_none_after_restart(e2e_prim) -> None:
    api = e2e_prim.api
    run_id = send_and_get_run(api, "e2e/short-wait")
    wait = _wait_step(api, run_id, "wait", "waiting")
    expires_at = wait["started_at"] + 2000

    e2e_prim.server.kill9()
    # The 2 s timeout passes while the server is down.
    wait_until(lambda: _now_ms() > expires_at + 200, 10, "the wait's timeout to pass while the server is down")
    assert e2e_prim.count(run_id, "after") == 0
    restarted_at = _now_ms()
    e2e_prim.server.restart()

    run = wait_run(api, run_id, "COMPLETED", timeout=15)
    assert run["output"] == {"got": None, "after": "after"}, run
    _assert_steps_once(run, ["wait", "after"])
    steps = {s["id"]: s for s in run["steps"]}
    assert steps["wait"]["output"] is None
    assert steps["wait"]["ended_at"] >= restarted_at, (steps["wait"], restarted_at)  # resolved after the restart
    assert e2e_prim.count(run_id, "after") == 1


def test_kill9_while_a_parent_waits_on_a_sleeping_child(e2e_prim) -> None:
    api = e2e_prim.api
    parent = send_and_get_run(api, "e2e/invoke", {"x": 21})
    _wait_step(api, parent, "call", "waiting")
    child = wait_until(lambda: api.runs(function_id="e2e-prim-child"), 10, "the child run to start")[0]["id"]
    _wait_step(api, child, "nap", "sleeping")

    e2e_prim.server.kill9()
    e2e_prim.server.restart()

    child_run = wait_run(api, child, "COMPLETED", timeout=15)
    assert child_run["output"] == 42
    _assert_steps_once(child_run, ["before", "nap", "double"])
    run = wait_run(api, parent, "COMPLETED", timeout=15)
    assert run["output"] == {"child": 42, "after": "after"}, run
    _assert_steps_once(run, ["call", "after"])
    assert [e2e_prim.count(child, n) for n in ("before", "double")] == [1, 1]
    assert e2e_prim.count(parent, "after") == 1
    assert len(api.runs(function_id="e2e-prim-child")) == 1  # the invocation was not sent twice


def test_kill9_while_parallel_steps_are_in_flight(e2e_prim) -> None:
    api = e2e_prim.api
    marks = e2e_prim.marks
    run_id = send_and_get_run(api, "e2e/parallel")
    names = ("p1", "p2", "p3")
    wait_until(lambda: all((marks / f"{run_id}.{n}-started-1").exists() for n in names), 10,
               "the three parallel steps to be in flight")

    e2e_prim.server.kill9()  # three calls to the app are in flight
    e2e_prim.server.restart()
    # After the restart the server calls the app again for each step that was not recorded.
    wait_until(lambda: all((marks / f"{run_id}.{n}-started-2").exists() for n in names), 10,
               "the parallel steps to be called again after the restart")
    (marks / "release").touch()

    run = wait_run(api, run_id, "COMPLETED", timeout=20)
    _assert_steps_once(run, ["p1", "p2", "p3", "after"])
    # The lost first executions' replies went nowhere; the recorded results are the re-runs'.
    assert run["output"] == [["p1-2", "p2-2", "p3-2"], "after"], run
    assert [e2e_prim.count(run_id, n) for n in names] == [2, 2, 2]
    assert e2e_prim.count(run_id, "after") == 1


def test_kill9_with_a_cron_tick_due_while_down_fires_once_after_restart(e2e_prim) -> None:
    api = e2e_prim.api
    server = e2e_prim.server
    slug = "e2e-prim-cron"
    assert len(cron_items(server.db_path, slug)) == 1

    server.kill9()
    # White-box nudge: make the (yearly) tick due now, while the server is down.
    fired_at = make_cron_due_now(server.db_path, slug)
    server.restart()

    runs = wait_until(lambda: api.runs(function_id=slug), 10, "the missed tick to fire after the restart")
    (run_id,) = [r["id"] for r in runs]
    run = wait_run(api, run_id, "COMPLETED")
    assert run["output"]["name"] == "inngest/scheduled.timer"
    assert set(run["output"]["data"]) == {"cron", "scheduledAt", "fireAt"}, run["output"]
    (event_id,) = run["event_ids"]
    assert wait_runs_for_event(api, event_id, 1) == [run_id]
    _assert_steps_once(run, ["tick"])
    assert e2e_prim.count(run_id, "tick") == 1
    (next_due,) = cron_items(server.db_path, slug)  # one tick queued again, in the future
    assert next_due > _now_ms(), next_due
    assert api.http.get(f"/v1/events/{event_id}").json()["data"]["ts"] == fired_at

    # Another crash and restart does not fire it again.
    server.kill9()
    server.restart()  # the scheduler's first pass claims whatever is due
    time.sleep(0.5)  # a window for a wrong second firing: the claim is that nothing happens
    assert len(api.runs(function_id=slug)) == 1
    assert len(cron_items(server.db_path, slug)) == 1


def test_kill9_with_a_batch_half_full_loses_no_event(e2e_prim) -> None:
    api = e2e_prim.api
    server = e2e_prim.server
    ids = [api.send({"name": "e2e/batch", "data": {"n": n}})[0] for n in range(3)]  # 3 of 10: not full
    server.kill9()
    server.restart()
    # the batch's 2 s timeout fires after the restart, with every accepted event
    runs = wait_until(lambda: api.runs(function_id="e2e-prim-batch"), 15, "the batch run after the restart")
    (run,) = runs
    done = wait_run(api, run["id"], "COMPLETED")
    assert done["output"] == [0, 1, 2]
    assert sorted(done["event_ids"]) == sorted(ids)
