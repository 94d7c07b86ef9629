"""Test helpers for the SDK serve tests: a fake Ratchet server (register + event API) and a server loop.

`ServerLoop` plays the server's part of the protocol in memory: it builds call requests, feeds back the
SDK's replies (StepRun data into the memo, StepPlanned as the next target, StepError as a retry of the
same call, StepFailed as an error memo, Sleep as a `null` memo) until the function returns or errors.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from ratchet import protocol


@dataclass
class FakeServer:
    """An `httpx.MockTransport` handler for `/fn/register` and `/e/{key}`; records what it received."""

    register_status: int = 200
    register_body: bytes = b'{"ok": true, "modified": true, "app_id": "a1", "sync_id": "s1"}'
    registrations: list[httpx.Request] = field(default_factory=list)
    sent: list[tuple[httpx.Request, list[dict[str, Any]]]] = field(default_factory=list)
    event_status: int = 200
    #: run id -> (events, memo) served at `/v0/runs/{id}/batch` and `/v0/runs/{id}/actions` (use_api)
    payloads: dict[str, tuple[list[Any], dict[str, Any]]] = field(default_factory=dict)
    payload_requests: list[httpx.Request] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/fn/register":
            self.registrations.append(request)
            return httpx.Response(self.register_status, content=self.register_body)
        if request.url.path.startswith("/e/"):
            events = orjson.loads(request.content)
            self.sent.append((request, events))
            if self.event_status >= 400:
                return httpx.Response(self.event_status, json={"ids": [], "status": self.event_status,
                                                               "error": "refused"})
            return httpx.Response(200, json={"ids": [f"evt-{next(self._ids)}" for _ in events], "status": 200})
        parts = request.url.path.split("/")
        if request.url.path.startswith("/v0/runs/") and len(parts) == 5 and parts[3] in self.payloads:
            self.payload_requests.append(request)
            events, memo = self.payloads[parts[3]]
            return httpx.Response(200, json=events if parts[4] == "batch" else memo)
        return httpx.Response(404, json={"error": "not found"})

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


def call_body(event: dict[str, Any], memo: dict[str, Any], *, attempt: int = 0, max_attempts: int | None = 4,
              disable_immediate_execution: bool = False, run_id: str = "01RUN") -> dict[str, Any]:
    """A call request as the server sends it (reference §2.1)."""
    return {
        "event": event,
        "events": [event],
        "steps": memo,
        "ctx": {"run_id": run_id, "attempt": attempt, "max_attempts": max_attempts,
                "disable_immediate_execution": disable_immediate_execution, "use_api": False,
                "stack": {"stack": list(memo), "current": len(memo)}},
        "use_api": False,
        "version": 2,
    }


@dataclass
class ServerLoop:
    """The server's side of a run, without I/O: `next_call()` → send → `on_reply(reply)` until done."""

    fn_id: str
    event: dict[str, Any]
    max_attempts: int = 4
    memo: dict[str, Any] = field(default_factory=dict)
    calls: int = 0
    attempt: int = 0
    target: str = protocol.DISCOVERY_STEP_ID
    disable_immediate_execution: bool = False
    result: Reply | None = None
    ops: list[dict[str, Any]] = field(default_factory=list)

    def next_call(self) -> tuple[str, bytes]:
        self.calls += 1
        body = call_body(self.event, self.memo, attempt=self.attempt, max_attempts=self.max_attempts,
                         disable_immediate_execution=self.disable_immediate_execution)
        return f"/api/inngest?fnId={self.fn_id}&stepId={self.target}", orjson.dumps(body)

    def on_reply(self, reply: Reply) -> bool:
        """Apply a reply; True when the run is over (`self.result` is set)."""
        if reply.status != 206:
            if reply.status == 500 and reply.headers.get("x-inngest-no-retry") != "true" \
                    and self.attempt + 1 < self.max_attempts and "retry-after" not in reply.headers:
                self.attempt += 1
                return False
            self.result = reply
            return True
        assert isinstance(reply.body, list) and len(reply.body) == 1, reply.body
        op = reply.body[0]
        self.ops.append(op)
        kind = op["op"]
        if kind == "StepError" and reply.headers.get("x-inngest-no-retry") != "true":
            self.attempt += 1  # retry the same call
            return False
        self.attempt = 0
        self.target = protocol.DISCOVERY_STEP_ID
        self.disable_immediate_execution = False
        if kind == "StepRun":
            self.memo[op["id"]] = {"data": op["data"]}
        elif kind in ("StepFailed", "StepError"):
            self.memo[op["id"]] = {"error": op["error"]}
        elif kind == "Sleep":
            self.memo[op["id"]] = None
        elif kind == "StepPlanned":
            self.target = op["id"]
        else:
            raise AssertionError(f"unexpected op {op}")
        return False


def reply_of(resp: Any) -> Reply:
    """A `Reply` from an httpx response or a Flask test response."""
    headers = {k.lower(): v for k, v in resp.headers.items()}
    content = resp.content if hasattr(resp, "content") else resp.data
    return Reply(resp.status_code, headers, orjson.loads(content) if content else None)
