"""A sync Flask app on the official `inngest` SDK, unmodified (served by uvicorn's WSGI interface).

The same functions as `fastapi_app.py`, written with `inngest.ContextSync`.
"""

from __future__ import annotations

import datetime
import os
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


app = flask.Flask(__name__)
inngest.flask.serve(app, client, [two_steps, sleeper, flaky_step, non_retriable, fn_error, retry_after,
                                     step_exhausted])
