"""An async FastAPI app on the official `inngest` SDK, unmodified: the compat cases' functions.

Each call of a function body or step body appends a line to `$COMPAT_DIR/<run id>.<label>`, so tests
can count how often code really ran.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import fastapi
import inngest
import inngest.fast_api

COUNT_DIR = Path(os.environ["COMPAT_DIR"])
client = inngest.Inngest(app_id="compat-fastapi", is_production=False)


def mark(run_id: str, label: str) -> int:
    """Record one execution of `label`; returns how many there have been (this one included)."""
    path = COUNT_DIR / f"{run_id}.{label}"
    with path.open("a") as f:
        f.write("x\n")
    return len(path.read_text().splitlines())


@client.create_function(fn_id="two-steps", trigger=inngest.TriggerEvent(event="compat/two-steps"))
async def two_steps(ctx: inngest.Context) -> dict:
    x = ctx.event.data["x"]

    async def first() -> str:
        return f"{x}-a"

    async def second(prev: str) -> dict:
        return {"prev": prev, "b": 2}

    a = await ctx.step.run("first", first)
    b = await ctx.step.run("second", second, a)
    return {"a": a, "b": b}


@client.create_function(fn_id="sleep", trigger=inngest.TriggerEvent(event="compat/sleep"))
async def sleeper(ctx: inngest.Context) -> str:
    async def before() -> str:
        return "before"

    async def after() -> str:
        return "after"

    await ctx.step.run("before", before)
    await ctx.step.sleep("nap", datetime.timedelta(seconds=1))
    return await ctx.step.run("after", after)


@client.create_function(fn_id="flaky-step", retries=1, trigger=inngest.TriggerEvent(event="compat/flaky-step"))
async def flaky_step(ctx: inngest.Context) -> dict:
    async def flaky() -> str:
        if mark(ctx.run_id, "flaky") == 1:
            raise ValueError("first attempt fails")
        return "recovered"

    value = await ctx.step.run("flaky", flaky)
    return {"flaky": value}


@client.create_function(fn_id="non-retriable", retries=3, trigger=inngest.TriggerEvent(event="compat/non-retriable"))
async def non_retriable(ctx: inngest.Context) -> None:
    mark(ctx.run_id, "body")
    raise inngest.NonRetriableError("give up now")


@client.create_function(fn_id="fn-error", retries=1, trigger=inngest.TriggerEvent(event="compat/fn-error"))
async def fn_error(ctx: inngest.Context) -> None:
    mark(ctx.run_id, "body")
    raise RuntimeError("function boom")


@client.create_function(fn_id="retry-after", retries=1, trigger=inngest.TriggerEvent(event="compat/retry-after"))
async def retry_after(ctx: inngest.Context) -> str:
    if mark(ctx.run_id, "body") == 1:
        raise inngest.RetryAfterError("busy", datetime.timedelta(seconds=1))
    return "done"


@client.create_function(fn_id="step-exhausted", retries=1,
                        trigger=inngest.TriggerEvent(event="compat/step-exhausted"))
async def step_exhausted(ctx: inngest.Context) -> dict:
    async def always() -> None:
        mark(ctx.run_id, "always")
        raise ValueError("nope")

    try:
        await ctx.step.run("always", always)
    except inngest.StepError as exc:
        return {"caught": exc.name, "message": exc.message}
    return {"caught": None}


app = fastapi.FastAPI()
inngest.fast_api.serve(app, client, [two_steps, sleeper, flaky_step, non_retriable, fn_error, retry_after,
                                         step_exhausted])
