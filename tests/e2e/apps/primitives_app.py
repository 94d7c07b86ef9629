"""An official-SDK (inngest 0.5.19) FastAPI app for the SIGKILL/restart tests of waits, invoke, parallel
steps and cron.

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
#: A blocking step waits at most this long for the release file.
BLOCK_MAX_S = 15.0
client = inngest.Inngest(app_id="e2e-prim", is_production=False)


def mark(run_id: str, label: str) -> int:
    path = DIR / f"{run_id}.{label}"
    with path.open("a") as f:
        f.write("x\n")
    return len(path.read_text().splitlines())


@client.create_function(fn_id="waiter", retries=2, trigger=inngest.TriggerEvent(event="e2e/wait"))
async def waiter(ctx: inngest.Context) -> dict:
    got = await ctx.step.wait_for_event("wait", event="e2e/resume", if_exp="event.data.id == async.data.id",
                                        timeout=datetime.timedelta(minutes=5))

    async def after() -> str:
        mark(ctx.run_id, "after")
        return "after"

    return {"got": None if got is None else got.data, "after": await ctx.step.run("after", after)}


@client.create_function(fn_id="short-wait", retries=2, trigger=inngest.TriggerEvent(event="e2e/short-wait"))
async def short_wait(ctx: inngest.Context) -> dict:
    got = await ctx.step.wait_for_event("wait", event="e2e/never", timeout=datetime.timedelta(seconds=2))

    async def after() -> str:
        mark(ctx.run_id, "after")
        return "after"

    return {"got": None if got is None else got.data, "after": await ctx.step.run("after", after)}


@client.create_function(fn_id="child", retries=2, trigger=inngest.TriggerEvent(event="e2e/never"))
async def child(ctx: inngest.Context) -> int:
    x = int(ctx.event.data["x"])

    async def before() -> int:
        mark(ctx.run_id, "before")
        return x

    async def double(v: int) -> int:
        mark(ctx.run_id, "double")
        return v * 2

    v = await ctx.step.run("before", before)
    await ctx.step.sleep("nap", datetime.timedelta(seconds=2))
    return await ctx.step.run("double", double, v)


@client.create_function(fn_id="parent", retries=2, trigger=inngest.TriggerEvent(event="e2e/invoke"))
async def parent(ctx: inngest.Context) -> dict:
    got = await ctx.step.invoke("call", function=child, data={"x": ctx.event.data["x"]})

    async def after() -> str:
        mark(ctx.run_id, "after")
        return "after"

    return {"child": got, "after": await ctx.step.run("after", after)}


@client.create_function(fn_id="parallel", retries=2, trigger=inngest.TriggerEvent(event="e2e/parallel"))
async def parallel(ctx: inngest.Context) -> list:
    async def blocking(name: str) -> str:
        # Tell the test we are in flight, then hold the call open until it releases us.
        n = mark(ctx.run_id, name)
        (DIR / f"{ctx.run_id}.{name}-started-{n}").touch()
        deadline = time.monotonic() + BLOCK_MAX_S
        while not (DIR / "release").exists() and time.monotonic() < deadline:  # noqa: ASYNC110 - polls a file
            await asyncio.sleep(0.02)
        return f"{name}-{n}"

    async def after() -> str:
        mark(ctx.run_id, "after")
        return "after"

    group = await ctx.group.parallel(tuple((lambda n=n: ctx.step.run(n, blocking, n)) for n in ("p1", "p2", "p3")))
    return [list(group), await ctx.step.run("after", after)]


# A yearly schedule, so it never fires by itself during a test; the test makes its tick due.
@client.create_function(fn_id="cron", retries=2, trigger=inngest.TriggerCron(cron="0 0 1 1 *"))
async def cron(ctx: inngest.Context) -> dict:
    async def tick() -> str:
        mark(ctx.run_id, "tick")
        return "tick"

    return {"name": ctx.event.name, "data": dict(ctx.event.data), "tick": await ctx.step.run("tick", tick)}


@client.create_function(fn_id="batch", retries=2, trigger=inngest.TriggerEvent(event="e2e/batch"),
                        batch_events=inngest.Batch(max_size=10, timeout=datetime.timedelta(seconds=2)))
async def batch(ctx: inngest.Context) -> list:
    return sorted(int(e.data["n"]) for e in ctx.events)


app = fastapi.FastAPI()
inngest.fast_api.serve(app, client, [waiter, short_wait, child, parent, parallel, cron, batch])
