"""Apps and functions: the SDK's `POST /fn/register`, re-sync requests and listings."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ratchet import protocol
from ratchet.server import auth, sync
from ratchet.server.api import error, json_response, services
from ratchet.server.engine import cron
from ratchet.server.store import base


async def register(request: Request) -> Response:
    """`POST /fn/register`. The reply repeats its HTTP status in the body: the TypeScript SDK reads the
    outcome from the body's `status` (200 when missing) and answers the server's sync PUT with it, so
    without it a refused registration (a wrong signing key, an invalid config) looked like a sync that
    worked."""
    svc = services(request)
    if svc.cfg.signing_keys and not auth.bearer_ok(request.headers, svc.cfg.signing_keys):
        status, reply = 401, {"ok": False, "error": "unauthorized: a valid signing-key bearer token is required"}
    else:
        body = await request.body()
        status, reply = await svc.syncer.register(body, {k.lower(): v for k, v in request.headers.items()})
    return json_response({**reply, "status": status}, status)


async def sync_apps(request: Request) -> Response:
    """`POST /v1/apps/sync` with `{"url": ...}` to sync one app, or no body to re-sync every known app. A 502
    when a sync failed, with each app's result in `data` and why the failed ones failed in `error`."""
    svc = services(request)
    body = await request.body()
    urls: list[str]
    if body.strip():
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return error(400, f"body is not valid JSON: {exc}")
        if not isinstance(value, dict) or not isinstance(value.get("url"), str) or not value["url"].strip():
            return error(400, "url: a JSON object with a non-empty string 'url' is required")
        urls = [value["url"]]
    else:
        urls = sorted({a.url for a in await svc.store.list_apps()} | set(svc.cfg.app_urls))
    results: list[dict[str, Any]] = []
    failed = False
    for url in urls:
        try:
            reply = await svc.syncer.sync_url(url)
            results.append({"url": url, "ok": True, "modified": reply.get("modified")})
        except sync.SyncFailed as exc:
            failed = True
            results.append({"url": url, "ok": False, "error": str(exc)})
    if not failed:
        return json_response({"data": results})
    # `error` says why in one line, as every other refused request does (the dashboard shows it).
    reasons = [f"{r['url']}: {r['error']}" if len(results) > 1 else str(r["error"]) for r in results if not r["ok"]]
    return json_response({"data": results, "error": "; ".join(reasons)}, 502)


def app_json(app: base.AppRecord) -> dict[str, Any]:
    return {"id": app.id, "name": app.name, "url": app.url, "sdk": app.sdk, "framework": app.framework,
            "synced_at": app.synced_at, "error": app.error, "function_count": app.function_count}


def function_json(fn: base.FunctionRecord, now: int | None = None) -> dict[str, Any]:
    """A function with its config; with `now`, also each cron trigger's next fire time (`cron`)."""
    out: dict[str, Any] = {"id": fn.slug, "app_id": fn.app_id, "name": fn.name, "url": fn.url,
                           "config": fn.config.model_dump(mode="json", by_alias=True, exclude_none=True)}
    if now is not None:
        out["cron"] = [{"cron": t.cron, "next_at": cron.next_fire(t.cron, now)} for t in fn.config.triggers if t.cron]
    return out


async def list_apps(request: Request) -> Response:
    return json_response({"data": [app_json(a) for a in await services(request).store.list_apps()]})


async def list_functions(request: Request) -> Response:
    now = protocol.now_ms()
    return json_response({"data": [function_json(f, now) for f in await services(request).store.list_functions()]})
