"""Poison queue items: an item the engine keeps failing on is tried a few times with a backoff, then taken out
of the queue into the dead letters with its reason, and its run fails with that reason (never retried forever)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import ratchet
from ratchet import protocol
from ratchet.server import ingest
from ratchet.server.engine import retry, steps
from ratchet.server.store import open_store_async
from tests.integration import inprocess
from tests.integration.inprocess import Stack

#: Every scenario here runs on both store backends (`stack` in conftest.py).
STORES = ("sqlite", "postgres")


async def dead_letters(stack: Stack, **params: Any) -> list[dict[str, Any]]:
    resp = await stack.api.get("/v1/dead-letters", params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]  # type: ignore[no-any-return]


async def test_an_item_the_engine_keeps_failing_on_is_dead_lettered_and_its_run_fails(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    real = steps.decide
    calls: list[str] = []

    def decide(call: steps.Call, *args: Any, **kwargs: Any) -> Any:
        if call.function_slug.endswith("poison"):
            calls.append(call.run_id)
            raise RuntimeError("the engine cannot handle this reply")
        return real(call, *args, **kwargs)

    monkeypatch.setattr(steps, "decide", decide)
    failed: list[dict[str, Any]] = []

    @stack.client.function(id="poison", trigger=ratchet.on_event("t/poison"))
    async def poison(ctx: ratchet.Context) -> str:
        return "never recorded"

    @stack.client.function(id="healthy", trigger=ratchet.on_event("t/poison"))
    async def healthy(ctx: ratchet.Context) -> str:
        return "fine"

    @stack.client.function(id="watch", trigger=ratchet.on_event("inngest/function.failed"))
    async def watch(ctx: ratchet.Context) -> None:
        failed.append(ctx.event.data)

    await stack.sync([poison, healthy, watch])
    event_id = await stack.send("t/poison")
    deadline = time.monotonic() + 15
    while not (runs := [r for r in await stack.runs_of(event_id) if r["function_id"].endswith("poison")]) or \
            runs[0]["status"] != "FAILED":
        assert time.monotonic() < deadline, runs
        await asyncio.sleep(0.02)
    run = (await stack.api.get(f"/v1/runs/{runs[0]['id']}")).json()["data"]
    assert len(calls) == retry.MAX_ITEM_FAILURES  # tried a bounded number of times, then given up
    assert run["output"]["name"] == "DeadLettered"
    assert "RuntimeError: the engine cannot handle this reply" in run["error"]
    assert f"after {retry.MAX_ITEM_FAILURES} failures" in run["error"]
    (letter,) = await dead_letters(stack)
    assert (letter["run_id"], letter["kind"], letter["failures"]) == (run["id"], "call", retry.MAX_ITEM_FAILURES)
    assert letter["reason"] == "RuntimeError: the engine cannot handle this reply"
    # The other function of the same event was not held up, and on_failure-style listeners heard of it.
    others = {r["function_id"]: r["status"] for r in await stack.runs_of(event_id)}
    assert others["inproc-healthy"] == "COMPLETED"
    deadline = time.monotonic() + 10
    while not failed:
        assert time.monotonic() < deadline, "no inngest/function.failed for the dead-lettered run"
        await asyncio.sleep(0.02)
    assert failed[0]["run_id"] == run["id"] and failed[0]["error"]["name"] == "DeadLettered"


async def test_a_run_whose_function_was_removed_is_dead_lettered_at_once(stack: Stack) -> None:
    @stack.client.function(id="doomed", trigger=ratchet.on_event("t/doomed"))
    async def doomed(ctx: ratchet.Context) -> str:
        await ctx.step.sleep("nap", timedelta(milliseconds=300))
        return "woke"

    @stack.client.function(id="other", trigger=ratchet.on_event("t/other"))
    async def other(ctx: ratchet.Context) -> None:
        return None

    await stack.sync([doomed, other])
    event_id = await stack.send("t/doomed")
    deadline = time.monotonic() + 10
    while not (runs := await stack.runs_of(event_id)) or runs[0]["status"] != "RUNNING":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await stack.sync([other])  # the app no longer has `doomed` while its run sleeps
    run = await stack.wait_run(event_id, "FAILED")
    assert run["output"]["name"] == "FunctionNotFound"
    (letter,) = await dead_letters(stack, run_id=run["id"])
    assert letter["reason"] == "function 'inproc-doomed' no longer exists" and letter["failures"] == 0


@pytest.mark.parametrize(("params", "message"), [
    ({"limit": "0"}, "limit: must be between 1 and 1000"),
    ({"limit": "x"}, "limit: must be an integer"),
    ({"before": "abc"}, "before: must be the `cursor` of a dead letter"),
])
async def test_dead_letters_bad_query_is_a_400_saying_what_is_wrong(stack: Stack, params: dict[str, str],
                                                                    message: str) -> None:
    resp = await stack.api.get("/v1/dead-letters", params=params)
    assert resp.status_code == 400 and message in resp.text


async def test_a_clean_stop_hands_calls_in_flight_back_without_counting_a_failure(tmp_path: Path) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()
    async with inprocess.start_stack(tmp_path) as stack:
        @stack.client.function(id="slow", trigger=ratchet.on_event("t/slow"))
        async def slow(ctx: ratchet.Context) -> None:
            entered.set()
            await release.wait()

        await stack.sync([slow])
        await stack.send("t/slow")
        await asyncio.wait_for(entered.wait(), 10)
    release.set()  # the server stopped while the call was in flight
    store = await open_store_async(str(tmp_path / "r.db"))
    try:
        (item,) = await store.claim_due(protocol.now_ms(), 10, "next-node", 30_000)
        assert item.failures == 0 and item.failure is None  # handed back at once, not counted
    finally:
        await store.close()


@pytest.mark.stores("sqlite")  # makes the tick due by writing the SQLite store's queue directly
async def test_a_dead_lettered_cron_tick_queues_the_next_one(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    real = ingest.Ingestor.new_run
    attempts: list[int] = []

    def new_run(self: ingest.Ingestor, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if fn.slug == "inproc-ticker" and len(attempts) < retry.MAX_ITEM_FAILURES:
            attempts.append(protocol.now_ms())
            raise RuntimeError("cannot start this tick's run")
        return real(self, fn, *args, **kwargs)

    monkeypatch.setattr(ingest.Ingestor, "new_run", new_run)

    @stack.client.function(id="ticker", trigger=ratchet.on_cron("0 * * * *"))
    async def ticker(ctx: ratchet.Context) -> str:
        return "ticked"

    await stack.sync([ticker])
    db = stack.server.state.services.store._db  # white-box: the SQLite store's connection

    def ticks() -> list[int]:
        return [due for (due,) in db.execute("SELECT due_at FROM queue WHERE kind = 'cron' AND run_id = ?",
                                             ("cron:inproc-ticker",))]

    (first,) = ticks()
    db.execute("UPDATE queue SET due_at = ? WHERE kind = 'cron'", (protocol.now_ms(),))  # due now, not in an hour
    stack.server.state.services.scheduler.notify()
    deadline = time.monotonic() + 15
    while not (letters := await dead_letters(stack)):
        assert time.monotonic() < deadline, "the failing tick was not dead-lettered"
        await asyncio.sleep(0.02)
    (letter,) = letters
    assert (letter["kind"], letter["failures"]) == ("cron", retry.MAX_ITEM_FAILURES)
    assert "cannot start this tick's run" in letter["reason"]
    assert len(attempts) == retry.MAX_ITEM_FAILURES
    # The schedule goes on: its next tick is queued (the next full hour), and it fires.
    (following,) = ticks()
    assert following >= first and following % 3_600_000 == 0
    db.execute("UPDATE queue SET due_at = ? WHERE kind = 'cron'", (protocol.now_ms(),))
    stack.server.state.services.scheduler.notify()
    deadline = time.monotonic() + 10
    while not (runs := (await stack.api.get("/v1/runs", params={"function_id": "inproc-ticker"})).json()["data"]) \
            or runs[0]["status"] != "COMPLETED":
        assert time.monotonic() < deadline, runs
        await asyncio.sleep(0.02)
    assert runs[0]["output"] == "ticked"
