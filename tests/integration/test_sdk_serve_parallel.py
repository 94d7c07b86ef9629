"""Parallel groups end to end against the in-memory server loop (reference §2.5, §2.6): plan → targeted
calls → discovery, in WAIT and RACE mode, for `async def` functions (FastAPI) and `def` functions (Flask)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import fastapi
import flask
import httpx
import orjson
import pytest
from sdk_harness import FakeServer, Reply, ServerLoop, reply_of

import ratchet
import ratchet.sdk.fastapi
import ratchet.sdk.flask
from ratchet import protocol

EVENT = {"name": "shop/go", "data": {"id": 7}, "id": "evt-0", "ts": 1700000000000}
WAITED = {"name": "shop/paid", "data": {"id": 7}, "id": "evt-9", "ts": 1700000000900}
h = protocol.step_hash
Post = Callable[[str, bytes], Reply]


def async_functions(client: ratchet.Client, ran: list[str]) -> list[ratchet.Function[Any]]:
    trigger = ratchet.on_event("shop/go")

    def work(name: str) -> Callable[[], str]:
        async def handler() -> str:
            ran.append(name)
            return name.upper()
        return handler

    @client.function(id="fanout", trigger=trigger)
    async def fanout(ctx: ratchet.Context) -> Any:
        par = await ctx.group.parallel((
            lambda: ctx.step.run("1a", work("1a")),
            lambda: ctx.step.run("1b", work("1b")),
            lambda: ctx.step.send_event("send", ratchet.Event(name="shop/fanned")),
        ))
        return {"par": list(par), "after": await ctx.step.run("after", work("after"))}

    def chains(mode: ratchet.ParallelMode) -> Any:
        async def fn(ctx: ratchet.Context) -> Any:
            async def chain(p: str) -> str:
                one = await ctx.step.run(f"{p}1", work(f"{p}1"))
                return one + await ctx.step.run(f"{p}2", work(f"{p}2"))

            return list(await ctx.group.parallel((lambda: chain("a"), lambda: chain("b")), parallel_mode=mode))
        return fn

    def bad() -> None:
        ran.append("bad")
        raise ValueError("bad step")

    @client.function(id="flaky", trigger=trigger, retries=1)
    async def flaky(ctx: ratchet.Context) -> Any:
        try:
            await ctx.group.parallel((lambda: ctx.step.run("ok", work("ok")), lambda: ctx.step.run("bad", bad)))
        except ratchet.StepError as err:
            return {"caught": err.name, "message": err.message}
        return "unreachable"

    @client.function(id="mixed", trigger=trigger)
    async def mixed(ctx: ratchet.Context) -> Any:
        a, slept, paid = await ctx.group.parallel((
            lambda: ctx.step.run("a", work("a")),
            lambda: ctx.step.sleep("nap", timedelta(seconds=5)),
            lambda: ctx.step.wait_for_event("paid", event="shop/paid", timeout=timedelta(hours=1)),
        ))
        return [a, slept, paid.to_wire() if paid else None]

    return [fanout, flaky, mixed,
            client.function(id="chains-wait", trigger=trigger)(chains(ratchet.ParallelMode.WAIT)),
            client.function(id="chains-race", trigger=trigger)(chains(ratchet.ParallelMode.RACE))]


def sync_functions(client: ratchet.Client, ran: list[str]) -> list[ratchet.Function[Any]]:
    trigger = ratchet.on_event("shop/go")

    def work(name: str) -> Callable[[], str]:
        def handler() -> str:
            ran.append(name)
            return name.upper()
        return handler

    @client.function(id="fanout", trigger=trigger)
    def fanout(ctx: ratchet.Context) -> Any:
        par = ctx.group.parallel((
            lambda: ctx.step.run("1a", work("1a")),
            lambda: ctx.step.run("1b", work("1b")),
            lambda: ctx.step.send_event("send", ratchet.Event(name="shop/fanned")),
        ))
        return {"par": list(par), "after": ctx.step.run("after", work("after"))}

    def chains(mode: ratchet.ParallelMode) -> Any:
        def fn(ctx: ratchet.Context) -> Any:
            def chain(p: str) -> str:
                return ctx.step.run(f"{p}1", work(f"{p}1")) + ctx.step.run(f"{p}2", work(f"{p}2"))

            return list(ctx.group.parallel((lambda: chain("a"), lambda: chain("b")), parallel_mode=mode))
        return fn

    def bad() -> None:
        ran.append("bad")
        raise ValueError("bad step")

    @client.function(id="flaky", trigger=trigger, retries=1)
    def flaky(ctx: ratchet.Context) -> Any:
        try:
            ctx.group.parallel((lambda: ctx.step.run("ok", work("ok")), lambda: ctx.step.run("bad", bad)))
        except ratchet.StepError as err:
            return {"caught": err.name, "message": err.message}
        return "unreachable"

    @client.function(id="mixed", trigger=trigger)
    def mixed(ctx: ratchet.Context) -> Any:
        a, slept, paid = ctx.group.parallel((
            lambda: ctx.step.run("a", work("a")),
            lambda: ctx.step.sleep("nap", timedelta(seconds=5)),
            lambda: ctx.step.wait_for_event("paid", event="shop/paid", timeout=timedelta(hours=1)),
        ))
        return [a, slept, paid.to_wire() if paid else None]

    return [fanout, flaky, mixed,
            client.function(id="chains-wait", trigger=trigger)(chains(ratchet.ParallelMode.WAIT)),
            client.function(id="chains-race", trigger=trigger)(chains(ratchet.ParallelMode.RACE))]


class App:
    """One served app: `post(url, body)` sends a call; `ran` lists the step handlers that ran."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.server = FakeServer()
        self.ran: list[str] = []
        client = ratchet.Client(app_id="shop", is_production=False, transport=self.server.transport())
        if kind == "fastapi-async":
            self.fastapi = fastapi.FastAPI()
            ratchet.sdk.fastapi.serve(self.fastapi, client, async_functions(client, self.ran))
        else:
            self.flask = flask.Flask(__name__)
            ratchet.sdk.flask.serve(self.flask, client, sync_functions(client, self.ran))

    async def post(self, url: str, body: bytes) -> Reply:
        if self.kind == "fastapi-async":
            transport = httpx.ASGITransport(app=self.fastapi)
            async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as http:
                return reply_of(await http.post(url, content=body))
        return reply_of(self.flask.test_client().post(url, data=body, content_type="application/json"))

    async def drive(self, loop: ServerLoop, limit: int = 30) -> Reply:
        for _ in range(limit):
            url, body = loop.next_call()
            if loop.on_reply(await self.post(url, body)):
                assert loop.result is not None
                return loop.result
        raise AssertionError("run did not finish")


@pytest.fixture(params=["fastapi-async", "flask-sync"])
def app(request: pytest.FixtureRequest) -> App:
    return App(request.param)


def kinds(loop: ServerLoop) -> list[tuple[str, str]]:
    return [(op["op"], op["displayName"]) for op in loop.ops]


async def test_fanout_plans_together_then_targets_each_step(app: App) -> None:
    loop = ServerLoop("shop-fanout", EVENT)
    result = await app.drive(loop)
    assert result.status == 200
    assert result.body == {"par": ["1A", "1B", ["evt-0"]], "after": "AFTER"}
    # plan, 1a, 1b, send, discovery running "after" at once, final: the official parallel_steps count.
    assert loop.sent == [("step", 0, False), (h("1a"), 0, True), (h("1b"), 0, True), (h("send"), 0, True),
                         ("step", 0, False), ("step", 0, False)]
    assert kinds(loop) == [("StepPlanned", "1a"), ("StepPlanned", "1b"), ("StepPlanned", "send"),
                           ("StepRun", "1a"), ("StepRun", "1b"), ("StepRun", "send"), ("StepRun", "after")]
    assert all(op["opts"] is None and op["data"] is None for op in loop.ops[:3])
    assert app.ran == ["1a", "1b", "after"]  # each step ran once, in its own call
    assert [e["name"] for _, events in app.server.sent for e in events] == ["shop/fanned"]


async def test_wait_mode_resumes_once_the_whole_group_is_done(app: App) -> None:
    loop = ServerLoop("shop-chains-wait", EVENT)
    result = await app.drive(loop)
    assert result.body == ["A1A2", "B1B2"]
    assert loop.calls == 7  # the official parallel_mode_default count
    assert [s for s, _, _ in loop.sent] == ["step", h("a1"), h("b1"), "step", h("a2"), h("b2"), "step"]
    assert all(op["opts"] is None for op in loop.ops)
    assert sorted(app.ran) == ["a1", "a2", "b1", "b2"]


async def test_race_mode_marks_every_op_and_resumes_after_each_step(app: App) -> None:
    loop = ServerLoop("shop-chains-race", EVENT)
    result = await app.drive(loop)
    assert result.body == ["A1A2", "B1B2"]
    assert all(op["opts"] == {"parallelMode": "race"} for op in loop.ops)
    assert sorted(app.ran) == ["a1", "a2", "b1", "b2"]

    # A chain advances before the other finishes: once a1 is done (b1 still pending), discovery plans a2
    # and re-plans the in-flight b1 (which the server dedupes).
    memo = {h("a1"): {"data": "A1"}}
    reply = await app.post(*ServerLoop("shop-chains-race", EVENT, memo=memo, force_plan=True).next_call())
    assert reply.status == 206
    assert [(op["op"], op["displayName"]) for op in reply.body] == [("StepPlanned", "a2"), ("StepPlanned", "b1")]

    wait = ServerLoop("shop-chains-wait", EVENT, memo=memo, force_plan=True)
    reply = await app.post(*wait.next_call())
    assert [(op["op"], op["displayName"], op["opts"]) for op in reply.body] == [
        ("StepPlanned", "a2", None), ("StepPlanned", "b1", None)]


async def test_failing_step_in_a_group_retries_its_own_call_then_raises(app: App) -> None:
    loop = ServerLoop("shop-flaky", EVENT, max_attempts=2)
    result = await app.drive(loop)
    assert result.status == 200
    assert result.body == {"caught": "ValueError", "message": "bad step"}
    assert loop.sent == [("step", 0, False), (h("ok"), 0, True), (h("bad"), 0, True), (h("bad"), 1, True),
                         ("step", 0, False)]
    assert [op["op"] for op in loop.ops] == ["StepPlanned", "StepPlanned", "StepRun", "StepError", "StepFailed"]
    assert app.ran == ["ok", "bad", "bad"]


async def test_group_of_run_sleep_and_wait(app: App) -> None:
    loop = ServerLoop("shop-mixed", EVENT, wait_memo=WAITED)
    result = await app.drive(loop)
    assert result.body == ["A", None, WAITED]
    first = loop.ops[:3]
    assert [(op["op"], op["displayName"]) for op in first] == [
        ("StepPlanned", "a"), ("Sleep", "nap"), ("WaitForEvent", "paid")]
    assert first[2]["name"] == "shop/paid" and first[2]["opts"] == {"if": None, "timeout": "1h"}
    assert loop.calls == 3

    timed_out = ServerLoop("shop-mixed", EVENT, wait_memo=None)
    assert (await app.drive(timed_out)).body == ["A", None, None]


async def test_step_outside_a_group_while_targeting_another_is_unexpected(app: App) -> None:
    url, body = ServerLoop("shop-fanout", EVENT).next_call()
    reply = await app.post(url.replace("stepId=step", f"stepId={h('after')}"), body)
    assert reply.status == 500
    assert "x-inngest-no-retry" not in reply.headers
    assert reply.body["code"] == "step_unexpected"
    assert reply.body["message"] == 'found step "1a" when targeting a different step'


async def test_targeted_step_runs_alone_in_its_group(app: App) -> None:
    loop = ServerLoop("shop-fanout", EVENT, force_plan=True)
    url, body = loop.next_call()
    reply = await app.post(url.replace("stepId=step", f"stepId={h('1b')}"), body)
    assert reply.status == 206
    assert [(op["op"], op["displayName"], op["data"]) for op in reply.body] == [("StepRun", "1b", "1B")]
    assert app.ran == ["1b"]
    assert orjson.loads(body)["ctx"]["disable_immediate_execution"] is True
