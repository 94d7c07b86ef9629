"""The official `inngest` SDK (0.5.19), unmodified, against a real `ratchet dev` server.

Each case sends an event and checks the outcome through the REST read API.
"""

from __future__ import annotations

import pytest

from tests.harness import send_and_get_run, wait_run

pytestmark = pytest.mark.compat


def _steps(run: dict) -> dict[str, dict]:
    return {s["id"]: s for s in run["steps"]}


def test_two_steps_complete_in_order(compat) -> None:
    run_id = send_and_get_run(compat.api, "compat/two-steps", {"x": "hi"})
    run = wait_run(compat.api, run_id, "COMPLETED")
    assert run["output"] == {"a": "hi-a", "b": {"prev": "hi-a", "b": 2}}
    assert [s["id"] for s in run["steps"]] == ["first", "second"]
    assert [s["output"] for s in run["steps"]] == ["hi-a", {"prev": "hi-a", "b": 2}]
    assert all(s["status"] == "completed" and s["attempts"] == 1 for s in run["steps"]), run["steps"]


def test_sleep_completes_after_wake_time(compat) -> None:
    run_id = send_and_get_run(compat.api, "compat/sleep")
    run = wait_run(compat.api, run_id, "COMPLETED")
    assert run["output"] == "after"
    assert [s["id"] for s in run["steps"]] == ["before", "nap", "after"]
    steps = _steps(run)
    nap, after = steps["nap"], steps["after"]
    assert nap["op"] == "Sleep"
    # The wake time is about 1 s after the sleep was seen, and the run went on only after it.
    assert 900 <= nap["ended_at"] - nap["started_at"] <= 3000, nap
    assert after["ended_at"] >= nap["ended_at"], (nap, after)
    assert run["ended_at"] - nap["started_at"] >= 1000, (run, nap)


def test_step_fails_once_then_succeeds(compat) -> None:
    run_id = send_and_get_run(compat.api, "compat/flaky-step")
    run = wait_run(compat.api, run_id, "COMPLETED")
    assert run["output"] == {"flaky": "recovered"}
    (step,) = run["steps"]
    assert step["id"] == "flaky" and step["status"] == "completed" and step["output"] == "recovered"
    assert step["attempts"] == 2, step
    assert compat.count(run_id, "flaky") == 2


def test_non_retriable_error_fails_at_once(compat) -> None:
    run_id = send_and_get_run(compat.api, "compat/non-retriable")
    run = wait_run(compat.api, run_id, "FAILED")
    assert run["output"]["name"] == "NonRetriableError", run["output"]
    assert run["output"]["message"] == "give up now"
    assert compat.count(run_id, "body") == 1  # retries=3, yet one attempt only
    assert run["steps"] == []


def test_function_error_is_retried_then_fails(compat) -> None:
    run_id = send_and_get_run(compat.api, "compat/fn-error")
    run = wait_run(compat.api, run_id, "FAILED")
    assert run["output"]["name"] == "RuntimeError", run["output"]
    assert run["output"]["message"] == "function boom"
    assert compat.count(run_id, "body") == 2  # retries=1 → two attempts


def test_retry_after_error_waits_then_succeeds(compat) -> None:
    run_id = send_and_get_run(compat.api, "compat/retry-after")
    run = wait_run(compat.api, run_id, "COMPLETED")
    assert run["output"] == "done"
    assert compat.count(run_id, "body") == 2
    # retry-after asks for 1 s, far longer than the server's --retry-interval of 0.2 s.
    assert run["ended_at"] - run["started_at"] >= 900, run


def test_step_error_after_last_attempt_reaches_user_code(compat) -> None:
    run_id = send_and_get_run(compat.api, "compat/step-exhausted")
    run = wait_run(compat.api, run_id, "COMPLETED")
    assert run["output"] == {"caught": "ValueError", "message": "nope"}
    (step,) = run["steps"]
    assert step["id"] == "always" and step["status"] == "failed", step
    assert step["attempts"] == 2, step
    assert step["error"]["name"] == "ValueError" and step["error"]["message"] == "nope", step
    assert compat.count(run_id, "always") == 2
