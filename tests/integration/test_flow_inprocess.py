"""Flow control applied when runs start (rate limit, throttle, singleton, idempotency, priority), with
Ratchet's SDK in one process (the `stack` fixture)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import ratchet
from tests.integration.inprocess import Stack

#: Every scenario here runs on both store backends (`stack` in conftest.py).
STORES = ("sqlite", "postgres")


async def statuses(s: Stack, function_id: str) -> list[str]:
    runs = (await s.api.get("/v1/runs", params={"function_id": function_id, "limit": 1000})).json()["data"]
    return sorted(r["status"] for r in runs)


async def wait_for(s: Stack, function_id: str, want: list[str], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := await statuses(s, function_id)) != sorted(want):
        assert time.monotonic() < deadline, got
        await asyncio.sleep(0.02)


async def test_rate_limit_skips_excess_runs_per_key(stack: Stack) -> None:
    @stack.client.function(id="limited", trigger=ratchet.on_event("t/rl"),
                           rate_limit=ratchet.RateLimit(limit=2, period=timedelta(hours=1), key="event.data.user"))
    async def fn(ctx: ratchet.Context) -> str:
        return str(ctx.event.data["user"])

    await stack.sync([fn])
    for user in ("a", "a", "a", "b"):
        await stack.send("t/rl", {"user": user})
    await wait_for(stack, "inproc-limited", ["COMPLETED"] * 3 + ["SKIPPED"])
    runs = (await stack.api.get("/v1/runs", params={"function_id": "inproc-limited", "status": "SKIPPED"})).json()
    (skipped,) = runs["data"]
    assert "rate limited" in skipped["error"]


async def test_throttle_delays_and_never_drops(stack: Stack) -> None:
    @stack.client.function(id="throttled", trigger=ratchet.on_event("t/th"),
                           throttle=ratchet.Throttle(limit=2, period=timedelta(seconds=1), burst=1))
    async def fn(ctx: ratchet.Context) -> float:
        return time.time()

    await stack.sync([fn])
    sent = time.time()
    for _ in range(4):
        await stack.send("t/th")
    await wait_for(stack, "inproc-throttled", ["COMPLETED"] * 4)
    runs = (await stack.api.get("/v1/runs", params={"function_id": "inproc-throttled"})).json()["data"]
    starts = sorted(r["output"] for r in runs)
    # 2 per second, evenly spaced: starts at 0, 0.5, 1.0, 1.5 s after the sends, never earlier (a busy
    # machine may start any of them later, so they are measured from the first send, not from each other)
    assert [round(t - sent, 1) >= 0.5 * i - 0.05 for i, t in enumerate(starts)] == [True] * 4, starts


async def test_singleton_skip_and_cancel(stack: Stack) -> None:
    @stack.client.function(id="solo-skip", trigger=ratchet.on_event("t/solo-skip"),
                           singleton=ratchet.Singleton(key="event.data.k", mode="skip"))
    async def skip(ctx: ratchet.Context) -> None:
        await ctx.step.sleep("hold", timedelta(hours=1))

    @stack.client.function(id="solo-cancel", trigger=ratchet.on_event("t/solo-cancel"),
                           singleton=ratchet.Singleton(key="event.data.k", mode="cancel"))
    async def cancel(ctx: ratchet.Context) -> None:
        await ctx.step.sleep("hold", timedelta(hours=1))

    await stack.sync([skip, cancel])
    for name in ("t/solo-skip", "t/solo-cancel"):
        await stack.send(name, {"k": 1})
        await stack.send(name, {"k": 1})
        await stack.send(name, {"k": 2})
    # skip: the second run for k=1 is skipped while the first holds the key; cancel: it replaces the first
    await wait_for(stack, "inproc-solo-skip", ["RUNNING", "RUNNING", "SKIPPED"], timeout=5)
    await wait_for(stack, "inproc-solo-cancel", ["CANCELLED", "RUNNING", "RUNNING"], timeout=5)


async def test_idempotency_expression_starts_one_run_per_value(stack: Stack) -> None:
    @stack.client.function(id="idem", trigger=ratchet.on_event("t/idem"), idempotency="event.data.order")
    async def fn(ctx: ratchet.Context) -> Any:
        return ctx.event.data["order"]

    await stack.sync([fn])
    for order in (1, 1, 2, 1):
        await stack.send("t/idem", {"order": order})
    await wait_for(stack, "inproc-idem", ["COMPLETED", "COMPLETED"])


async def test_concurrency_limit_per_key_is_never_exceeded_and_keys_are_fair(stack: Stack) -> None:
    in_flight: dict[str, int] = {}
    peak: dict[str, int] = {}
    finished: list[str] = []

    async def work(tenant: str) -> None:
        in_flight[tenant] = in_flight.get(tenant, 0) + 1
        peak[tenant] = max(peak.get(tenant, 0), in_flight[tenant])
        await asyncio.sleep(0.02)
        in_flight[tenant] -= 1

    @stack.client.function(id="limited-c", trigger=ratchet.on_event("t/c"),
                           concurrency=[ratchet.Concurrency(limit=1, key="event.data.tenant")])
    async def fn(ctx: ratchet.Context) -> None:
        tenant = str(ctx.event.data["tenant"])
        await ctx.step.run("one", work, tenant)
        await ctx.step.run("two", work, tenant)
        finished.append(tenant)

    await stack.sync([fn])
    # a busy tenant sends 8 runs first, then two quiet tenants one each
    for _ in range(8):
        await stack.send("t/c", {"tenant": "busy"})
    await stack.send("t/c", {"tenant": "q1"})
    await stack.send("t/c", {"tenant": "q2"})
    await wait_for(stack, "inproc-limited-c", ["COMPLETED"] * 10, timeout=20)
    assert peak == {"busy": 1, "q1": 1, "q2": 1}  # one step in flight per tenant, ever
    # fairness: the quiet tenants did not wait behind the busy tenant's backlog
    assert finished.index("q1") < 4 and finished.index("q2") < 4, finished


async def test_debounce_starts_one_run_per_key_with_the_last_event(stack: Stack) -> None:
    @stack.client.function(id="deb", trigger=ratchet.on_event("t/deb"),
                           debounce=ratchet.Debounce(period=timedelta(seconds=1), key="event.data.k"))
    async def fn(ctx: ratchet.Context) -> Any:
        return [ctx.event.data["k"], ctx.event.data["n"]]

    await stack.sync([fn])
    for n in range(5):
        await stack.send("t/deb", {"k": "a", "n": n})
        await stack.send("t/deb", {"k": "b", "n": n * 10})
    await wait_for(stack, "inproc-deb", ["COMPLETED", "COMPLETED"], timeout=10)
    runs = (await stack.api.get("/v1/runs", params={"function_id": "inproc-deb"})).json()["data"]
    assert sorted(tuple(r["output"]) for r in runs) == [("a", 4), ("b", 40)]  # each key's last event


async def test_debounce_timeout_caps_the_delay(stack: Stack) -> None:
    @stack.client.function(id="deb-cap", trigger=ratchet.on_event("t/deb-cap"),
                           debounce=ratchet.Debounce(period=timedelta(seconds=1), timeout=timedelta(seconds=1)))
    async def fn(ctx: ratchet.Context) -> int:
        return int(ctx.event.data["n"])

    await stack.sync([fn])
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < 1.6:  # keep it busy past the timeout: a run must start anyway
        await stack.send("t/deb-cap", {"n": n})
        n += 1
        await asyncio.sleep(0.1)
    runs = (await stack.api.get("/v1/runs", params={"function_id": "inproc-deb-cap"})).json()["data"]
    assert runs, "the timeout should have started a run while events kept coming"


async def test_batch_starts_full_batches_at_once_and_the_rest_at_the_timeout(stack: Stack) -> None:
    @stack.client.function(id="bat", trigger=ratchet.on_event("t/bat"),
                           batch_events=ratchet.Batch(max_size=3, timeout=timedelta(seconds=1)))
    async def fn(ctx: ratchet.Context) -> list[int]:
        return [int(e.data["n"]) for e in ctx.events]

    await stack.sync([fn])
    for n in range(7):
        await stack.send("t/bat", {"n": n})
    await wait_for(stack, "inproc-bat", ["COMPLETED"] * 3, timeout=10)
    runs = (await stack.api.get("/v1/runs", params={"function_id": "inproc-bat"})).json()["data"]
    assert sorted(r["output"] for r in runs) == [[0, 1, 2], [3, 4, 5], [6]]


async def test_invoking_a_rate_limited_function_fails_the_step_at_once(stack: Stack) -> None:
    @stack.client.function(id="rl-child", trigger=ratchet.on_event("t/none"),
                           rate_limit=ratchet.RateLimit(limit=1, period=timedelta(hours=1)))
    async def child(ctx: ratchet.Context) -> int:
        return 1

    @stack.client.function(id="rl-parent", trigger=ratchet.on_event("t/rl-parent"))
    async def parent(ctx: ratchet.Context) -> list[Any]:
        out: list[Any] = []
        for i in range(2):
            try:
                out.append(await ctx.step.invoke(f"call{i}", function=child, data={}, timeout=timedelta(minutes=5)))
            except ratchet.StepError as exc:
                out.append(exc.name)
        return out

    await stack.sync([child, parent])
    run = await stack.wait_run(await stack.send("t/rl-parent"), timeout=5)  # not the 5 min invoke timeout
    assert run["output"] == [1, "FunctionSkipped"]


async def test_invocations_of_a_batching_function_are_not_batched(stack: Stack) -> None:
    @stack.client.function(id="bat-child", trigger=ratchet.on_event("t/bat-child"),
                           batch_events=ratchet.Batch(max_size=10, timeout=timedelta(seconds=30)))
    async def child(ctx: ratchet.Context) -> int:
        return len(ctx.events)

    @stack.client.function(id="bat-parent", trigger=ratchet.on_event("t/bat-parent"))
    async def parent(ctx: ratchet.Context) -> int:
        return await ctx.step.invoke("call", function=child, data={}, timeout=timedelta(minutes=5))  # type: ignore[no-any-return]

    await stack.sync([child, parent])
    run = await stack.wait_run(await stack.send("t/bat-parent"), timeout=5)
    assert run["output"] == 1
