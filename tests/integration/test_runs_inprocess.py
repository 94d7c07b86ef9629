"""Whole runs in one process with Ratchet's SDK: steps, sleeps, retries, errors, sync (see inprocess.py)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import httpx

import ratchet
from tests.integration.inprocess import APP_URL, Stack

#: Every scenario here runs on both store backends (`stack` in conftest.py).
STORES = ("sqlite", "postgres")


async def test_two_steps_complete_in_order(stack: Stack) -> None:
    @stack.client.function(id="two", trigger=ratchet.on_event("t/two"))
    async def two(ctx: ratchet.Context) -> dict[str, Any]:
        a = await ctx.step.run("a", lambda: "A")
        b = await ctx.step.run("b", lambda: a + "B")
        return {"a": a, "b": b, "k": ctx.event.data["k"]}

    await stack.sync([two])
    run = await stack.wait_run(await stack.send("t/two", {"k": 7}))
    assert run["output"] == {"a": "A", "b": "AB", "k": 7}
    assert [(s["id"], s["output"]) for s in run["steps"]] == [("a", "A"), ("b", "AB")]


async def test_sync_function_runs_too(stack: Stack) -> None:
    @stack.client.function(id="sync-fn", trigger=ratchet.on_event("t/sync"))
    def sync_fn(ctx: ratchet.Context) -> int:
        return ctx.step.run("one", lambda: 1) + 1  # type: ignore[operator]

    await stack.sync([sync_fn])
    run = await stack.wait_run(await stack.send("t/sync"))
    assert run["output"] == 2


async def test_sleep_resumes_after_the_wake_time(stack: Stack) -> None:
    @stack.client.function(id="nap", trigger=ratchet.on_event("t/nap"))
    async def nap(ctx: ratchet.Context) -> str:
        await ctx.step.run("before", lambda: 1)
        await ctx.step.sleep("zz", timedelta(milliseconds=400))
        return await ctx.step.run("after", lambda: "woke")

    await stack.sync([nap])
    run = await stack.wait_run(await stack.send("t/nap"))
    assert run["output"] == "woke"
    by_id = {s["id"]: s for s in run["steps"]}
    assert by_id["zz"]["op"] == "Sleep" and by_id["zz"]["status"] == "completed"
    # The SDK computes the wake time (truncated to ms) before the server records the sleep, so measure from
    # the end of "before", which precedes that call; measured from "zz" it can come out a ms or two short.
    assert by_id["after"]["started_at"] - by_id["before"]["ended_at"] >= 400


async def test_a_failing_step_is_retried_then_succeeds(stack: Stack) -> None:
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("first try fails")
        return "ok"

    @stack.client.function(id="flaky", trigger=ratchet.on_event("t/flaky"), retries=2)
    async def fn(ctx: ratchet.Context) -> str:
        return await ctx.step.run("s", flaky)  # type: ignore[no-any-return]

    await stack.sync([fn])
    run = await stack.wait_run(await stack.send("t/flaky"))
    assert run["output"] == "ok" and calls["n"] == 2
    assert run["steps"][0]["attempts"] == 2


async def test_a_step_that_always_fails_surfaces_as_step_error_in_the_function(stack: Stack) -> None:
    @stack.client.function(id="always", trigger=ratchet.on_event("t/always"), retries=1)
    async def fn(ctx: ratchet.Context) -> str:
        try:
            await ctx.step.run("s", lambda: (_ for _ in ()).throw(KeyError("nope")))
        except ratchet.StepError as exc:
            return f"caught {exc.name}"
        return "no error"

    await stack.sync([fn])
    run = await stack.wait_run(await stack.send("t/always"))
    assert run["output"] == "caught KeyError"
    step = run["steps"][0]
    assert step["status"] == "failed" and step["error"]["name"] == "KeyError" and step["attempts"] == 2


async def test_non_retriable_error_fails_at_once(stack: Stack) -> None:
    attempts = []

    @stack.client.function(id="nr", trigger=ratchet.on_event("t/nr"), retries=4)
    async def fn(ctx: ratchet.Context) -> None:
        attempts.append(ctx.attempt)
        raise ratchet.NonRetriableError("give up")

    await stack.sync([fn])
    run = await stack.wait_run(await stack.send("t/nr"), status="FAILED")
    assert attempts == [0]
    assert run["output"]["message"] == "give up" and run["output"]["name"] == "NonRetriableError"


async def test_function_error_is_retried_up_to_max_attempts_then_fails(stack: Stack) -> None:
    attempts = []

    @stack.client.function(id="boom", trigger=ratchet.on_event("t/boom"), retries=2)
    async def fn(ctx: ratchet.Context) -> None:
        attempts.append(ctx.attempt)
        raise RuntimeError(f"boom {ctx.attempt}")

    await stack.sync([fn])
    run = await stack.wait_run(await stack.send("t/boom"), status="FAILED")
    assert attempts == [0, 1, 2]
    assert run["output"]["message"] == "boom 2"


async def test_retry_after_is_honoured(stack: Stack) -> None:
    seen: list[float] = []

    @stack.client.function(id="later", trigger=ratchet.on_event("t/later"), retries=1)
    async def fn(ctx: ratchet.Context) -> str:
        seen.append(time.monotonic())
        if ctx.attempt == 0:
            raise ratchet.RetryAfterError("busy", timedelta(seconds=1))
        return "done"

    await stack.sync([fn])
    run = await stack.wait_run(await stack.send("t/later"))
    assert run["output"] == "done"
    assert 0.9 <= seen[1] - seen[0] < 2.5  # retry-after 1 s, not the 50 ms retry interval


async def test_wildcard_trigger_and_send_event_step(stack: Stack) -> None:
    @stack.client.function(id="parent", trigger=ratchet.on_event("t/parent"))
    async def parent(ctx: ratchet.Context) -> list[str]:
        return await ctx.step.send_event("emit", ratchet.Event(name="shop/child.made", data={"n": 1}))  # type: ignore[no-any-return]

    @stack.client.function(id="child", trigger=ratchet.on_event("shop/*"))
    async def child(ctx: ratchet.Context) -> int:
        return int(ctx.event.data["n"]) + 1

    await stack.sync([parent, child])
    run = await stack.wait_run(await stack.send("t/parent"))
    (child_event,) = run["output"]
    child_run = await stack.wait_run(child_event)
    assert child_run["output"] == 2 and child_run["function_id"] == "inproc-child"


async def test_an_event_id_seen_before_starts_nothing_new(stack: Stack) -> None:
    @stack.client.function(id="once", trigger=ratchet.on_event("t/once"))
    async def fn(ctx: ratchet.Context) -> int:
        return 1

    await stack.sync([fn])
    first = await stack.send("t/once", id="order-1")
    await stack.wait_run(first)
    second = await stack.send("t/once", id="order-1")
    assert second != first
    assert await stack.runs_of(second) == []
    third = await stack.send("t/once", id="order-2")
    await stack.wait_run(third)


async def test_resync_without_a_function_stops_its_trigger(stack: Stack) -> None:
    @stack.client.function(id="keep", trigger=ratchet.on_event("t/keep"))
    async def keep(ctx: ratchet.Context) -> int:
        return 1

    @stack.client.function(id="drop", trigger=ratchet.on_event("t/drop"))
    async def drop(ctx: ratchet.Context) -> int:
        return 2

    await stack.sync([keep, drop])
    await stack.wait_run(await stack.send("t/drop"))
    await stack.sync([keep])
    fns = {f["id"] for f in (await stack.api.get("/v1/functions")).json()["data"]}
    assert fns == {"inproc-keep"}
    assert await stack.runs_of(await stack.send("t/drop")) == []
    await stack.wait_run(await stack.send("t/keep"))


async def test_an_unreachable_app_is_retried_then_the_run_fails(stack: Stack) -> None:
    @stack.client.function(id="gone", trigger=ratchet.on_event("t/gone"), retries=1)
    async def fn(ctx: ratchet.Context) -> int:
        return 1

    await stack.sync([fn])
    stack.transport.down = True
    run = await stack.wait_run(await stack.send("t/gone"), status="FAILED")
    assert run["output"]["name"] == "CallError" and "connection refused" in run["output"]["message"]


async def test_the_app_comes_back_before_retries_run_out(stack: Stack) -> None:
    @stack.client.function(id="back", trigger=ratchet.on_event("t/back"), retries=20)
    async def fn(ctx: ratchet.Context) -> int:
        return ctx.attempt

    await stack.sync([fn])
    stack.transport.down = True
    event_id = await stack.send("t/back")
    deadline = time.monotonic() + 5
    while not (runs := await stack.runs_of(event_id)) or runs[0]["status"] != "RUNNING":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # let several 50 ms retries fail while the app is down
    stack.transport.down = False
    run = await stack.wait_run(event_id)
    assert run["output"] >= 1


async def test_register_rejects_invalid_configs_naming_the_field(stack: Stack) -> None:
    base_fn = {"id": "x-f", "name": "f", "triggers": [{"event": "e"}],
               "steps": {"step": {"id": "step", "name": "step", "runtime": {"type": "http", "url": APP_URL}}}}

    async def register(fn: dict[str, Any], **top: Any) -> httpx.Response:
        body = {"url": APP_URL, "appName": "x", "framework": "t", "functions": [fn], **top}
        return await stack.api.post("/fn/register", json=body)

    cases = [
        ({**base_fn, "triggers": [{"cron": "not a cron"}]}, "functions[0].triggers[0].cron"),
        ({**base_fn, "triggers": [{}]}, "functions[0].triggers[0]"),
        ({**base_fn, "triggers": [{"event": "e", "cron": "* * * * *"}]}, "exactly one"),
        ({**base_fn, "id": ""}, "functions[0].id"),
        ({**base_fn, "steps": {}}, "functions[0].steps"),
        ({**base_fn, "timeouts": {"finish": "soon"}}, "functions[0].timeouts.finish"),
        ({**base_fn, "steps": {"step": {"runtime": {"url": "ftp://x"}}}}, "runtime.url"),
        ({**base_fn, "steps": {"step": {"retries": {"attempts": 99}, "runtime": {"url": APP_URL}}}},
         "retries.attempts"),
        ({k: v for k, v in base_fn.items() if k != "id"}, "functions[0].id"),
    ]
    for fn, needle in cases:
        resp = await register(fn)
        assert resp.status_code == 400, (fn, resp.text)
        assert resp.json()["ok"] is False and needle in resp.json()["error"], (needle, resp.json())
    resp = await stack.api.post("/fn/register", content=b"{not json")
    assert resp.status_code == 400 and "JSON" in resp.json()["error"]
    resp = await stack.api.post("/fn/register", json={"url": APP_URL, "functions": []})
    assert resp.status_code == 400 and "appName" in resp.json()["error"]
    resp = await register(base_fn, url="not a url")
    assert resp.status_code == 400 and "url" in resp.json()["error"]
    resp = await stack.api.post("/fn/register", json={"url": APP_URL, "appName": "x", "functions": [base_fn, base_fn]})
    assert resp.status_code == 400 and "duplicate" in resp.json()["error"]
    resp = await stack.api.post("/fn/register", json={"url": APP_URL, "appName": "x", "functions": [base_fn]},
                                headers={"x-inngest-expected-server-kind": "cloud"})
    assert resp.status_code == 400 and "Expected server kind dev, got cloud" in resp.json()["error"]
    # nothing above was stored
    assert (await stack.api.get("/v1/functions")).json()["data"] == []
    ok = await register(base_fn)
    assert ok.status_code == 200 and ok.json()["ok"] is True and ok.json()["modified"] is True
    again = await register(base_fn)
    assert again.json()["modified"] is False


async def test_sync_endpoint_reports_an_unreachable_app(stack: Stack) -> None:
    stack.transport.down = True
    resp = await stack.api.post("/v1/apps/sync", json={"url": APP_URL})
    assert resp.status_code == 502
    assert resp.json()["data"][0]["ok"] is False and "connection refused" in resp.json()["data"][0]["error"]
    assert resp.json()["error"] == resp.json()["data"][0]["error"]  # the reason, where every 4xx/5xx has it
    for bad in (b"{", b"[]", b'{"url": ""}', b'{"url": 5}'):
        resp = await stack.api.post("/v1/apps/sync", content=bad)
        assert resp.status_code == 400, bad

