"""Bench app written with Ratchet's own SDK: `steps-N` runs N no-op steps."""

from __future__ import annotations

import os
import sys

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


app = fastapi.FastAPI()
ratchet.sdk.fastapi.serve(app, client, [make(n) for n in (1, 5, 10)])


@app.get("/bench/gaps")
def gaps(run_id: str) -> list[float]:
    return timings.gaps_ms(run_id)
