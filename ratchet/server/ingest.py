"""Accepting events: validate, assign ids, store them and start the runs they trigger, in one transaction."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import orjson

from ratchet.server import ids, registry
from ratchet.server.store import base


class EventInvalid(ValueError):
    """An event in a send is malformed; the message names the event's index and the field."""


@dataclasses.dataclass(frozen=True, slots=True)
class IngestResult:
    ids: list[str]  #: internal ids of the events accepted, in order
    run_ids: list[str]
    error: str | None = None  #: why the send stopped at the first invalid event


def validate_event(raw: Any, index: int, *, now: int, max_bytes: int) -> dict[str, Any]:
    """Check one event object of a send and fill defaults; raises EventInvalid naming the field."""
    where = f"event {index}"
    if not isinstance(raw, dict):
        raise EventInvalid(f"{where}: must be a JSON object, got {type(raw).__name__}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise EventInvalid(f"{where}: name: must be a non-empty string")
    data = raw.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise EventInvalid(f"{where}: data: must be a JSON object, got {type(data).__name__}")
    event_id = raw.get("id")
    if event_id is not None and not isinstance(event_id, str):
        raise EventInvalid(f"{where}: id: must be a string")
    ts = raw.get("ts")
    if ts is None or ts == 0:
        ts = now
    elif isinstance(ts, bool) or not isinstance(ts, (int, float)) or ts < 0:
        raise EventInvalid(f"{where}: ts: must be a non-negative integer of milliseconds")
    elif isinstance(ts, float):
        if not ts.is_integer():
            raise EventInvalid(f"{where}: ts: must be an integer of milliseconds")
        ts = int(ts)
    user = raw.get("user")
    if user is not None and not isinstance(user, dict):
        raise EventInvalid(f"{where}: user: must be a JSON object")
    v = raw.get("v")
    if v is not None and not isinstance(v, str):
        raise EventInvalid(f"{where}: v: must be a string")
    size = len(orjson.dumps(raw))
    if size > max_bytes:
        raise EventTooLarge(f"{where}: is {size} bytes, over the limit of {max_bytes} bytes")
    return {"name": name, "data": data, "id": event_id or None, "ts": ts, "user": user, "v": v}


class EventTooLarge(EventInvalid):
    """An event is larger than the configured limit."""


class Ingestor:
    """Turns sends into stored events and runs, then wakes the scheduler."""

    def __init__(self, store: base.Store, functions: registry.Registry, notify: Callable[[], None], *,
                 max_event_bytes: int) -> None:
        self._store = store
        self._functions = functions
        self._notify = notify
        self._max_event_bytes = max_event_bytes

    async def ingest(self, raw_events: list[Any], *, seed: tuple[int, bytes] | None, now: int) -> IngestResult:
        """Accept events up to the first invalid one; everything accepted is durable when this returns."""
        accepted: list[base.EventRecord] = []
        error: str | None = None
        too_large = False
        for i, raw in enumerate(raw_events):
            try:
                ev = validate_event(raw, i, now=now, max_bytes=self._max_event_bytes)
            except EventInvalid as exc:
                error = str(exc)
                too_large = isinstance(exc, EventTooLarge)
                break
            internal = ids.seeded_ulid(seed, i + 1) if seed is not None else ids.new_ulid(now)
            accepted.append(base.EventRecord(internal_id=internal, id=ev["id"] or internal, name=ev["name"],
                                             data=ev["data"], ts=ev["ts"], received_at=now, v=ev["v"],
                                             user=ev["user"]))
        runs = [run for event in accepted for run in self.runs_for(event, now)]
        run_ids = await self._store.ingest(accepted, runs, now) if accepted else []
        if run_ids:
            self._notify()
        result = IngestResult([e.internal_id for e in accepted], run_ids, error)
        if too_large:
            raise EventTooLargeResult(result)
        return result

    def runs_for(self, event: base.EventRecord, now: int) -> list[base.NewRun]:
        """The runs an event starts: one per function whose trigger matches."""
        out = []
        for fn in self._functions.for_event(event.name):
            out.append(base.NewRun(id=ids.new_ulid(now), function_slug=fn.slug, app_id=fn.app_id,
                                   event_ids=(event.internal_id,), idempotency_key=f"{fn.slug}\x00{event.id}",
                                   due_at=now))
        return out


class EventTooLargeResult(Exception):
    """Carries the partial result of a send stopped by an oversized event (the API replies 413)."""

    def __init__(self, result: IngestResult) -> None:
        super().__init__(result.error)
        self.result = result

