"""Syncing apps: asking an app to register (a PUT to its serve URL) and taking its registration.

The two halves never wait on each other: `register` (the app's `POST /fn/register`) only validates and
stores, because the app's PUT handler is still open while it calls us, and some apps serve one request
at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
import urllib.parse
import uuid
from typing import Any

import orjson
import pydantic

from ratchet import protocol
from ratchet.server import registry
from ratchet.server import transport as transport_mod
from ratchet.server.engine import cron, expressions, flow, steps
from ratchet.server.store import base

log = logging.getLogger("ratchet.sync")

#: How long a sync PUT to an app may take (the app calls us back inside it).
SYNC_TIMEOUT_S = 30.0


class RegistrationInvalid(ValueError):
    """A registration body or function config is invalid; the message names the field."""


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_registration(body: bytes) -> protocol.RegisterRequest:
    """Validate a `/fn/register` body; raises RegistrationInvalid with `field: problem`."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RegistrationInvalid(f"body is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise RegistrationInvalid("body must be a JSON object")
    try:
        req = protocol.RegisterRequest.model_validate(raw)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        raise RegistrationInvalid(f"{_loc(first['loc']) or 'body'}: {first['msg']}") from None
    if not req.app_name.strip():
        raise RegistrationInvalid("appName: must be a non-empty string")
    _check_url(req.url, "url")
    seen: set[str] = set()
    for i, fn in enumerate(req.functions):
        _check_function(fn, f"functions[{i}]")
        if fn.id in seen:
            raise RegistrationInvalid(f"functions[{i}].id: duplicate function id {fn.id!r}")
        seen.add(fn.id)
    return req


def _check_url(url: str, where: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RegistrationInvalid(f"{where}: must be an http(s) URL, got {url!r}")


def _check_duration(value: str | None, where: str) -> None:
    if value is None:
        return
    try:
        protocol.parse_duration(value)
    except ValueError as exc:
        raise RegistrationInvalid(f"{where}: {exc}") from None


def _check_function(fn: protocol.FunctionConfig, where: str) -> None:
    """Checks a function config beyond its shape. Flow-control semantics are checked where implemented."""
    if not fn.id.strip():
        raise RegistrationInvalid(f"{where}.id: must be a non-empty string")
    if not fn.steps:
        raise RegistrationInvalid(f"{where}.steps: a function needs a step with a runtime url")
    for key, step in fn.steps.items():
        _check_url(step.runtime.url, f"{where}.steps.{key}.runtime.url")
        if step.retries is not None and step.retries.attempts is not None and not 0 <= step.retries.attempts <= 20:
            raise RegistrationInvalid(f"{where}.steps.{key}.retries.attempts: must be between 0 and 20, "
                                      f"got {step.retries.attempts}")
    for j, trig in enumerate(fn.triggers):
        tw = f"{where}.triggers[{j}]"
        if (trig.event is None) == (trig.cron is None):
            raise RegistrationInvalid(f"{tw}: needs exactly one of 'event' or 'cron'")
        if trig.event is not None and not trig.event.strip():
            raise RegistrationInvalid(f"{tw}.event: must be a non-empty string")
        if trig.cron is not None:
            try:
                cron.parse(trig.cron)
            except cron.CronError as exc:
                raise RegistrationInvalid(f"{tw}.cron: {exc}") from None
        _check_duration(trig.jitter, f"{tw}.jitter")
        _check_expression(trig.expression, expressions.Kind.EVENT, fn.id, f"{tw}.expression")
    if fn.timeouts is not None:
        _check_duration(fn.timeouts.start, f"{where}.timeouts.start")
        _check_duration(fn.timeouts.finish, f"{where}.timeouts.finish")
    for j, cancel in enumerate(fn.cancel or []):
        _check_duration(cancel.timeout, f"{where}.cancel[{j}].timeout")
        if not cancel.event.strip():
            raise RegistrationInvalid(f"{where}.cancel[{j}].event: must be a non-empty string")
        _check_expression(cancel.if_exp, expressions.Kind.MATCH, fn.id, f"{where}.cancel[{j}].if")
    _check_flow(fn, where)


def _check_flow(fn: protocol.FunctionConfig, where: str) -> None:
    """Flow-control values and combinations (`engine/flow`), every problem named by its field."""
    try:
        flow.validate(fn)
    except flow.FlowConfigInvalid as exc:
        problems = "; ".join(f"{where}.{p.path}: {p.message}" for p in exc.problems)
        raise RegistrationInvalid(f"function {fn.id!r}: {problems}") from None


def _check_expression(source: str | None, kind: expressions.Kind, fn_id: str, where: str) -> None:
    if source is None:
        return
    try:
        expressions.validate(source, kind)
    except expressions.ExpressionError as exc:
        raise RegistrationInvalid(f"{where}: function {fn_id!r}: {exc}") from None


class Syncer:
    def __init__(self, store: base.Store, functions: registry.Registry, transport: transport_mod.Transport, *,
                 server_kind: str, signing_key: str | None = None) -> None:
        self._signing_key = signing_key
        self._store = store
        self._transport = transport
        self._functions = functions
        self._server_kind = server_kind
        self._lock = asyncio.Lock()

    async def register(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Handle `POST /fn/register`: (status, JSON reply)."""
        expected = headers.get(protocol.Header.EXPECTED_SERVER_KIND)
        if expected and expected != self._server_kind:
            return 400, {"ok": False, "error": f"Expected server kind {self._server_kind}, got {expected}"}
        try:
            req = parse_registration(body)
        except RegistrationInvalid as exc:
            return 400, {"ok": False, "error": str(exc)}
        now = time.time_ns() // 1_000_000
        checksum = hashlib.sha256(body).hexdigest()
        app = base.AppRecord(id=str(uuid.uuid4()), name=req.app_name, url=req.url, sdk=req.sdk,
                             framework=req.framework, checksum=checksum, synced_at=now)
        fns = [base.FunctionRecord(slug=fn.id, app_id=app.id, name=fn.name or fn.id, config=fn,
                                   url=fn.url() or req.url) for fn in req.functions]
        crons = cron.schedules(fns, now=now, rand=random.random())
        async with self._lock:
            stored, changed = await self._store.sync_app(app, fns, crons)
            await self._functions.reload()
        log.info("synced app %s (%d functions) from %s", req.app_name, len(fns), req.url)
        return 200, {"ok": True, "modified": changed, "app_id": stored.id, "sync_id": str(uuid.uuid4())}

    async def sync_url(self, url: str) -> dict[str, Any]:
        """Ask the app at `url` to sync (a PUT); returns the app's reply. Raises SyncFailed."""
        headers = {"content-type": "application/json", protocol.Header.SERVER_KIND: self._server_kind}
        body = protocol.canonical_json({"url": url})
        if self._signing_key:
            headers[protocol.Header.SIGNATURE] = protocol.sign(body, self._signing_key)
        result = await self._transport.request("PUT", url, body, headers, SYNC_TIMEOUT_S)
        if isinstance(result, steps.NoReply):
            error = f"could not sync the app at {url}: {result.reason}"
            await self._store.set_app_error(url, error)
            raise SyncFailed(error)
        status, text = result.status, result.body
        try:
            reply = orjson.loads(text)
        except orjson.JSONDecodeError:
            reply = None
        if status >= 400 or not isinstance(reply, dict) or reply.get("ok") is False:
            detail = reply.get("error") or reply.get("message") if isinstance(reply, dict) else text[:500].decode(
                errors="replace")
            error = f"the app at {url} did not sync (status {status}): {detail}"
            await self._store.set_app_error(url, error)
            raise SyncFailed(error)
        return reply

    async def sync_until_done(self, url: str, *, max_wait_s: float = 10.0) -> None:
        """Keep trying to sync `url` (it may not be up yet), backing off to one try each `max_wait_s`."""
        delay = 0.1
        while True:
            try:
                await self.sync_url(url)
                return
            except SyncFailed as exc:
                log.warning("%s; retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(max_wait_s, delay * 2)


class SyncFailed(Exception):
    """An app could not be synced; the message says why."""
