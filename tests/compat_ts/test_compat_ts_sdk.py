"""The official TypeScript SDK (`inngest` on npm, v3, served by `inngest/node`), unmodified, against a
real `ratchet dev`. Each case sends events and checks the outcome through the REST read API.

The app is tests/compat_ts/app.js; the fixture (conftest.py) installs its dependencies with `npm ci`.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.harness import send_and_get_run, wait_run, wait_runs_for_event, wait_until

pytestmark = pytest.mark.compat

SDK_VERSION = json.loads((Path(__file__).parent / "package.json").read_text())["dependencies"]["inngest"]


def _uid() -> str:
    return uuid.uuid4().hex


def _steps(run: dict) -> dict[str, dict]:
    return {s["id"]: s for s in run["steps"]}


def _wait_step(api, run_id: str, step_id: str, status: str, timeout: float = 10) -> None:
    def reached() -> bool:
        step = _steps(api.run(run_id)).get(step_id)
        return step is not None and step["status"] == status

    wait_until(reached, timeout, f"step {step_id!r} of run {run_id} to be {status}")


def test_sync_records_both_apps_with_the_ts_sdk_and_its_options(ts) -> None:
    apps = {a["name"]: a for a in ts.api.http.get("/v1/apps").json()["data"]}
    for name in ("compat-ts", "compat-ts-stream"):
        assert apps[name]["sdk"] == f"js:v{SDK_VERSION}", apps[name]
        assert apps[name]["framework"] == "nodejs" and apps[name]["error"] is None, apps[name]
    fns = {f["id"]: f["config"] for f in ts.api.functions()}
    fragile = fns[ts.slug("fragile")]
    assert fragile["concurrency"] == 2  # the TS SDK sends a plain number
    assert fragile["cancel"] == [{"event": "ts/fragile-cancel", "if": "event.data.id == async.data.id"}]
    failure = fns[ts.slug("fragile-failure")]
    assert failure["triggers"] == [{"event": "inngest/function.failed",
                                    "expression": "event.data.function_id == 'compat-ts-fragile'"}]
    assert fns[ts.slug("flaky-step")]["steps"]["step"]["retries"] == {"attempts": 2}


def test_two_steps_complete_in_order(ts) -> None:
    run_id = send_and_get_run(ts.api, "ts/two-steps", {"x": "hi"})
    run = wait_run(ts.api, run_id, "COMPLETED")
    assert run["output"] == {"a": "hi-a", "b": {"prev": "hi-a", "b": 2}}
    assert [s["id"] for s in run["steps"]] == ["first", "second"]
    assert [s["output"] for s in run["steps"]] == ["hi-a", {"prev": "hi-a", "b": 2}]
    assert all(s["status"] == "completed" and s["attempts"] == 1 for s in run["steps"]), run["steps"]


def test_sleep_completes_after_wake_time(ts) -> None:
    run_id = send_and_get_run(ts.api, "ts/sleep")
    run = wait_run(ts.api, run_id, "COMPLETED")
    assert run["output"] == "after"
    assert [s["id"] for s in run["steps"]] == ["before", "nap", "after"]
    nap = _steps(run)["nap"]
    assert nap["op"] == "Sleep"
    # The TS SDK sends the duration ("1s") in `name`, not a wake timestamp.
    assert 900 <= nap["ended_at"] - nap["started_at"] <= 3000, nap
    assert run["ended_at"] - nap["started_at"] >= 1000, (run, nap)


def test_wait_for_event_with_match_resumes_with_the_matching_event_only(ts) -> None:
    api = ts.api
    one, two = _uid(), _uid()
    api.send({"name": "ts/wait-done", "data": {"id": one, "early": True}})  # before the wait: must not count
    run1 = send_and_get_run(api, "ts/wait-start", {"id": one})
    run2 = send_and_get_run(api, "ts/wait-start", {"id": two})
    _wait_step(api, run1, "wait", "waiting")
    _wait_step(api, run2, "wait", "waiting")

    api.send({"name": "ts/wait-done", "data": {"id": _uid()}})  # matches no run
    api.send({"name": "ts/wait-done", "data": {"id": two, "n": 2}})
    done2 = wait_run(api, run2, "COMPLETED")
    assert done2["output"] == {"id": two, "n": 2}
    assert _steps(done2)["wait"]["output"]["data"] == {"id": two, "n": 2}
    assert api.run(run1)["status"] == "RUNNING"

    api.send({"name": "ts/wait-done", "data": {"id": one, "n": 1}})
    assert wait_run(api, run1, "COMPLETED")["output"] == {"id": one, "n": 1}


def test_wait_for_event_times_out_with_null(ts) -> None:
    run_id = send_and_get_run(ts.api, "ts/wait-timeout", {"id": _uid()})
    run = wait_run(ts.api, run_id, "COMPLETED")
    assert run["output"] == {"timedOut": True}
    (step,) = run["steps"]
    assert step["id"] == "never" and step["op"] == "WaitForEvent" and step["output"] is None, step
    assert step["ended_at"] - step["started_at"] >= 900, step


def test_invoke_returns_the_child_output(ts) -> None:
    run_id = send_and_get_run(ts.api, "ts/invoke-parent", {"n": 21})
    run = wait_run(ts.api, run_id, "COMPLETED")
    assert run["output"] == {"child": {"doubled": 42, "name": "inngest/function.invoked"}}
    (step,) = run["steps"]
    assert step["id"] == "call-child" and step["op"] == "InvokeFunction" and step["status"] == "completed"


def test_invoke_of_a_failing_child_throws_in_the_parent(ts) -> None:
    run_id = send_and_get_run(ts.api, "ts/invoke-fails")
    run = wait_run(ts.api, run_id, "COMPLETED")
    assert run["output"] == {"caught": "child gave up"}
    (step,) = run["steps"]
    assert step["status"] == "failed" and step["error"]["message"] == "child gave up", step


def test_send_event_returns_ids_that_trigger_functions(ts) -> None:
    uid = _uid()
    run_id = send_and_get_run(ts.api, "ts/sender", {"id": uid})
    run = wait_run(ts.api, run_id, "COMPLETED")
    (sent_id,) = run["output"]["ids"]
    (step,) = run["steps"]
    assert step["id"] == "send" and step["output"] == {"ids": [sent_id]}, step
    (on_sent,) = wait_runs_for_event(ts.api, sent_id)
    assert wait_run(ts.api, on_sent, "COMPLETED")["output"] == {"got": uid}


def test_step_fails_once_then_succeeds(ts) -> None:
    run_id = send_and_get_run(ts.api, "ts/flaky-step")
    run = wait_run(ts.api, run_id, "COMPLETED")
    assert run["output"] == {"flaky": "recovered"}
    (step,) = run["steps"]
    assert step["id"] == "flaky" and step["status"] == "completed" and step["output"] == "recovered"
    assert step["attempts"] == 2, step
    assert ts.count(run_id, "flaky") == 2


def test_step_error_after_last_attempt_reaches_user_code(ts) -> None:
    run_id = send_and_get_run(ts.api, "ts/step-exhausted")
    run = wait_run(ts.api, run_id, "COMPLETED")
    assert run["output"] == {"caught": "Error", "message": "nope"}
    (step,) = run["steps"]
    assert step["status"] == "failed" and step["attempts"] == 2 and step["error"]["message"] == "nope", step
    assert ts.count(run_id, "always") == 2  # retries: 1


def test_non_retriable_error_fails_at_once(ts) -> None:
    run_id = send_and_get_run(ts.api, "ts/non-retriable")
    run = wait_run(ts.api, run_id, "FAILED")
    # The TS SDK answers 400 + x-inngest-no-retry; it serializes the error's name as "Error".
    assert run["output"]["message"] == "give up now", run["output"]
    assert "NonRetriableError" in run["output"]["stack"]
    assert ts.count(run_id, "body") == 1  # retries: 3, yet one attempt only
    assert run["steps"] == []


def test_retry_after_error_waits_then_succeeds(ts) -> None:
    run_id = send_and_get_run(ts.api, "ts/retry-after")
    run = wait_run(ts.api, run_id, "COMPLETED")
    assert run["output"] == "done"
    assert ts.count(run_id, "body") == 2
    assert run["ended_at"] - run["started_at"] >= 900, run  # retry-after 1 s, not the 0.2 s retry interval


def test_parallel_steps_with_promise_all(ts) -> None:
    run_id = send_and_get_run(ts.api, "ts/parallel")
    run = wait_run(ts.api, run_id, "COMPLETED")
    assert run["output"] == {"a": "A", "b": "B", "c": "AB"}
    steps = _steps(run)
    assert sorted(steps) == ["after", "par-a", "par-b"]
    assert all(s["attempts"] == 1 and s["status"] == "completed" for s in run["steps"]), run["steps"]


def test_on_failure_runs_after_the_function_fails(ts) -> None:
    run_id = send_and_get_run(ts.api, "ts/fragile", {"id": _uid()})
    run = wait_run(ts.api, run_id, "FAILED")
    assert run["output"]["message"] == "fragile broke"

    def failure_run() -> dict | None:
        for r in ts.api.runs(function_id=ts.slug("fragile-failure")):
            if r["status"] == "COMPLETED" and r["output"]["run"] == run_id:
                return r
        return None

    handled = wait_until(failure_run, 10, f"the onFailure run for {run_id}")
    assert handled["output"] == {"failed": ts.slug("fragile"), "run": run_id, "error": "fragile broke"}
    assert ts.count(run_id, "on-failure") == 1


def test_cancel_on_with_match_cancels_only_the_matching_run(ts) -> None:
    api = ts.api
    keep_id, stop_id = _uid(), _uid()
    keep = send_and_get_run(api, "ts/fragile", {"id": keep_id, "wait": True})
    stop = send_and_get_run(api, "ts/fragile", {"id": stop_id, "wait": True})
    _wait_step(api, keep, "hold", "sleeping")
    _wait_step(api, stop, "hold", "sleeping")
    api.send({"name": "ts/fragile-cancel", "data": {"id": stop_id}})
    run = wait_run(api, stop, "CANCELLED")
    assert "ts/fragile-cancel" in run["error"], run
    assert api.run(keep)["status"] == "RUNNING"
    assert api.http.post(f"/v1/runs/{keep}/cancel").status_code == 200
    wait_run(api, keep, "CANCELLED")


def test_streaming_replies_are_unwrapped(ts) -> None:
    run_id = send_and_get_run(ts.api, "ts-stream/two-steps", {"x": "s"})
    run = wait_run(ts.api, run_id, "COMPLETED")
    assert run["output"] == {"a": "s-a", "b": "s-a-b"}
    assert [s["id"] for s in run["steps"]] == ["first", "second"]

    failed = wait_run(ts.api, send_and_get_run(ts.api, "ts-stream/fails"), "FAILED")
    assert failed["output"]["message"] == "stream gave up"


def test_checkpointing_falls_back_to_steps_and_run_complete(ts) -> None:
    # `checkpointing: true`: Ratchet has no checkpoint API, so the SDK reports the buffered steps in a 206
    # that ends with a RunComplete op carrying the output.
    run_id = send_and_get_run(ts.api, "ts/checkpointed")
    run = wait_run(ts.api, run_id, "COMPLETED", timeout=20)
    assert run["output"] == {"b": "AB"}
    assert [(s["id"], s["output"]) for s in run["steps"]] == [("cp-a", "A"), ("cp-b", "AB")]
