"""The call body the executor builds (reference §2.1), including the switch to `use_api`."""

from __future__ import annotations

import orjson

from ratchet import protocol
from ratchet.server import executor
from ratchet.server.store import base

FN = protocol.FunctionConfig.model_validate({"id": "a-f", "steps": {"step": {"runtime": {"url": "http://x/api"}}}})


def state(memo_size: int) -> base.RunState:
    run = base.RunRecord(id="r1", function_slug="a-f", app_id="a", status=protocol.RunStatus.RUNNING,
                         event_ids=("e1",), created_at=1, stack=("h1", "h2"), force_step_plan=True)
    ev = base.EventRecord(internal_id="e1", id="e1", name="t/x", data={"k": 1}, ts=5, received_at=5)
    fn = base.FunctionRecord(slug="a-f", app_id="a", name="f", config=FN, url="http://x/api")
    return base.RunState(run=run, function=fn, events=(ev,), memo={"h1": {"data": "x" * memo_size}, "h2": None})


ITEM = base.QueueItem(id=7, run_id="r1", target="step", attempt=2, due_at=0)


def test_body_carries_event_memo_and_ctx() -> None:
    body = orjson.loads(executor.call_body(state(10), ITEM, max_attempts=5))
    assert body["event"] == {"name": "t/x", "data": {"k": 1}, "id": "e1", "ts": 5}
    assert body["events"] == [body["event"]]
    assert body["steps"] == {"h1": {"data": "x" * 10}, "h2": None}
    assert body["ctx"]["stack"] == {"stack": ["h1", "h2"], "current": 2}
    assert body["ctx"]["attempt"] == 2 and body["ctx"]["max_attempts"] == 5
    assert body["ctx"]["disable_immediate_execution"] is True
    assert body["use_api"] is False and body["ctx"]["use_api"] is False


def test_a_body_over_the_limit_switches_to_use_api() -> None:
    body = orjson.loads(executor.call_body(state(executor.MAX_INLINE_BODY_BYTES), ITEM, max_attempts=5))
    assert body["use_api"] is True and body["ctx"]["use_api"] is True
    assert body["steps"] == {} and body["events"] == []
    assert body["event"]["name"] == "t/x"  # the SDK still validates a top-level event


def test_call_url_sets_fn_and_step_and_keeps_other_params() -> None:
    url = executor.call_url("http://h:1/api/inngest?fnId=old&stepId=step&x=1", "app-fn", "abc")
    assert url == "http://h:1/api/inngest?x=1&fnId=app-fn&stepId=abc"


def test_advance_keeps_first_results_and_lets_a_past_sleep_into_the_memo() -> None:
    st = state(1)  # stack h1 (completed), h2 (finished sleep, memo None)
    sleeping = base.RunState(run=st.run, function=st.function, events=st.events, memo={"h1": {"data": "x"}})
    cmds: list[base.Command] = [
        base.SaveStep("h1", "a", "StepRun", base.StepStatus.COMPLETED, {"data": "other"}, 0, 10),
        base.SaveStep("h2", "nap", "Sleep", base.StepStatus.SLEEPING, None, 0, 50),  # wake 50 <= now 100
        base.SaveStep("h3", "b", "StepRun", base.StepStatus.COMPLETED, {"data": 3}, 0, 10),
        base.SaveStep("h4", "later", "Sleep", base.StepStatus.SLEEPING, None, 0, 500),  # not over at 100
    ]
    nxt = executor._advance(sleeping, cmds, 100)
    assert nxt.memo == {"h1": {"data": "x"}, "h2": None, "h3": {"data": 3}}
    assert nxt.run.stack == ("h1", "h2", "h3", "h4")
