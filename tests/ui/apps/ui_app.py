"""The app the dashboard tests drive: a FastAPI app on Ratchet's own SDK, synced to a real server.

Its behaviour is steered at run time through files in `$UI_DIR` (the test's directory):
- a step body appends its run id to `<label>.log` each time it runs, so a test can count executions;
- `broken` present: step "charge" of `ui-checkout` raises (retries 0, so the run fails); removing the file
  is "fixing the app";
- `release` present: step "wait-for-release" of `ui-pipeline` returns (it holds its call open until then,
  so a test can watch the run in the middle);
- `gate-open` present: step "hold" of `ui-gate` returns. `ui-gate` runs one step at a time (concurrency 1),
  so while one run holds the gate the others stay QUEUED.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from pathlib import Path

import fastapi

import ratchet
import ratchet.sdk.fastapi

DIR = Path(os.environ["UI_DIR"])
#: The release step gives up after this long (a test that never releases it still ends).
RELEASE_MAX_S = 60.0

client = ratchet.Client(app_id="ui")  # mode, keys and URLs from the INNGEST_* environment


async def wait_for_file(name: str) -> str:
    """Hold the step's call open until `$UI_DIR/<name>` exists (or RELEASE_MAX_S pass)."""
    deadline = time.monotonic() + RELEASE_MAX_S
    while not (DIR / name).exists() and time.monotonic() < deadline:  # noqa: ASYNC110 - polls a file
        await asyncio.sleep(0.02)
    return "released"


def mark(label: str, run_id: str) -> None:
    with (DIR / f"{label}.log").open("a") as f:
        f.write(f"{run_id}\n")


@client.function(id="hello", name="Say hello", trigger=ratchet.on_event("ui/hello"))
async def hello(ctx: ratchet.Context) -> str:
    who = await ctx.step.run("greet", lambda: ctx.event.data.get("who", "world"))
    return f"Hello, {who}!"


@client.function(id="fail", name="Always fails", retries=0, trigger=ratchet.on_event("ui/fail"))
async def fail(ctx: ratchet.Context) -> None:
    raise ratchet.NonRetriableError("this function always fails")


@client.function(id="sleeper", name="Long sleeper", trigger=ratchet.on_event("ui/sleep"))
async def sleeper(ctx: ratchet.Context) -> str:
    await ctx.step.run("before", lambda: "before")
    await ctx.step.sleep("nap", timedelta(hours=1))
    return await ctx.step.run("after", lambda: "after")


@client.function(id="pipeline", name="Pipeline", trigger=ratchet.on_event("ui/pipeline"))
async def pipeline(ctx: ratchet.Context) -> dict:
    fetched = await ctx.step.run("fetch", lambda: {"items": 3})
    await ctx.step.sleep("pause", timedelta(milliseconds=300))
    released = await ctx.step.run("wait-for-release", wait_for_file, "release")
    total = await ctx.step.run("summarize", lambda: fetched["items"] * 2)
    return {"released": released, "total": total}


@client.function(id="checkout", name="Checkout", retries=0, trigger=ratchet.on_event("ui/checkout"))
async def checkout(ctx: ratchet.Context) -> dict:
    def reserve() -> str:
        mark("reserve", ctx.run_id)
        return f"reserved-{ctx.event.data.get('order', '?')}"

    def charge(reservation: str) -> str:
        mark("charge", ctx.run_id)
        if (DIR / "broken").exists():
            raise RuntimeError("payment provider is down")
        return f"charged-{reservation}"

    reservation = await ctx.step.run("reserve", reserve)
    receipt = await ctx.step.run("charge", charge, reservation)
    return {"receipt": receipt}


@client.function(id="gate", name="Gate", trigger=ratchet.on_event("ui/gate"),
                 concurrency=ratchet.Concurrency(limit=1))
async def gate(ctx: ratchet.Context) -> str:
    return await ctx.step.run("hold", wait_for_file, "gate-open")  # type: ignore[no-any-return]


@client.function(id="approval", name="Approval", trigger=ratchet.on_event("ui/order"))
async def approval(ctx: ratchet.Context) -> dict:
    order = ctx.event.data.get("order")
    approved = await ctx.step.wait_for_event("await-approval", event="ui/approved", timeout=timedelta(hours=1),
                                             if_exp="async.data.order == event.data.order")
    return {"order": order, "approved_by": None if approved is None else approved.data.get("by")}


@client.function(id="parent", name="Parent", trigger=ratchet.on_event("ui/parent"))
async def parent(ctx: ratchet.Context) -> dict:
    greeting = await ctx.step.invoke("call-hello", function=hello, data={"who": "the parent"})
    return {"child_said": greeting}


@client.function(id="snooze", name="Snooze", trigger=ratchet.on_event("ui/snooze"))
async def snooze(ctx: ratchet.Context) -> str:
    async def work() -> str:
        await asyncio.sleep(1.0)  # a step of a second, to see on the timeline next to a sleep of days
        return "worked"

    await ctx.step.run("work", work)
    await ctx.step.sleep("hibernate", timedelta(days=3))
    return "rested"


FUNCTIONS = [hello, fail, sleeper, pipeline, checkout, gate, approval, parent, snooze]
app = fastapi.FastAPI()
ratchet.sdk.fastapi.serve(app, client, FUNCTIONS)
