"""The official `inngest` SDK (0.5.19), unmodified, against a real `ratchet dev`: every durable primitive.

Each case sends events and checks the outcome through the REST read API (and, for a completed, a
failed and a cancelled run, that `/v0/gql` reports the same status and output). The stacks are shared
by a worker's tests, so cases tell their runs apart by a fresh id in the event data.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.harness import (
    cron_items,
    make_cron_due_now,
    send_and_get_run,
    wait_run,
    wait_runs_for_event,
    wait_until,
)

pytestmark = pytest.mark.compat


def _uid() -> str:
    return uuid.uuid4().hex


def _steps(run: dict) -> dict[str, dict]:
    return {s["id"]: s for s in run["steps"]}


def _step_status(api, run_id: str, step_id: str) -> str | None:
    step = _steps(api.run(run_id)).get(step_id)
    return None if step is None else step["status"]


def _wait_step(api, run_id: str, step_id: str, status: str, timeout: float = 10) -> None:
    wait_until(lambda: _step_status(api, run_id, step_id) == status, timeout,
               f"step {step_id!r} of run {run_id} to be {status}")


def _assert_gql_agrees(api, run: dict) -> None:
    gql = api.gql_run(run["id"])
    assert gql["status"] == run["status"], (gql, run)
    assert gql["output"] == run["output"], (gql, run)


def _assert_each_step_once(run: dict) -> None:
    hashes = [s["hash"] for s in run["steps"]]
    assert len(hashes) == len(set(hashes)), run["steps"]


# ------------------------------------------------------------------------------------ wait_for_event

def test_wait_for_event_resumes_with_the_matching_event_only(compat) -> None:
    api = compat.api
    one, two = _uid(), _uid()
    api.send({"name": "compat/wait-done", "data": {"id": one, "early": True}})  # before the wait: must not count
    run1 = send_and_get_run(api, "compat/wait-start", {"id": one})
    run2 = send_and_get_run(api, "compat/wait-start", {"id": two})
    _wait_step(api, run1, "wait", "waiting")
    _wait_step(api, run2, "wait", "waiting")

    api.send({"name": "compat/wait-done", "data": {"id": _uid()}})  # matches no run
    api.send({"name": "compat/wait-done", "data": {"id": two, "n": 2}})
    done2 = wait_run(api, run2, "COMPLETED")
    assert done2["output"] == {"id": two, "n": 2}
    assert _steps(done2)["wait"]["output"]["data"] == {"id": two, "n": 2}
    assert api.run(run1)["status"] == "RUNNING"  # the early event and the others did not resume it

    api.send({"name": "compat/wait-done", "data": {"id": one, "n": 1}})
    done1 = wait_run(api, run1, "COMPLETED")
    assert done1["output"] == {"id": one, "n": 1}
    assert [s["id"] for s in done1["steps"]] == ["wait"]


def test_one_event_resolves_one_wait_and_the_other_times_out_with_none(compat) -> None:
    api = compat.api
    key = _uid()
    run_id = send_and_get_run(api, "compat/wait-twice", {"id": key})
    _wait_step(api, run_id, "a", "waiting")
    api.send({"name": "compat/go", "data": {"id": key, "n": 1}})
    run = wait_run(api, run_id, "COMPLETED")
    assert run["output"] == [{"id": key, "n": 1}, None]
    steps = _steps(run)
    assert [s["id"] for s in run["steps"]] == ["a", "b"]
    # `b` was registered after the event arrived, so it waited out its 1 s timeout.
    assert steps["b"]["output"] is None
    assert steps["b"]["ended_at"] - steps["b"]["started_at"] >= 900, steps["b"]


# -------------------------------------------------------------------------------------------- invoke

def test_invoke_returns_child_output_child_failure_and_timeout_as_step_errors(compat) -> None:
    api = compat.api
    run_id = send_and_get_run(api, "compat/invoke")
    run = wait_run(api, run_id, "COMPLETED", timeout=15)
    assert run["output"] == {"ok": 42, "bad": {"name": "NonRetriableError", "message": "child says no"},
                             "slow": {"name": "InngestInvokeTimeoutError"}}, run["output"]
    steps = _steps(run)
    assert [s["id"] for s in run["steps"]] == ["ok", "bad", "slow"]
    assert steps["ok"]["status"] == "completed" and steps["ok"]["output"] == 42
    assert steps["bad"]["status"] == "failed" and steps["slow"]["status"] == "failed"
    assert all(s["op"] == "InvokeFunction" for s in run["steps"])
    # The children really ran as runs of their own, started by `inngest/function.invoked`.
    children = api.runs(function_id=compat.slug("invoke-child"), limit=1000)
    mine = [c for c in children if c["created_at"] >= run["created_at"]]
    assert {c["status"] for c in mine} >= {"COMPLETED", "FAILED"}, mine


# ---------------------------------------------------------------------------------------- send_event

def test_send_event_returns_the_ids_and_the_events_trigger_functions(compat) -> None:
    api = compat.api
    tag = _uid()
    run_id = send_and_get_run(api, "compat/sender", {"tag": tag})
    run = wait_run(api, run_id, "COMPLETED")
    ids = run["output"]
    assert isinstance(ids, list) and len(ids) == 2, ids
    (step,) = run["steps"]
    assert step["id"] == "send" and step["output"] == ids
    for n, event_id in enumerate(ids, start=1):
        event = api.http.get(f"/v1/events/{event_id}").json()["data"]
        assert event["name"] == "compat/sent" and event["data"] == {"tag": tag, "n": n}, event
        (child,) = wait_runs_for_event(api, event_id, 1)
        assert wait_run(api, child, "COMPLETED")["output"] == {"got": n}


# ------------------------------------------------------------------------------------ parallel steps

def test_parallel_steps_make_six_calls(compat) -> None:
    """The official SDK's `parallel_steps` shape: plan, 1a, 1b, send, discovery running "after", final."""
    api = compat.api
    run_id = send_and_get_run(api, "compat/parallel")
    run = wait_run(api, run_id, "COMPLETED")
    (sent_id,) = run["output"][0][2]
    assert run["output"] == [[1, 2, [sent_id]], 3]
    assert sorted(s["id"] for s in run["steps"]) == ["1a", "1b", "after", "send"]
    _assert_each_step_once(run)
    assert (compat.count(run_id, "1a"), compat.count(run_id, "1b"), compat.count(run_id, "after")) == (1, 1, 1)
    assert compat.count(run_id, "call") == 6


def test_parallel_mode_default_with_an_invoke_makes_seven_calls(compat) -> None:
    """The official SDK's `parallel_mode_default` shape (invoke a child that sleeps 1 s, 1a, 1b, send,
    then "after"). Its own test expects 7 calls: the group's 4, then planning "after", running it, and
    the final call."""
    api = compat.api
    run_id = send_and_get_run(api, "compat/parallel-default")
    run = wait_run(api, run_id, "COMPLETED", timeout=15)
    (sent_id,) = run["output"][0][3]
    assert run["output"] == [["done", 1, 2, [sent_id]], 3]
    assert sorted(s["id"] for s in run["steps"]) == ["1a", "1b", "after", "invoke", "send"]
    _assert_each_step_once(run)
    assert (compat.count(run_id, "1a"), compat.count(run_id, "1b"), compat.count(run_id, "after")) == (1, 1, 1)
    assert compat.count(run_id, "call") == 7


def test_parallel_race_runs_each_step_once(compat) -> None:
    api = compat.api
    run_id = send_and_get_run(api, "compat/race")
    run = wait_run(api, run_id, "COMPLETED")
    assert run["output"] == [["A", "B", "C"], "AFTER"]
    assert sorted(s["id"] for s in run["steps"]) == ["a", "after", "b", "c"]
    _assert_each_step_once(run)
    assert [compat.count(run_id, n) for n in ("a", "b", "c", "after")] == [1, 1, 1, 1]
    # Plan, three targeted calls, discovery after each completion (RACE), the final call: at least 6;
    # the exact number depends on how the discoveries interleave with the targeted calls.
    assert compat.count(run_id, "call") >= 6


def test_parallel_mode_race_with_groups_of_steps_makes_nine_calls(compat) -> None:
    """The official SDK's `parallel_mode_race` shape (a fast and a slow group of two sequential steps).
    Its own test expects the order a.1, a.2, b.1, b.2 and 9 calls: the plan, the 4 steps, and a
    discovery after each of them."""
    api = compat.api
    run_id = send_and_get_run(api, "compat/race-groups")
    run = wait_run(api, run_id, "COMPLETED", timeout=15)
    assert sorted(s["id"] for s in run["steps"]) == ["a.1", "a.2", "b.1", "b.2"]
    _assert_each_step_once(run)
    assert (compat.count_dir / f"{run_id}.order").read_text().split() == ["a.1", "a.2", "b.1", "b.2"]
    assert compat.count(run_id, "call") == 9


# --------------------------------------------------------------------------------------- cancellation

def test_cancel_on_event_only_cancels_the_matching_run(compat) -> None:
    api = compat.api
    keep_id, stop_id = _uid(), _uid()
    keep = send_and_get_run(api, "compat/cancellable", {"id": keep_id})
    stop = send_and_get_run(api, "compat/cancellable", {"id": stop_id})
    _wait_step(api, keep, "long", "sleeping")
    _wait_step(api, stop, "long", "sleeping")
    api.send({"name": "compat/stop", "data": {"id": stop_id}})
    run = wait_run(api, stop, "CANCELLED")
    assert "compat/stop" in run["error"], run
    _assert_gql_agrees(api, run)
    assert api.run(keep)["status"] == "RUNNING"

    # The other one, through the API.
    resp = api.http.post(f"/v1/runs/{keep}/cancel")
    assert resp.status_code == 200, resp.text
    assert wait_run(api, keep, "CANCELLED", timeout=5)["status"] == "CANCELLED"
    assert api.http.post(f"/v1/runs/{keep}/cancel").status_code == 409


def runs_created_by(api, run_ids: list[str]) -> int:
    """The latest creation time (ms) of these runs."""
    return max(api.run(r)["created_at"] for r in run_ids)


def test_bulk_cancel_by_function_and_time_range(compat) -> None:
    api = compat.api
    fn = compat.slug("bulk-sleep")
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    runs = [send_and_get_run(api, "compat/bulk-sleep") for _ in range(3)]
    for run_id in runs:
        _wait_step(api, run_id, "long", "sleeping")
    dry = api.http.post("/v1/runs/cancel", json={"function_id": fn, "from": since, "dry_run": True})
    assert dry.status_code == 200, dry.text
    counted = dry.json()["data"]
    assert (counted["matched"], counted["cancelled"]) == (3, 0), dry.text
    assert isinstance(counted["to"], int) and counted["to"] >= runs_created_by(api, runs), dry.text
    past = api.http.post("/v1/runs/cancel", json={"function_id": fn, "to": "2000-01-01T00:00:00Z", "dry_run": True})
    assert past.json()["data"]["matched"] == 0, past.text
    assert all(api.run(r)["status"] == "RUNNING" for r in runs)  # a dry run changes nothing

    # acting on what was counted: the same range, capped at the count's `to`
    resp = api.http.post("/v1/runs/cancel", json={"function_id": fn, "from": since, "to": counted["to"]})
    assert resp.status_code == 200 and resp.json()["data"]["cancelled"] == 3, resp.text
    for run_id in runs:
        wait_run(api, run_id, "CANCELLED", timeout=5)


def test_timeouts_finish_cancels_the_run_with_a_reason(compat) -> None:
    api = compat.api
    run_id = send_and_get_run(api, "compat/bounded")
    run = wait_run(api, run_id, "CANCELLED", timeout=10)
    assert "timeouts.finish" in run["error"], run
    assert run["ended_at"] - run["started_at"] >= 900, run
    _assert_gql_agrees(api, run)


# ----------------------------------------------------------------------------------------- on_failure

def test_on_failure_handler_gets_the_failed_run(compat) -> None:
    api = compat.api
    key = _uid()
    (event_id,) = api.send({"name": "compat/fragile", "data": {"key": key}})
    (run_id,) = wait_runs_for_event(api, event_id, 1)
    failed = wait_run(api, run_id, "FAILED")
    assert failed["output"]["name"] == "ValueError" and failed["output"]["message"] == "broken"
    _assert_gql_agrees(api, failed)

    def handled() -> dict | None:
        for r in api.runs(function_id=compat.slug("fragile-failure"), limit=1000):
            if r["status"] == "COMPLETED" and (r["output"] or {}).get("run_id") == run_id:
                return r
        return None

    handler = wait_until(handled, 10, "the on_failure handler run to complete")
    data = handler["output"]
    assert data["function_id"] == compat.slug("fragile")
    assert set(data["error"]) == {"error", "name", "message", "stack"}, data["error"]
    assert data["error"]["error"] == "invalid status code: 500"
    assert data["error"]["name"] == "ValueError" and data["error"]["message"] == "broken"
    assert data["event"]["name"] == "compat/fragile" and data["event"]["data"] == {"key": key}
    assert {"data", "id", "name", "ts"} <= set(data["event"]), data["event"]
    _assert_gql_agrees(api, api.run(handler["id"]))


# ------------------------------------------------------------------------------------------- triggers

def test_trigger_expression_filters_and_every_trigger_starts_runs(compat) -> None:
    api = compat.api
    (small,) = api.send({"name": "compat/order", "data": {"total": 5}})
    big = send_and_get_run(api, "compat/order", {"total": 500})
    alt = send_and_get_run(api, "compat/order-alt", {"total": 1})
    assert wait_run(api, big, "COMPLETED")["output"] == {"name": "compat/order", "total": 500}
    assert wait_run(api, alt, "COMPLETED")["output"] == {"name": "compat/order-alt", "total": 1}
    # Runs start in the same transaction that stores the event: no run now means none ever.
    assert api.event_runs(small) == []


def test_cron_tick_starts_one_run_and_queues_the_next(compat) -> None:
    api = compat.api
    slug = compat.slug("cron")
    db = compat.stack.server.db_path
    assert len(cron_items(db, slug)) == 1
    assert api.runs(function_id=slug) == []  # a yearly schedule never fired by itself
    # White-box nudge (no waiting for the schedule): make the queued tick due now in the server's SQLite
    # file, then send an event that starts a run, so the scheduler looks at the queue again at once (it
    # would otherwise notice within its 5 s idle limit).
    fired_at = make_cron_due_now(db, slug)
    api.send({"name": "compat/order-alt", "data": {"total": 0}})

    runs = wait_until(lambda: api.runs(function_id=slug), 10, "the cron tick to start a run")
    assert len(runs) == 1, runs
    run = wait_run(api, runs[0]["id"], "COMPLETED")
    assert run["output"]["name"] == "inngest/scheduled.timer"
    assert set(run["output"]["data"]) == {"cron", "scheduledAt", "fireAt"}, run["output"]
    assert run["output"]["data"]["cron"] == "0 0 1 1 *"
    (event_id,) = run["event_ids"]
    event = api.http.get(f"/v1/events/{event_id}").json()["data"]
    assert event["name"] == "inngest/scheduled.timer" and event["ts"] == fired_at, event

    (next_due,) = cron_items(db, slug)  # exactly one tick queued again, in the future
    assert next_due > time.time() * 1000, next_due
    assert len(api.runs(function_id=slug)) == 1
