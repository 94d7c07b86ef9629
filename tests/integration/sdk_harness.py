"""Test helpers for the SDK serve tests: a fake Ratchet server (register + event API) and a server loop.

`ServerLoop` plays the server's part of the protocol in memory: it builds call requests, feeds back the
SDK's replies (StepRun data into the memo, StepPlanned as a targeted call, StepError as a retry of the
same call, StepFailed as an error memo, Sleep as a `null` memo), including parallel groups (several ops in
one reply, pending steps, WAIT and RACE discovery), until the function returns or errors.
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


@dataclass(frozen=True)
class Item:
    """One queued SDK call: discovery (`stepId=step`) or targeted (`stepId=<hash>`), with its attempt."""

    step_id: str = protocol.DISCOVERY_STEP_ID
    attempt: int = 0


@dataclass
class ServerLoop:
    """The server's side of a run, without I/O: `next_call()` → send → `on_reply(reply)` until done.

    Mirrors the executor rules of reference §2.6, one queue item at a time (FIFO):
    StepRun / StepFailed / Sleep / WaitForEvent store a memo (`{"data"}`, `{"error"}`, `null`, `wait_memo`)
    and complete a pending step; StepError with retries left retries the same item; StepPlanned enqueues a
    targeted call (deduped while queued). A reply with several ops forces step planning
    (`disable_immediate_execution`) and marks them all pending; discovery is enqueued once nothing is
    pending (WAIT), or after every completion of a race-mode step; it resets the forced planning.
    """

    fn_id: str
    event: dict[str, Any]
    max_attempts: int = 4
    memo: dict[str, Any] = field(default_factory=dict)
    calls: int = 0
    result: Reply | None = None
    ops: list[dict[str, Any]] = field(default_factory=list)
    #: What a WaitForEvent resolves to (None: timed out).
    wait_memo: Any = None
    #: Every call sent: (stepId, attempt, disable_immediate_execution).
    sent: list[tuple[str, int, bool]] = field(default_factory=list)
    queue: list[Item] = field(default_factory=lambda: [Item()])
    pending: set[str] = field(default_factory=set)
    force_plan: bool = False
    current: Item | None = None

    @property
    def attempt(self) -> int:
        return self.current.attempt if self.current else 0

    def next_call(self) -> tuple[str, bytes]:
        assert self.queue, "nothing left to call"
        self.current = self.queue.pop(0)
        self.calls += 1
        self.sent.append((self.current.step_id, self.current.attempt, self.force_plan))
        body = call_body(self.event, self.memo, attempt=self.current.attempt, max_attempts=self.max_attempts,
                         disable_immediate_execution=self.force_plan)
        return f"/api/inngest?fnId={self.fn_id}&stepId={self.current.step_id}", orjson.dumps(body)

    def _retry(self) -> None:
        assert self.current is not None
        self.queue.insert(0, Item(self.current.step_id, self.current.attempt + 1))

    def _discover(self) -> None:
        if not self.pending:
            self.force_plan = False
        if Item() not in self.queue:
            self.queue.append(Item())

    def _completed(self, op: dict[str, Any]) -> None:
        self.pending.discard(op["id"])
        race = (op.get("opts") or {}).get("parallelMode") == "race"
        if not self.pending or race:
            self._discover()

    def on_reply(self, reply: Reply) -> bool:
        """Apply a reply; True when the run is over (`self.result` is set)."""
        if reply.status != 206:
            if reply.status == 500 and reply.headers.get("x-inngest-no-retry") != "true" \
                    and self.attempt + 1 < self.max_attempts and "retry-after" not in reply.headers:
                self._retry()
                return False
            self.result = reply
            return True
        assert isinstance(reply.body, list) and reply.body, reply.body
        if len(reply.body) > 1:
            self.force_plan = True
            self.pending.update(op["id"] for op in reply.body)
        no_retry = reply.headers.get("x-inngest-no-retry") == "true"
        for op in reply.body:
            self.ops.append(op)
            kind = op["op"]
            if kind == "StepError" and not no_retry and self.attempt + 1 < self.max_attempts:
                self._retry()
            elif kind == "StepRun":
                self.memo[op["id"]] = {"data": op["data"]}
                self._completed(op)
            elif kind in ("StepFailed", "StepError"):
                self.memo[op["id"]] = {"error": op["error"]}
                self._completed(op)
            elif kind == "Sleep":
                self.memo[op["id"]] = None
                self._completed(op)
            elif kind == "WaitForEvent":
                self.memo[op["id"]] = self.wait_memo
                self._completed(op)
            elif kind == "StepPlanned":
                if Item(op["id"]) not in self.queue:
                    self.queue.append(Item(op["id"]))
            else:
                raise AssertionError(f"unexpected op {op}")
        return False


def reply_of(resp: Any) -> Reply:
    """A `Reply` from an httpx response or a Flask test response."""
    headers = {k.lower(): v for k, v in resp.headers.items()}
    content = resp.content if hasattr(resp, "content") else resp.data
    return Reply(resp.status_code, headers, orjson.loads(content) if content else None)
