"""Every durable primitive with Ratchet's SDK, in one process (fixtures from test_runs_inprocess)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest

import ratchet
from tests.integration.inprocess import Stack

#: Every scenario here runs on both store backends (`stack` in conftest.py).
STORES = ("sqlite", "postgres")


async def wait_status(s: Stack, event_id: str, status: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        runs = await s.runs_of(event_id)
        if runs and runs[0]["status"] == status:
            return (await s.api.get(f"/v1/runs/{runs[0]['id']}")).json()["data"]  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"no {status} run for {event_id}: {runs}"
        await asyncio.sleep(0.01)


async def wait_step(s: Stack, event_id: str, step_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """Wait until the run of `event_id` has recorded a step `step_id` (in any state)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = await s.runs_of(event_id)
        if runs:
            run = (await s.api.get(f"/v1/runs/{runs[0]['id']}")).json()["data"]
            for step in run["steps"]:
                if step["id"] == step_id:
                    return step  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"run of {event_id} never reached step {step_id}"
        await asyncio.sleep(0.01)


async def test_wait_for_event_resumes_with_the_matching_event_only(stack: Stack) -> None:
    @stack.client.function(id="waiter", trigger=ratchet.on_event("shop/order"))
    async def waiter(ctx: ratchet.Context) -> Any:
        got = await ctx.step.wait_for_event("ship", event="shop/shipped", if_exp="event.data.id == async.data.id",
                                            timeout=timedelta(seconds=30))
        return None if got is None else got.data

    await stack.sync([waiter])
    early = await stack.send("shop/shipped", {"id": "o1", "early": True})  # before the wait: must not count
    e1 = await stack.send("shop/order", {"id": "o1"})
    e2 = await stack.send("shop/order", {"id": "o2"})
    waiting = await wait_step(stack, e1, "ship")
    await wait_step(stack, e2, "ship")
    assert early
    # The run's page says what the step waits for: the event, the condition left for it, until when.
    assert waiting["status"] == "waiting", waiting
    assert waiting["waiting_for"]["event"] == "shop/shipped" and "o1" in waiting["waiting_for"]["if"], waiting
    assert waiting["waiting_for"]["expires_at"] >= waiting["started_at"] + 29_000
    await stack.send("shop/shipped", {"id": "other"})
    await stack.send("shop/shipped", {"id": "o2", "n": 2})
    run2 = await stack.wait_run(e2)
    assert run2["output"] == {"id": "o2", "n": 2}
    assert (await stack.runs_of(e1))[0]["status"] == "RUNNING"  # o1 still waits
    await stack.send("shop/shipped", {"id": "o1", "n": 1})
    run1 = await stack.wait_run(e1)
    assert run1["output"] == {"id": "o1", "n": 1}
    (matched,) = run1["steps"]
    assert matched["status"] == "completed" and "waiting_for" not in matched
    assert matched["output"]["name"] == "shop/shipped" and matched["output"]["data"] == {"id": "o1", "n": 1}


async def test_wait_for_event_times_out_with_none(stack: Stack) -> None:
    @stack.client.function(id="impatient", trigger=ratchet.on_event("t/impatient"))
    async def fn(ctx: ratchet.Context) -> str:
        got = await ctx.step.wait_for_event("w", event="t/never", timeout=timedelta(milliseconds=300))
        return "timed out" if got is None else "matched"

    await stack.sync([fn])
    run = await stack.wait_run(await stack.send("t/impatient"))
    assert run["output"] == "timed out"


async def test_one_event_resolves_a_wait_once(stack: Stack) -> None:
    @stack.client.function(id="twice", trigger=ratchet.on_event("t/twice"))
    async def fn(ctx: ratchet.Context) -> list[Any]:
        a = await ctx.step.wait_for_event("a", event="t/go", timeout=timedelta(seconds=30))
        b = await ctx.step.wait_for_event("b", event="t/go", timeout=timedelta(milliseconds=500))
        return [a.data if a else None, b.data if b else None]

    await stack.sync([fn])
    ev = await stack.send("t/twice")
    await wait_step(stack, ev, "a")
    await stack.send("t/go", {"n": 1})
    run = await stack.wait_run(ev)
    assert run["output"] == [{"n": 1}, None]  # the one event resolved `a` only


async def test_invoke_returns_the_child_output_and_child_failure_is_a_step_error(stack: Stack) -> None:
    @stack.client.function(id="child", trigger=ratchet.on_event("t/child-unused"), retries=0)
    async def child(ctx: ratchet.Context) -> int:
        if ctx.event.data.get("fail"):
            raise ratchet.NonRetriableError("child says no")
        return int(ctx.event.data["x"]) * 2

    @stack.client.function(id="parent", trigger=ratchet.on_event("t/parent"))
    async def parent(ctx: ratchet.Context) -> dict[str, Any]:
        ok = await ctx.step.invoke("ok", function=child, data={"x": 21})
        try:
            await ctx.step.invoke("bad", function=child, data={"fail": True})
        except ratchet.StepError as exc:
            return {"ok": ok, "error": exc.message}
        return {"ok": ok}

    await stack.sync([child, parent])
    run = await stack.wait_run(await stack.send("t/parent"), timeout=10)
    assert run["output"] == {"ok": 42, "error": "child says no"}


async def test_invoke_timeout_is_a_step_error(stack: Stack) -> None:
    @stack.client.function(id="slow-child", trigger=ratchet.on_event("t/none"))
    async def slow(ctx: ratchet.Context) -> int:
        await ctx.step.sleep("zz", timedelta(seconds=30))
        return 1

    @stack.client.function(id="hurry", trigger=ratchet.on_event("t/hurry"))
    async def hurry(ctx: ratchet.Context) -> str:
        try:
            await ctx.step.invoke("call", function=slow, data={}, timeout=timedelta(milliseconds=400))
        except ratchet.StepError as exc:
            return exc.name
        return "no timeout"

    await stack.sync([slow, hurry])
    run = await stack.wait_run(await stack.send("t/hurry"))
    assert run["output"] == "InngestInvokeTimeoutError"


async def test_invoking_an_unknown_function_fails_the_step(stack: Stack) -> None:
    @stack.client.function(id="lost", trigger=ratchet.on_event("t/lost"))
    async def fn(ctx: ratchet.Context) -> str:
        try:
            await ctx.step.invoke("call", function_id="nope", app_id="inproc", data={})
        except ratchet.StepError as exc:
            return exc.name
        return "?"

    await stack.sync([fn])
    run = await stack.wait_run(await stack.send("t/lost"))
    assert run["output"] == "FunctionNotFound"


@pytest.mark.parametrize("mode", [ratchet.ParallelMode.WAIT, ratchet.ParallelMode.RACE])
async def test_parallel_steps_each_run_once(stack: Stack, mode: ratchet.ParallelMode) -> None:
    ran: list[str] = []

    def body(name: str) -> str:
        ran.append(name)
        return name.upper()

    @stack.client.function(id="par", trigger=ratchet.on_event("t/par"))
    async def fn(ctx: ratchet.Context) -> Any:
        results = await ctx.group.parallel(tuple(
            (lambda n=n: ctx.step.run(n, body, n)) for n in ("a", "b", "c")), parallel_mode=mode)
        after = await ctx.step.run("after", body, "after")
        return [list(results), after]

    await stack.sync([fn])
    run = await stack.wait_run(await stack.send("t/par"))
    assert run["output"] == [["A", "B", "C"], "AFTER"]
    assert sorted(ran) == ["a", "after", "b", "c"]  # each step body ran once
    assert sorted(s["id"] for s in run["steps"]) == ["a", "after", "b", "c"]


async def test_parallel_steps_finishing_out_of_order_end_the_group_with_every_result(stack: Stack) -> None:
    """Regression: the call that finishes last loaded the run before the others recorded their steps, so
    its follow-up discovery must load the run again (a stale memo re-planned finished steps and stalled)."""
    ran: list[str] = []
    calls: list[bool] = []

    async def body(name: str, delay: float) -> str:
        await asyncio.sleep(delay)  # the calls overlap; "slow" ends last
        ran.append(name)
        return name.upper()

    @stack.client.function(id="overlap", trigger=ratchet.on_event("t/overlap"))
    async def fn(ctx: ratchet.Context) -> Any:
        calls.append(True)
        results = await ctx.group.parallel((lambda: ctx.step.run("slow", body, "slow", 0.3),
                                            lambda: ctx.step.run("fast", body, "fast", 0.0),
                                            lambda: ctx.step.run("mid", body, "mid", 0.1)))
        after = await ctx.step.run("after", body, "after", 0.0)
        return [list(results), after]

    await stack.sync([fn])
    run = await stack.wait_run(await stack.send("t/overlap"), timeout=5)
    assert run["output"] == [["SLOW", "FAST", "MID"], "AFTER"]
    assert ran == ["fast", "mid", "slow", "after"]
    # plan, three targeted calls, a discovery that runs "after" at once (parallel mode over), the final call
    assert len(calls) == 6


async def test_a_group_ended_by_a_wait_plans_the_next_step_before_calling_it(stack: Stack) -> None:
    """As in Inngest: a pause's resume (here a wait's timeout) does not end parallel mode, so discovery
    plans "after" and a targeted call runs it; a step's completion does end it (the call after "after")."""
    calls: list[bool] = []

    @stack.client.function(id="group-wait", trigger=ratchet.on_event("t/group-wait"))
    async def fn(ctx: ratchet.Context) -> Any:
        calls.append(True)
        results = await ctx.group.parallel((
            lambda: ctx.step.wait_for_event("w", event="t/never", timeout=timedelta(milliseconds=300)),
            lambda: ctx.step.run("a", lambda: "A")))
        after = await ctx.step.run("after", lambda: "AFTER")
        return [list(results), after]

    await stack.sync([fn])
    run = await stack.wait_run(await stack.send("t/group-wait"), timeout=5)
    assert run["output"] == [[None, "A"], "AFTER"]
    # plan, "a", discovery planning "after", "after", the final call
    assert len(calls) == 5


async def test_send_event_ids_are_the_step_result(stack: Stack) -> None:
    @stack.client.function(id="sender", trigger=ratchet.on_event("t/sender"))
    async def fn(ctx: ratchet.Context) -> list[str]:
        return await ctx.step.send_event("s", [ratchet.Event(name="t/x"), ratchet.Event(name="t/y")])  # type: ignore[no-any-return]

    await stack.sync([fn])
    run = await stack.wait_run(await stack.send("t/sender"))
    ids = run["output"]
    assert len(ids) == 2 and run["steps"][0]["output"] == ids
    names = [(await stack.api.get(f"/v1/events/{i}")).json()["data"]["name"] for i in ids]
    assert names == ["t/x", "t/y"]


async def test_cancel_on_event_cancels_a_sleeping_run(stack: Stack) -> None:
    @stack.client.function(id="cancellable", trigger=ratchet.on_event("t/start"),
                           cancel=[ratchet.Cancel(event="t/stop", if_exp="event.data.id == async.data.id")])
    async def fn(ctx: ratchet.Context) -> str:
        await ctx.step.sleep("long", timedelta(hours=1))
        return "woke"

    await stack.sync([fn])
    keep = await stack.send("t/start", {"id": 1})
    stop = await stack.send("t/start", {"id": 2})
    await wait_step(stack, stop, "long")
    await wait_step(stack, keep, "long")
    await stack.send("t/stop", {"id": 2})
    run = await wait_status(stack, stop, "CANCELLED")
    assert "t/stop" in run["error"]
    assert (await stack.runs_of(keep))[0]["status"] == "RUNNING"


async def test_cancel_through_the_api_and_bad_requests(stack: Stack) -> None:
    @stack.client.function(id="sleepy", trigger=ratchet.on_event("t/sleepy"))
    async def fn(ctx: ratchet.Context) -> str:
        await ctx.step.sleep("long", timedelta(hours=1))
        return "woke"

    await stack.sync([fn])
    ev = await stack.send("t/sleepy")
    await wait_step(stack, ev, "long")
    run_id = (await stack.runs_of(ev))[0]["id"]
    resp = await stack.api.post(f"/v1/runs/{run_id}/cancel")
    assert resp.status_code == 200, resp.text
    assert (await stack.api.get(f"/v1/runs/{run_id}")).json()["data"]["status"] == "CANCELLED"
    again = await stack.api.post(f"/v1/runs/{run_id}/cancel")
    assert again.status_code == 409 and "already" in again.json()["error"]
    missing = await stack.api.post("/v1/runs/nope/cancel")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]


async def test_bulk_cancel_by_function_and_time_range(stack: Stack) -> None:
    @stack.client.function(id="bulk", trigger=ratchet.on_event("t/bulk"))
    async def fn(ctx: ratchet.Context) -> str:
        await ctx.step.sleep("long", timedelta(hours=1))
        return "woke"

    await stack.sync([fn])
    evs = [await stack.send("t/bulk", {"i": i}) for i in range(3)]
    for ev in evs:
        await wait_step(stack, ev, "long")
    dry = await stack.api.post("/v1/runs/cancel", json={"function_id": "inproc-bulk", "dry_run": True})
    assert dry.json()["data"] | {"to": 0} == {"matched": 3, "cancelled": 0, "to": 0}
    none = await stack.api.post("/v1/runs/cancel", json={"function_id": "inproc-bulk", "dry_run": True,
                                                          "to": "2000-01-01T00:00:00Z"})
    assert none.json()["data"]["matched"] == 0
    resp = await stack.api.post("/v1/runs/cancel", json={"function_id": "inproc-bulk"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["cancelled"] == 3
    for ev in evs:
        assert (await stack.runs_of(ev))[0]["status"] == "CANCELLED"
    for bad, needle in [({}, "function_id"), ({"function_id": "inproc-bulk", "from": "yesterday"}, "from"),
                        ({"function_id": 5}, "function_id")]:
        resp = await stack.api.post("/v1/runs/cancel", json=bad)
        assert resp.status_code == 400 and needle in resp.json()["error"], (bad, resp.text)


async def test_on_failure_runs_with_the_failed_event(stack: Stack) -> None:
    seen: dict[str, Any] = {}

    async def handle(ctx: ratchet.Context) -> str:
        seen.update(ctx.event.data)
        return "handled"

    @stack.client.function(id="fragile", trigger=ratchet.on_event("t/fragile"), retries=0, on_failure=handle)
    async def fn(ctx: ratchet.Context) -> None:
        raise ValueError("broken")

    await stack.sync([fn])
    ev = await stack.send("t/fragile", {"k": 1})
    await stack.wait_run(ev, status="FAILED")
    runs = (await stack.api.get("/v1/runs", params={"function_id": "inproc-fragile-failure"})).json()["data"]
    deadline = time.monotonic() + 5
    while not runs or runs[0]["status"] != "COMPLETED":
        assert time.monotonic() < deadline, runs
        await asyncio.sleep(0.01)
        runs = (await stack.api.get("/v1/runs", params={"function_id": "inproc-fragile-failure"})).json()["data"]
    assert seen["function_id"] == "inproc-fragile"
    assert seen["error"]["error"] == "invalid status code: 500"
    assert seen["error"]["message"] == "broken" and seen["error"]["name"] == "ValueError"
    assert seen["event"]["data"] == {"k": 1}


async def test_trigger_expression_filters_events(stack: Stack) -> None:
    @stack.client.function(id="big", trigger=ratchet.on_event("t/order", if_exp="event.data.total > 100"))
    async def fn(ctx: ratchet.Context) -> int:
        return int(ctx.event.data["total"])

    await stack.sync([fn])
    small = await stack.send("t/order", {"total": 5})
    big = await stack.send("t/order", {"total": 500})
    assert (await stack.wait_run(big))["output"] == 500
    assert await stack.runs_of(small) == []


async def test_timeouts_finish_cancels_the_run(stack: Stack) -> None:
    @stack.client.function(id="bounded", trigger=ratchet.on_event("t/bounded"),
                           timeouts=ratchet.Timeouts(finish=timedelta(seconds=1)))
    async def fn(ctx: ratchet.Context) -> str:
        await ctx.step.sleep("long", timedelta(hours=1))
        return "woke"

    await stack.sync([fn])
    run = await wait_status(stack, await stack.send("t/bounded"), "CANCELLED", timeout=5)
    assert "timeouts.finish" in run["error"]


async def test_bad_expressions_are_rejected_at_sync_naming_function_and_expression(stack: Stack) -> None:
    @stack.client.function(id="broken-expr", trigger=ratchet.on_event("t/x", if_exp="event.data.x >"))
    async def fn(ctx: ratchet.Context) -> None:
        return None

    stack.serve([fn])
    resp = await stack.api.post("/v1/apps/sync", json={"url": "http://app.test/api/inngest"})
    assert resp.status_code == 502
    error = resp.json()["data"][0]["error"]
    assert "inproc-broken-expr" in error and "event.data.x >" in error


async def test_large_memos_travel_through_use_api(stack: Stack) -> None:
    @stack.client.function(id="bulky", trigger=ratchet.on_event("t/bulky"))
    async def fn(ctx: ratchet.Context) -> int:
        total = 0
        for i in range(6):  # 6 x 1 MB of memo: over the 4 MiB inline limit by the last calls
            total += len(await ctx.step.run(f"s{i}", lambda i=i: str(i) * 1_000_000))
        return total

    await stack.sync([fn])
    run = await stack.wait_run(await stack.send("t/bulky"), timeout=20)
    assert run["output"] == 6_000_000
    run_id = run["id"]
    actions = (await stack.api.get(f"/v0/runs/{run_id}/actions")).json()
    assert len(actions) == 6 and all(len(v["data"]) == 1_000_000 for v in actions.values())
    batch = (await stack.api.get(f"/v0/runs/{run_id}/batch")).json()
    assert [e["name"] for e in batch] == ["t/bulky"]
    assert (await stack.api.get("/v0/runs/nope/actions")).status_code == 404


def _cron_items(stack: Stack, slug: str) -> list[tuple[int, Any]]:
    db = stack.server.state.services.store._db  # white-box: the SQLite store's connection
    return [(due, payload) for due, payload in db.execute(
        "SELECT due_at, payload FROM queue WHERE kind = 'cron' AND run_id = ?", (f"cron:{slug}",))]


@pytest.mark.stores("sqlite")  # reads the SQLite store's queue directly
async def test_cron_fires_once_per_tick_and_resync_replaces_the_schedule(stack: Stack) -> None:
    @stack.client.function(id="hourly", trigger=ratchet.on_cron("0 * * * *"))
    async def fn(ctx: ratchet.Context) -> dict[str, Any]:
        return {"name": ctx.event.name, "cron": ctx.event.data["cron"]}

    await stack.sync([fn])
    (due, _), = _cron_items(stack, "inproc-hourly")
    assert due > time.time() * 1000 and due % 3_600_000 == 0  # the next full hour
    # Make the tick due now (white-box: waiting an hour is not a test).
    stack.server.state.services.store._db.execute(
        "UPDATE queue SET due_at = ? WHERE kind = 'cron' AND run_id = 'cron:inproc-hourly'", (int(time.time() * 1000),))
    stack.server.state.services.scheduler.notify()
    deadline = time.monotonic() + 5
    while not (runs := (await stack.api.get("/v1/runs", params={"function_id": "inproc-hourly"})).json()["data"]) \
            or runs[0]["status"] != "COMPLETED":
        assert time.monotonic() < deadline, runs
        await asyncio.sleep(0.01)
    assert len(runs) == 1
    assert runs[0]["output"] == {"name": "inngest/scheduled.timer", "cron": "0 * * * *"}
    (next_due, _), = _cron_items(stack, "inproc-hourly")
    assert next_due > time.time() * 1000  # the following tick is queued, once

    @stack.client.function(id="hourly", trigger=ratchet.on_cron("TZ=Europe/Paris 30 9 * * *"))
    async def fn2(ctx: ratchet.Context) -> None:
        return None

    await stack.sync([fn2])
    (due2, payload), = _cron_items(stack, "inproc-hourly")
    assert payload is not None and "Europe/Paris" in payload and due2 != next_due


async def test_invalid_flow_control_is_rejected_at_sync(stack: Stack) -> None:
    base_fn = {"id": "x-f", "name": "f", "triggers": [{"event": "e"}],
               "steps": {"step": {"id": "step", "name": "step",
                                  "runtime": {"type": "http", "url": "http://app.test/api/inngest"}}}}
    cases = [
        ({"batchEvents": {"maxSize": 10, "timeout": "5s"}, "cancel": [{"event": "e/stop"}]}, "batchEvents"),
        ({"throttle": {"limit": 0, "period": "1m"}}, "functions[0].throttle.limit"),
        ({"concurrency": [{"limit": 1}, {"limit": 2}, {"limit": 3}]}, "functions[0].concurrency"),
        ({"concurrency": [{"limit": 1, "key": "event.data.x +"}]}, "functions[0].concurrency[0].key"),
        ({"rateLimit": {"limit": 1, "period": "soon"}}, "functions[0].rateLimit.period"),
    ]
    for extra, needle in cases:
        resp = await stack.api.post("/fn/register", json={"url": "http://app.test/api/inngest", "appName": "x",
                                                          "functions": [{**base_fn, **extra}]})
        assert resp.status_code == 400, (extra, resp.text)
        assert needle in resp.json()["error"] and "'x-f'" in resp.json()["error"], (needle, resp.json())
