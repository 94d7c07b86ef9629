"""Bench app written with the official `inngest` SDK: `steps-N` runs N no-op steps."""

from __future__ import annotations

import os
import sys

import fastapi
import inngest
import inngest.fast_api

sys.path.insert(0, os.path.dirname(__file__))

import timings

client = inngest.Inngest(app_id="bench", is_production=False)


def make(n: int) -> inngest.Function:
    @client.create_function(fn_id=f"steps-{n}", trigger=inngest.TriggerEvent(event=f"bench/steps-{n}"), retries=0)
    async def fn(ctx: inngest.Context) -> int:
        for i in range(n):
            await ctx.step.run(f"s{i}", timings.noop_step, ctx.run_id)
        return n

    return fn


app = fastapi.FastAPI()
inngest.fast_api.serve(app, client, [make(n) for n in (1, 5, 10)])


@app.get("/bench/gaps")
def gaps(run_id: str) -> list[float]:
    return timings.gaps_ms(run_id)
