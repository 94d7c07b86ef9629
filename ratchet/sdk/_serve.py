"""The serve endpoint, independent of any web framework: `SdkRequest` in, `SdkResponse` out.

- `GET`: introspection (reference §1.5).
- `PUT`: sync. Out-of-band: POST the app's config to `{api_origin}/fn/register` and answer with the
  server's reply; in-band (production, signed `x-inngest-sync-kind: in_band`): answer with the config.
- `POST ?fnId=..&stepId=..`: run a function with the memo of the call request; answer 200 (returned),
  206 (opcodes) or 500 (error). When the server sent `use_api: true` (a payload too large to send), the
  events and the memo are fetched from `{api_origin}/v0/runs/{run_id}/batch` and `.../actions` first.
  `POST ?probe=trust` answers `null` (a signing check).

Adapters (fastapi.py, flask.py) only translate requests and responses; `handle` (async) and
`handle_sync` share every decision and differ only where they wait: on the function and on the HTTP client.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import httpx
import orjson
import pydantic

from ratchet import protocol
from ratchet.sdk import _replay, errors
from ratchet.sdk import client as client_lib
from ratchet.sdk import event as event_lib
from ratchet.sdk import function as function_lib
from ratchet.sdk import group as group_lib
from ratchet.sdk import step as step_lib

#: Version of the introspection body.
SCHEMA_VERSION = "2024-05-24"
CAPABILITIES = {"in_band_sync": "v1", "trust_probe": "v1"}


@dataclass(frozen=True, slots=True)
class SdkRequest:
    """A request to the serve endpoint, as an adapter saw it. Header names must be lower case."""

    method: str
    url: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(slots=True)
class SdkResponse:
    """The reply an adapter sends back verbatim."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass(slots=True)
class _Call:
    """A validated call request, ready to run."""

    handler: function_lib.Handler[Any]
    is_async: bool
    ctx: function_lib.Context
    key: str | None  # the signing key that verified the request, to sign the reply with


@dataclass(frozen=True, slots=True)
class _Pending:
    """A valid call request whose events and memo are still to be fetched (`use_api`)."""

    handler: function_lib.Handler[Any]
    is_async: bool
    request: protocol.CallRequest
    step_id: str
    key: str | None


@dataclass(frozen=True, slots=True)
class _Returned:
    value: Any


@dataclass(frozen=True, slots=True)
class _Raised:
    exc: Exception


_Outcome = _Returned | _Raised | _replay.Report | _replay.Unexpected


@dataclass(frozen=True, slots=True)
class _Register:
    """An out-of-band sync to send: the register POST, once per key to try."""

    url: str
    headers: dict[str, str]
    body: bytes
    keys: tuple[str | None, ...]


class ServeHandler:
    """Serves a client's functions.

    Args:
        client: The app.
        functions: Its functions; ids must be unique.
        framework: Reported in `x-inngest-framework` (e.g. `"fast_api"`, `"flask"`).
        serve_origin: Public origin of the app (overrides the client's and the request's).
        serve_path: Public path of the endpoint (overrides the client's and the request's).
    """

    def __init__(self, client: client_lib.Client, functions: Sequence[function_lib.Function[Any]], *,
                 framework: str, serve_origin: str | None = None, serve_path: str | None = None) -> None:
        if not isinstance(client, client_lib.Client):
            raise TypeError(f"serve(client=...): expected ratchet.Client, got {type(client).__name__}")
        if client.is_production and not client.signing_key:
            raise errors.SigningKeyMissingError(
                "set Client(signing_key=...) or INNGEST_SIGNING_KEY to serve functions in production mode")
        self.client = client
        self.functions = list(functions)
        self.framework = framework
        self.serve_origin = (serve_origin or client.serve_origin or "").rstrip("/") or None
        self.serve_path = serve_path or client.serve_path
        self._handlers: dict[str, tuple[function_lib.Handler[Any], bool]] = {}
        for fn in self.functions:
            if not isinstance(fn, function_lib.Function):
                raise TypeError(f"serve(functions=...): expected functions made with @client.function, got {fn!r}")
            for fqid, handler in fn.handlers(client.app_id).items():
                if fqid in self._handlers:
                    raise ValueError(f"serve(functions=...): function id {fqid!r} is defined twice")
                self._handlers[fqid] = (handler, fn.is_async)
        self._keys = [k for k in (client.signing_key, client.signing_key_fallback) if k]

    # ----------------------------------------------------------------------------------------- entry points

    async def handle(self, req: SdkRequest) -> SdkResponse:
        """Answer a request, awaiting functions and the register call (for async frameworks)."""
        method = req.method.upper()
        if method == "POST":
            call = self._begin_call(req)
            if isinstance(call, _Pending):
                call = await self._fetch_async(call)
            if isinstance(call, SdkResponse):
                return call
            return self._finish_call(call, await self._execute_async(call))
        if method == "PUT":
            plan = self._begin_sync(req)
            if isinstance(plan, SdkResponse):
                return plan
            try:
                async with self.client.http_async() as http:
                    for key in plan.keys:
                        resp = await http.post(plan.url, headers=_auth(plan.headers, key), content=plan.body)
                        if resp.status_code not in (401, 403):
                            break
            except httpx.HTTPError as exc:
                return self._registration_failed(plan, exc)
            return self._finish_sync(resp)
        return self._handle_other(req)

    def handle_sync(self, req: SdkRequest) -> SdkResponse:
        """Answer a request without an event loop (for WSGI frameworks); async functions get `asyncio.run`."""
        method = req.method.upper()
        if method == "POST":
            call = self._begin_call(req)
            if isinstance(call, _Pending):
                call = self._fetch_sync(call)
            if isinstance(call, SdkResponse):
                return call
            if call.is_async:
                return self._finish_call(call, asyncio.run(self._execute_async(call)))
            return self._finish_call(call, self._execute_sync(call))
        if method == "PUT":
            plan = self._begin_sync(req)
            if isinstance(plan, SdkResponse):
                return plan
            try:
                with self.client.http_sync() as http:
                    for key in plan.keys:
                        resp = http.post(plan.url, headers=_auth(plan.headers, key), content=plan.body)
                        if resp.status_code not in (401, 403):
                            break
            except httpx.HTTPError as exc:
                return self._registration_failed(plan, exc)
            return self._finish_sync(resp)
        return self._handle_other(req)

    # ----------------------------------------------------------------------------------------- responses

    def _headers(self) -> dict[str, str]:
        return {
            "content-type": "application/json",
            "user-agent": client_lib.SDK_IDENT,
            protocol.Header.SDK: client_lib.SDK_IDENT,
            protocol.Header.REQ_VERSION: str(protocol.REQUEST_VERSION),
            protocol.Header.FRAMEWORK: self.framework,
            protocol.Header.EXPECTED_SERVER_KIND: self.client.mode,
            protocol.Header.SDK_HANDLED: "true",
        }

    def _respond(self, status: int, body: Any, *, key: str | None = None,
                 headers: Mapping[str, str] | None = None) -> SdkResponse:
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        out = self._headers()
        out.update(headers or {})
        if key is not None:
            out[protocol.Header.SIGNATURE] = protocol.sign(raw, key)
        return SdkResponse(status, out, raw)

    def _error(self, status: int, code: protocol.ErrorCode, message: str, *, name: str = "Error",
               key: str | None = None, no_retry: bool = False, stack: str | None = None) -> SdkResponse:
        body = {"code": str(code), "message": message, "name": name, "stack": stack}
        return self._respond(status, body, key=key, headers=_no_retry() if no_retry else None)

    @staticmethod
    def _unauthorized() -> SdkResponse:
        # As the official SDK: a 401 is not an SDK reply, so it carries only `x-inngest-sdk-handled`.
        return SdkResponse(401, {"content-type": "application/json", protocol.Header.SDK_HANDLED: "true"},
                           orjson.dumps({"message": "Unauthorized"}))

    def _verified_key(self, req: SdkRequest, body: bytes) -> str | None:
        """The signing key under which the request's signature is valid, if any."""
        header = req.header(protocol.Header.SIGNATURE)
        for key in self._keys:
            if protocol.verify_signature(body, header, [key]):
                return key
        return None

    # ----------------------------------------------------------------------------------------- GET

    def _handle_other(self, req: SdkRequest) -> SdkResponse:
        if req.method.upper() != "GET":
            return self._error(405, protocol.ErrorCode.UNKNOWN, f"method {req.method} not allowed")
        if not self.client.is_production:
            return self._respond(200, self._inspection())
        key = self._verified_key(req, b"")
        if key is None:
            return self._unauthorized()
        kind = req.header(protocol.Header.SERVER_KIND)
        if kind and kind != self.client.mode:
            return self._respond(403, {}, key=key)
        return self._respond(200, self._inspection(authenticated=True, url=req.url), key=key)

    def _inspection(self, *, authenticated: bool = False, url: str | None = None) -> dict[str, Any]:
        c = self.client
        out: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "function_count": len(self.functions),
            "has_event_key": c.event_key is not None,
            "has_signing_key": c.signing_key is not None,
            "has_signing_key_fallback": c.signing_key_fallback is not None,
            "mode": c.mode,
        }
        if authenticated:
            parts = urlsplit(self._app_url(url or ""))
            out |= {
                "api_origin": c.api_origin, "app_id": c.app_id, "authentication_succeeded": True,
                "capabilities": CAPABILITIES, "env": c.env, "event_api_origin": c.event_api_origin,
                "event_key_hash": _sha256(c.event_key), "framework": self.framework,
                "sdk_language": "py", "sdk_version": client_lib.SDK_VERSION,
                "serve_origin": f"{parts.scheme}://{parts.netloc}", "serve_path": parts.path,
                "signing_key_hash": _key_hash(c.signing_key),
                "signing_key_fallback_hash": _key_hash(c.signing_key_fallback),
            }
        return out

    # ----------------------------------------------------------------------------------------- PUT

    def _app_url(self, request_url: str) -> str:
        """The app's public URL: the request's own URL without query, with the serve overrides applied."""
        parts = urlsplit(request_url)
        origin = self.serve_origin or f"{parts.scheme}://{parts.netloc}"
        path = self.serve_path or parts.path or protocol.DEFAULT_SERVE_PATH
        return f"{origin}/{path.lstrip('/')}"

    def configs(self, app_url: str) -> list[dict[str, Any]]:
        """The `functions` list of a sync."""
        return [cfg for fn in self.functions for cfg in fn.configs(self.client.app_id, app_url)]

    def _begin_sync(self, req: SdkRequest) -> SdkResponse | _Register:
        c = self.client
        kind = req.header(protocol.Header.SERVER_KIND)
        if kind and kind != c.mode:
            expected = "Cloud" if c.is_production else "Dev Server"
            got = "Dev Server" if kind == "dev" else "Cloud"
            return self._error(400, protocol.ErrorCode.SERVER_KIND_MISMATCH,
                               f"Sync rejected since it's from a {got} but expected {expected}")
        if c.is_production and req.header(protocol.Header.SYNC_KIND) == "in_band":
            return self._in_band_sync(req)
        app_url = self._app_url(req.url)
        body = {
            "url": app_url,
            "appName": c.app_id,
            "deployType": "ping",
            "framework": self.framework,
            "sdk": client_lib.SDK_IDENT,
            "v": "0.1",
            "capabilities": CAPABILITIES,
            "functions": self.configs(app_url),
        }
        url = urljoin(c.api_origin, "/fn/register")
        deploy_id = req.query.get("deployId")
        if deploy_id:
            url = f"{url}?{urlencode({'deployId': deploy_id})}"
        headers = c.headers(self.framework)
        if kind:
            headers[protocol.Header.EXPECTED_SERVER_KIND] = c.mode
        keys: tuple[str | None, ...] = tuple(self._keys) or (None,)
        return _Register(url, headers, orjson.dumps(body), keys)

    def _in_band_sync(self, req: SdkRequest) -> SdkResponse:
        key = self._verified_key(req, _canonical(req.body))
        if key is None:
            return self._unauthorized()
        try:
            url = orjson.loads(req.body)["url"]
            if not isinstance(url, str):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return self._error(500, protocol.ErrorCode.BODY_INVALID, 'in-band sync body must be {"url": str}',
                               key=key)
        body = {
            "app_id": self.client.app_id, "env": self.client.env, "framework": self.framework,
            "functions": self.configs(url), "inspection": self._inspection(authenticated=True, url=url),
            "sdk_author": "ratchet", "sdk_language": "py", "sdk_version": client_lib.SDK_VERSION, "url": url,
        }
        return self._respond(200, body, key=key, headers={protocol.Header.SYNC_KIND: "in_band"})

    def _finish_sync(self, resp: httpx.Response) -> SdkResponse:
        try:
            body = orjson.loads(resp.content)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return self._error(500, protocol.ErrorCode.REGISTRATION_FAILED,
                               f"the server replied {resp.status_code} with a non-object body to the sync: "
                               f"{resp.text[:200]!r}", name="RegistrationError")
        if resp.status_code >= 400:
            logging.getLogger("ratchet").error("sync refused (%s): %s", resp.status_code, body)
        # Unlike the official SDK (which always answers 200), pass a refusal's status through.
        status = 200 if resp.status_code < 400 else resp.status_code
        return self._respond(status, resp.content, headers={protocol.Header.SYNC_KIND: "out_of_band"})

    def _registration_failed(self, plan: _Register, exc: Exception) -> SdkResponse:
        return self._error(500, protocol.ErrorCode.REGISTRATION_FAILED,
                           f"cannot reach the server at {plan.url}: {exc}", name="RegistrationError")

    # ----------------------------------------------------------------------------------------- POST

    def _begin_call(self, req: SdkRequest) -> SdkResponse | _Call | _Pending:
        key: str | None = None
        if self.client.is_production:
            key = self._verified_key(req, _canonical(req.body))
            if key is None:
                return self._unauthorized()
        if req.query.get("probe") == "trust":
            return self._respond(200, None, key=key)
        fn_id = req.query.get("fnId")
        if not fn_id:
            return self._error(500, protocol.ErrorCode.QUERY_PARAM_MISSING, "missing the fnId query parameter",
                               name="QueryParamMissingError", key=key)
        found = self._handlers.get(fn_id)
        if found is None:
            return self._error(500, protocol.ErrorCode.FUNCTION_NOT_FOUND, f"function {fn_id} not found",
                               name="FunctionNotFoundError", key=key)
        handler, is_async = found
        try:
            call = protocol.CallRequest.model_validate_json(req.body or b"null")
        except pydantic.ValidationError as exc:
            return self._error(500, protocol.ErrorCode.BODY_INVALID, f"invalid call request: {_fields(exc)}",
                               name="BodyInvalidError", key=key, no_retry=True)
        pending = _Pending(handler, is_async, call, req.query.get("stepId") or protocol.DISCOVERY_STEP_ID, key)
        if call.use_api or call.ctx.use_api:
            return pending
        return self._make_call(pending, call.events, call.steps)

    def _make_call(self, pending: _Pending, events_raw: list[dict[str, Any]] | None,
                   memo: dict[str, Any]) -> SdkResponse | _Call:
        call, key = pending.request, pending.key
        try:
            events = [event_lib.Event.from_wire(e) for e in (events_raw or [call.event])]
            event = event_lib.Event.from_wire(call.event)
        except (ValueError, TypeError) as exc:
            return self._error(500, protocol.ErrorCode.BODY_INVALID, f"invalid call request: {exc}",
                               name="BodyInvalidError", key=key, no_retry=True)
        frame = _replay.CallFrame(
            memo=memo,
            target=None if pending.step_id == protocol.DISCOVERY_STEP_ID else pending.step_id,
            disable_immediate_execution=call.ctx.disable_immediate_execution,
            attempt=call.ctx.attempt,
            max_attempts=call.ctx.max_attempts,
        )
        replay = _replay.Replay(frame)
        step: step_lib.Step | step_lib.StepSync
        group: group_lib.Group | group_lib.GroupSync
        if pending.is_async:
            step, group = step_lib.Step(replay, self.client), group_lib.Group(replay)
        else:
            step, group = step_lib.StepSync(replay, self.client), group_lib.GroupSync(replay)
        ctx = function_lib.Context(
            event=event, events=events, run_id=call.ctx.run_id, attempt=call.ctx.attempt, step=step,
            group=group, logger=_ReplayLogger(self.client.logger, replay),
        )
        return _Call(pending.handler, pending.is_async, ctx, key)

    # `use_api`: the payload was too large to send, so fetch the events and the memo from the server (§2.8).

    def _api_requests(self, pending: _Pending) -> tuple[str, str, dict[str, str]]:
        base = urljoin(self.client.api_origin, f"/v0/runs/{pending.request.ctx.run_id}")
        headers = _auth(self.client.headers(self.framework), self.client.signing_key)
        return f"{base}/batch", f"{base}/actions", headers

    def _from_api(self, pending: _Pending, batch: httpx.Response, actions: httpx.Response) -> SdkResponse | _Call:
        for resp in (batch, actions):
            if resp.status_code >= 400:
                return self._error(500, protocol.ErrorCode.UNKNOWN,
                                   f"cannot fetch the run's payload: {resp.request.url} replied {resp.status_code}",
                                   key=pending.key)
        try:
            events, memo = orjson.loads(batch.content), orjson.loads(actions.content)
        except orjson.JSONDecodeError as exc:
            return self._error(500, protocol.ErrorCode.UNKNOWN, f"cannot read the run's payload: {exc}",
                               key=pending.key)
        if not isinstance(events, list) or not isinstance(memo, dict):
            return self._error(500, protocol.ErrorCode.UNKNOWN,
                               "the run's payload must be a list of events and an object of steps", key=pending.key)
        return self._make_call(pending, events, memo)

    async def _fetch_async(self, pending: _Pending) -> SdkResponse | _Call:
        batch_url, actions_url, headers = self._api_requests(pending)
        try:
            async with self.client.http_async() as http:
                batch, actions = await asyncio.gather(http.get(batch_url, headers=headers),
                                                      http.get(actions_url, headers=headers))
        except httpx.HTTPError as exc:
            return self._error(500, protocol.ErrorCode.UNKNOWN, f"cannot fetch the run's payload: {exc}",
                               key=pending.key)
        return self._from_api(pending, batch, actions)

    def _fetch_sync(self, pending: _Pending) -> SdkResponse | _Call:
        batch_url, actions_url, headers = self._api_requests(pending)
        try:
            with self.client.http_sync() as http:
                batch, actions = http.get(batch_url, headers=headers), http.get(actions_url, headers=headers)
        except httpx.HTTPError as exc:
            return self._error(500, protocol.ErrorCode.UNKNOWN, f"cannot fetch the run's payload: {exc}",
                               key=pending.key)
        return self._from_api(pending, batch, actions)

    async def _execute_async(self, call: _Call) -> _Outcome:
        try:
            if call.is_async:
                value = await call.handler(call.ctx)  # type: ignore[misc]
            else:
                value = await asyncio.to_thread(call.handler, call.ctx)
            return _Returned(value)
        except _replay.StopAndReport as stop:
            return stop.report
        except _replay.StopUnexpected as stop:
            return stop.unexpected
        except Exception as exc:  # noqa: BLE001 - user code failed: reported as a 500
            return _Raised(exc)

    def _execute_sync(self, call: _Call) -> _Outcome:
        try:
            return _Returned(call.handler(call.ctx))
        except _replay.StopAndReport as stop:
            return stop.report
        except _replay.StopUnexpected as stop:
            return stop.unexpected
        except Exception as exc:  # noqa: BLE001 - user code failed: reported as a 500
            return _Raised(exc)

    def _finish_call(self, call: _Call, outcome: _Outcome) -> SdkResponse:
        key = call.key
        if isinstance(outcome, _Returned | _replay.Report):
            status, value = (200, outcome.value) if isinstance(outcome, _Returned) else (206, list(outcome.opcodes))
            try:
                raw = orjson.dumps(value)
            except TypeError as exc:
                return self._error(500, protocol.ErrorCode.OUTPUT_UNSERIALIZABLE,
                                   f"{'function' if status == 200 else 'step'} output is not JSON: {exc}",
                                   name="OutputUnserializableError", key=key, no_retry=True)
            no_retry = isinstance(outcome, _replay.Report) and outcome.no_retry
            return self._respond(status, raw, key=key, headers=_no_retry() if no_retry else None)
        if isinstance(outcome, _replay.Unexpected):
            return self._error(500, protocol.ErrorCode.STEP_UNEXPECTED, outcome.message,
                               name="StepUnexpectedError", key=key)
        exc = outcome.exc
        headers: dict[str, str] = {}
        if isinstance(exc, errors.NonRetriableError | errors.StepError):
            headers = _no_retry()
        elif isinstance(exc, errors.RetryAfterError):
            headers[protocol.Header.RETRY_AFTER] = protocol.format_time(exc.retry_at)
        else:
            self.client.logger.exception("function %s failed", call.handler, exc_info=exc)
        return self._respond(500, errors.error_body(exc), key=key, headers=headers)


class _ReplayLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """`ctx.logger`: silent while memoized steps are replayed, so each line is logged once per run."""

    def __init__(self, logger: logging.Logger, replay: _replay.Replay) -> None:
        super().__init__(logger, {})
        self._replay = replay

    def isEnabledFor(self, level: int) -> bool:
        return not self._replay.replaying and self.logger.isEnabledFor(level)


def _canonical(body: bytes) -> bytes:
    """The bytes a request signature covers: JCS of the JSON body (raw bytes when not JSON)."""
    if not body:
        return b""
    try:
        return protocol.canonical_json(orjson.loads(body))
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return body


def _fields(exc: pydantic.ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())


def _no_retry() -> dict[str, str]:
    return {protocol.Header.NO_RETRY: "true"}


def _auth(headers: dict[str, str], key: str | None) -> dict[str, str]:
    if key is None:
        return headers
    return headers | {protocol.Header.AUTHORIZATION: f"Bearer {protocol.hashed_signing_key(key)}"}


def _sha256(value: str | None) -> str | None:
    return hashlib.sha256(value.encode()).hexdigest() if value else None


def _key_hash(key: str | None) -> str | None:
    return protocol.hashed_signing_key(key) if key else None
