"""Serve functions from FastAPI, Starlette or any ASGI server.

    import ratchet, ratchet.sdk.fastapi
    ratchet.sdk.fastapi.serve(app, client, [process_order])            # FastAPI or Starlette app
    asgi = ratchet.sdk.fastapi.asgi_app(client, [process_order])      # a bare ASGI app, e.g. for Starlette:
    Route("/api/inngest", asgi, methods=["GET", "POST", "PUT"])

`async def` functions run on the event loop; plain `def` functions run in a worker thread. The sync call
to the server (`PUT`) uses an async HTTP client, so the app keeps serving while the server is busy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

from starlette.routing import Route

from ratchet import protocol
from ratchet.sdk import _serve
from ratchet.sdk import client as client_lib
from ratchet.sdk import function as function_lib

__all__ = ["asgi_app", "serve"]

FRAMEWORK = "fast_api"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def serve(app: Any, client: client_lib.Client, functions: Sequence[function_lib.Function[Any]], *,
          serve_path: str | None = None, serve_origin: str | None = None) -> None:
    """Add the serve endpoint (GET, POST, PUT) to a FastAPI or Starlette app.

    Args:
        app: The FastAPI or Starlette application.
        client: The app's `ratchet.Client`.
        functions: The functions to serve.
        serve_path: Route of the endpoint; default the client's `serve_path` or `/api/inngest`.
        serve_origin: Public origin reported at sync (when the app sits behind a proxy).
    """
    path = serve_path or client.serve_path or protocol.DEFAULT_SERVE_PATH
    endpoint = asgi_app(client, functions, serve_path=serve_path, serve_origin=serve_origin)
    # A Starlette `Route` whose endpoint is an ASGI object (not a function) gets the raw scope/receive/send.
    app.router.routes.append(Route(path, endpoint, methods=["GET", "POST", "PUT"], include_in_schema=False))


def asgi_app(client: client_lib.Client, functions: Sequence[function_lib.Function[Any]], *,
             serve_path: str | None = None, serve_origin: str | None = None) -> ASGIApp:
    """A bare ASGI application serving `functions` at whatever path it is mounted on.

    Args:
        client: The app's `ratchet.Client`.
        functions: The functions to serve.
        serve_path: Public path reported at sync (default: the path of the sync request).
        serve_origin: Public origin reported at sync.
    """
    return _App(_serve.ServeHandler(client, functions, framework=FRAMEWORK, serve_origin=serve_origin,
                                    serve_path=serve_path))


class _App:
    """The ASGI callable (a class, so that Starlette routes treat it as an app, not a request handler)."""

    def __init__(self, handler: _serve.ServeHandler) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise RuntimeError(f"ratchet serves HTTP only, got an ASGI {scope['type']!r} connection")
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        resp = await self.handler.handle(_request(scope, bytes(body)))
        await send({"type": "http.response.start", "status": resp.status,
                    "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers.items()]})
        await send({"type": "http.response.body", "body": resp.body})


def _request(scope: Scope, body: bytes) -> _serve.SdkRequest:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    scheme = scope.get("scheme", "http")
    host = headers.get("host")
    if host is None:
        server = scope.get("server") or ("localhost", None)
        host = server[0] if server[1] in (None, 80, 443) else f"{server[0]}:{server[1]}"
    root, path = scope.get("root_path", ""), scope.get("path", "/")
    if not path.startswith(root):  # Starlette >= 0.33 keeps the mount prefix in `path`; older ones don't
        path = root + path
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
    return _serve.SdkRequest(method=scope.get("method", "GET"), url=f"{scheme}://{host}{path}",
                             query=query, headers=headers, body=body)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
