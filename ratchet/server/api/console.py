"""Endpoints the dashboard needs beyond the read API: invoking a function by hand, and a live stream of
"something changed" notices (`/v1/stream`, server-sent events) so open pages refresh as runs progress."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ratchet import protocol
from ratchet.server import auth, sessions
from ratchet.server.api import error, json_response, services
from ratchet.server.engine import lifecycle

#: How often the stream looks at the store's change marker (a counter read on SQLite, one tiny query
#: on PostgreSQL), and how long it may stay silent before a keep-alive comment.
POLL_S = 0.25
KEEP_ALIVE_S = 15.0


async def invoke_function(request: Request) -> Response:
    """`POST /v1/functions/{id}/invoke` with `{"data": {...}}`: start a run of the function with that
    payload, whatever its triggers (an `inngest/function.invoked` event, as `step.invoke` sends)."""
    svc = services(request)
    slug = request.path_params["function_id"]
    fn = await svc.store.get_function(slug)
    if fn is None or svc.functions.get(slug) is None:
        return error(404, f"function {slug!r} not found (or removed from its app)")
    try:
        body = orjson.loads(await request.body() or b"{}")
    except orjson.JSONDecodeError as exc:
        return error(400, f"body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return error(400, "body must be a JSON object like {\"data\": {...}}")
    data = body.get("data", {})
    if not isinstance(data, dict):
        return error(400, f"data: must be a JSON object, got {type(data).__name__}")
    if len(orjson.dumps(data)) > svc.cfg.max_event_bytes:
        return error(413, f"data: over the event size limit of {svc.cfg.max_event_bytes} bytes")
    event = {"name": lifecycle.INVOKED, "data": {**data, "_inngest": {"fn_id": slug, "source": "dashboard"}}}
    run_ids = await svc.ingestor.ingest_internal([event], protocol.now_ms())
    if not run_ids:
        return error(409, f"function {slug!r} did not start a run")
    return json_response({"data": {"run_id": run_ids[0]}}, 201)


def _session_over(request: Request) -> Callable[[], bool]:
    """Whether the login session that opened this request has ended since (expired). Always false for a
    request with an API token, or in dev mode. (The middleware let the request in, so it was valid then.)"""
    cfg = services(request).cfg
    if cfg.kind != "cloud" or auth.token_ok(request.headers, cfg.api_tokens):
        return lambda: False
    cookie = request.cookies.get(sessions.COOKIE)
    return lambda: not sessions.valid(cookie, tokens=cfg.api_tokens, signing_keys=cfg.signing_keys,
                                      now_ms=protocol.now_ms())


async def stream(request: Request) -> Response:
    """`GET /v1/stream`: server-sent events; `event: change` whenever the store was written (at most four
    times a second), so a page refetches what it shows. Works across nodes on PostgreSQL. A stream opened
    with a login session ends when the session does: the browser reconnects, gets a 401, and the
    dashboard goes to its login page instead of showing changes to someone logged out."""
    store = services(request).store
    session_over = _session_over(request)

    async def events() -> AsyncIterator[bytes]:
        yield b"retry: 2000\nevent: hello\ndata: {}\n\n"
        last: Any = await store.change_marker()
        quiet = 0.0
        while not await request.is_disconnected() and not session_over():
            await asyncio.sleep(POLL_S)  # a poll of a cheap marker (see change_marker)
            marker = await store.change_marker()
            if marker != last:
                last, quiet = marker, 0.0
                yield b"event: change\ndata: {}\n\n"
            else:
                quiet += POLL_S
                if quiet >= KEEP_ALIVE_S:
                    quiet = 0.0
                    yield b": keep-alive\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})


async def info(request: Request) -> Response:
    """`GET /v1/info`: what the dashboard shows about the server (its mode)."""
    cfg = services(request).cfg
    return json_response({"data": {"mode": "production" if cfg.kind == "cloud" else "dev",
                                   "backend": "postgres" if cfg.db_url.startswith("postgres") else "sqlite"}})
