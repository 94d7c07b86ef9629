"""Serve functions from Flask (or any WSGI app built on it).

    import ratchet, ratchet.sdk.flask
    ratchet.sdk.flask.serve(app, client, [process_order])

Plain `def` functions run in the request thread; `async def` functions run with `asyncio.run`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flask

from ratchet import protocol
from ratchet.sdk import _serve
from ratchet.sdk import client as client_lib
from ratchet.sdk import function as function_lib

__all__ = ["serve"]

FRAMEWORK = "flask"


def serve(app: flask.Flask, client: client_lib.Client, functions: Sequence[function_lib.Function[Any]], *,
          serve_path: str | None = None, serve_origin: str | None = None) -> None:
    """Add the serve endpoint (GET, POST, PUT) to a Flask app.

    Args:
        app: The Flask application.
        client: The app's `ratchet.Client`.
        functions: The functions to serve.
        serve_path: Route of the endpoint; default the client's `serve_path` or `/api/inngest`.
        serve_origin: Public origin reported at sync (when the app sits behind a proxy).
    """
    path = serve_path or client.serve_path or protocol.DEFAULT_SERVE_PATH
    handler = _serve.ServeHandler(client, functions, framework=FRAMEWORK, serve_origin=serve_origin,
                                  serve_path=serve_path)

    def endpoint() -> flask.Response:
        req = flask.request
        sdk_req = _serve.SdkRequest(
            method=req.method,
            url=req.base_url,
            query={k: v for k, v in req.args.items()},
            headers={k.lower(): v for k, v in req.headers.items()},
            body=req.get_data(),
        )
        resp = handler.handle_sync(sdk_req)
        return flask.Response(resp.body, status=resp.status, headers=resp.headers)

    app.add_url_rule(path, endpoint=f"ratchet_{client.app_id}", view_func=endpoint,
                     methods=["GET", "POST", "PUT"])
