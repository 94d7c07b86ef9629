"""A sync Flask app on the official `inngest` SDK, unmodified (served by uvicorn's WSGI interface).

The same functions as `fastapi_app.py`, written with `inngest.ContextSync`.
"""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path

import flask
import inngest
import inngest.flask

COUNT_DIR = Path(os.environ["COMPAT_DIR"])
client = inngest.Inngest(app_id="compat-flask", is_production=False)


def mark(run_id: str, label: str) -> int:
    """Record one execution of `label`; returns how many there have been (this one included)."""
    path = COUNT_DIR / f"{run_id}.{label}"
    with path.open("a") as f:
        f.write("x\n")
    return len(path.read_text().splitlines())


@client.create_function(fn_id="two-steps", trigger=inngest.TriggerEvent(event="compat/two-steps"))
def two_steps(ctx: inngest.ContextSync) -> dict:
    x = ctx.event.data["x"]
    a = ctx.step.run("first", lambda: f"{x}-a")
    b = ctx.step.run("second", lambda prev: {"prev": prev, "b": 2}, a)
    return {"a": a, "b": b}


@client.create_function(fn_id="sleep", trigger=inngest.TriggerEvent(event="compat/sleep"))
def sleeper(ctx: inngest.ContextSync) -> str:
    ctx.step.run("before", lambda: "before")
    ctx.step.sleep("nap", datetime.timedelta(seconds=1))
    return ctx.step.run("after", lambda: "after")


@client.create_function(fn_id="flaky-step", retries=1, trigger=inngest.TriggerEvent(event="compat/flaky-step"))
def flaky_step(ctx: inngest.ContextSync) -> dict:
    def flaky() -> str:
        if mark(ctx.run_id, "flaky") == 1:
            raise ValueError("first attempt fails")
        return "recovered"

    return {"flaky": ctx.step.run("flaky", flaky)}


@client.create_function(fn_id="non-retriable", retries=3, trigger=inngest.TriggerEvent(event="compat/non-retriable"))
def non_retriable(ctx: inngest.ContextSync) -> None:
    mark(ctx.run_id, "body")
    raise inngest.NonRetriableError("give up now")


@client.create_function(fn_id="fn-error", retries=1, trigger=inngest.TriggerEvent(event="compat/fn-error"))
def fn_error(ctx: inngest.ContextSync) -> None:
    mark(ctx.run_id, "body")
    raise RuntimeError("function boom")


@client.create_function(fn_id="retry-after", retries=1, trigger=inngest.TriggerEvent(event="compat/retry-after"))
def retry_after(ctx: inngest.ContextSync) -> str:
    if mark(ctx.run_id, "body") == 1:
        raise inngest.RetryAfterError("busy", datetime.timedelta(seconds=1))
    return "done"


@client.create_function(fn_id="step-exhausted", retries=1,
                        trigger=inngest.TriggerEvent(event="compat/step-exhausted"))
def step_exhausted(ctx: inngest.ContextSync) -> dict:
    def always() -> None:
        mark(ctx.run_id, "always")
        raise ValueError("nope")

    try:
        ctx.step.run("always", always)
    except inngest.StepError as exc:
        return {"caught": exc.name, "message": exc.message}
    return {"caught": None}


# ---------------------------------------------------------------------------------------------- waits

@client.create_function(fn_id="wait-event", trigger=inngest.TriggerEvent(event="compat/wait-start"))
def wait_event(ctx: inngest.ContextSync) -> dict | None:
    got = ctx.step.wait_for_event("wait", event="compat/wait-done", if_exp="event.data.id == async.data.id",
                                  timeout=datetime.timedelta(seconds=30))
    return None if got is None else got.data


@client.create_function(fn_id="wait-twice", trigger=inngest.TriggerEvent(event="compat/wait-twice"))
def wait_twice(ctx: inngest.ContextSync) -> list:
    # Two waits for the same event: one event resolves the first only; the second times out with None.
    a = ctx.step.wait_for_event("a", event="compat/go", if_exp="event.data.id == async.data.id",
                                timeout=datetime.timedelta(seconds=30))
    b = ctx.step.wait_for_event("b", event="compat/go", if_exp="event.data.id == async.data.id",
                                timeout=datetime.timedelta(seconds=1))
    return [None if a is None else a.data, None if b is None else b.data]


# --------------------------------------------------------------------------------------------- invoke

@client.create_function(fn_id="invoke-child", retries=0, trigger=inngest.TriggerEvent(event="compat/never"))
def invoke_child(ctx: inngest.ContextSync) -> int:
    if ctx.event.data.get("fail"):
        raise inngest.NonRetriableError("child says no")
    return int(ctx.event.data["x"]) * 2


@client.create_function(fn_id="invoke-slow", retries=0, trigger=inngest.TriggerEvent(event="compat/never"))
def invoke_slow(ctx: inngest.ContextSync) -> str:
    ctx.step.sleep("zz", datetime.timedelta(seconds=3))
    return "late"


@client.create_function(fn_id="invoke-parent", trigger=inngest.TriggerEvent(event="compat/invoke"))
def invoke_parent(ctx: inngest.ContextSync) -> dict:
    out: dict = {"ok": ctx.step.invoke("ok", function=invoke_child, data={"x": 21})}
    try:
        ctx.step.invoke("bad", function=invoke_child, data={"fail": True})
    except inngest.StepError as exc:
        out["bad"] = {"name": exc.name, "message": exc.message}
    try:
        ctx.step.invoke("slow", function=invoke_slow, data={}, timeout=datetime.timedelta(seconds=1))
    except inngest.StepError as exc:
        out["slow"] = {"name": exc.name}
    return out


# ----------------------------------------------------------------------------------------- send_event

@client.create_function(fn_id="sender", trigger=inngest.TriggerEvent(event="compat/sender"))
def sender(ctx: inngest.ContextSync) -> list[str]:
    tag = ctx.event.data["tag"]
    return ctx.step.send_event("send", [inngest.Event(name="compat/sent", data={"tag": tag, "n": 1}),
                                        inngest.Event(name="compat/sent", data={"tag": tag, "n": 2})])


@client.create_function(fn_id="on-sent", trigger=inngest.TriggerEvent(event="compat/sent"))
def on_sent(ctx: inngest.ContextSync) -> dict:
    return {"got": ctx.event.data["n"]}


# ------------------------------------------------------------------------------------ parallel steps
# Each call of these bodies is counted (`call`), like the official SDK's request_counter.

@client.create_function(fn_id="parallel-steps", retries=0, trigger=inngest.TriggerEvent(event="compat/parallel"))
def parallel_steps(ctx: inngest.ContextSync) -> list:
    mark(ctx.run_id, "call")

    def step(name: str, value: int) -> int:
        mark(ctx.run_id, name)
        return value

    group = ctx.group.parallel((
        lambda: ctx.step.run("1a", step, "1a", 1),
        lambda: ctx.step.run("1b", step, "1b", 2),
        lambda: ctx.step.send_event("send", inngest.Event(name="compat/noop")),
    ))
    after = ctx.step.run("after", step, "after", 3)
    return [list(group), after]


@client.create_function(fn_id="parallel-invoke-child", retries=0, trigger=inngest.TriggerEvent(event="compat/never"))
def parallel_invoke_child(ctx: inngest.ContextSync) -> str:
    ctx.step.sleep("sleep", datetime.timedelta(seconds=1))
    return "done"


@client.create_function(fn_id="parallel-mode-default", retries=0,
                        trigger=inngest.TriggerEvent(event="compat/parallel-default"))
def parallel_mode_default(ctx: inngest.ContextSync) -> list:
    mark(ctx.run_id, "call")

    def step(name: str, value: int) -> int:
        mark(ctx.run_id, name)
        return value

    group = ctx.group.parallel((
        lambda: ctx.step.invoke("invoke", function=parallel_invoke_child),
        lambda: ctx.step.run("1a", step, "1a", 1),
        lambda: ctx.step.run("1b", step, "1b", 2),
        lambda: ctx.step.send_event("send", inngest.Event(name="compat/noop")),
    ))
    after = ctx.step.run("after", step, "after", 3)
    return [list(group), after]


@client.create_function(fn_id="parallel-race", retries=0, trigger=inngest.TriggerEvent(event="compat/race"))
def parallel_race(ctx: inngest.ContextSync) -> list:
    mark(ctx.run_id, "call")

    def step(name: str) -> str:
        mark(ctx.run_id, name)
        return name.upper()

    group = ctx.group.parallel(tuple((lambda n=n: ctx.step.run(n, step, n)) for n in ("a", "b", "c")),
                               parallel_mode=inngest.ParallelMode.RACE)
    after = ctx.step.run("after", step, "after")
    return [list(group), after]


@client.create_function(fn_id="parallel-race-groups", retries=0,
                        trigger=inngest.TriggerEvent(event="compat/race-groups"))
def parallel_race_groups(ctx: inngest.ContextSync) -> None:
    """The official SDK's `parallel_mode_race` shape: two groups of sequential steps, the second slow
    (1 s a step here; 2 s there)."""
    mark(ctx.run_id, "call")

    def step(name: str, delay: float) -> None:
        time.sleep(delay)
        with (COUNT_DIR / f"{ctx.run_id}.order").open("a") as f:
            f.write(f"{name}\n")

    def fast_group() -> None:
        ctx.step.run("a.1", step, "a.1", 0)
        ctx.step.run("a.2", step, "a.2", 0)

    def slow_group() -> None:
        ctx.step.run("b.1", step, "b.1", 1)
        ctx.step.run("b.2", step, "b.2", 1)

    ctx.group.parallel((fast_group, slow_group), parallel_mode=inngest.ParallelMode.RACE)


# ------------------------------------------------------------------------------ cancel and timeouts

@client.create_function(fn_id="cancellable", trigger=inngest.TriggerEvent(event="compat/cancellable"),
                        cancel=[inngest.Cancel(event="compat/stop", if_exp="event.data.id == async.data.id")])
def cancellable(ctx: inngest.ContextSync) -> str:
    ctx.step.sleep("long", datetime.timedelta(hours=1))
    return "woke"


@client.create_function(fn_id="bulk-sleep", trigger=inngest.TriggerEvent(event="compat/bulk-sleep"))
def bulk_sleep(ctx: inngest.ContextSync) -> str:
    ctx.step.sleep("long", datetime.timedelta(hours=1))
    return "woke"


@client.create_function(fn_id="bounded", trigger=inngest.TriggerEvent(event="compat/bounded"),
                        timeouts=inngest.Timeouts(finish=datetime.timedelta(seconds=1)))
def bounded(ctx: inngest.ContextSync) -> str:
    ctx.step.sleep("long", datetime.timedelta(hours=1))
    return "woke"


# ---------------------------------------------------------------------------------------- on_failure

def fragile_failed(ctx: inngest.ContextSync) -> dict:
    return dict(ctx.event.data)


@client.create_function(fn_id="fragile", retries=0, trigger=inngest.TriggerEvent(event="compat/fragile"),
                        on_failure=fragile_failed)
def fragile(ctx: inngest.ContextSync) -> None:
    raise ValueError("broken")


# ------------------------------------------------------------------------------------------ triggers

@client.create_function(fn_id="filtered", trigger=[
    inngest.TriggerEvent(event="compat/order", expression="event.data.total > 100"),
    inngest.TriggerEvent(event="compat/order-alt"),
])
def filtered(ctx: inngest.ContextSync) -> dict:
    return {"name": ctx.event.name, "total": ctx.event.data.get("total")}


# A yearly schedule, so it never fires by itself during a test session; the test makes its tick due.
@client.create_function(fn_id="cron", trigger=inngest.TriggerCron(cron="0 0 1 1 *"))
def cron(ctx: inngest.ContextSync) -> dict:
    return {"name": ctx.event.name, "data": dict(ctx.event.data)}


FUNCTIONS = [two_steps, sleeper, flaky_step, non_retriable, fn_error, retry_after, step_exhausted, wait_event,
             wait_twice, invoke_child, invoke_slow, invoke_parent, sender, on_sent, parallel_steps,
             parallel_invoke_child, parallel_mode_default, parallel_race, parallel_race_groups,
             cancellable, bulk_sleep, bounded, fragile,
             filtered, cron]

app = flask.Flask(__name__)
inngest.flask.serve(app, client, FUNCTIONS)
