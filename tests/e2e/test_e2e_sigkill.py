"""Durability: SIGKILL the real `ratchet dev` at awkward moments, restart it on the same database."""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from tests.harness import send_and_get_run, wait_run, wait_runs_for_event, wait_until

pytestmark = pytest.mark.e2e


def _assert_steps_once(run: dict, expected: list[str]) -> None:
    ids = [s["id"] for s in run["steps"]]
    assert ids == expected, f"steps recorded {ids}, expected each of {expected} once"
    hashes = Counter(s["hash"] for s in run["steps"])
    assert all(n == 1 for n in hashes.values()), hashes


def _step(run_id: str, api, step_id: str) -> dict | None:
    return next((s for s in api.run(run_id)["steps"] if s["id"] == step_id), None)


def test_kill9_during_sleep_resumes_after_wake_time(e2e) -> None:
    run_id = send_and_get_run(e2e.api, "e2e/sleep")
    nap = wait_until(lambda: _step(run_id, e2e.api, "nap"), 10, "the sleep step to be recorded")
    assert nap["status"] == "sleeping", nap
    wake_at = nap["ended_at"]

    e2e.server.kill9()
    e2e.server.restart()

    run = wait_run(e2e.api, run_id, "COMPLETED", timeout=15)
    assert run["output"] == {"a": "before", "b": "after"}
    _assert_steps_once(run, ["before", "nap", "after"])
    steps = {s["id"]: s for s in run["steps"]}
    assert steps["nap"]["ended_at"] == wake_at  # the deadline survived the crash unchanged
    assert wake_at - nap["started_at"] >= 1900, nap
    assert steps["after"]["started_at"] >= wake_at, (steps["after"], wake_at)
    assert run["ended_at"] >= wake_at
    assert e2e.count(run_id, "before") == 1
    assert e2e.count(run_id, "after") == 1


def test_kill9_during_step_reruns_it_but_records_it_once(e2e) -> None:
    run_id = send_and_get_run(e2e.api, "e2e/block")
    started = e2e.marks / f"{run_id}.slow-started-1"
    wait_until(started.exists, 10, "the slow step to start")

    e2e.server.kill9()  # the call to the app is in flight
    e2e.server.restart()
    # After the restart the server calls the app again: the slow step runs a second time.
    wait_until((e2e.marks / f"{run_id}.slow-started-2").exists, 10, "the slow step to be retried after restart")
    (e2e.marks / "release").touch()

    run = wait_run(e2e.api, run_id, "COMPLETED", timeout=20)
    _assert_steps_once(run, ["first", "slow", "last"])
    # The first (lost) execution's reply went nowhere; the one recorded is the re-run's.
    assert run["output"] == {"first": "first", "slow": "slow-2", "last": "last"}
    assert [s["output"] for s in run["steps"]] == ["first", "slow-2", "last"]
    assert e2e.count(run_id, "first") == 1  # recorded before the crash: never re-run
    assert e2e.count(run_id, "slow") == 2
    assert e2e.count(run_id, "last") == 1


def test_kill9_after_events_accepted_loses_no_run(e2e) -> None:
    event_ids: list[str] = []
    for batch in range(5):
        event_ids += e2e.api.send([{"name": "e2e/many", "data": {"n": batch * 10 + i}} for i in range(10)])
    e2e.server.kill9()  # right after the last 200
    e2e.server.restart()

    run_ids = {}
    for event_id in event_ids:
        (run_ids[event_id],) = wait_runs_for_event(e2e.api, event_id, 1)
    assert len(set(run_ids.values())) == 50
    for n, event_id in enumerate(event_ids):
        run = wait_run(e2e.api, run_ids[event_id], "COMPLETED", timeout=20)
        assert run["output"] == n * 2, run
        _assert_steps_once(run, ["double"])
    assert len(e2e.api.runs(function_id="e2e-many", limit=1000)) == 50


def test_sigterm_during_step_stops_promptly_and_the_run_resumes(e2e) -> None:
    run_id = send_and_get_run(e2e.api, "e2e/block")
    wait_until((e2e.marks / f"{run_id}.slow-started-1").exists, 10, "the slow step to start")

    t0 = time.monotonic()
    e2e.server.proc.send_signal(signal.SIGTERM)  # graceful: must not wait for the app's in-flight call
    e2e.server.proc.wait(timeout=10)
    assert time.monotonic() - t0 < 3, "graceful shutdown waited on an in-flight call"

    e2e.server.start()
    (e2e.marks / "release").touch()
    run = wait_run(e2e.api, run_id, "COMPLETED", timeout=20)
    _assert_steps_once(run, ["first", "slow", "last"])
    assert e2e.count(run_id, "first") == 1
    assert e2e.count(run_id, "last") == 1
