"""An official-SDK (inngest 0.5.19) FastAPI app for the SIGKILL/restart tests.

Every function and step body appends a line to `$E2E_DIR/<run id>.<label>` when it runs, so a test can
tell how often code really ran (a step may run twice around a crash, but must be recorded once).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import time
from pathlib import Path

import fastapi
import inngest
import inngest.fast_api

DIR = Path(os.environ["E2E_DIR"])
#: The blocking step waits at most this long for the release file.
BLOCK_MAX_S = 15.0
client = inngest.Inngest(app_id="e2e", is_production=False)


def mark(run_id: str, label: str) -> int:
    path = DIR / f"{run_id}.{label}"
    with path.open("a") as f:
        f.write("x\n")
    return len(path.read_text().splitlines())


@client.create_function(fn_id="sleep", retries=2, trigger=inngest.TriggerEvent(event="e2e/sleep"))
async def sleeper(ctx: inngest.Context) -> dict:
    async def before() -> str:
        mark(ctx.run_id, "before")
        return "before"

    async def after() -> str:
        mark(ctx.run_id, "after")
        return "after"

    a = await ctx.step.run("before", before)
    # 2 s unless the event asks for longer (a test that cancels the sleeping run must not race its end)
    await ctx.step.sleep("nap", datetime.timedelta(seconds=float(ctx.event.data.get("sleep_s", 2))))
    b = await ctx.step.run("after", after)
    return {"a": a, "b": b}


@client.create_function(fn_id="block", retries=2, trigger=inngest.TriggerEvent(event="e2e/block"))
async def block(ctx: inngest.Context) -> dict:
    async def first() -> str:
        mark(ctx.run_id, "first")
        return "first"

    async def slow() -> str:
        # Tell the test we are in flight, then hold the call open until it releases us.
        n = mark(ctx.run_id, "slow")
        (DIR / f"{ctx.run_id}.slow-started-{n}").touch()
        deadline = time.monotonic() + BLOCK_MAX_S
        while not (DIR / "release").exists() and time.monotonic() < deadline:  # noqa: ASYNC110 - polls a file
            await asyncio.sleep(0.02)
        return f"slow-{n}"

    async def last() -> str:
        mark(ctx.run_id, "last")
        return "last"

    a = await ctx.step.run("first", first)
    b = await ctx.step.run("slow", slow)
    c = await ctx.step.run("last", last)
    return {"first": a, "slow": b, "last": c}


@client.create_function(fn_id="many", retries=2, trigger=inngest.TriggerEvent(event="e2e/many"))
async def many(ctx: inngest.Context) -> int:
    n = ctx.event.data["n"]

    async def double() -> int:
        mark(ctx.run_id, "double")
        return n * 2

    return await ctx.step.run("double", double)


app = fastapi.FastAPI()
inngest.fast_api.serve(app, client, [sleeper, block, many])
