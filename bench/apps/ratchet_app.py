"""Bench app written with Ratchet's own SDK: `steps-N` runs N no-op steps; `sleeper` (W5) and
`waiter` (W6) note timer lateness and match latency."""

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


app = fastapi.FastAPI()
ratchet.sdk.fastapi.serve(app, client, [make(n) for n in (1, 5, 10)] + [sleeper, waiter])


@app.get("/bench/gaps")
def gaps(run_id: str) -> list[float]:
    return timings.gaps_ms(run_id)


@app.get("/bench/lateness")
def lateness() -> dict[str, float]:
    return timings.LATENESS


@app.get("/bench/planned")
def planned() -> list[int]:
    return timings.PLANNED


@app.get("/bench/matches")
def matches() -> dict[str, tuple[float | None, float | None, int, int | None]]:
    return timings.MATCHES
