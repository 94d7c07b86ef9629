"""Ratchet's own SDK with sync (`def`) functions under Flask (uvicorn's WSGI interface) against a real
`ratchet dev`: every durable primitive, end to end over real sockets.

The app is tests/compat/apps/ratchet_flask_app.py; one server and one app per xdist worker, shared by these
tests (cases tell their runs apart by a fresh id in the event data). Outcomes are read through the REST API;
marker files written by the app tell how often code really ran.
"""

from __future__ import annotations

import uuid

import pytest

from tests.harness import send_and_get_run, wait_run, wait_runs_for_event, wait_until

pytestmark = pytest.mark.compat


def _uid() -> str:
    return uuid.uuid4().hex


def _steps(run: dict) -> dict[str, dict]:
    return {s["id"]: s for s in run["steps"]}


def _wait_step(api, run_id: str, step_id: str, status: str, timeout: float = 10) -> None:
    def reached() -> bool:
        step = _steps(api.run(run_id)).get(step_id)
        return step is not None and step["status"] == status

    wait_until(reached, timeout, f"step {step_id!r} of run {run_id} to be {status}")


def _assert_each_step_once(run: dict) -> None:
    hashes = [s["hash"] for s in run["steps"]]
    assert len(hashes) == len(set(hashes)), run["steps"]


# ------------------------------------------------------------------------------------------- basics

def test_two_steps_complete_in_order(ratchet_flask) -> None:
    api = ratchet_flask.api
    run_id = send_and_get_run(api, "rflask/two-steps", {"x": "hi"})
    run = wait_run(api, run_id, "COMPLETED")
    assert run["output"] == {"a": "hi-a", "b": {"prev": "hi-a", "b": 2}}
    assert [s["id"] for s in run["steps"]] == ["first", "second"]
    assert [s["output"] for s in run["steps"]] == ["hi-a", {"prev": "hi-a", "b": 2}]
    assert all(s["status"] == "completed" and s["attempts"] == 1 for s in run["steps"]), run["steps"]


def test_sleep_resumes_after_the_wake_time(ratchet_flask) -> None:
    api = ratchet_flask.api
    run_id = send_and_get_run(api, "rflask/sleep")
    run = wait_run(api, run_id, "COMPLETED")
    assert run["output"] == "after"
    assert [s["id"] for s in run["steps"]] == ["before", "nap", "after"]
    nap, after = _steps(run)["nap"], _steps(run)["after"]
    assert nap["op"] == "Sleep" and nap["status"] == "completed", nap
    assert 900 <= nap["ended_at"] - nap["started_at"] <= 3000, nap
    assert after["ended_at"] >= nap["ended_at"], (nap, after)


def test_step_fails_once_then_succeeds(ratchet_flask) -> None:
    env = ratchet_flask
    run_id = send_and_get_run(env.api, "rflask/flaky-step")
    run = wait_run(env.api, run_id, "COMPLETED")
    assert run["output"] == {"flaky": "recovered"}
    (step,) = run["steps"]
    assert step["id"] == "flaky" and step["status"] == "completed" and step["output"] == "recovered", step
    assert step["attempts"] == 2, step
    assert env.count(run_id, "flaky") == 2


def test_non_retriable_error_fails_at_once(ratchet_flask) -> None:
    env = ratchet_flask
    run_id = send_and_get_run(env.api, "rflask/non-retriable")
    run = wait_run(env.api, run_id, "FAILED")
    assert run["output"]["name"] == "NonRetriableError", run["output"]
    assert run["output"]["message"] == "give up now"
    assert env.count(run_id, "body") == 1  # retries=3, yet one attempt only
    assert run["steps"] == []


# ------------------------------------------------------------------------------------ wait_for_event

def test_wait_for_event_resumes_with_the_matching_event_only(ratchet_flask) -> None:
    api = ratchet_flask.api
    mine, other = _uid(), _uid()
    run_id = send_and_get_run(api, "rflask/wait-start", {"id": mine})
    _wait_step(api, run_id, "wait", "waiting")
    api.send({"name": "rflask/wait-done", "data": {"id": other}})  # fails `if_exp`
    api.send({"name": "rflask/wait-done", "data": {"id": mine, "n": 1}})
    run = wait_run(api, run_id, "COMPLETED")
    assert run["output"] == {"name": "rflask/wait-done", "data": {"id": mine, "n": 1}}
    (step,) = run["steps"]
    assert step["op"] == "WaitForEvent" and step["status"] == "completed", step


def test_wait_for_event_times_out_with_none(ratchet_flask) -> None:
    api = ratchet_flask.api
    run_id = send_and_get_run(api, "rflask/wait-timeout")
    run = wait_run(api, run_id, "COMPLETED")
    assert run["output"] == {"got": None, "after": "after"}
    wait = _steps(run)["wait"]
    assert wait["output"] is None and wait["status"] == "completed", wait
    assert wait["ended_at"] - wait["started_at"] >= 900, wait


# -------------------------------------------------------------------------------------------- invoke

def test_invoke_returns_child_output_and_child_failure_as_step_error(ratchet_flask) -> None:
    env = ratchet_flask
    run_id = send_and_get_run(env.api, "rflask/invoke")
    run = wait_run(env.api, run_id, "COMPLETED")
    assert run["output"] == {"ok": 42, "bad": {"name": "NonRetriableError", "message": "child says no"}}
    steps = _steps(run)
    assert [s["id"] for s in run["steps"]] == ["ok", "bad"]
    assert all(s["op"] == "InvokeFunction" for s in run["steps"]), run["steps"]
    assert steps["ok"]["status"] == "completed" and steps["ok"]["output"] == 42, steps["ok"]
    assert steps["bad"]["status"] == "failed", steps["bad"]
    # The children ran as runs of their own.
    children = [c for c in env.api.runs(function_id=env.slug("invoke-child"), limit=1000)
                if c["created_at"] >= run["created_at"]]
    assert sorted(c["status"] for c in children) == ["COMPLETED", "FAILED"], children


# ---------------------------------------------------------------------------------------- send_event

def test_send_event_returns_the_ids_and_the_events_trigger_functions(ratchet_flask) -> None:
    api = ratchet_flask.api
    tag = _uid()
    run_id = send_and_get_run(api, "rflask/sender", {"tag": tag})
    run = wait_run(api, run_id, "COMPLETED")
    ids = run["output"]
    assert isinstance(ids, list) and len(ids) == 2, ids
    (step,) = run["steps"]
    assert step["id"] == "send" and step["output"] == ids, step
    for n, event_id in enumerate(ids, start=1):
        event = api.http.get(f"/v1/events/{event_id}").json()["data"]
        assert event["name"] == "rflask/sent" and event["data"] == {"tag": tag, "n": n}, event
        (child,) = wait_runs_for_event(api, event_id, 1)
        assert wait_run(api, child, "COMPLETED")["output"] == {"got": n, "tag": tag}


# ------------------------------------------------------------------------------------ parallel steps

def test_parallel_wait_runs_each_step_once(ratchet_flask) -> None:
    env = ratchet_flask
    run_id = send_and_get_run(env.api, "rflask/parallel")
    run = wait_run(env.api, run_id, "COMPLETED")
    (sent_id,) = run["output"][0][2]
    assert run["output"] == [[1, 2, [sent_id]], 3]
    assert sorted(s["id"] for s in run["steps"]) == ["1a", "1b", "after", "send"]
    assert all(s["status"] == "completed" and s["attempts"] == 1 for s in run["steps"]), run["steps"]
    _assert_each_step_once(run)
    assert [env.count(run_id, n) for n in ("1a", "1b", "after")] == [1, 1, 1]
    # Plan, 1a, 1b, send, discovery running "after", final: as the official SDK's parallel_steps.
    assert env.count(run_id, "call") == 6


def test_parallel_race_runs_each_step_once(ratchet_flask) -> None:
    env = ratchet_flask
    run_id = send_and_get_run(env.api, "rflask/race")
    run = wait_run(env.api, run_id, "COMPLETED")
    # RACE still returns every callable's value, in callable order.
    assert run["output"] == [["A", "B", "C.1C.2"], "AFTER"]
    assert sorted(s["id"] for s in run["steps"]) == ["a", "after", "b", "c.1", "c.2"]
    _assert_each_step_once(run)
    assert [env.count(run_id, n) for n in ("a", "b", "c.1", "c.2", "after")] == [1, 1, 1, 1, 1]
    steps = _steps(run)
    assert steps["c.2"]["started_at"] >= steps["c.1"]["ended_at"], (steps["c.1"], steps["c.2"])


# --------------------------------------------------------------------------------------- cancellation

def test_cancel_on_event_only_cancels_the_matching_run(ratchet_flask) -> None:
    api = ratchet_flask.api
    keep_id, stop_id = _uid(), _uid()
    keep = send_and_get_run(api, "rflask/cancellable", {"id": keep_id})
    stop = send_and_get_run(api, "rflask/cancellable", {"id": stop_id})
    _wait_step(api, keep, "long", "sleeping")
    _wait_step(api, stop, "long", "sleeping")
    api.send({"name": "rflask/stop", "data": {"id": stop_id}})
    run = wait_run(api, stop, "CANCELLED")
    assert "rflask/stop" in run["error"], run
    assert api.run(keep)["status"] == "RUNNING"
    assert api.http.post(f"/v1/runs/{keep}/cancel").status_code == 200  # leave nothing sleeping
    wait_run(api, keep, "CANCELLED", timeout=5)


# ----------------------------------------------------------------------------------------- on_failure

def test_on_failure_handler_gets_the_failed_runs_error(ratchet_flask) -> None:
    env = ratchet_flask
    api = env.api
    key = _uid()
    run_id = send_and_get_run(api, "rflask/fragile", {"key": key})
    failed = wait_run(api, run_id, "FAILED")
    assert failed["output"]["name"] == "ValueError" and failed["output"]["message"] == "broken", failed
    assert [s["id"] for s in failed["steps"]] == ["ok"]

    def handled() -> dict | None:
        for r in api.runs(function_id=env.slug("fragile-failure"), limit=1000):
            if r["status"] in ("COMPLETED", "FAILED") and ((r["output"] or {}).get("failure") or {}).get(
                    "run_id") == run_id:
                return r
        return None

    handler = wait_until(handled, 10, "the on_failure handler run to end")
    assert handler["status"] == "COMPLETED", handler
    out = handler["output"]
    assert out["event_name"] == "inngest/function.failed"
    assert out["failure"] == {"function_id": env.slug("fragile"), "run_id": run_id, "name": "ValueError",
                              "message": "broken", "has_stack": True,
                              "event": {"name": "rflask/fragile", "data": {"key": key}}}, out["failure"]
    assert out["raw_error"]["name"] == "ValueError" and out["raw_error"]["message"] == "broken", out["raw_error"]
