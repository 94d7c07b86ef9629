"""Ratchet's SDK against the official one (`inngest` 0.5.19), in process: the same function code, served by
both SDKs, gets the same call requests; the replies must match status, no-retry header and body, field by
field (tracebacks and the wall-clock wake time of a sleep aside).

Covers parallel groups (plan, race opts, targeted calls, re-planning, mixed ops), `disable_immediate_execution`,
`step_unexpected`, `wait_for_event` and `invoke` opcodes and memos.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import fastapi
import httpx
import orjson
import pytest

import ratchet
import ratchet.sdk.fastapi
from ratchet import protocol

inngest = pytest.importorskip("inngest")
inngest_fast_api = pytest.importorskip("inngest.fast_api")

EVENT = {"name": "x/go", "data": {"id": 1}, "id": "e-1", "ts": 1700000000000}
h = protocol.step_hash
A, B, C, S, W, I = h("a"), h("b"), h("c"), h("s"), h("w"), h("i")


def define(register: Callable[..., Any], race: Any, child: Callable[[], Any]) -> None:
    """The functions under test, written once; `register(id, is_async)` decorates with either SDK."""

    def fa() -> str:
        return "A"

    def fb() -> str:
        return "B"

    @register("par")
    async def par(ctx: Any) -> Any:
        ab = await ctx.group.parallel((lambda: ctx.step.run("a", fa), lambda: ctx.step.run("b", fb)))
        c = await ctx.step.run("c", lambda: "C")
        return [list(ab), c]

    @register("par-race")
    async def par_race(ctx: Any) -> Any:
        async def chain() -> str:
            first = await ctx.step.run("a", fa)
            return await ctx.step.run("a2", lambda: first + "2")

        return list(await ctx.group.parallel((chain, lambda: ctx.step.run("b", fb)), parallel_mode=race))

    @register("par-sync", is_async=False)
    def par_sync(ctx: Any) -> Any:
        return list(ctx.group.parallel((lambda: ctx.step.run("a", fa), lambda: ctx.step.run("b", fb)),
                                       parallel_mode=race))

    @register("par-mix")
    async def par_mix(ctx: Any) -> Any:
        out = await ctx.group.parallel((
            lambda: ctx.step.run("a", fa),
            lambda: ctx.step.wait_for_event("w", event="x/w", timeout=timedelta(hours=1),
                                            if_exp="async.data.id == event.data.id"),
            lambda: ctx.step.invoke("i", function=child(), data={"k": 1}),
            lambda: ctx.step.sleep("s", timedelta(seconds=5)),
        ), parallel_mode=race)
        return [out[0], out[1].name if out[1] else None, out[2], out[3]]

    @register("par-fail")
    async def par_fail(ctx: Any) -> Any:
        def boom() -> None:
            raise ValueError("boom")

        return list(await ctx.group.parallel((lambda: ctx.step.run("a", boom), lambda: ctx.step.run("b", fb))))

    @register("seq")
    async def seq(ctx: Any) -> Any:
        a = await ctx.step.run("a", fa)
        return [a, await ctx.step.run("b", fb)]

    @register("wait")
    async def wait(ctx: Any) -> Any:
        got = await ctx.step.wait_for_event("w", event="x/w", timeout=timedelta(minutes=90),
                                            if_exp="async.data.id == event.data.id")
        return None if got is None else {"name": got.name, "data": got.data, "id": got.id, "ts": got.ts}

    @register("wait-plain")
    async def wait_plain(ctx: Any) -> Any:
        return await ctx.step.wait_for_event("w", event="x/w", timeout=timedelta(days=2))

    @register("invoke")
    async def invoke(ctx: Any) -> Any:
        return await ctx.step.invoke("i", function=child(), data={"k": 1}, timeout=timedelta(minutes=2))

    @register("invoke-by-id")
    async def invoke_by_id(ctx: Any) -> Any:
        return await ctx.step.invoke_by_id("i", app_id="other", function_id="kid", data={"k": 2}, v="v2")

    @register("invoke-catch")
    async def invoke_catch(ctx: Any) -> Any:
        try:
            return await ctx.step.invoke("i", function=child())
        except Exception as err:  # noqa: BLE001 - StepError of either SDK
            return {"type": type(err).__name__, "name": err.name, "message": err.message}


def official_app() -> fastapi.FastAPI:
    client = inngest.Inngest(app_id="shop", is_production=False)
    fns: list[Any] = []

    @client.create_function(fn_id="child", trigger=inngest.TriggerEvent(event="x/child"))
    async def child(ctx: Any) -> int:
        return 1

    def register(fn_id: str, is_async: bool = True) -> Callable[[Any], Any]:
        def deco(handler: Any) -> Any:
            fn = client.create_function(fn_id=fn_id, trigger=inngest.TriggerEvent(event="x/go"))(handler)
            fns.append(fn)
            return fn
        return deco

    define(register, inngest.ParallelMode.RACE, lambda: child)
    app = fastapi.FastAPI()
    inngest_fast_api.serve(app, client, [child, *fns])
    return app


def ratchet_app() -> fastapi.FastAPI:
    client = ratchet.Client(app_id="shop", is_production=False, environ={})
    fns: list[Any] = []

    @client.function(id="child", trigger=ratchet.on_event("x/child"))
    async def child(ctx: ratchet.Context) -> int:
        return 1

    def register(fn_id: str, is_async: bool = True) -> Callable[[Any], Any]:
        def deco(handler: Any) -> Any:
            fn = client.function(id=fn_id, trigger=ratchet.on_event("x/go"))(handler)
            fns.append(fn)
            return fn
        return deco

    define(register, ratchet.ParallelMode.RACE, lambda: child)
    app = fastapi.FastAPI()
    ratchet.sdk.fastapi.serve(app, client, [child, *fns])
    return app


@pytest.fixture(scope="module")
def apps() -> tuple[fastapi.FastAPI, fastapi.FastAPI]:
    return official_app(), ratchet_app()


def body(memo: dict[str, Any], *, die: bool = False, attempt: int = 0) -> bytes:
    return orjson.dumps({
        "event": EVENT, "events": [EVENT], "steps": memo,
        "ctx": {"run_id": "01RUN", "attempt": attempt, "max_attempts": 4, "disable_immediate_execution": die,
                "use_api": False, "stack": {"stack": list(memo), "current": len(memo)}},
        "use_api": False, "version": 2,
    })


async def post(app: fastapi.FastAPI, fn: str, raw: bytes, step: str) -> tuple[int, bool, Any]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app.test") as http:
        resp = await http.post(f"/api/inngest?fnId=shop-{fn}&stepId={step}", content=raw)
    return resp.status_code, resp.headers.get("x-inngest-no-retry") == "true", normalize(resp.json())


def normalize(value: Any) -> Any:
    """Drop what legitimately differs: tracebacks, and a sleep's wake time (checked to be ISO)."""
    if isinstance(value, list):
        return [normalize(v) for v in value]
    if isinstance(value, dict):
        out = {k: normalize(v) for k, v in value.items()}
        if isinstance(out.get("stack"), str):
            out["stack"] = "<traceback>"
        if out.get("op") == "Sleep":
            protocol.parse_time(out["name"])
            out["name"] = "<wake time>"
        return out
    return value


EV_W = {"name": "x/w", "data": {"id": 1}, "id": "e-w", "ts": 1700000000500}
ERR = {"name": "InngestInvokeTimeoutError", "message": "Timed out waiting for invoked function to complete"}

CASES: list[tuple[str, str, dict[str, Any], str, bool]] = [
    # (name, fn, memo, stepId, disable_immediate_execution)
    ("group plans both", "par", {}, "step", False),
    ("group plans both with die", "par", {}, "step", True),
    ("targeted a", "par", {}, A, True),
    ("targeted b, a done", "par", {A: {"data": "A"}}, B, True),
    ("re-plan the rest", "par", {A: {"data": "A"}}, "step", True),
    ("after group, die plans c", "par", {A: {"data": "A"}, B: {"data": "B"}}, "step", True),
    ("after group, c runs", "par", {A: {"data": "A"}, B: {"data": "B"}}, "step", False),
    ("group done", "par", {A: {"data": "A"}, B: {"data": "B"}, C: {"data": "C"}}, "step", False),
    ("memo error in group", "par", {A: {"error": {"name": "E", "message": "m"}}}, "step", False),
    ("race plans", "par-race", {}, "step", False),
    ("race targeted a", "par-race", {}, A, True),
    ("race chain advances", "par-race", {A: {"data": "A"}}, "step", True),
    ("race targeted a2", "par-race", {A: {"data": "A"}}, h("a2"), True),
    ("race done", "par-race", {A: {"data": "A"}, h("a2"): {"data": "A2"}, B: {"data": "B"}}, "step", True),
    ("sync race plans", "par-sync", {}, "step", False),
    ("sync race targeted", "par-sync", {}, B, True),
    ("sync done", "par-sync", {A: {"data": "A"}, B: {"data": "B"}}, "step", False),
    ("mixed ops plan", "par-mix", {}, "step", False),
    ("mixed ops re-planned", "par-mix", {A: {"data": "A"}, I: {"data": 1}}, "step", True),
    ("mixed ops done", "par-mix", {A: {"data": "A"}, W: EV_W, I: {"data": 1}, S: None}, "step", False),
    ("mixed ops wait timed out", "par-mix", {A: {"data": "A"}, W: None, I: {"data": 1}, S: None}, "step", False),
    ("failing step in group", "par-fail", {}, A, True),
    ("sequential: die plans", "seq", {}, "step", True),
    ("sequential: unexpected step", "seq", {}, B, False),
    ("sequential: targeted", "seq", {A: {"data": "A"}}, B, True),
    ("wait op", "wait", {}, "step", False),
    ("wait op without if", "wait-plain", {}, "step", False),
    ("wait matched: raw event", "wait", {W: EV_W}, "step", False),
    ("wait matched: wrapped event", "wait", {W: {"data": EV_W}}, "step", False),
    ("wait timed out: null", "wait", {W: None}, "step", False),
    ("invoke op", "invoke", {}, "step", False),
    ("invoke by id op", "invoke-by-id", {}, "step", False),
    ("invoke result", "invoke", {I: {"data": {"r": 2}}}, "step", False),
    ("invoke null result", "invoke", {I: {"data": None}}, "step", False),
    ("invoke timeout uncaught", "invoke", {I: {"error": ERR}}, "step", False),
    ("invoke child error caught", "invoke-catch",
     {I: {"error": {"error": "invalid status code: 500", "name": "ValueError", "message": "bad", "stack": "t"}}},
     "step", False),
]


@pytest.mark.parametrize(("fn", "memo", "step", "die"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_same_reply_as_the_official_sdk(apps: tuple[fastapi.FastAPI, fastapi.FastAPI], fn: str,
                                              memo: dict[str, Any], step: str, die: bool) -> None:
    official, ours = apps
    raw = body(memo, die=die)
    expected = await post(official, fn, raw, step)
    got = await post(ours, fn, raw, step)
    assert got == expected


async def test_group_whose_target_is_elsewhere_is_step_unexpected(
        apps: tuple[fastapi.FastAPI, fastapi.FastAPI]) -> None:
    """Known difference: the official SDK returns a shorter tuple (here `[]`) and carries on."""
    official, ours = apps
    assert await post(official, "par-sync", body({}), h("nope")) == (200, False, [])
    status, no_retry, reply = await post(ours, "par-sync", body({}), h("nope"))
    assert (status, no_retry, reply["code"]) == (500, False, "step_unexpected")
    assert reply["message"] == 'found step "a" when targeting a different step'


async def test_invoke_without_data_sends_an_empty_object(apps: tuple[fastapi.FastAPI, fastapi.FastAPI]) -> None:
    """Known difference: the official SDK sends `payload.data: null`; Ratchet sends `{}`, since the data
    becomes the invoked run's `event.data`, which is an object."""
    (_, _, (theirs,)), (_, _, (op,)) = [await post(app, "invoke-catch", body({}), "step") for app in apps]
    assert theirs["opts"]["payload"] == {"data": None, "v": None}
    assert op["opts"]["payload"] == {"data": {}, "v": None}
    theirs["opts"]["payload"]["data"] = {}
    assert op == theirs


def test_the_cases_cover_every_opcode_kind() -> None:
    fns = {c[1] for c in CASES}
    assert {"par", "par-race", "par-sync", "par-mix", "wait", "invoke", "invoke-by-id"} <= fns
