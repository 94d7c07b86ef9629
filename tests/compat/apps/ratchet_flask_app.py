"""A sync Flask app on Ratchet's own SDK (`ratchet.sdk`, plain `def` functions), served by uvicorn's WSGI
interface and synced to a real `ratchet dev`.

Function and step bodies append a line to `$COMPAT_DIR/<run id>.<label>` when they run (`mark`), so a test
can tell how often code really ran.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import flask

import ratchet
import ratchet.sdk.flask

COUNT_DIR = Path(os.environ["COMPAT_DIR"])
client = ratchet.Client(app_id="rflask")


def mark(run_id: str, label: str) -> int:
    """Record one execution of `label`; returns how many there have been (this one included)."""
    path = COUNT_DIR / f"{run_id}.{label}"
    with path.open("a") as f:
        f.write("x\n")
    return len(path.read_text().splitlines())


@client.function(id="two-steps", trigger=ratchet.on_event("rflask/two-steps"))
def two_steps(ctx: ratchet.Context) -> dict:
    x = ctx.event.data["x"]
    a = ctx.step.run("first", lambda: f"{x}-a")
    b = ctx.step.run("second", lambda prev: {"prev": prev, "b": 2}, a)
    return {"a": a, "b": b}


@client.function(id="sleep", trigger=ratchet.on_event("rflask/sleep"))
def sleeper(ctx: ratchet.Context) -> str:
    ctx.step.run("before", lambda: "before")
    ctx.step.sleep("nap", datetime.timedelta(seconds=1))
    return ctx.step.run("after", lambda: "after")


@client.function(id="flaky-step", retries=1, trigger=ratchet.on_event("rflask/flaky-step"))
def flaky_step(ctx: ratchet.Context) -> dict:
    def flaky() -> str:
        if mark(ctx.run_id, "flaky") == 1:
            raise ValueError("first attempt fails")
        return "recovered"

    return {"flaky": ctx.step.run("flaky", flaky)}


@client.function(id="non-retriable", retries=3, trigger=ratchet.on_event("rflask/non-retriable"))
def non_retriable(ctx: ratchet.Context) -> None:
    mark(ctx.run_id, "body")
    raise ratchet.NonRetriableError("give up now")


# ---------------------------------------------------------------------------------------------- waits

@client.function(id="wait-event", trigger=ratchet.on_event("rflask/wait-start"))
def wait_event(ctx: ratchet.Context) -> dict | None:
    got = ctx.step.wait_for_event("wait", event="rflask/wait-done", if_exp="event.data.id == async.data.id",
                                  timeout=datetime.timedelta(seconds=30))
    return None if got is None else {"name": got.name, "data": got.data}


@client.function(id="wait-timeout", trigger=ratchet.on_event("rflask/wait-timeout"))
def wait_timeout(ctx: ratchet.Context) -> dict:
    got = ctx.step.wait_for_event("wait", event="rflask/never", timeout=datetime.timedelta(seconds=1))
    return {"got": got, "after": ctx.step.run("after", lambda: "after")}


# --------------------------------------------------------------------------------------------- invoke

@client.function(id="invoke-child", retries=0, trigger=ratchet.on_event("rflask/never"))
def invoke_child(ctx: ratchet.Context) -> int:
    if ctx.event.data.get("fail"):
        raise ratchet.NonRetriableError("child says no")
    return int(ctx.event.data["x"]) * 2


@client.function(id="invoke-parent", trigger=ratchet.on_event("rflask/invoke"))
def invoke_parent(ctx: ratchet.Context) -> dict:
    out: dict = {"ok": ctx.step.invoke("ok", function=invoke_child, data={"x": 21})}
    try:
        ctx.step.invoke("bad", function=invoke_child, data={"fail": True})
    except ratchet.StepError as exc:
        out["bad"] = {"name": exc.name, "message": exc.message}
    return out


# ----------------------------------------------------------------------------------------- send_event

@client.function(id="sender", trigger=ratchet.on_event("rflask/sender"))
def sender(ctx: ratchet.Context) -> list[str]:
    tag = ctx.event.data["tag"]
    return ctx.step.send_event("send", [ratchet.Event(name="rflask/sent", data={"tag": tag, "n": 1}),
                                        ratchet.Event(name="rflask/sent", data={"tag": tag, "n": 2})])


@client.function(id="on-sent", trigger=ratchet.on_event("rflask/sent"))
def on_sent(ctx: ratchet.Context) -> dict:
    return {"got": ctx.event.data["n"], "tag": ctx.event.data["tag"]}


# ------------------------------------------------------------------------------------ parallel steps
# Each call of these bodies is counted (`call`), and each step body (`<step id>`).

@client.function(id="parallel-wait", retries=0, trigger=ratchet.on_event("rflask/parallel"))
def parallel_wait(ctx: ratchet.Context) -> list:
    mark(ctx.run_id, "call")

    def step(name: str, value: int) -> int:
        mark(ctx.run_id, name)
        return value

    group = ctx.group.parallel((
        lambda: ctx.step.run("1a", step, "1a", 1),
        lambda: ctx.step.run("1b", step, "1b", 2),
        lambda: ctx.step.send_event("send", ratchet.Event(name="rflask/noop")),
    ))
    after = ctx.step.run("after", step, "after", 3)
    return [list(group), after]


@client.function(id="parallel-race", retries=0, trigger=ratchet.on_event("rflask/race"))
def parallel_race(ctx: ratchet.Context) -> list:
    mark(ctx.run_id, "call")

    def step(name: str) -> str:
        mark(ctx.run_id, name)
        return name.upper()

    def chain() -> str:
        first = ctx.step.run("c.1", step, "c.1")
        return first + ctx.step.run("c.2", step, "c.2")

    group = ctx.group.parallel((lambda: ctx.step.run("a", step, "a"), lambda: ctx.step.run("b", step, "b"), chain),
                               parallel_mode=ratchet.ParallelMode.RACE)
    after = ctx.step.run("after", step, "after")
    return [list(group), after]


# ------------------------------------------------------------------------------------------- cancel

@client.function(id="cancellable", trigger=ratchet.on_event("rflask/cancellable"),
                 cancel=ratchet.Cancel(event="rflask/stop", if_exp="event.data.id == async.data.id"))
def cancellable(ctx: ratchet.Context) -> str:
    ctx.step.sleep("long", datetime.timedelta(hours=1))
    return "woke"


# ---------------------------------------------------------------------------------------- on_failure

def fragile_failed(ctx: ratchet.Context) -> dict:
    failure = ctx.failure
    assert failure is not None
    return {
        "failure": {"function_id": failure.function_id, "run_id": failure.run_id, "name": failure.name,
                    "message": failure.message, "has_stack": bool(failure.stack),
                    "event": None if failure.event is None else {"name": failure.event.name,
                                                                 "data": failure.event.data}},
        "raw_error": ctx.event.data["error"],
        "event_name": ctx.event.name,
    }


@client.function(id="fragile", retries=0, trigger=ratchet.on_event("rflask/fragile"), on_failure=fragile_failed)
def fragile(ctx: ratchet.Context) -> None:
    ctx.step.run("ok", lambda: "fine")
    raise ValueError("broken")


FUNCTIONS = [two_steps, sleeper, flaky_step, non_retriable, wait_event, wait_timeout, invoke_child, invoke_parent,
             sender, on_sent, parallel_wait, parallel_race, cancellable, fragile]

app = flask.Flask(__name__)
ratchet.sdk.flask.serve(app, client, FUNCTIONS)
