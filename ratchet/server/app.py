"""The server's ASGI app: mounts the routes and starts the engine in the lifespan. Nothing else."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request, cookie_parser
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ratchet import protocol
from ratchet.server import auth, dashboard, openapi, sessions
from ratchet.server import config as config_mod
from ratchet.server import services as services_mod
from ratchet.server import transport as transport_mod
from ratchet.server.api import apps, console, events, gql, json_response, runs
from ratchet.server.store import base


async def health(request: Request) -> Response:
    return json_response({"status": 200, "message": "OK"})


def create_app(cfg: config_mod.ServerConfig, *, store: base.Store | None = None,
               transport: transport_mod.Transport | None = None) -> Starlette:
    """The server as an ASGI app. The engine starts with the app's lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        svc = await services_mod.Services.start(cfg, store=store, transport=transport)
        app.state.services = svc
        svc.sync_in_background()
        try:
            yield
        finally:
            await svc.stop()

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/e/{event_key}", events.send_events, methods=["POST"]),
        Route("/fn/register", apps.register, methods=["POST"]),
        Route("/v1/apps", apps.list_apps, methods=["GET"]),
        Route("/v1/apps/sync", apps.sync_apps, methods=["POST"]),
        Route("/v1/functions", apps.list_functions, methods=["GET"]),
        Route("/v1/functions/{function_id}/invoke", console.invoke_function, methods=["POST"]),
        Route("/v1/stream", console.stream, methods=["GET"]),
        Route("/v1/info", console.info, methods=["GET"]),
        Route("/v1/events", runs.list_events, methods=["GET"]),
        Route("/v1/events", events.send_events_v1, methods=["POST"]),
        Route("/v1/events/{event_id}", runs.get_event, methods=["GET"]),
        Route("/v1/events/{event_id}/runs", runs.event_runs, methods=["GET"]),
        Route("/v1/runs", runs.list_runs, methods=["GET"]),
        Route("/v1/runs/count", runs.count_runs, methods=["GET"]),
        Route("/v1/runs/cancel", runs.bulk_cancel, methods=["POST"]),
        Route("/v1/runs/{run_id}/cancel", runs.cancel_run, methods=["POST"]),
        Route("/v1/runs/replay", runs.replay_runs, methods=["POST"]),
        Route("/v1/runs/{run_id}/rerun", runs.rerun_run, methods=["POST"]),
        Route("/v1/runs/{run_id}", runs.get_run, methods=["GET"]),
        Route("/v1/dead-letters", runs.list_dead_letters, methods=["GET"]),
        Route("/v0/gql", gql.handle, methods=["POST"]),
        Route("/v0/runs/{run_id}/batch", runs.run_batch, methods=["GET"]),
        Route("/v0/runs/{run_id}/actions", runs.run_actions, methods=["GET"]),
        Route("/openapi.json", openapi.document, methods=["GET"]),
        *dashboard.routes(),
    ]
    middleware = ([Middleware(ApiTokenMiddleware, tokens=cfg.api_tokens, signing_keys=cfg.signing_keys)]
                  if cfg.kind == "cloud" else [])
    return Starlette(routes=routes, lifespan=lifespan, middleware=middleware)


class ApiTokenMiddleware:
    """Production mode: the REST and GraphQL APIs answer only requests with an API token, or from the
    dashboard with a login session (whose writes must carry the CSRF header). Pure ASGI, so the hot paths
    it does not guard pay one prefix check."""

    def __init__(self, app: ASGIApp, tokens: tuple[str, ...], signing_keys: tuple[str, ...] = ()) -> None:
        self.app = app
        self.tokens = tokens
        self.signing_keys = signing_keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(auth.PROTECTED_PREFIXES):
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            session = cookie_parser(headers.get("cookie", "")).get(sessions.COOKIE)
            if session is not None and not auth.token_ok(headers, self.tokens) and sessions.valid(
                    session, tokens=self.tokens, signing_keys=self.signing_keys, now_ms=protocol.now_ms()):
                if scope["method"] not in ("GET", "HEAD") and headers.get(sessions.CSRF_HEADER) != "1":
                    message = f"forbidden: a change made with a login session needs the {sessions.CSRF_HEADER} header"
                    await json_response({"error": message}, 403)(scope, receive, send)
                    return
            elif not auth.token_ok(headers, self.tokens):
                message = ("unauthorized: send Authorization: Bearer <API token>" if self.tokens else
                           "unauthorized: this server has no API token configured (ratchet start --api-token)")
                await json_response({"error": message}, 401)(scope, receive, send)
                return
        await self.app(scope, receive, send)
