from __future__ import annotations

from datetime import timedelta
from typing import Any

import flask
import orjson
import pytest
from sdk_harness import FakeServer, Reply, ServerLoop, call_body, reply_of

import ratchet
import ratchet.sdk.flask
from ratchet import protocol

EVENT = {"name": "shop/order.created", "data": {"id": 7}, "id": "evt-0", "ts": 1700000000000}


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def app(server: FakeServer) -> flask.Flask:
    client = ratchet.Client(app_id="shop", is_production=False, transport=server.transport())
    trigger = ratchet.on_event("shop/order.created")
    runs: list[int] = []

    def double(x: int) -> int:
        runs.append(x)
        return x * 2

    @client.function(id="multi", trigger=trigger, retries=1)
    def multi(ctx: ratchet.Context) -> dict[str, Any]:
        a = ctx.step.run("a", double, ctx.event.data["id"])
        b = ctx.step.run("b", double, a)
        ctx.step.sleep("nap", 5_000)  # int milliseconds
        ids = ctx.step.send_event("tell", ratchet.Event(name="shop/done"))
        return {"a": a, "b": b, "ids": ids}

    def boom() -> None:
        raise RuntimeError("kaput")

    @client.function(id="flaky", trigger=trigger)
    def flaky(ctx: ratchet.Context) -> None:
        ctx.step.run("boom", boom)

    @client.function(id="fatal", trigger=trigger)
    def fatal(ctx: ratchet.Context) -> None:
        raise ratchet.NonRetriableError("stop")

    @client.function(id="later", trigger=trigger)
    def later(ctx: ratchet.Context) -> None:
        raise ratchet.RetryAfterError("busy", timedelta(minutes=1))

    async def aboom() -> None:
        raise ValueError("async kaput")

    @client.function(id="async-fn", trigger=trigger)
    async def async_fn(ctx: ratchet.Context) -> dict[str, Any]:
        a = await ctx.step.run("a", double, 1)
        try:
            await ctx.step.run("bad", aboom)
        except ratchet.StepError as err:
            return {"a": a, "err": err.message}
        return {}

    app = flask.Flask(__name__)
    app.config["runs"] = runs
    ratchet.sdk.flask.serve(app, client, [multi, flaky, fatal, later, async_fn])
    return app


def drive(app: flask.Flask, loop: ServerLoop) -> Reply:
    http = app.test_client()
    for _ in range(20):
        url, body = loop.next_call()
        if loop.on_reply(reply_of(http.post(url, data=body, content_type="application/json"))):
            assert loop.result is not None
            return loop.result
    raise AssertionError("run did not finish")


def test_sync_function_runs_to_completion(app: flask.Flask, server: FakeServer) -> None:
    loop = ServerLoop("shop-multi", EVENT)
    result = drive(app, loop)
    assert result.status == 200
    assert result.body == {"a": 14, "b": 28, "ids": ["evt-0"]}
    assert result.headers["x-inngest-framework"] == "flask"
    assert result.headers["x-inngest-sdk"] == "ratchet-py:v0.1.0"
    assert [op["op"] for op in loop.ops] == ["StepRun", "StepRun", "Sleep", "StepRun"]
    assert app.config["runs"] == [7, 14]
    assert server.sent[0][1][0]["name"] == "shop/done"


def test_async_function_under_flask(app: flask.Flask) -> None:
    loop = ServerLoop("shop-async-fn", EVENT, max_attempts=1)
    result = drive(app, loop)
    assert result.body == {"a": 2, "err": "async kaput"}
    assert [op["op"] for op in loop.ops] == ["StepRun", "StepFailed"]


@pytest.mark.parametrize(("attempt", "op"), [(0, "StepError"), (3, "StepFailed")])
def test_step_error_then_failed(app: flask.Flask, attempt: int, op: str) -> None:
    body = orjson.dumps(call_body(EVENT, {}, attempt=attempt, max_attempts=4))
    reply = reply_of(app.test_client().post("/api/inngest?fnId=shop-flaky&stepId=step", data=body))
    assert reply.status == 206
    assert reply.body[0]["op"] == op
    assert reply.body[0]["error"]["message"] == "kaput"


def test_function_level_errors(app: flask.Flask) -> None:
    http = app.test_client()
    body = orjson.dumps(call_body(EVENT, {}))
    fatal = reply_of(http.post("/api/inngest?fnId=shop-fatal&stepId=step", data=body))
    assert fatal.status == 500 and fatal.headers["x-inngest-no-retry"] == "true"
    later = reply_of(http.post("/api/inngest?fnId=shop-later&stepId=step", data=body))
    assert later.status == 500 and later.headers["retry-after"].endswith("Z")
    missing = reply_of(http.post("/api/inngest?fnId=shop-nope&stepId=step", data=body))
    assert missing.status == 500 and missing.body["code"] == "function_not_found"


def test_sync_and_introspection(app: flask.Flask, server: FakeServer) -> None:
    http = app.test_client()
    reply = reply_of(http.put("/api/inngest"))
    assert reply.status == 200 and reply.headers["x-inngest-sync-kind"] == "out_of_band"
    body = orjson.loads(server.registrations[0].content)
    assert body["framework"] == "flask"
    assert body["url"] == "http://localhost/api/inngest"
    assert {f["id"] for f in body["functions"]} == {"shop-multi", "shop-flaky", "shop-fatal", "shop-later",
                                                     "shop-async-fn"}
    intro = reply_of(http.get("/api/inngest"))
    assert intro.body["function_count"] == 5 and intro.body["mode"] == "dev"


def test_targeted_call(app: flask.Flask) -> None:
    memo = {protocol.step_hash("a"): {"data": 14}}
    body = orjson.dumps(call_body(EVENT, memo))
    reply = reply_of(app.test_client().post(
        f"/api/inngest?fnId=shop-multi&stepId={protocol.step_hash('b')}", data=body))
    assert reply.status == 206 and reply.body[0]["data"] == 28
