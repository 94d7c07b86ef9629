"""The dashboard: a single page (Preact + htm as one vendored ES module, no build step) served at `/`,
reading the same REST API users and the CLI use. In production mode it needs a login (an API token,
exchanged for a session cookie, see `sessions`); in dev mode it is open."""

from __future__ import annotations

import html
import urllib.parse
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ratchet import protocol
from ratchet.server import auth, sessions
from ratchet.server.api import services

STATIC = Path(__file__).parent / "static"


def logged_in(request: Request) -> bool:
    cfg = services(request).cfg
    if cfg.kind != "cloud":
        return True
    return sessions.valid(request.cookies.get(sessions.COOKIE), tokens=cfg.api_tokens,
                          signing_keys=cfg.signing_keys, now_ms=protocol.now_ms())


async def index(request: Request) -> Response:
    if not logged_in(request):
        return RedirectResponse("/login", 303)
    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})


LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Ratchet · log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="stylesheet" href="/static/style.css">
</head><body class="login"><form method="post" action="/login" class="card">
<h1>Ratchet</h1><p>This server runs in production mode: log in with an API token
(<code>ratchet start --api-token</code>).</p>{error}
<label>API token <input type="password" name="token" autocomplete="current-password" autofocus required></label>
<button type="submit">Log in</button></form></body></html>"""


async def login_page(request: Request) -> Response:
    if services(request).cfg.kind != "cloud":
        return RedirectResponse("/", 303)
    return HTMLResponse(LOGIN_PAGE.format(error=""))


async def login(request: Request) -> Response:
    cfg = services(request).cfg
    if cfg.kind != "cloud":
        return RedirectResponse("/", 303)
    # Failed logins are limited per client (`login_limit`), a correct token included while it waits.
    client, now = request.client.host if request.client else "", protocol.now_ms()
    if wait_ms := services(request).logins.wait_ms(client, now):
        wait_s = -(-wait_ms // 1000)
        reason = f"too many failed logins: try again in {wait_s} s"
        page = LOGIN_PAGE.format(error=f'<p class="error" role="alert">{html.escape(reason)}</p>')
        return HTMLResponse(page, 429, headers={"retry-after": str(wait_s)})
    # A one-field url-encoded form: parsed here rather than adding python-multipart for it.
    body = (await request.body())[:8192].decode(errors="replace")
    token = (urllib.parse.parse_qs(body).get("token") or [""])[0].strip()
    if not token or not auth.secret_matches(token, cfg.api_tokens) or not cfg.signing_keys:
        reason = ("no API token was given" if not token else
                  "that API token is not one this server accepts" if cfg.api_tokens else
                  "this server has no API token configured (ratchet start --api-token)")
        services(request).logins.failed(client, now)
        page = LOGIN_PAGE.format(error=f'<p class="error" role="alert">{html.escape(reason)}</p>')
        return HTMLResponse(page, 401)
    services(request).logins.succeeded(client)
    resp = RedirectResponse("/", 303)
    secure = request.url.scheme == "https"
    resp.set_cookie(sessions.COOKIE, sessions.issue(token, cfg.signing_keys[0], protocol.now_ms()),
                    max_age=sessions.LIFETIME_MS // 1000, httponly=True, samesite="strict", secure=secure, path="/")
    return resp


async def logout(request: Request) -> Response:
    resp = RedirectResponse("/login" if services(request).cfg.kind == "cloud" else "/", 303)
    resp.delete_cookie(sessions.COOKIE, path="/")
    return resp


def routes() -> list[BaseRoute]:
    return [
        Route("/", index, methods=["GET"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
