from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import fastapi
import httpx
import orjson
import pytest
from sdk_harness import FakeServer, Reply, ServerLoop, call_body, reply_of

import ratchet
import ratchet.sdk.fastapi
from ratchet import protocol

EVENT = {"name": "shop/order.created", "data": {"id": 7}, "id": "evt-0", "ts": 1700000000000}
SIGNING_KEY = "signkey-prod-aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899"


def build(server: FakeServer, **client_kw: Any) -> tuple[fastapi.FastAPI, ratchet.Client]:
    client = ratchet.Client(app_id="shop", is_production=False, transport=server.transport(), **client_kw)
    trigger = ratchet.on_event("shop/order.created")
    log: list[str] = []

    def charge(order_id: int) -> dict[str, Any]:
        log.append("charge")
        return {"charged": order_id}

    async def ship(charge: dict[str, Any]) -> str:
        return f"shipped-{charge['charged']}"

    @client.function(id="multi", trigger=trigger, retries=2)
    async def multi(ctx: ratchet.Context) -> dict[str, Any]:
        c = await ctx.step.run("charge", charge, ctx.event.data["id"])
        s = await ctx.step.run("ship", ship, c)
        await ctx.step.sleep("cool-off", timedelta(days=3))
        ids = await ctx.step.send_event("notify", ratchet.Event(name="shop/shipped", data={"id": 7}))
        return {"charge": c, "ship": s, "ids": ids}

    def boom() -> None:
        raise ValueError("step boom")

    @client.function(id="flaky", trigger=trigger)
    async def flaky(ctx: ratchet.Context) -> str:
        await ctx.step.run("boom", boom)
        return "unreachable"

    @client.function(id="catcher", trigger=trigger)
    async def catcher(ctx: ratchet.Context) -> dict[str, Any]:
        try:
            await ctx.step.run("boom", boom)
        except ratchet.StepError as err:
            return {"name": err.name, "message": err.message, "has_stack": bool(err.stack)}
        return {}

    @client.function(id="fatal", trigger=trigger)
    async def fatal(ctx: ratchet.Context) -> None:
        raise ratchet.NonRetriableError("no way")

    def step_fatal() -> None:
        raise ratchet.NonRetriableError("inside step")

    @client.function(id="step-fatal", trigger=trigger)
    async def step_fatal_fn(ctx: ratchet.Context) -> None:
        await ctx.step.run("s", step_fatal)

    @client.function(id="later", trigger=trigger)
    async def later(ctx: ratchet.Context) -> None:
        raise ratchet.RetryAfterError("busy", datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC))

    @client.function(id="nested", trigger=trigger)
    async def nested(ctx: ratchet.Context) -> None:
        async def outer() -> Any:
            return await ctx.step.run("inner", charge, 1)

        await ctx.step.run("outer", outer)

    @client.function(id="swallow", trigger=trigger)
    async def swallow(ctx: ratchet.Context) -> str:
        try:
            await ctx.step.run("a", charge, 1)
        except Exception:  # noqa: BLE001 - the point of the test
            return "swallowed"
        return "done"

    @client.function(id="repeat", trigger=trigger)
    async def repeat(ctx: ratchet.Context) -> list[Any]:
        return [await ctx.step.run("same", charge, i) for i in range(3)]

    @client.function(id="until", trigger=trigger)
    async def until(ctx: ratchet.Context) -> str:
        await ctx.step.sleep_until("wake", datetime(2030, 1, 1, tzinfo=UTC))
        return "awake"

    @client.function(id="unserializable", trigger=trigger)
    async def unserializable(ctx: ratchet.Context) -> None:
        await ctx.step.run("obj", object)

    @client.function(id="plain", trigger=trigger)
    def plain(ctx: ratchet.Context) -> dict[str, Any]:
        a = ctx.step.run("a", charge, 1)
        ids = ctx.step.send_event("tell", [ratchet.Event(name="x/y"), ratchet.Event(name="x/z")])
        return {"a": a, "ids": ids}

    async def failure_handler(ctx: ratchet.Context) -> Any:
        failure = ctx.failure
        if failure is None:
            return "handled"
        assert failure.event is not None
        return {"fn": failure.function_id, "run": failure.run_id, "name": failure.name, "message": failure.message,
                "raw": ctx.event.data["error"], "original": failure.event.data}

    @client.function(id="with-failure", trigger=trigger, on_failure=failure_handler)
    async def with_failure(ctx: ratchet.Context) -> str:
        return "ok"

    app = fastapi.FastAPI()
    app.state.log = log
    ratchet.sdk.fastapi.serve(app, client, [multi, flaky, catcher, fatal, step_fatal_fn, later, nested, swallow,
                                            repeat, until, unserializable, plain, with_failure])
    return app, client


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def app(server: FakeServer) -> fastapi.FastAPI:
    return build(server)[0]


@pytest.fixture
async def http(app: fastapi.FastAPI) -> Any:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app.test") as c:
        yield c


async def drive(http: httpx.AsyncClient, loop: ServerLoop, limit: int = 20) -> Reply:
    for _ in range(limit):
        url, body = loop.next_call()
        if loop.on_reply(reply_of(await http.post(url, content=body))):
            assert loop.result is not None
            return loop.result
    raise AssertionError("run did not finish")


async def call(http: httpx.AsyncClient, fn: str, memo: dict[str, Any] | None = None, *, step: str = "step",
               **ctx: Any) -> Reply:
    body = orjson.dumps(call_body(EVENT, memo or {}, **ctx))
    return reply_of(await http.post(f"/api/inngest?fnId=shop-{fn}&stepId={step}", content=body))


def assert_sdk_headers(reply: Reply) -> None:
    assert reply.headers["x-inngest-sdk"] == "ratchet-py:v0.1.0"
    assert reply.headers["x-inngest-req-version"] == "2"
    assert reply.headers["x-inngest-framework"] == "fast_api"
    assert reply.headers["x-inngest-sdk-handled"] == "true"
    assert reply.headers["content-type"] == "application/json"


async def test_multi_step_run_completes_like_a_server_would(http: httpx.AsyncClient, app: fastapi.FastAPI,
                                                            server: FakeServer) -> None:
    loop = ServerLoop("shop-multi", EVENT)
    result = await drive(http, loop)
    assert result.status == 200
    assert result.body == {"charge": {"charged": 7}, "ship": "shipped-7", "ids": ["evt-0"]}
    assert_sdk_headers(result)
    assert [op["op"] for op in loop.ops] == ["StepRun", "StepRun", "Sleep", "StepRun"]
    assert loop.calls == 5
    assert app.state.log == ["charge"]  # memoized steps never run again
    assert list(loop.memo) == [protocol.step_hash(s) for s in ("charge", "ship", "cool-off", "notify")]
    (request, events), = server.sent
    assert events[0]["name"] == "shop/shipped" and isinstance(events[0]["ts"], int)
    assert request.url.path == "/e/NO_EVENT_KEY_SET"
    assert request.headers["x-inngest-event-id-seed"]


async def test_step_run_opcode_shape(http: httpx.AsyncClient) -> None:
    reply = await call(http, "multi")
    assert reply.status == 206
    assert_sdk_headers(reply)
    assert reply.body == [{
        "id": protocol.step_hash("charge"), "name": "charge", "displayName": "charge", "op": "StepRun",
        "opts": None, "data": {"charged": 7}, "userland": {"id": "charge", "index": None},
    }]


async def test_sleep_opcode_has_iso_wake_time(http: httpx.AsyncClient) -> None:
    memo = {protocol.step_hash("charge"): {"data": {"charged": 7}}, protocol.step_hash("ship"): {"data": "s"}}
    before = datetime.now(UTC)
    reply = await call(http, "multi", memo)
    (op,) = reply.body
    assert op["op"] == "Sleep" and op["id"] == protocol.step_hash("cool-off")
    wake = protocol.parse_time(op["name"])
    assert before + timedelta(days=3) - timedelta(seconds=1) <= wake <= datetime.now(UTC) + timedelta(days=3)
    assert protocol.format_time(wake) == op["name"]

    reply = await call(http, "until")
    assert reply.body[0]["name"] == "2030-01-01T00:00:00.000Z"


@pytest.mark.parametrize(("attempt", "max_attempts", "op"), [
    (0, 4, "StepError"),    # 0 + 1 < 4: retries remain
    (2, 4, "StepError"),    # 3 < 4
    (3, 4, "StepFailed"),   # 4 >= 4: last attempt
    (0, 1, "StepFailed"),   # retries=0
    (9, None, "StepError"),  # unknown max_attempts: never StepFailed
])
async def test_step_error_or_failed_by_attempt(http: httpx.AsyncClient, attempt: int, max_attempts: int | None,
                                               op: str) -> None:
    reply = await call(http, "flaky", attempt=attempt, max_attempts=max_attempts)
    assert reply.status == 206
    assert "x-inngest-no-retry" not in reply.headers
    (opcode,) = reply.body
    assert opcode["op"] == op
    assert opcode["error"]["name"] == "ValueError" and opcode["error"]["message"] == "step boom"
    assert "Traceback" in opcode["error"]["stack"]


async def test_failed_step_then_uncaught_step_error_is_final(http: httpx.AsyncClient) -> None:
    loop = ServerLoop("shop-flaky", EVENT, max_attempts=2)
    result = await drive(http, loop)
    assert [op["op"] for op in loop.ops] == ["StepError", "StepFailed"]
    assert result.status == 500
    assert result.headers["x-inngest-no-retry"] == "true"
    assert result.body["code"] == "step_errored"
    assert result.body["name"] == "ValueError" and result.body["message"] == "step boom"


async def test_memoized_error_raises_step_error_in_user_code(http: httpx.AsyncClient) -> None:
    memo = {protocol.step_hash("boom"): {"error": {"name": "KeyError", "message": "gone", "stack": "tb"}}}
    reply = await call(http, "catcher", memo)
    assert reply.status == 200
    assert reply.body == {"name": "KeyError", "message": "gone", "has_stack": True}


async def test_non_retriable_error(http: httpx.AsyncClient) -> None:
    reply = await call(http, "fatal")
    assert reply.status == 500
    assert_sdk_headers(reply)
    assert reply.headers["x-inngest-no-retry"] == "true"
    assert reply.body["code"] == "non_retriable_error"
    assert reply.body["name"] == "NonRetriableError" and reply.body["message"] == "no way"

    reply = await call(http, "step-fatal")  # raised inside a step: bubbles to the function
    assert reply.status == 500 and reply.headers["x-inngest-no-retry"] == "true"
    assert reply.body["message"] == "inside step"


async def test_retry_after_error(http: httpx.AsyncClient) -> None:
    reply = await call(http, "later")
    assert reply.status == 500
    assert reply.headers["retry-after"] == "2030-01-02T03:04:05.678Z"
    assert "x-inngest-no-retry" not in reply.headers
    assert reply.body["code"] == "retry_after_error"


async def test_nested_step_is_a_final_step_error(http: httpx.AsyncClient) -> None:
    reply = await call(http, "nested")
    assert reply.status == 206
    assert reply.headers["x-inngest-no-retry"] == "true"
    (op,) = reply.body
    assert op["op"] == "StepError" and op["id"] == protocol.step_hash("outer")
    assert op["error"]["code"] == "step_nested"


async def test_except_exception_cannot_swallow_the_step_interrupt(http: httpx.AsyncClient) -> None:
    reply = await call(http, "swallow")
    assert reply.status == 206 and reply.body[0]["op"] == "StepRun"


async def test_repeated_step_ids_get_indexes(http: httpx.AsyncClient) -> None:
    loop = ServerLoop("shop-repeat", EVENT)
    result = await drive(http, loop)
    assert result.body == [{"charged": 0}, {"charged": 1}, {"charged": 2}]
    assert [op["id"] for op in loop.ops] == [protocol.step_hash("same", i) for i in range(3)]
    assert [op["userland"] for op in loop.ops] == [{"id": "same", "index": i or None} for i in range(3)]


async def test_targeted_step_runs_only_that_step(http: httpx.AsyncClient) -> None:
    memo = {protocol.step_hash("charge"): {"data": {"charged": 7}}}
    reply = await call(http, "multi", memo, step=protocol.step_hash("ship"))
    assert reply.status == 206 and reply.body[0]["op"] == "StepRun" and reply.body[0]["data"] == "shipped-7"

    reply = await call(http, "multi", {}, step=protocol.step_hash("ship"))  # meets "charge" first
    assert reply.status == 500
    assert reply.body["code"] == "step_unexpected"
    assert reply.body["message"] == 'found step "charge" when targeting a different step'


async def test_disable_immediate_execution_plans_the_step(http: httpx.AsyncClient) -> None:
    reply = await call(http, "multi", disable_immediate_execution=True)
    assert reply.status == 206
    (op,) = reply.body
    assert op["op"] == "StepPlanned" and op["id"] == protocol.step_hash("charge") and op["data"] is None


async def test_unserializable_step_output(http: httpx.AsyncClient) -> None:
    reply = await call(http, "unserializable")
    assert reply.status == 500
    assert reply.body["code"] == "output_unserializable"
    assert reply.headers["x-inngest-no-retry"] == "true"


async def test_sync_function_under_async_adapter(http: httpx.AsyncClient, server: FakeServer) -> None:
    loop = ServerLoop("shop-plain", EVENT)
    result = await drive(http, loop)
    assert result.body == {"a": {"charged": 1}, "ids": ["evt-0", "evt-1"]}
    assert [e["name"] for e in server.sent[0][1]] == ["x/y", "x/z"]


async def test_on_failure_handler_is_served(http: httpx.AsyncClient) -> None:
    reply = await call(http, "with-failure-failure")
    assert reply.status == 200 and reply.body == "handled"


async def test_on_failure_handler_gets_the_failed_run(http: httpx.AsyncClient) -> None:
    error = {"error": "invalid status code: 500", "name": "ValueError", "message": "boom", "stack": "tb"}
    failed = {"name": "inngest/function.failed", "id": "01RUN", "ts": 1700000001000,
              "data": {"function_id": "shop-with-failure", "run_id": "01RUN", "error": error, "event": EVENT,
                       "events": [EVENT]}}
    body = orjson.dumps(call_body(failed, {}))
    reply = reply_of(await http.post("/api/inngest?fnId=shop-with-failure-failure&stepId=step", content=body))
    assert reply.status == 200
    assert reply.body == {"fn": "shop-with-failure", "run": "01RUN", "name": "ValueError", "message": "boom",
                          "raw": error, "original": {"id": 7}}


@pytest.mark.parametrize(("query", "code"), [
    ("fnId=shop-nope&stepId=step", "function_not_found"),
    ("stepId=step", "query_param_missing"),
])
async def test_unknown_or_missing_function(http: httpx.AsyncClient, query: str, code: str) -> None:
    reply = reply_of(await http.post(f"/api/inngest?{query}", content=orjson.dumps(call_body(EVENT, {}))))
    assert reply.status == 500
    assert reply.body["code"] == code
    assert_sdk_headers(reply)


@pytest.mark.parametrize(("body", "fragment"), [
    (b"not json", "invalid call request"),
    (b"[]", "invalid call request"),
    (orjson.dumps({"event": EVENT, "steps": {}}), "ctx: Field required"),
    (orjson.dumps({"event": {"data": {}}, "steps": {}, "ctx": {"run_id": "r"}}), "name"),
])
async def test_bad_body_is_a_clear_error(http: httpx.AsyncClient, body: bytes, fragment: str) -> None:
    reply = reply_of(await http.post("/api/inngest?fnId=shop-multi&stepId=step", content=body))
    assert reply.status == 500
    assert reply.body["code"] == "body_invalid"
    assert fragment in reply.body["message"]


async def test_introspection(http: httpx.AsyncClient) -> None:
    reply = reply_of(await http.get("/api/inngest"))
    assert reply.status == 200
    assert reply.body == {"schema_version": "2024-05-24", "function_count": 13, "has_event_key": False,
                          "has_signing_key": False, "has_signing_key_fallback": False, "mode": "dev"}


async def test_sync_posts_to_register_and_relays_the_reply(http: httpx.AsyncClient, server: FakeServer) -> None:
    reply = reply_of(await http.put("/api/inngest?deployId=d-1"))
    assert reply.status == 200
    assert reply.headers["x-inngest-sync-kind"] == "out_of_band"
    assert reply.body == {"ok": True, "modified": True, "app_id": "a1", "sync_id": "s1"}
    (req,) = server.registrations
    assert str(req.url) == "http://127.0.0.1:8288/fn/register?deployId=d-1"
    assert req.headers["x-inngest-sdk"] == "ratchet-py:v0.1.0"
    assert req.headers["x-inngest-framework"] == "fast_api"
    assert req.headers["x-inngest-req-version"] == "2"
    assert "authorization" not in req.headers
    body = orjson.loads(req.content)
    registered = protocol.RegisterRequest.model_validate(body)  # the server's own model accepts it
    assert registered.app_name == "shop"
    assert body["url"] == "http://app.test/api/inngest"
    assert body["deployType"] == "ping" and body["sdk"] == "ratchet-py:v0.1.0" and body["v"] == "0.1"
    by_id = {f["id"]: f for f in body["functions"]}
    assert by_id["shop-multi"]["steps"]["step"] == {
        "id": "step", "name": "step", "retries": {"attempts": 2},
        "runtime": {"type": "http", "url": "http://app.test/api/inngest?fnId=shop-multi&stepId=step"}}
    assert by_id["shop-with-failure-failure"]["triggers"] == [
        {"event": "inngest/function.failed", "expression": "event.data.function_id == 'shop-with-failure'"}]
    assert protocol.FunctionConfig.model_validate(by_id["shop-multi"]).max_attempts() == 3


async def test_sync_with_signing_key_sends_bearer_and_uses_serve_origin() -> None:
    server = FakeServer()
    app, _ = build(server, signing_key=SIGNING_KEY, serve_origin="public.example", serve_path="/x/inngest")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app.test") as http:
        reply = reply_of(await http.put("/x/inngest", headers={"x-inngest-server-kind": "dev"}))
    assert reply.status == 200
    (req,) = server.registrations
    assert req.headers["authorization"] == "Bearer 13216bdbddb256a9c661c2f6844cdba5ca81d1d9b4225153f0834c58d027fc8d"
    assert req.headers["x-inngest-expected-server-kind"] == "dev"
    assert orjson.loads(req.content)["url"] == "https://public.example/x/inngest"


async def test_sync_server_kind_mismatch(http: httpx.AsyncClient, server: FakeServer) -> None:
    reply = reply_of(await http.put("/api/inngest", headers={"x-inngest-server-kind": "cloud"}))
    assert reply.status == 400
    assert reply.body["code"] == "server_kind_mismatch"
    assert server.registrations == []


async def test_sync_refused_or_unreachable() -> None:
    server = FakeServer(register_status=400, register_body=b'{"ok": false, "error": "bad config"}')
    app, _ = build(server)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app.test") as http:
        reply = reply_of(await http.put("/api/inngest"))
        assert reply.status == 400 and reply.body == {"ok": False, "error": "bad config"}
        server.register_status, server.register_body = 200, b"<html>"
        reply = reply_of(await http.put("/api/inngest"))
        assert reply.status == 500 and reply.body["code"] == "registration_failed"


# --------------------------------------------------------------------------------------------- production


def prod_app() -> fastapi.FastAPI:
    client = ratchet.Client(app_id="shop", is_production=True, signing_key=SIGNING_KEY, event_key="ek",
                            transport=FakeServer().transport())

    @client.function(id="hello", trigger=ratchet.on_event("a/b"))
    async def hello(ctx: ratchet.Context) -> str:
        return "hi"

    app = fastapi.FastAPI()
    ratchet.sdk.fastapi.serve(app, client, [hello])
    return app


async def test_production_rejects_bad_signatures_and_signs_replies() -> None:
    app = prod_app()
    body = call_body(EVENT, {})
    raw = orjson.dumps(body)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app.test") as http:
        url = "/api/inngest?fnId=shop-hello&stepId=step"
        missing = await http.post(url, content=raw)
        assert missing.status_code == 401 and missing.json() == {"message": "Unauthorized"}
        wrong_key = protocol.sign(protocol.canonical_json(body), "signkey-prod-" + "11" * 32)
        bad = await http.post(url, content=raw, headers={"x-inngest-signature": wrong_key})
        assert bad.status_code == 401
        tampered = protocol.sign(protocol.canonical_json({**body, "steps": {"x": 1}}), SIGNING_KEY)
        assert (await http.post(url, content=raw, headers={"x-inngest-signature": tampered})).status_code == 401

        # Good: the signature covers the JCS form, whatever the sent bytes' key order and spacing.
        good = protocol.sign(protocol.canonical_json(body), SIGNING_KEY)
        ok = await http.post(url, content=raw, headers={"x-inngest-signature": good})
        assert ok.status_code == 200 and ok.json() == "hi"
        assert protocol.verify_signature(ok.content, ok.headers["x-inngest-signature"], [SIGNING_KEY])

        assert (await http.get("/api/inngest")).status_code == 401
        signed_get = await http.get("/api/inngest", headers={"x-inngest-signature": protocol.sign(b"", SIGNING_KEY)})
        assert signed_get.status_code == 200 and signed_get.json()["authentication_succeeded"] is True


def test_production_without_signing_key_refuses_to_serve() -> None:
    client = ratchet.Client(app_id="shop", is_production=True)
    with pytest.raises(ratchet.SigningKeyMissingError):
        ratchet.sdk.fastapi.serve(fastapi.FastAPI(), client, [])


async def test_asgi_app_routes_in_plain_starlette() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Route

    server = FakeServer()
    _, client = build(server)
    fn = client.function(id="m", trigger=ratchet.on_event("a/b"))(lambda ctx: "mounted")
    endpoint = ratchet.sdk.fastapi.asgi_app(client, [fn])
    app = Starlette(routes=[Route("/api/inngest", endpoint, methods=["GET", "POST", "PUT"])])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app.test") as http:
        reply = reply_of(await http.post("/api/inngest?fnId=shop-m&stepId=step",
                                         content=orjson.dumps(call_body(EVENT, {}))))
        assert reply.status == 200 and reply.body == "mounted"
        await http.put("/api/inngest")
    assert orjson.loads(server.registrations[0].content)["url"] == "http://app.test/api/inngest"


async def test_ctx_logger_is_silent_while_replaying(caplog: pytest.LogCaptureFixture) -> None:
    client = ratchet.Client(app_id="shop", is_production=False, environ={})

    @client.function(id="chatty", trigger=ratchet.on_event("a/b"))
    async def chatty(ctx: ratchet.Context) -> str:
        ctx.logger.info("start")
        await ctx.step.run("one", lambda: 1)
        ctx.logger.info("after one")
        await ctx.step.run("two", lambda: 2)
        ctx.logger.info("end")
        return "ok"

    app = fastapi.FastAPI()
    ratchet.sdk.fastapi.serve(app, client, [chatty])
    caplog.set_level("INFO", logger="ratchet")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app.test") as http:
        result = await drive(http, ServerLoop("shop-chatty", EVENT))
    assert result.body == "ok"
    assert [r.getMessage() for r in caplog.records if r.name == "ratchet"] == ["start", "after one", "end"]


async def test_use_api_fetches_events_and_memo(http: httpx.AsyncClient, server: FakeServer) -> None:
    server.payloads["01RUN"] = ([EVENT], {protocol.step_hash("charge"): {"data": {"charged": 99}}})
    body = call_body(EVENT, {}) | {"use_api": True, "events": [], "steps": {}}
    body["ctx"]["use_api"] = True
    reply = reply_of(await http.post("/api/inngest?fnId=shop-multi&stepId=step", content=orjson.dumps(body)))
    assert reply.status == 206
    assert reply.body[0]["displayName"] == "ship" and reply.body[0]["data"] == "shipped-99"
    assert {r.url.path for r in server.payload_requests} == {"/v0/runs/01RUN/batch", "/v0/runs/01RUN/actions"}

    body["ctx"]["run_id"] = "unknown-run"  # the server answers 404: fail the call, retriably
    reply = reply_of(await http.post("/api/inngest?fnId=shop-multi&stepId=step", content=orjson.dumps(body)))
    assert reply.status == 500 and "404" in reply.body["message"]
    assert "x-inngest-no-retry" not in reply.headers


async def test_production_in_band_sync_and_trust_probe() -> None:
    app = prod_app()
    body = {"url": "https://public.example/api/inngest"}
    headers = {"x-inngest-sync-kind": "in_band", "x-inngest-server-kind": "cloud"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app.test") as http:
        unsigned = await http.put("/api/inngest", content=orjson.dumps(body), headers=headers)
        assert unsigned.status_code == 401
        sig = protocol.sign(protocol.canonical_json(body), SIGNING_KEY)
        resp = await http.put("/api/inngest", content=orjson.dumps(body), headers=headers | {"x-inngest-signature": sig})
        assert resp.status_code == 200 and resp.headers["x-inngest-sync-kind"] == "in_band"
        assert protocol.verify_signature(resp.content, resp.headers["x-inngest-signature"], [SIGNING_KEY])
        synced = resp.json()
        assert synced["app_id"] == "shop" and synced["url"] == body["url"]
        assert synced["functions"][0]["steps"]["step"]["runtime"]["url"] == (
            "https://public.example/api/inngest?fnId=shop-hello&stepId=step")
        assert synced["inspection"]["signing_key_hash"] == protocol.hashed_signing_key(SIGNING_KEY)

        probe = await http.post("/api/inngest?probe=trust", headers={"x-inngest-signature": protocol.sign(b"", SIGNING_KEY)})
        assert probe.status_code == 200 and probe.json() is None
        assert protocol.verify_signature(probe.content, probe.headers["x-inngest-signature"], [SIGNING_KEY])
