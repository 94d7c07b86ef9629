"""The dashboard's server side: the page and its assets, the endpoints it adds to the API (send an event,
invoke a function, server info, cron next fire times), and the production-mode login (an API token
exchanged for a session cookie; writes with the cookie need the CSRF header). The UI itself is driven in
Chromium by tests/ui."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import ratchet
from ratchet import protocol
from ratchet.server import sessions
from tests.integration import inprocess
from tests.integration.inprocess import Stack

KEY = "signkey-prod-" + "ab" * 32
TOKEN = "rat_dashboard-token"


async def test_the_page_and_its_assets_are_served_in_dev_mode_without_login(stack: Stack) -> None:
    page = await stack.api.get("/")
    assert page.status_code == 200 and '<script type="module" src="/static/app.js">' in page.text
    for asset in ("/static/app.js", "/static/style.css", "/static/vendor/htm-preact.mjs"):
        resp = await stack.api.get(asset)
        assert resp.status_code == 200 and len(resp.content) > 500, asset
    assert (await stack.api.get("/static/nope.js")).status_code == 404
    assert (await stack.api.get("/login", follow_redirects=False)).status_code == 303  # nothing to log in to
    assert (await stack.api.get("/v1/info")).json()["data"] == {"mode": "dev", "backend": "sqlite"}


async def test_send_an_event_through_the_api_starts_its_runs(stack: Stack) -> None:
    @stack.client.function(id="greet", trigger=ratchet.on_event("d/greet"))
    async def greet(ctx: ratchet.Context) -> str:
        return f"hi {ctx.event.data['who']}"

    await stack.sync([greet])
    resp = await stack.api.post("/v1/events", json={"name": "d/greet", "data": {"who": "ada"}})
    assert resp.status_code == 200, resp.text
    run = await stack.wait_run(resp.json()["ids"][0])
    assert run["output"] == "hi ada"


@pytest.mark.parametrize(("body", "needle"), [
    (b"{nope", "body is not valid JSON"),
    (b'{"data": {}}', "name"),
    (b"[]", "no events"),
])
async def test_send_event_bad_input_is_a_400_saying_what_is_wrong(stack: Stack, body: bytes, needle: str) -> None:
    resp = await stack.api.post("/v1/events", content=body)
    assert resp.status_code == 400 and needle in resp.json()["error"], resp.text


async def test_invoke_a_function_with_a_payload_whatever_its_triggers(stack: Stack) -> None:
    @stack.client.function(id="nightly", trigger=ratchet.on_cron("0 3 * * *"))
    async def nightly(ctx: ratchet.Context) -> Any:
        return ctx.event.data.get("scope")

    await stack.sync([nightly])
    resp = await stack.api.post("/v1/functions/inproc-nightly/invoke", json={"data": {"scope": "all"}})
    assert resp.status_code == 201, resp.text
    run_id = resp.json()["data"]["run_id"]
    deadline = time.monotonic() + 10
    while (run := (await stack.api.get(f"/v1/runs/{run_id}")).json()["data"])["status"] != "COMPLETED":
        assert time.monotonic() < deadline, run
        await asyncio.sleep(0.02)
    assert run["output"] == "all"
    (fn,) = [f for f in (await stack.api.get("/v1/functions")).json()["data"] if f["id"] == "inproc-nightly"]
    (cron,) = fn["cron"]
    assert cron["cron"] == "0 3 * * *" and protocol.now_ms() < cron["next_at"] <= protocol.now_ms() + 86_400_000


@pytest.mark.parametrize(("url", "body", "status", "needle"), [
    ("/v1/functions/nope/invoke", b"{}", 404, "function 'nope' not found"),
    ("/v1/functions/inproc-f/invoke", b"{bad", 400, "body is not valid JSON"),
    ("/v1/functions/inproc-f/invoke", b"[1]", 400, "body must be a JSON object"),
    ("/v1/functions/inproc-f/invoke", b'{"data": [1]}', 400, "data: must be a JSON object"),
])
async def test_invoke_bad_input(stack: Stack, url: str, body: bytes, status: int, needle: str) -> None:
    @stack.client.function(id="f", trigger=ratchet.on_event("d/f"))
    async def f(ctx: ratchet.Context) -> None:
        return None

    await stack.sync([f])
    resp = await stack.api.post(url, content=body)
    assert resp.status_code == status and needle in resp.json()["error"], resp.text


# ---------------------------------------------------------------------------------------------- production login


@pytest.fixture
async def prod(tmp_path: Path) -> AsyncIterator[tuple[Stack, httpx.AsyncClient]]:
    async with (inprocess.start_stack(tmp_path, signing_key=KEY, event_key="ek", api_token=TOKEN) as s,
                httpx.AsyncClient(transport=httpx.ASGITransport(app=s.server), base_url="http://ratchet.test",
                                  follow_redirects=False) as browser):  # no bearer: a browser
        yield s, browser


async def test_production_dashboard_needs_a_login_and_the_session_opens_the_api(
        prod: tuple[Stack, httpx.AsyncClient]) -> None:
    _, browser = prod
    first = await browser.get("/")
    assert first.status_code == 303 and first.headers["location"] == "/login"
    assert (await browser.get("/v1/runs")).status_code == 401
    assert "API token" in (await browser.get("/login")).text
    bad = await browser.post("/login", content=b"token=wrong",
                             headers={"content-type": "application/x-www-form-urlencoded"})
    assert bad.status_code == 401 and "not one this server accepts" in bad.text
    assert sessions.COOKIE not in bad.cookies
    ok = await browser.post("/login", content=f"token={TOKEN}".encode(),
                            headers={"content-type": "application/x-www-form-urlencoded"})
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and TOKEN not in cookie
    assert (await browser.get("/")).status_code == 200
    assert (await browser.get("/v1/runs")).status_code == 200
    assert (await browser.get("/v1/info")).json()["data"]["mode"] == "production"
    # a write with only the cookie needs the CSRF header (a cross-site form cannot send it)
    no_csrf = await browser.post("/v1/events", json={"name": "x/y"})
    assert no_csrf.status_code == 403 and sessions.CSRF_HEADER in no_csrf.json()["error"]
    with_csrf = await browser.post("/v1/events", json={"name": "x/y"}, headers={sessions.CSRF_HEADER: "1"})
    assert with_csrf.status_code == 200, with_csrf.text
    out = await browser.post("/logout")
    assert out.status_code == 303 and out.headers["location"] == "/login"
    browser.cookies.clear()
    assert (await browser.get("/v1/runs")).status_code == 401


async def test_a_session_is_refused_once_expired_forged_or_its_token_is_removed() -> None:
    now = protocol.now_ms()
    cookie = sessions.issue(TOKEN, KEY, now)
    assert sessions.valid(cookie, tokens=[TOKEN], signing_keys=[KEY], now_ms=now)
    assert not sessions.valid(cookie, tokens=[TOKEN], signing_keys=[KEY], now_ms=now + sessions.LIFETIME_MS)
    assert not sessions.valid(cookie, tokens=["rat_other"], signing_keys=[KEY], now_ms=now)  # token removed
    assert not sessions.valid(cookie, tokens=[TOKEN], signing_keys=["signkey-prod-" + "ef" * 32], now_ms=now)
    expiry, tid, sig = cookie.split(".")
    assert not sessions.valid(f"{int(expiry) + 10**9}.{tid}.{sig}", tokens=[TOKEN], signing_keys=[KEY], now_ms=now)
    for junk in ("", "a.b", "x.y.z", "1.2.3.4"):
        assert not sessions.valid(junk, tokens=[TOKEN], signing_keys=[KEY], now_ms=now)


async def test_a_stream_opened_with_a_session_ends_when_the_session_does(
        prod: tuple[Stack, httpx.AsyncClient]) -> None:
    _, browser = prod
    ends_in_ms = 1_000
    browser.cookies.set(sessions.COOKIE, sessions.issue(TOKEN, KEY, protocol.now_ms() - sessions.LIFETIME_MS + ends_in_ms))
    started = time.monotonic()
    # The in-process transport returns once the reply is complete: only a stream that ends returns.
    resp = await asyncio.wait_for(browser.get("/v1/stream"), timeout=10)
    assert resp.status_code == 200 and resp.text.startswith("retry: 2000\nevent: hello\n"), resp.text
    assert time.monotonic() - started >= ends_in_ms / 1000 - 0.3  # it stayed open until then
    again = await browser.get("/v1/stream")  # the browser's reconnection
    assert again.status_code == 401, again.text
