"""The step engine's decisions, as tables. No I/O: replies are values, time is `NOW`."""

from __future__ import annotations

import orjson
import pytest

from ratchet import protocol
from ratchet.server.engine import retry, steps
from ratchet.server.store import base

NOW = 1_700_000_000_000
SDK = {protocol.Header.SDK: "inngest-py:v0.5.19"}
POLICY = retry.RetryPolicy(backoff_s=(15, 30, 60), jitter_s=30)
A = protocol.step_hash("a")


def call(attempt: int = 0, max_attempts: int = 3, target: str = "step", step_count: int = 0) -> steps.Call:
    return steps.Call(target=target, attempt=attempt, max_attempts=max_attempts, step_count=step_count,
                      sent_at=NOW - 5)


def reply(status: int, body: object, headers: dict[str, str] | None = None) -> steps.Reply:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return steps.Reply(status, {**SDK, **(headers or {})}, raw)


def op(kind: str, **fields: object) -> dict[str, object]:
    return {"op": kind, "id": A, "name": "a", "displayName": "a", "userland": {"id": "a", "index": None}, **fields}


def decide(c: steps.Call, r: steps.Reply | steps.NoReply, rand: float = 0.0) -> list[base.Command]:
    """The decision without the lifecycle events a finished run emits (tested on their own below)."""
    return [cmd for cmd in steps.decide(c, r, now=NOW, policy=POLICY, rand=rand) if not isinstance(cmd, base.Emit)]


def test_200_completes_the_run_with_the_body_as_output() -> None:
    assert decide(call(), reply(200, {"n": 3})) == [base.FinishRun(protocol.RunStatus.COMPLETED, {"n": 3})]


def test_200_with_empty_body_completes_with_null() -> None:
    assert decide(call(), reply(200, b"")) == [base.FinishRun(protocol.RunStatus.COMPLETED, None)]


def test_step_run_saves_data_wrapped_and_enqueues_discovery() -> None:
    out = decide(call(), reply(206, [op("StepRun", data="A")]))
    assert out == [
        base.SaveStep(A, "a", "StepRun", base.StepStatus.COMPLETED, {"data": "A"}, NOW - 5, NOW, 1),
        base.Enqueue("step", NOW, when_idle=True),
    ]


def test_single_opcode_object_is_accepted_like_an_array() -> None:
    out = decide(call(), reply(206, op("StepRun", data=1)))
    assert isinstance(out[0], base.SaveStep) and out[0].memo == {"data": 1}


@pytest.mark.parametrize(
    ("attempt", "max_attempts", "headers", "retried"),
    [
        (0, 3, {}, True),  # 0+1 < 3: attempts remain
        (1, 3, {}, True),  # 1+1 < 3
        (2, 3, {}, False),  # 2+1 == 3: last attempt, so final
        (0, 1, {}, False),  # retries=0
        (0, 3, {"x-inngest-no-retry": "true"}, False),  # nested-step errors carry no-retry: final at once
    ],
)
def test_step_error_retries_the_same_item_while_attempts_remain(
        attempt: int, max_attempts: int, headers: dict[str, str], retried: bool) -> None:
    err = {"name": "ValueError", "message": "boom", "stack": "tb"}
    out = decide(call(attempt, max_attempts), reply(206, [op("StepError", error=err)], headers))
    if retried:
        # backoff table: attempt 0 -> 15 s, attempt 1 -> 30 s (rand=0, so no jitter)
        assert out == [base.RetryItem(NOW + POLICY.backoff_s[attempt] * 1000, err)]
    else:
        assert out == [
            base.SaveStep(A, "a", "StepError", base.StepStatus.FAILED, {"error": err}, NOW - 5, NOW, attempt + 1),
            base.Enqueue("step", NOW, when_idle=True),
        ]


def test_step_error_honours_retry_after() -> None:
    out = decide(call(), reply(206, [op("StepError", error={"name": "E", "message": "m"})], {"retry-after": "10"}))
    assert out == [base.RetryItem(NOW + 10_000, {"name": "E", "message": "m"})]


def test_step_failed_stores_the_error_and_runs_discovery() -> None:
    err = {"name": "ValueError", "message": "last"}
    out = decide(call(2, 3), reply(206, [op("StepFailed", error=err)]))
    assert out[0] == base.SaveStep(A, "a", "StepFailed", base.StepStatus.FAILED, {"error": err}, NOW - 5, NOW, 3)
    assert out[1] == base.Enqueue("step", NOW, when_idle=True)


def test_sleep_reads_the_wake_time_from_name_and_schedules_discovery_then() -> None:
    wake = "2023-11-14T22:13:30.000Z"  # NOW is 22:13:20.000Z, so +10 s
    out = decide(call(), reply(206, [op("Sleep", name=wake, opts=None)]))
    assert out == [
        base.SaveStep(A, "a", "Sleep", base.StepStatus.SLEEPING, None, NOW, NOW + 10_000, input={"until": wake}),
        base.Enqueue("step", NOW + 10_000),
    ]


def test_steps_record_their_input_from_the_opcode() -> None:
    """A wait's event (from `name`) with its options, an invoke's options; a step.run without options none."""
    wait = op("WaitForEvent", name="app/done", opts={"if": "event.data.id == async.data.id", "timeout": "1h"})
    (save, _pause) = decide(call(), reply(206, [wait]))
    assert save.input == {"event": "app/done", "if": "event.data.id == async.data.id", "timeout": "1h"}
    invoke = op("InvokeFunction", name="inv", opts={"function_id": "app-child", "payload": {"data": {"k": 1}}})
    assert decide(call(), reply(206, [invoke]))[0].input == {"function_id": "app-child",
                                                              "payload": {"data": {"k": 1}}}
    assert decide(call(), reply(206, [op("StepRun", data=1)]))[0].input is None


def test_sleep_accepts_a_duration_in_opts() -> None:
    out = decide(call(), reply(206, [op("Sleep", name="a", opts={"duration": "1h"})]))
    assert out[1] == base.Enqueue("step", NOW + 3_600_000)


def test_sleep_in_the_past_wakes_now() -> None:
    out = decide(call(), reply(206, [op("Sleep", name="2000-01-01T00:00:00Z")]))
    assert out[1] == base.Enqueue("step", NOW)


def test_sleep_with_unreadable_time_fails_the_run_clearly() -> None:
    out = decide(call(), reply(206, [op("Sleep", name="soon")]))
    assert isinstance(out[0], base.FinishRun) and out[0].status == protocol.RunStatus.FAILED
    assert "soon" in out[0].output["message"]


@pytest.mark.parametrize(
    ("attempt", "headers", "expected_due"),
    [
        (0, {}, NOW + 15_000),  # first backoff
        (1, {}, NOW + 30_000),  # second backoff
        (0, {"retry-after": "2023-11-14T22:13:22.000Z"}, NOW + 2_000),  # ISO timestamp 2 s ahead
        (0, {"retry-after": "2023-11-14T22:13:20.100Z"}, NOW + 1_000),  # clamped up to 1 s
        (0, {"retry-after": "999999"}, NOW + 24 * 3600 * 1000),  # clamped down to 24 h
    ],
)
def test_function_error_retries_with_backoff_or_retry_after(attempt: int, headers: dict[str, str],
                                                            expected_due: int) -> None:
    body = {"code": "unknown", "name": "ValueError", "message": "x", "stack": None}
    out = decide(call(attempt, 3), reply(500, body, headers))
    assert out == [base.RetryItem(expected_due, body)]


def test_jitter_adds_up_to_jitter_seconds() -> None:
    out = decide(call(), reply(500, {"name": "E", "message": "m"}), rand=0.5)
    assert out == [base.RetryItem(NOW + 15_000 + 15_000, {"name": "E", "message": "m"})]


def test_function_error_with_no_retry_fails_the_run_with_the_body() -> None:
    body = {"code": "non_retriable_error", "name": "NonRetriableError", "message": "nope", "stack": "tb"}
    out = decide(call(0, 5), reply(500, body, {"x-inngest-no-retry": "true"}))
    assert out == [base.FinishRun(protocol.RunStatus.FAILED, body, error="nope")]


def test_function_error_on_last_attempt_fails_the_run() -> None:
    out = decide(call(4, 5), reply(500, {"name": "E", "message": "m"}))
    assert out == [base.FinishRun(protocol.RunStatus.FAILED, {"name": "E", "message": "m"}, error="m")]


def test_non_json_error_body_becomes_an_error_object() -> None:
    out = decide(call(0, 1), reply(502, b"Bad Gateway"))
    assert isinstance(out[0], base.FinishRun)
    assert out[0].output == {"name": "Error", "message": "invalid status code: 502: Bad Gateway"}


def test_unreachable_app_is_a_retryable_failure() -> None:
    out = decide(call(0, 2), steps.NoReply("connection refused"))
    assert out == [base.RetryItem(NOW + 15_000, {"name": "CallError", "message": "connection refused"})]
    final = decide(call(1, 2), steps.NoReply("connection refused"))
    assert isinstance(final[0], base.FinishRun) and final[0].status == protocol.RunStatus.FAILED


def test_a_2xx_without_the_sdk_header_is_an_error() -> None:
    out = decide(call(0, 2), steps.Reply(200, {}, b'{"ok": true}'))
    assert isinstance(out[0], base.RetryItem)
    assert "did not come from an SDK" in out[0].error["message"]


@pytest.mark.parametrize("body", [b"not json", b"[]", b'[{"id": "x"}]'])
def test_malformed_206_is_a_retryable_protocol_error(body: bytes) -> None:
    out = decide(call(0, 2), reply(206, body))
    assert isinstance(out[0], base.RetryItem)
    assert out[0].error["name"] == "ProtocolError"


def test_unsupported_opcode_fails_the_run_with_its_name() -> None:
    out = decide(call(), reply(206, [op("AIGateway", opts={})]))
    assert isinstance(out[0], base.FinishRun) and "AIGateway" in out[0].output["message"]


def test_run_complete_records_the_steps_before_it_and_completes_with_its_data() -> None:
    # The TS SDK's reply when checkpointing could not reach the server: buffered steps, then RunComplete.
    done = {"op": "RunComplete", "id": protocol.step_hash("complete"), "data": {"b": "AB"}}
    out = decide(call(), reply(206, [op("StepRun", data="A"), done]))
    assert out == [
        base.SaveStep(A, "a", "StepRun", base.StepStatus.COMPLETED, {"data": "A"}, NOW - 5, NOW, 1),
        base.FinishRun(protocol.RunStatus.COMPLETED, {"b": "AB"}),
    ]
    assert decide(call(), reply(206, [done])) == [base.FinishRun(protocol.RunStatus.COMPLETED, {"b": "AB"})]


def test_step_limit_fails_the_run() -> None:
    out = decide(call(step_count=steps.MAX_STEPS_PER_RUN), reply(206, [op("StepRun", data=1)]))
    assert out[0] == base.FinishRun(protocol.RunStatus.FAILED,
                                    {"name": "StepLimitExceeded",
                                     "message": f"the run exceeded the limit of {steps.MAX_STEPS_PER_RUN} steps"},
                                    error=f"the run exceeded the limit of {steps.MAX_STEPS_PER_RUN} steps")


def test_streaming_201_is_unwrapped() -> None:
    inner = orjson.dumps([op("StepRun", data="S")]).decode()
    raw = b"   " + orjson.dumps({"status": 206, "headers": {}, "body": inner})
    out = decide(call(), reply(201, raw))
    assert isinstance(out[0], base.SaveStep) and out[0].memo == {"data": "S"}


def test_step_name_falls_back_to_display_name_without_userland() -> None:
    raw = {"op": "StepRun", "id": A, "name": "a", "displayName": "Pretty", "data": 1}
    out = decide(call(), reply(206, [raw]))
    assert isinstance(out[0], base.SaveStep) and out[0].name == "Pretty"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("garbage", None),
        ("5", NOW + 5000),
        ("12345678", None),  # more than 7 digits is not read as seconds, and is no timestamp either
    ],
)
def test_parse_retry_after(value: str | None, expected: int | None) -> None:
    assert retry.parse_retry_after(value, NOW) == expected


def test_fixed_retry_interval_ignores_the_table() -> None:
    assert retry.RetryPolicy(fixed_s=0.2).delay_ms(7, 0.9) == 200


# ------------------------------------------------------------------------------------------ issue 3 ops

RUN = "01RUN"
TRIGGER = {"name": "shop/order", "data": {"id": "o-1", "n": 2}, "id": "ev1", "ts": NOW}


def run_call(**kw: object) -> steps.Call:
    base_kw: dict[str, object] = {"target": "step", "attempt": 0, "max_attempts": 3, "step_count": 0,
                                  "sent_at": NOW - 5, "run_id": RUN, "function_slug": "app-fn", "app_id": "app",
                                  "events": (TRIGGER,)}
    return steps.Call(**(base_kw | kw))  # type: ignore[arg-type]


def test_a_finished_run_emits_function_finished_with_its_result() -> None:
    out = steps.decide(run_call(), reply(200, {"ok": 1}), now=NOW, policy=POLICY, rand=0)
    (emit,) = [c for c in out if isinstance(c, base.Emit)]
    (finished,) = emit.events
    assert finished["name"] == "inngest/function.finished"
    assert finished["data"] == {"function_id": "app-fn", "run_id": RUN, "event": TRIGGER, "events": [TRIGGER],
                                "result": {"ok": 1}, "_inngest": {"status": "COMPLETED"}}


def test_a_completed_run_nobody_listens_to_emits_nothing() -> None:
    out = steps.decide(run_call(emit_finished=False), reply(200, 1), now=NOW, policy=POLICY, rand=0)
    assert not [c for c in out if isinstance(c, base.Emit)]
    # ...unless it was invoked: its caller waits for the finished event
    invoked = {**TRIGGER, "data": {"_inngest": {"correlation_id": "parent.h"}}}
    out = steps.decide(run_call(emit_finished=False, events=(invoked,)), reply(200, 1), now=NOW, policy=POLICY,
                       rand=0)
    (emit,) = [c for c in out if isinstance(c, base.Emit)]
    assert [e["data"].get("correlation_id") for e in emit.events] == ["parent.h"]


def test_a_failed_run_emits_function_failed_with_the_run_id_as_event_id() -> None:
    body = {"name": "ValueError", "message": "bad", "stack": "tb", "code": "unknown"}
    out = steps.decide(run_call(attempt=2), reply(500, body), now=NOW, policy=POLICY, rand=0)
    (emit,) = [c for c in out if isinstance(c, base.Emit)]
    by_name = {e["name"]: e for e in emit.events}
    failed = by_name["inngest/function.failed"]
    assert failed["id"] == RUN
    assert failed["data"]["error"] == {"error": "invalid status code: 500", "name": "ValueError", "message": "bad",
                                       "stack": "tb"}
    assert failed["data"]["function_id"] == "app-fn" and failed["data"]["event"] == TRIGGER
    assert by_name["inngest/function.finished"]["data"]["error"] == failed["data"]["error"]


def test_step_planned_queues_targeted_calls_and_forces_planning() -> None:
    b = protocol.step_hash("b")
    out = decide(run_call(), reply(206, [op("StepPlanned"), {**op("StepPlanned"), "id": b}]))
    assert out == [base.Enqueue(A, NOW), base.Enqueue(b, NOW), base.SetForceStepPlan(True)]


def test_race_mode_is_carried_to_the_targeted_call_and_discovery_does_not_wait() -> None:
    out = decide(run_call(), reply(206, [op("StepPlanned", opts={"parallelMode": "race"})]))
    assert out == [base.Enqueue(A, NOW, race=True)]
    done = decide(run_call(target=A, race=True), reply(206, [op("StepRun", data=1)]))
    assert done[-1] == base.Enqueue("step", NOW, when_idle=False)


def test_wait_for_event_records_a_waiting_step_and_an_indexed_pause() -> None:
    out = decide(run_call(), reply(206, [op("WaitForEvent", name="shop/shipped",
                                            opts={"if": "event.data.id == async.data.id", "timeout": "1h"})]))
    save, create = out
    assert isinstance(save, base.SaveStep) and save.status == base.StepStatus.WAITING
    assert isinstance(create, base.CreatePause)
    pause = create.pause
    assert pause.id == f"{RUN}.{A}" and pause.kind == base.PauseKind.WAIT and pause.event_name == "shop/shipped"
    assert pause.expires_at == NOW + 3_600_000
    assert pause.expression is not None and "event." not in pause.expression  # the run's event is substituted
    assert pause.index_path == "data.id"


def test_wait_for_event_with_a_bad_expression_fails_the_step_not_the_server() -> None:
    out = decide(run_call(), reply(206, [op("WaitForEvent", name="e", opts={"if": "async.data.id ==", "timeout": "1h"})]))
    assert isinstance(out[0], base.SaveStep) and out[0].status == base.StepStatus.FAILED
    assert "wait_for_event if" in out[0].memo["error"]["message"]


def test_invoke_pauses_on_the_correlation_id_and_emits_the_invocation() -> None:
    out = steps.decide(run_call(), reply(206, [op("InvokeFunction", opts={
        "function_id": "app-child", "payload": {"data": {"k": 1}}, "timeout": "2m"})]), now=NOW, policy=POLICY, rand=0)
    _save, create, emit = out
    assert isinstance(create, base.CreatePause) and isinstance(emit, base.Emit)
    assert create.pause.kind == base.PauseKind.INVOKE and create.pause.event_name == "inngest/function.finished"
    assert create.pause.expires_at == NOW + 120_000
    (event,) = emit.events
    assert event["name"] == "inngest/function.invoked"
    assert event["data"]["k"] == 1
    assert event["data"]["_inngest"]["fn_id"] == "app-child"
    assert event["data"]["_inngest"]["correlation_id"] == create.pause.id == f"{RUN}.{A}"


def test_an_oversized_step_output_fails_the_run_clearly() -> None:
    big = "x" * (steps.MAX_STEP_OUTPUT_BYTES + 10)
    out = decide(run_call(), reply(206, [op("StepRun", data=big)]))
    assert isinstance(out[0], base.FinishRun) and out[0].status == protocol.RunStatus.FAILED
    assert out[0].output["name"] == "StepOutputTooLarge" and "'a'" in out[0].output["message"]


def test_the_failed_event_says_which_status_the_app_replied_with() -> None:
    body = {"name": "NonRetriableError", "message": "nope", "stack": "tb"}
    out = steps.decide(run_call(), reply(400, body, {"x-inngest-no-retry": "true"}), now=NOW, policy=POLICY,
                       rand=0)
    (emit,) = [c for c in out if isinstance(c, base.Emit)]
    failed = {e["name"]: e for e in emit.events}["inngest/function.failed"]
    assert failed["data"]["error"]["error"] == "invalid status code: 400"


def test_a_run_the_engine_fails_is_summarised_by_its_error_name() -> None:
    out = steps.decide(run_call(step_count=steps.MAX_STEPS_PER_RUN), reply(206, [op("StepRun", data=1)]), now=NOW,
                       policy=POLICY, rand=0)
    (emit,) = [c for c in out if isinstance(c, base.Emit)]
    failed = {e["name"]: e for e in emit.events}["inngest/function.failed"]
    (finish,) = [c for c in out if isinstance(c, base.FinishRun)]
    assert failed["data"]["error"]["error"] == finish.output["name"] != "Error"
