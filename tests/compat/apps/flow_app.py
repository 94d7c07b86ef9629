"""An async FastAPI app on the official `inngest` SDK, unmodified: flow-control functions.

Functions record what ran in `$COMPAT_DIR/<key>.<label>` files (one line per execution), keyed by a
value from the event data, so tests that share the app tell their records apart by a fresh key.

A second client (`compat-flow-bad`) is served at `/api/bad` and is never synced at start-up: its
function combines `batch_events` with `cancel`, which the server must reject when asked to sync it.
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

COUNT_DIR = Path(os.environ["COMPAT_DIR"])
client = inngest.Inngest(app_id="compat-flow", is_production=False)
bad_client = inngest.Inngest(app_id="compat-flow-bad", is_production=False)

SECOND = datetime.timedelta(seconds=1)


def record(key: str, label: str, line: str = "x") -> None:
    """Append `line` to `<key>.<label>`: one line per execution."""
    with (COUNT_DIR / f"{key}.{label}").open("a") as f:
        f.write(f"{line}\n")


# A step's body sleeps this long, so that step bodies of different runs would overlap if allowed to.
STEP_S = 0.15


@client.create_function(fn_id="concurrency", retries=0, trigger=inngest.TriggerEvent(event="flow/concurrency"),
                        concurrency=[inngest.Concurrency(limit=1, key="event.data.tenant")])
async def concurrency(ctx: inngest.Context) -> str:
    tenant = ctx.event.data["tenant"]

    async def work() -> None:
        start = time.time()
        await asyncio.sleep(STEP_S)
        record(tenant, "spans", f"{start} {time.time()}")  # enter and exit of this step body

    await ctx.step.run("one", work)
    await ctx.step.run("two", work)
    return tenant


@client.create_function(fn_id="throttle", retries=0, trigger=inngest.TriggerEvent(event="flow/throttle"),
                        throttle=inngest.Throttle(limit=2, period=SECOND, key="event.data.k"))
async def throttle(ctx: inngest.Context) -> float:
    return time.time()


@client.create_function(fn_id="rate-limit", retries=0, trigger=inngest.TriggerEvent(event="flow/rate-limit"),
                        rate_limit=inngest.RateLimit(limit=2, period=datetime.timedelta(minutes=1),
                                                     key="event.data.k"))
async def rate_limit(ctx: inngest.Context) -> int:
    record(ctx.event.data["k"], "body")
    return int(ctx.event.data["n"])


@client.create_function(fn_id="debounce", retries=0, trigger=inngest.TriggerEvent(event="flow/debounce"),
                        debounce=inngest.Debounce(period=SECOND, key="event.data.k"))
async def debounce(ctx: inngest.Context) -> dict:
    record(ctx.event.data["k"], "body")
    return {"data": dict(ctx.event.data), "events": len(ctx.events)}


@client.create_function(fn_id="batch", retries=0, trigger=inngest.TriggerEvent(event="flow/batch"),
                        batch_events=inngest.Batch(max_size=3, timeout=SECOND, key="event.data.k"))
async def batch(ctx: inngest.Context) -> dict:
    return {"first": ctx.event.data["n"], "events": [e.data["n"] for e in ctx.events]}


@client.create_function(fn_id="priority", retries=0, trigger=inngest.TriggerEvent(event="flow/priority"),
                        concurrency=[inngest.Concurrency(limit=1, key="event.data.group")],
                        priority=inngest.Priority(run="event.data.prio"))
async def priority(ctx: inngest.Context) -> str:
    tag = ctx.event.data["tag"]
    record(ctx.event.data["group"], "order", tag)
    if ctx.event.data.get("hold"):
        await asyncio.sleep(0.5)  # holds the group's one slot while the others queue up
    return tag


async def _hold(ctx: inngest.Context) -> int:
    await ctx.step.wait_for_event("hold", event="flow/release", if_exp="event.data.k == async.data.k",
                                  timeout=datetime.timedelta(seconds=30))
    return int(ctx.event.data["n"])


@client.create_function(fn_id="singleton-skip", retries=0, trigger=inngest.TriggerEvent(event="flow/singleton-skip"),
                        singleton=inngest.Singleton(key="event.data.k", mode="skip"))
async def singleton_skip(ctx: inngest.Context) -> int:
    return await _hold(ctx)


@client.create_function(fn_id="singleton-cancel", retries=0,
                        trigger=inngest.TriggerEvent(event="flow/singleton-cancel"),
                        singleton=inngest.Singleton(key="event.data.k", mode="cancel"))
async def singleton_cancel(ctx: inngest.Context) -> int:
    return await _hold(ctx)


@client.create_function(fn_id="idempotency", retries=0, trigger=inngest.TriggerEvent(event="flow/idempotency"),
                        idempotency="event.data.order")
async def idempotency(ctx: inngest.Context) -> str:
    record(ctx.event.data["order"], "body")
    return str(ctx.event.data["order"])


FUNCTIONS = [concurrency, throttle, rate_limit, debounce, batch, priority, singleton_skip, singleton_cancel,
             idempotency]


@bad_client.create_function(fn_id="batch-cancel", trigger=inngest.TriggerEvent(event="flow/bad"),
                            batch_events=inngest.Batch(max_size=2, timeout=SECOND),
                            cancel=[inngest.Cancel(event="flow/bad-stop")])
async def batch_cancel(ctx: inngest.Context) -> None:
    return None


app = fastapi.FastAPI()
inngest.fast_api.serve(app, client, FUNCTIONS)
inngest.fast_api.serve(app, bad_client, [batch_cancel], serve_path="/api/bad")
