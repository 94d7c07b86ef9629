"""An async FastAPI app on the official `inngest` SDK, unmodified: the compat cases' functions.

Each call of a function body or step body appends a line to `$COMPAT_DIR/<run id>.<label>`, so tests
can count how often code really ran.
"""

from __future__ import annotations

import asyncio
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


# ---------------------------------------------------------------------------------------------- waits

@client.create_function(fn_id="wait-event", trigger=inngest.TriggerEvent(event="compat/wait-start"))
async def wait_event(ctx: inngest.Context) -> dict | None:
    got = await ctx.step.wait_for_event("wait", event="compat/wait-done", if_exp="event.data.id == async.data.id",
                                        timeout=datetime.timedelta(seconds=30))
    return None if got is None else got.data


@client.create_function(fn_id="wait-twice", trigger=inngest.TriggerEvent(event="compat/wait-twice"))
async def wait_twice(ctx: inngest.Context) -> list:
    # Two waits for the same event: one event resolves the first only; the second times out with None.
    a = await ctx.step.wait_for_event("a", event="compat/go", if_exp="event.data.id == async.data.id",
                                      timeout=datetime.timedelta(seconds=30))
    b = await ctx.step.wait_for_event("b", event="compat/go", if_exp="event.data.id == async.data.id",
                                      timeout=datetime.timedelta(seconds=1))
    return [None if a is None else a.data, None if b is None else b.data]


# --------------------------------------------------------------------------------------------- invoke

@client.create_function(fn_id="invoke-child", retries=0, trigger=inngest.TriggerEvent(event="compat/never"))
async def invoke_child(ctx: inngest.Context) -> int:
    if ctx.event.data.get("fail"):
        raise inngest.NonRetriableError("child says no")
    return int(ctx.event.data["x"]) * 2


@client.create_function(fn_id="invoke-slow", retries=0, trigger=inngest.TriggerEvent(event="compat/never"))
async def invoke_slow(ctx: inngest.Context) -> str:
    await ctx.step.sleep("zz", datetime.timedelta(seconds=3))
    return "late"


@client.create_function(fn_id="invoke-parent", trigger=inngest.TriggerEvent(event="compat/invoke"))
async def invoke_parent(ctx: inngest.Context) -> dict:
    out: dict = {"ok": await ctx.step.invoke("ok", function=invoke_child, data={"x": 21})}
    try:
        await ctx.step.invoke("bad", function=invoke_child, data={"fail": True})
    except inngest.StepError as exc:
        out["bad"] = {"name": exc.name, "message": exc.message}
    try:
        await ctx.step.invoke("slow", function=invoke_slow, data={}, timeout=datetime.timedelta(seconds=1))
    except inngest.StepError as exc:
        out["slow"] = {"name": exc.name}
    return out


# ----------------------------------------------------------------------------------------- send_event

@client.create_function(fn_id="sender", trigger=inngest.TriggerEvent(event="compat/sender"))
async def sender(ctx: inngest.Context) -> list[str]:
    tag = ctx.event.data["tag"]
    return await ctx.step.send_event("send", [inngest.Event(name="compat/sent", data={"tag": tag, "n": 1}),
                                              inngest.Event(name="compat/sent", data={"tag": tag, "n": 2})])


@client.create_function(fn_id="on-sent", trigger=inngest.TriggerEvent(event="compat/sent"))
async def on_sent(ctx: inngest.Context) -> dict:
    return {"got": ctx.event.data["n"]}


# ------------------------------------------------------------------------------------ parallel steps
# Each call of these bodies is counted (`call`), like the official SDK's request_counter.

@client.create_function(fn_id="parallel-steps", retries=0, trigger=inngest.TriggerEvent(event="compat/parallel"))
async def parallel_steps(ctx: inngest.Context) -> list:
    mark(ctx.run_id, "call")

    async def step(name: str, value: int) -> int:
        mark(ctx.run_id, name)
        return value

    group = await ctx.group.parallel((
        lambda: ctx.step.run("1a", step, "1a", 1),
        lambda: ctx.step.run("1b", step, "1b", 2),
        lambda: ctx.step.send_event("send", inngest.Event(name="compat/noop")),
    ))
    after = await ctx.step.run("after", step, "after", 3)
    return [list(group), after]


@client.create_function(fn_id="parallel-invoke-child", retries=0, trigger=inngest.TriggerEvent(event="compat/never"))
async def parallel_invoke_child(ctx: inngest.Context) -> str:
    await ctx.step.sleep("sleep", datetime.timedelta(seconds=1))
    return "done"


@client.create_function(fn_id="parallel-mode-default", retries=0,
                        trigger=inngest.TriggerEvent(event="compat/parallel-default"))
async def parallel_mode_default(ctx: inngest.Context) -> list:
    mark(ctx.run_id, "call")

    async def step(name: str, value: int) -> int:
        mark(ctx.run_id, name)
        return value

    group = await ctx.group.parallel((
        lambda: ctx.step.invoke("invoke", function=parallel_invoke_child),
        lambda: ctx.step.run("1a", step, "1a", 1),
        lambda: ctx.step.run("1b", step, "1b", 2),
        lambda: ctx.step.send_event("send", inngest.Event(name="compat/noop")),
    ))
    after = await ctx.step.run("after", step, "after", 3)
    return [list(group), after]


@client.create_function(fn_id="parallel-race", retries=0, trigger=inngest.TriggerEvent(event="compat/race"))
async def parallel_race(ctx: inngest.Context) -> list:
    mark(ctx.run_id, "call")

    async def step(name: str) -> str:
        mark(ctx.run_id, name)
        return name.upper()

    group = await ctx.group.parallel(tuple((lambda n=n: ctx.step.run(n, step, n)) for n in ("a", "b", "c")),
                                     parallel_mode=inngest.ParallelMode.RACE)
    after = await ctx.step.run("after", step, "after")
    return [list(group), after]


@client.create_function(fn_id="parallel-race-groups", retries=0,
                        trigger=inngest.TriggerEvent(event="compat/race-groups"))
async def parallel_race_groups(ctx: inngest.Context) -> None:
    """The official SDK's `parallel_mode_race` shape: two groups of sequential steps, the second slow
    (1 s a step here; 2 s there)."""
    mark(ctx.run_id, "call")

    async def step(name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        with (COUNT_DIR / f"{ctx.run_id}.order").open("a") as f:
            f.write(f"{name}\n")

    async def fast_group() -> None:
        await ctx.step.run("a.1", step, "a.1", 0)
        await ctx.step.run("a.2", step, "a.2", 0)

    async def slow_group() -> None:
        await ctx.step.run("b.1", step, "b.1", 1)
        await ctx.step.run("b.2", step, "b.2", 1)

    await ctx.group.parallel((fast_group, slow_group), parallel_mode=inngest.ParallelMode.RACE)


# ------------------------------------------------------------------------------ cancel and timeouts

@client.create_function(fn_id="cancellable", trigger=inngest.TriggerEvent(event="compat/cancellable"),
                        cancel=[inngest.Cancel(event="compat/stop", if_exp="event.data.id == async.data.id")])
async def cancellable(ctx: inngest.Context) -> str:
    await ctx.step.sleep("long", datetime.timedelta(hours=1))
    return "woke"


@client.create_function(fn_id="bulk-sleep", trigger=inngest.TriggerEvent(event="compat/bulk-sleep"))
async def bulk_sleep(ctx: inngest.Context) -> str:
    await ctx.step.sleep("long", datetime.timedelta(hours=1))
    return "woke"


@client.create_function(fn_id="bounded", trigger=inngest.TriggerEvent(event="compat/bounded"),
                        timeouts=inngest.Timeouts(finish=datetime.timedelta(seconds=1)))
async def bounded(ctx: inngest.Context) -> str:
    await ctx.step.sleep("long", datetime.timedelta(hours=1))
    return "woke"


# ---------------------------------------------------------------------------------------- on_failure

async def fragile_failed(ctx: inngest.Context) -> dict:
    return dict(ctx.event.data)


@client.create_function(fn_id="fragile", retries=0, trigger=inngest.TriggerEvent(event="compat/fragile"),
                        on_failure=fragile_failed)
async def fragile(ctx: inngest.Context) -> None:
    raise ValueError("broken")


# ------------------------------------------------------------------------------------------ triggers

@client.create_function(fn_id="filtered", trigger=[
    inngest.TriggerEvent(event="compat/order", expression="event.data.total > 100"),
    inngest.TriggerEvent(event="compat/order-alt"),
])
async def filtered(ctx: inngest.Context) -> dict:
    return {"name": ctx.event.name, "total": ctx.event.data.get("total")}


# A yearly schedule, so it never fires by itself during a test session; the test makes its tick due.
@client.create_function(fn_id="cron", trigger=inngest.TriggerCron(cron="0 0 1 1 *"))
async def cron(ctx: inngest.Context) -> dict:
    return {"name": ctx.event.name, "data": dict(ctx.event.data)}


FUNCTIONS = [two_steps, sleeper, flaky_step, non_retriable, fn_error, retry_after, step_exhausted, wait_event,
             wait_twice, invoke_child, invoke_slow, invoke_parent, sender, on_sent, parallel_steps,
             parallel_invoke_child, parallel_mode_default, parallel_race, parallel_race_groups,
             cancellable, bulk_sleep, bounded, fragile,
             filtered, cron]

app = fastapi.FastAPI()
inngest.fast_api.serve(app, client, FUNCTIONS)

