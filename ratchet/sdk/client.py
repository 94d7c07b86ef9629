"""The `Client`: an app's identity, mode, server URLs and keys; it defines functions and sends events.

Mode and URLs come from the constructor, else from the INNGEST_* environment variables, exactly as the
official SDK reads them (protocol reference §5).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import httpx
import orjson

from ratchet import protocol
from ratchet.sdk import errors
from ratchet.sdk import event as event_lib
from ratchet.sdk import function as function_lib

T = TypeVar("T")

#: The SDK's name and version as sent in `x-inngest-sdk`.
SDK_NAME = "ratchet-py"
SDK_VERSION = "0.1.0"
SDK_IDENT = f"{SDK_NAME}:v{SDK_VERSION}"

DEV_SERVER_URL = "http://127.0.0.1:8288/"
CLOUD_API_URL = "https://api.inngest.com/"
CLOUD_EVENT_API_URL = "https://inn.gs/"

#: Attempts of an event send on a 5xx reply or a connection error (4xx are never retried).
SEND_ATTEMPTS = 5


class Client:
    """An app: defines functions and sends events.

    Args:
        app_id: The app's id; function ids are prefixed with it (`"{app_id}-{fn_id}"`).
        is_production: Production mode verifies signatures and needs keys. None reads INNGEST_DEV
            (truthy → dev); when that is unset too, production.
        api_base_url: Server REST API origin (INNGEST_API_BASE_URL, INNGEST_BASE_URL, INNGEST_DEV URL).
        event_api_base_url: Event API origin (INNGEST_EVENT_API_BASE_URL, INNGEST_BASE_URL, ...).
        event_key: Key for sending events (INNGEST_EVENT_KEY); dev mode defaults to `NO_EVENT_KEY_SET`.
        signing_key: Key that signs server ⇄ app traffic (INNGEST_SIGNING_KEY).
        signing_key_fallback: Second key accepted while rotating keys (INNGEST_SIGNING_KEY_FALLBACK).
        env: Branch environment, sent as `x-inngest-env` (INNGEST_ENV).
        serve_origin: Public origin of the app, overriding the one seen in the sync request
            (INNGEST_SERVE_ORIGIN).
        serve_path: Public path of the serve endpoint (INNGEST_SERVE_PATH).
        logger: Logger for the SDK and `ctx.logger`; default `logging.getLogger("ratchet")`.
        transport: An httpx transport for outgoing calls (tests use `httpx.MockTransport` or
            `httpx.ASGITransport`); used for sync calls when it is an `httpx.BaseTransport` and for async
            calls when it is an `httpx.AsyncBaseTransport`.
        request_timeout_s: Timeout of calls to the server.
    """

    def __init__(
        self,
        app_id: str,
        *,
        is_production: bool | None = None,
        api_base_url: str | None = None,
        event_api_base_url: str | None = None,
        event_key: str | None = None,
        signing_key: str | None = None,
        signing_key_fallback: str | None = None,
        env: str | None = None,
        serve_origin: str | None = None,
        serve_path: str | None = None,
        logger: logging.Logger | None = None,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
        request_timeout_s: float = 30.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(app_id, str) or not app_id.strip():
            raise ValueError(f"Client(app_id=...): must be a non-empty string, got {app_id!r}")
        env_vars = os.environ if environ is None else environ
        self.app_id = app_id
        self.logger = logger or logging.getLogger("ratchet")
        dev_var = env_vars.get("INNGEST_DEV", "")
        if is_production is None:
            is_production = dev_var.strip().lower() in ("", "0", "false")
        self.is_production = is_production
        dev_url = _url_from_dev_var(dev_var)
        base_var = env_vars.get("INNGEST_BASE_URL") or None
        dev_default = dev_url or DEV_SERVER_URL
        self.api_origin = _origin(api_base_url or env_vars.get("INNGEST_API_BASE_URL") or base_var
                                  or (CLOUD_API_URL if is_production else dev_default), "api_base_url")
        self.event_api_origin = _origin(
            event_api_base_url or env_vars.get("INNGEST_EVENT_API_BASE_URL") or base_var
            or (CLOUD_EVENT_API_URL if is_production else dev_default), "event_api_base_url")
        self.event_key = event_key or env_vars.get("INNGEST_EVENT_KEY") or None
        self.signing_key = signing_key or env_vars.get("INNGEST_SIGNING_KEY") or None
        self.signing_key_fallback = signing_key_fallback or env_vars.get("INNGEST_SIGNING_KEY_FALLBACK") or None
        for key, arg in ((self.signing_key, "signing_key"), (self.signing_key_fallback, "signing_key_fallback")):
            if key is not None:
                try:
                    protocol.hashed_signing_key(key)
                except ValueError:
                    raise ValueError(f"Client({arg}=...): expected 'signkey-<env>-<hex>' or hex") from None
        self.env = env or next((env_vars[k] for k in ("INNGEST_ENV", "RAILWAY_GIT_BRANCH", "RENDER_GIT_BRANCH",
                                                      "VERCEL_GIT_COMMIT_REF") if env_vars.get(k)), None)
        origin = serve_origin or env_vars.get("INNGEST_SERVE_ORIGIN") or None
        if origin and "://" not in origin:
            origin = f"https://{origin}"
        self.serve_origin = origin.rstrip("/") if origin else None
        self.serve_path = serve_path or env_vars.get("INNGEST_SERVE_PATH") or None
        self.request_timeout_s = request_timeout_s
        self._transport = transport

    @property
    def mode(self) -> str:
        """`"cloud"` in production mode, else `"dev"` (the values of `x-inngest-server-kind`)."""
        return "cloud" if self.is_production else "dev"

    def __repr__(self) -> str:
        return f"<ratchet.Client app_id={self.app_id!r} mode={self.mode}>"

    # ----------------------------------------------------------------------------------------- functions

    def function(
        self,
        *,
        id: str,
        trigger: function_lib.Trigger | Sequence[function_lib.Trigger],
        name: str | None = None,
        retries: int | None = None,
        concurrency: function_lib.Concurrency | Sequence[function_lib.Concurrency] | None = None,
        throttle: function_lib.Throttle | None = None,
        rate_limit: function_lib.RateLimit | None = None,
        debounce: function_lib.Debounce | None = None,
        batch_events: function_lib.Batch | None = None,
        cancel: function_lib.Cancel | Sequence[function_lib.Cancel] | None = None,
        priority: function_lib.Priority | None = None,
        idempotency: str | None = None,
        singleton: function_lib.Singleton | None = None,
        timeouts: function_lib.Timeouts | None = None,
        on_failure: function_lib.Handler[Any] | None = None,
    ) -> Callable[[function_lib.Handler[T]], function_lib.Function[T]]:
        """Decorator that turns `async def f(ctx)` (or `def f(ctx)`) into a durable `Function`.

        Args:
            id: The function's id within the app (registered as `"{app_id}-{id}"`).
            trigger: `ratchet.on_event(...)`, `ratchet.on_cron(...)`, or a list of them.
            name: Display name; defaults to `id`.
            retries: Retries per step or call (0 to 20); the server's default is 4.
            concurrency: Up to two `ratchet.Concurrency` limits.
            throttle: A `ratchet.Throttle`.
            rate_limit: A `ratchet.RateLimit`.
            debounce: A `ratchet.Debounce`.
            batch_events: A `ratchet.Batch`.
            cancel: `ratchet.Cancel` conditions.
            priority: A `ratchet.Priority`.
            idempotency: An expression; one run per value within 24 h.
            singleton: A `ratchet.Singleton`.
            timeouts: A `ratchet.Timeouts`.
            on_failure: A handler run (with the `inngest/function.failed` event) when the function fails
                for good; async exactly when the function is.
        """
        options = function_lib.build_options(
            id=id, name=name, trigger=trigger, retries=retries, concurrency=concurrency, throttle=throttle,
            rate_limit=rate_limit, debounce=debounce, batch_events=batch_events, cancel=cancel,
            priority=priority, idempotency=idempotency, singleton=singleton, timeouts=timeouts,
        )
        if on_failure is not None and not callable(on_failure):
            raise TypeError(f"function(on_failure=...): must be callable, got {type(on_failure).__name__}")

        def decorator(handler: function_lib.Handler[T]) -> function_lib.Function[T]:
            if not callable(handler):
                raise TypeError(f"function {id!r}: the decorated object must be callable")
            return function_lib.Function(options, handler, on_failure)

        return decorator

    # ----------------------------------------------------------------------------------------- events

    async def send(self, events: event_lib.Event | Sequence[event_lib.Event]) -> list[str]:
        """Send events to the event API; returns their ids in order.

        Args:
            events: One `ratchet.Event` or a list of them.

        Raises:
            SendEventsError: The server refused some events (`.ids` holds those it accepted).
            EventKeyMissingError: Production mode without an event key.
        """
        url, headers, body = self._send_request(events)
        async with self.http_async() as http:
            for attempt in range(SEND_ATTEMPTS):
                try:
                    resp = await http.post(url, headers=headers, content=body)
                except httpx.TransportError as exc:
                    if attempt + 1 == SEND_ATTEMPTS:
                        raise errors.SendEventsError(f"cannot reach the event API: {exc}") from exc
                else:
                    if resp.status_code < 500 or attempt + 1 == SEND_ATTEMPTS:
                        return _send_result(resp)
                await asyncio.sleep(_backoff_s(attempt))
        raise AssertionError("unreachable")

    def send_sync(self, events: event_lib.Event | Sequence[event_lib.Event]) -> list[str]:
        """Send events without `await` (for sync code); see `send`."""
        url, headers, body = self._send_request(events)
        with self.http_sync() as http:
            for attempt in range(SEND_ATTEMPTS):
                try:
                    resp = http.post(url, headers=headers, content=body)
                except httpx.TransportError as exc:
                    if attempt + 1 == SEND_ATTEMPTS:
                        raise errors.SendEventsError(f"cannot reach the event API: {exc}") from exc
                else:
                    if resp.status_code < 500 or attempt + 1 == SEND_ATTEMPTS:
                        return _send_result(resp)
                time.sleep(_backoff_s(attempt))
        raise AssertionError("unreachable")

    def _send_request(self, events: event_lib.Event | Sequence[event_lib.Event]) -> tuple[str, dict[str, str], bytes]:
        batch = [events] if isinstance(events, event_lib.Event) else list(events)
        if not batch:
            raise ValueError("send(events=...): at least one event is required")
        for ev in batch:
            if not isinstance(ev, event_lib.Event):
                raise TypeError(f"send(events=...): expected ratchet.Event or a list of them, got {ev!r}")
        key = self.event_key
        if key is None:
            if self.is_production:
                raise errors.EventKeyMissingError(
                    "set Client(event_key=...) or INNGEST_EVENT_KEY to send events in production mode")
            key = protocol.DEV_EVENT_KEY
        now = protocol.now_ms()
        wire = [ev.to_wire() | ({} if ev.ts else {"ts": now}) for ev in batch]
        headers = self.headers()
        # A seed lets the server derive the same ids when a retried request is seen twice.
        seed = base64.b64encode(secrets.token_bytes(10)).decode()
        headers[protocol.Header.EVENT_ID_SEED] = f"{now},{seed}"
        return urljoin(self.event_api_origin, f"/e/{key}"), headers, orjson.dumps(wire)

    # ----------------------------------------------------------------------------------------- http

    def headers(self, framework: str | None = None) -> dict[str, str]:
        """Headers of every SDK → server request."""
        out = {
            "content-type": "application/json",
            "user-agent": SDK_IDENT,
            protocol.Header.SDK: SDK_IDENT,
            protocol.Header.REQ_VERSION: str(protocol.REQUEST_VERSION),
        }
        if framework:
            out[protocol.Header.FRAMEWORK] = framework
        if self.env:
            out[protocol.Header.ENV] = self.env
        return out

    def http_async(self) -> httpx.AsyncClient:
        """A fresh async HTTP client (one per operation, so it never outlives its event loop)."""
        transport = self._transport if isinstance(self._transport, httpx.AsyncBaseTransport) else None
        return httpx.AsyncClient(transport=transport, timeout=self.request_timeout_s)

    def http_sync(self) -> httpx.Client:
        """A fresh sync HTTP client."""
        transport = self._transport if isinstance(self._transport, httpx.BaseTransport) else None
        return httpx.Client(transport=transport, timeout=self.request_timeout_s)


def _send_result(resp: httpx.Response) -> list[str]:
    try:
        body: Any = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        raise errors.SendEventsError(
            f"event API replied {resp.status_code} with a non-JSON body: {resp.text[:200]!r}") from None
    if not isinstance(body, dict):
        raise errors.SendEventsError(f"event API replied {resp.status_code} with {body!r}")
    ids = body.get("ids")
    ids = [str(i) for i in ids] if isinstance(ids, list) else []
    error = body.get("error")
    if error or resp.status_code >= 400:
        raise errors.SendEventsError(str(error or f"event API replied {resp.status_code}"), ids)
    return ids


def _backoff_s(attempt: int) -> float:
    return 0.1 * 2**attempt + secrets.randbelow(100) / 1000


def _url_from_dev_var(value: str) -> str | None:
    """INNGEST_DEV doubles as the dev server URL when it looks like one (`http://h:p` or `h:p`)."""
    v = value.strip()
    if v.lower() in ("", "0", "1", "false", "true"):
        return None
    if "://" in v:
        return v
    if "." in v or ":" in v:
        return f"http://{v}"
    return None


def _origin(url: str, arg: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"Client({arg}=...): expected an http(s) URL, got {url!r}")
    return f"{parts.scheme}://{parts.netloc}/"
