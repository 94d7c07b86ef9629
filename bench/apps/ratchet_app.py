"""Bench app written with Ratchet's own SDK: `steps-N` runs N no-op steps; `sleeper` (W5) and
`waiter` (W6) note timer lateness and match latency; `flow-*` (W4) note what their flow control let through;
`crash` (W7) counts its step bodies across a server crash."""

from __future__ import annotations

import os
import sys
from datetime import timedelta

import fastapi

sys.path.insert(0, os.path.dirname(__file__))

import timings

import ratchet
import ratchet.sdk.fastapi

client = ratchet.Client(app_id="bench", is_production=False)


def make(n: int) -> ratchet.Function:
    @client.function(id=f"steps-{n}", trigger=ratchet.on_event(f"bench/steps-{n}"), retries=0)
    async def fn(ctx: ratchet.Context) -> int:
        for i in range(n):
            await ctx.step.run(f"s{i}", timings.noop_step, ctx.run_id)
        return n

    return fn


@client.function(id="sleeper", trigger=ratchet.on_event("bench/sleep"), retries=0)
async def sleeper(ctx: ratchet.Context) -> None:
    """W5: sleep until `data.wake_at` (ms); the call after the wake notes how late it came."""
    wake_ms = await ctx.step.run("plan", timings.plan_wake, int(ctx.event.data["wake_at"]))
    await ctx.step.sleep_until("nap", timings.wake_datetime(wake_ms))
    timings.after_sleep(ctx.run_id, wake_ms)  # not a step: the wake's one call runs it and returns


@client.function(id="waiter", trigger=ratchet.on_event("bench/wait-start"), retries=0)
async def waiter(ctx: ratchet.Context) -> None:
    """W6: wait for the `bench/match` event with this run's `data.id`; note who resumed it and when."""
    got = await ctx.step.wait_for_event("match", event="bench/match", if_exp="event.data.id == async.data.id",
                                        timeout=timedelta(minutes=30))
    await ctx.step.run("after", timings.after_wait, ctx.run_id, int(ctx.event.data["id"]),
                       None if got is None else dict(got.data), None if got is None else got.ts)


@client.function(id="flow-conc", trigger=ratchet.on_event("bench/flow-conc"), retries=0,
                 concurrency=[ratchet.Concurrency(limit=1, key="event.data.key")])
async def flow_conc(ctx: ratchet.Context) -> None:
    """W4: at most one step of a key at a time; each step body notes the key's overlap."""
    key = str(ctx.event.data["key"])
    await ctx.step.run("a", timings.conc_step, key)
    await ctx.step.run("b", timings.conc_step, key)
    timings.conc_done(ctx.run_id, key)


@client.function(id="flow-throttle", trigger=ratchet.on_event("bench/flow-throttle"), retries=0,
                 throttle=ratchet.Throttle(limit=10, period=timedelta(seconds=1)))
async def flow_throttle(ctx: ratchet.Context) -> None:
    """W4: runs start at 10/s; the run's (only) call notes when it started."""
    timings.throttle_start(ctx.run_id)


@client.function(id="flow-debounce", trigger=ratchet.on_event("bench/flow-debounce"), retries=0,
                 debounce=ratchet.Debounce(period=timedelta(seconds=1), key="event.data.key"))
async def flow_debounce(ctx: ratchet.Context) -> None:
    """W4: one run per key, 1 s after its last event; notes which event it got."""
    timings.debounced(ctx.run_id, str(ctx.event.data["key"]), int(ctx.event.data["n"]))


@client.function(id="flow-batch", trigger=ratchet.on_event("bench/flow-batch"), retries=0,
                 batch_events=ratchet.Batch(max_size=100, timeout=timedelta(seconds=5)))
async def flow_batch(ctx: ratchet.Context) -> None:
    """W4: runs with up to 100 events; notes which events each batch held."""
    timings.batched(ctx.run_id, [int(e.data["n"]) for e in ctx.events])


@client.function(id="flow-ratelimit", trigger=ratchet.on_event("bench/flow-ratelimit"), retries=0,
                 rate_limit=ratchet.RateLimit(limit=10, period=timedelta(minutes=1), key="event.data.key"))
async def flow_ratelimit(ctx: ratchet.Context) -> None:
    """W4: at most 10 runs per key per minute, the rest skipped; notes the runs that started."""
    timings.rate_limited(ctx.run_id, str(ctx.event.data["key"]))


@client.function(id="crash", trigger=ratchet.on_event("bench/crash"), retries=0)
async def crash(ctx: ratchet.Context) -> int:
    """W7: five no-op steps, like `steps-5`, whose bodies are counted per (run, step) across a server crash."""
    for i in range(5):
        await ctx.step.run(f"s{i}", timings.crash_step, ctx.run_id, i)
    return 5


FLOW = [flow_conc, flow_throttle, flow_debounce, flow_batch, flow_ratelimit]

app = fastapi.FastAPI()
ratchet.sdk.fastapi.serve(app, client, [make(n) for n in (1, 5, 10)] + [sleeper, waiter, crash, *FLOW])
timings.add_routes(app)
