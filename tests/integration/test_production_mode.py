"""Production mode in one process: signed calls and replies, bearer-checked SDK calls, event keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

import ratchet
from ratchet import protocol
from ratchet.server import auth, login_limit, sessions
from ratchet.server.engine import steps
from tests.integration import inprocess

KEY = "signkey-prod-" + "ab" * 32
EVENT_KEY = "ek-" + "cd" * 16
TOKEN = "rat_test-token"


@pytest.fixture
async def prod(tmp_path: Path) -> AsyncIterator[inprocess.Stack]:
    async with inprocess.start_stack(tmp_path, signing_key=KEY, event_key=EVENT_KEY, api_token=TOKEN) as s:
        yield s


async def send(s: inprocess.Stack, name: str, key: str = EVENT_KEY) -> httpx.Response:
    return await s.api.post(f"/e/{key}", json={"name": name, "data": {}})


async def test_a_signed_run_completes_and_bad_event_keys_are_refused(prod: inprocess.Stack) -> None:
    @prod.client.function(id="two", trigger=ratchet.on_event("p/two"))
    async def two(ctx: ratchet.Context) -> str:
        return await ctx.step.run("a", lambda: "A") + "B"  # type: ignore[no-any-return]

    await prod.sync([two])
    bad = await send(prod, "p/two", key="wrong")
    assert bad.status_code == 401 and bad.json()["ids"] == []
    ok = await send(prod, "p/two")
    assert ok.status_code == 200
    run = await prod.wait_run(ok.json()["ids"][0])
    assert run["output"] == "AB"


async def test_sdk_calls_need_the_signing_key_bearer(prod: inprocess.Stack) -> None:
    body = {"url": inprocess.APP_URL, "appName": "x", "functions": []}
    assert (await prod.api.post("/fn/register", json=body)).status_code == 401
    wrong = {"authorization": f"Bearer {protocol.hashed_signing_key('signkey-prod-' + 'ee' * 32)}"}
    assert (await prod.api.post("/fn/register", json=body, headers=wrong)).status_code == 401
    for token in (protocol.hashed_signing_key(KEY), "signkey-prod-" + protocol.hashed_signing_key(KEY)):
        resp = await prod.api.post("/fn/register", json=body, headers={"authorization": f"Bearer {token}"})
        assert resp.status_code == 200, resp.text
    assert (await prod.api.get("/v0/runs/x/actions")).status_code == 401
    ok = await prod.api.get("/v0/runs/x/actions",
                            headers={"authorization": f"Bearer {protocol.hashed_signing_key(KEY)}"})
    assert ok.status_code == 404  # authorized; the run does not exist


async def test_a_tampered_reply_is_rejected(prod: inprocess.Stack) -> None:
    @prod.client.function(id="one", trigger=ratchet.on_event("p/one"), retries=0)
    async def one(ctx: ratchet.Context) -> str:
        return "genuine"

    await prod.sync([one])
    real = prod.transport.request

    async def tamper(method: str, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> Any:
        reply = await real(method, url, body, headers, timeout_s)
        if isinstance(reply, steps.Reply) and method == "POST":
            return steps.Reply(reply.status, reply.headers, b'"forged"')  # signature no longer matches
        return reply

    prod.transport.request = tamper  # type: ignore[method-assign]
    ok = await send(prod, "p/one")
    run = await prod.wait_run(ok.json()["ids"][0], status="FAILED")
    assert "no valid signature" in run["output"]["message"]


def _streamed(reply: steps.Reply, body: bytes | None = None) -> steps.Reply:
    """`reply` as the TypeScript SDK streams it: 201 and unsigned, keep-alive spaces, then the real status,
    headers (with the signature) and body (`body` instead, to tamper with it) as one JSON object."""
    inner = {"status": reply.status, "headers": reply.headers, "body": (reply.body if body is None else body).decode()}
    outer = {k: v for k, v in reply.headers.items() if k != protocol.Header.SIGNATURE}
    return steps.Reply(201, outer, b"    " + orjson.dumps(inner))


def test_reply_signed_checks_a_streamed_reply_inside_its_wrapper() -> None:
    body = b'[{"op": "StepRun"}]'
    reply = steps.Reply(206, {protocol.Header.SIGNATURE.value: protocol.sign(body, KEY)}, body)
    assert auth.reply_signed(reply, [KEY])
    assert auth.reply_signed(_streamed(reply), [KEY])
    assert not auth.reply_signed(_streamed(reply, b'[{"op": "RunComplete"}]'), [KEY])
    assert not auth.reply_signed(_streamed(reply), ["signkey-prod-" + "ee" * 32])
    assert not auth.reply_signed(steps.Reply(201, reply.headers, b"  not json"), [KEY])


@pytest.mark.parametrize("tamper", [False, True])
async def test_a_streamed_reply_is_verified_by_the_signature_inside(prod: inprocess.Stack, tamper: bool) -> None:
    @prod.client.function(id="streamed", trigger=ratchet.on_event("p/streamed"), retries=0)
    async def streamed(ctx: ratchet.Context) -> str:
        return "genuine"

    await prod.sync([streamed])
    real = prod.transport.request

    async def stream(method: str, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> Any:
        reply = await real(method, url, body, headers, timeout_s)
        if isinstance(reply, steps.Reply) and method == "POST":
            return _streamed(reply, b'"forged"' if tamper else None)
        return reply

    prod.transport.request = stream  # type: ignore[method-assign]
    ok = await send(prod, "p/streamed")
    if tamper:
        run = await prod.wait_run(ok.json()["ids"][0], status="FAILED")
        assert "(status 201) has no valid signature" in run["output"]["message"], run
    else:
        run = await prod.wait_run(ok.json()["ids"][0])
        assert run["output"] == "genuine"


async def test_register_replies_repeat_their_status_in_the_body(prod: inprocess.Stack) -> None:
    # The TypeScript SDK answers the sync PUT with the body's `status` (200 when missing), not the HTTP one.
    bearer = {"authorization": f"Bearer {protocol.hashed_signing_key(KEY)}"}
    body = {"url": inprocess.APP_URL, "appName": "x", "functions": []}
    refused = await prod.api.post("/fn/register", json=body)
    assert refused.status_code == 401 and refused.json()["status"] == 401 and refused.json()["ok"] is False
    invalid = await prod.api.post("/fn/register", json={**body, "url": "nope"}, headers=bearer)
    assert invalid.status_code == 400 and invalid.json()["status"] == 400, invalid.text
    ok = await prod.api.post("/fn/register", json=body, headers=bearer)
    assert ok.status_code == 200 and ok.json()["status"] == 200 and ok.json()["ok"] is True, ok.text


@pytest.mark.parametrize(("reply", "detail"), [
    # What the TypeScript SDK answers when its registration was refused with 401.
    (steps.Reply(401, {}, b'{"message":"unauthorized: a valid signing-key bearer token is required",'
                          b'"modified":false}'), "(status 401): unauthorized: a valid signing-key bearer"),
    (steps.Reply(500, {}, b"upstream broke"), "(status 500): upstream broke"),  # not JSON
])
async def test_a_refused_sync_names_the_apps_status_and_message(prod: inprocess.Stack, reply: steps.Reply,
                                                                 detail: str) -> None:
    async def refuse(method: str, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> Any:
        assert method == "PUT" and protocol.verify_signature(body, headers[protocol.Header.SIGNATURE], [KEY])
        return reply

    prod.transport.request = refuse  # type: ignore[method-assign]
    resp = await prod.api.post("/v1/apps/sync", json={"url": inprocess.APP_URL})
    assert resp.status_code == 502, resp.text
    (result,) = resp.json()["data"]
    assert result["ok"] is False and detail in result["error"], result


def test_keys_new_makes_valid_keys() -> None:
    assert auth.check_signing_key(auth.new_signing_key()) is None
    assert auth.check_signing_key("signkey-prod-abc") is not None  # odd length
    assert auth.check_signing_key("nothex!!") is not None
    assert len(auth.new_event_key()) == 64


async def test_the_rest_and_graphql_apis_need_an_api_token(prod: inprocess.Stack) -> None:
    bare = httpx.AsyncClient(transport=httpx.ASGITransport(app=prod.server), base_url=inprocess.SERVER)
    async with bare:
        for method, path in (("GET", "/v1/runs"), ("GET", "/v1/functions"), ("POST", "/v0/gql"),
                             ("POST", "/v1/runs/cancel")):
            resp = await bare.request(method, path, json={})
            assert resp.status_code == 401 and "API token" in resp.json()["error"], (path, resp.text)
        wrong = await bare.get("/v1/runs", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert (await bare.get("/health")).status_code == 200  # open
    ok = await prod.api.get("/v1/runs")  # the stack's client carries the token
    assert ok.status_code == 200


async def test_keys_and_tokens_with_non_ascii_text_are_refused_not_a_server_error(prod: inprocess.Stack) -> None:
    # (`hmac.compare_digest` raises on non-ASCII text: the comparison is of UTF-8 bytes.)
    bad = await send(prod, "p/x", key="cl\u00e9")
    assert bad.status_code == 401 and bad.json()["ids"] == []
    resp = await prod.api.get("/v1/runs", headers={"authorization": "Bearer t\u00f6ken".encode()})
    assert resp.status_code == 401
    assert (await send(prod, "p/x")).status_code == 200


def test_secret_matches_compares_every_accepted_secret() -> None:
    assert auth.secret_matches("b", ["a", "b", "c"]) and auth.secret_matches("\u00e9", ["\u00e9"])
    assert not auth.secret_matches("", ["a"]) and not auth.secret_matches("a", [])
    assert not auth.secret_matches("ab", ["a", "abc"])


def browser_at(s: inprocess.Stack, address: str) -> httpx.AsyncClient:
    """A client without a bearer token (a browser) at `address`."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=s.server, client=(address, 50_000)),
                             base_url="http://ratchet.test", follow_redirects=False)


async def login(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/login", content=f"token={token}".encode(),
                             headers={"content-type": "application/x-www-form-urlencoded"})


async def test_failed_logins_are_limited_per_client(prod: inprocess.Stack) -> None:
    async with browser_at(prod, "10.0.0.1") as guesser, browser_at(prod, "10.0.0.2") as other:
        for i in range(login_limit.LIMIT):
            assert (await login(guesser, f"guess-{i}")).status_code == 401
        refused = await login(guesser, "guess-again")
        assert refused.status_code == 429 and "too many failed logins" in refused.text
        assert 0 < int(refused.headers["retry-after"]) <= login_limit.WINDOW_MS // 1000
        # While it waits even the right token is refused (a guess must not be told apart by its reply) ...
        right = await login(guesser, TOKEN)
        assert right.status_code == 429 and sessions.COOKIE not in right.cookies
        # ... and another client is not held up.
        assert (await login(other, TOKEN)).status_code == 303


async def test_a_login_clears_the_clients_failures(prod: inprocess.Stack) -> None:
    async with browser_at(prod, "10.0.0.3") as user:
        for _ in range(login_limit.LIMIT - 1):
            assert (await login(user, "typo")).status_code == 401
        assert (await login(user, TOKEN)).status_code == 303
        for _ in range(login_limit.LIMIT - 1):  # counted from zero again
            assert (await login(user, "typo")).status_code == 401
        assert (await login(user, TOKEN)).status_code == 303
