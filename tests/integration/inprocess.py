"""Whole runs in one process: the server and an app written with Ratchet's SDK, wired through ASGI.

The executor's transport routes calls to the app's ASGI app, and the SDK client's httpx transport routes
the app's calls (register, send) to the server's ASGI app, so a full event → run → steps → completion
cycle needs no ports. The `stack` fixture (tests/integration/conftest.py) builds one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

import ratchet
import ratchet.sdk.fastapi
from ratchet.server import app as server_app
from ratchet.server import config as config_mod
from ratchet.server.engine import retry, steps

SERVER = "http://ratchet.test"
APP_URL = "http://app.test/api/inngest"


class AsgiTransport:
    """The server's `Transport`, delivering requests to an in-process ASGI app."""

    def __init__(self, app: Any) -> None:
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
        self.down = False

    async def request(self, method: str, url: str, body: bytes, headers: dict[str, str],
                      timeout_s: float) -> steps.Reply | steps.NoReply:
        if self.down:
            return steps.NoReply(f"could not reach the app at {url}: connection refused")
        resp = await self.client.request(method, url, content=body, headers=headers, timeout=timeout_s)
        return steps.Reply(resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, resp.content)

    async def close(self) -> None:
        await self.client.aclose()


class Stack:
    def __init__(self, server: Any, api: httpx.AsyncClient, client: ratchet.Client, transport: AsgiTransport,
                 serve: Callable[[list[ratchet.Function[Any]]], None]) -> None:
        self.server = server
        self.api = api
        self.client = client
        self.transport = transport
        self.serve = serve

    async def sync(self, fns: list[ratchet.Function[Any]]) -> None:
        self.serve(fns)
        resp = await self.api.post("/v1/apps/sync", json={"url": APP_URL})
        assert resp.status_code == 200, resp.text

    async def send(self, name: str, data: dict[str, Any] | None = None, **extra: Any) -> str:
        resp = await self.api.post("/e/key", json={"name": name, "data": data or {}, **extra})
        assert resp.status_code == 200, resp.text
        return str(resp.json()["ids"][0])

    async def runs_of(self, event_id: str) -> list[dict[str, Any]]:
        return (await self.api.get(f"/v1/events/{event_id}/runs")).json()["data"]  # type: ignore[no-any-return]

    async def wait_run(self, event_id: str, status: str = "COMPLETED", timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            runs = await self.runs_of(event_id)
            if runs and runs[0]["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                run = (await self.api.get(f"/v1/runs/{runs[0]['id']}")).json()["data"]
                assert run["status"] == status, run
                return run  # type: ignore[no-any-return]
            assert time.monotonic() < deadline, f"run of event {event_id} did not end in {timeout} s: {runs}"
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def start_stack(tmp_path: Path, *, signing_key: str | None = None, event_key: str | None = None,
                      api_token: str | None = None, retention_s: float | None = None,
                      item_retry_base_ms: int = 20, db_url: str | None = None) -> AsyncIterator[Stack]:
    """With `signing_key` (and `event_key`) the server runs in production mode and the SDK client too.
    `db_url`: the store (default: an SQLite file under `tmp_path`)."""
    holder: dict[str, Any] = {}

    async def dispatch(scope: Any, receive: Any, send: Any) -> None:
        await holder["asgi"](scope, receive, send)

    transport = AsgiTransport(dispatch)
    cfg = config_mod.ServerConfig(db_url=db_url or str(tmp_path / "r.db"), retry=retry.RetryPolicy(fixed_s=0.05),
                                  kind="cloud" if signing_key else "dev",
                                  signing_keys=(signing_key,) if signing_key else (),
                                  event_keys=(event_key,) if event_key else (),
                                  api_tokens=(api_token,) if api_token else (), retention_s=retention_s,
                                  item_retry_base_ms=item_retry_base_ms)
    server = server_app.create_app(cfg, transport=transport)
    client = ratchet.Client(app_id="inproc", is_production=signing_key is not None, api_base_url=SERVER,
                            event_api_base_url=SERVER, signing_key=signing_key, event_key=event_key,
                            transport=httpx.ASGITransport(app=server))

    def serve(fns: list[ratchet.Function[Any]]) -> None:
        holder["asgi"] = ratchet.sdk.fastapi.asgi_app(client, fns)

    async with (server.router.lifespan_context(server),
                httpx.AsyncClient(transport=httpx.ASGITransport(app=server), base_url=SERVER,
                                  headers={"authorization": f"Bearer {api_token}"} if api_token else None) as api):
        yield Stack(server, api, client, transport, serve)
    await transport.close()
