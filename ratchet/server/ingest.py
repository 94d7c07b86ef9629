"""Accepting events: validate, assign ids, store them and start the runs they trigger, in one transaction."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import orjson

from ratchet import protocol
from ratchet.server import ids, registry
from ratchet.server.engine import expressions, flow, lifecycle, triggers, waits
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
        token = base.FOREGROUND.set(True)  # the client waits: no queueing behind the engine's store calls
        try:
            run_ids = await self.store_events(accepted, now) if accepted else []
        finally:
            base.FOREGROUND.reset(token)
        result = IngestResult([e.internal_id for e in accepted], run_ids, error)
        if too_large:
            raise EventTooLargeResult(result)
        return result

    async def ingest_internal(self, events: list[dict[str, Any]], now: int, *,
                              done: tuple[base.QueueItem, str] | None = None,
                              items: Sequence[base.NewItem] = ()) -> list[str]:
        """Events the engine emits (lifecycle, invocations, cron ticks), already well-formed.

        `done` is the queue item that carried them (the outbox), deleted in the same transaction.
        """
        records = []
        for raw in events:
            internal = ids.new_ulid(now)
            records.append(base.EventRecord(internal_id=internal, id=raw.get("id") or internal, name=raw["name"],
                                            data=raw.get("data") or {}, ts=raw.get("ts") or now, received_at=now,
                                            v=raw.get("v")))
        return await self.store_events(records, now, done=done, items=items)

    async def store_events(self, events: list[base.EventRecord], now: int, *,
                           done: tuple[base.QueueItem, str] | None = None,
                           items: Sequence[base.NewItem] = ()) -> list[str]:
        """Store events with the runs they start and the pauses they resolve, in one transaction."""
        runs: list[base.NewRun] = []
        resumes: list[base.Resume] = []
        taken: set[str] = set()
        lookups = _PauseLookups(self._store)  # each name's paths, and each distinct lookup, once per send
        for event in events:
            wire = event.wire()
            runs += self.runs_for(event, wire, now)
            resumes += await self._resumes_for(event, wire, now, taken, lookups)
        run_ids = await self._store.ingest(events, runs, now, resumes=resumes, items=items, done=done)
        collecting = any(r.flow is not None and (r.flow.debounce or r.flow.batch) for r in runs)
        if run_ids or resumes or items or collecting:  # (a debounce or batch arms or moves a timer)
            self._notify()
        return run_ids

    def runs_for(self, event: base.EventRecord, wire: dict[str, Any], now: int) -> list[base.NewRun]:
        """The runs an event starts: one per function with a matching trigger (name and `expression`),
        or, for an invocation, the invoked function whatever its triggers."""
        if event.name == lifecycle.INVOKED:
            meta = lifecycle.invoke_meta(wire)
            target = self._functions.get(str(meta.get("fn_id", "")))
            if target is None:
                return []
            # An invocation starts its run at once: its caller waits on this very run (no debounce/batch).
            run = self.new_run(target, event, wire, now, collect=False, key=f"{target.slug}\x00{event.id}")
            parent = lifecycle.invoker(meta)
            if parent is not None:  # the child records its parent run and invoke step
                run = dataclasses.replace(run, invoked_by=parent[0], invoked_step=parent[1])
            return [run]
        out = []
        for fn in self._functions.for_event(event.name):
            if self._triggered(fn, event.name, wire, now):
                out.append(self.new_run(fn, event, wire, now))
        return out

    @staticmethod
    def _triggered(fn: base.FunctionRecord, name: str, wire: dict[str, Any], now: int) -> bool:
        for trig in fn.config.triggers:
            if trig.event is None or not triggers.event_matches(trig.event, name):
                continue
            if trig.expression is None or expressions.compile(trig.expression).matches(event=wire, now_ms=now):
                return True
        return False

    def new_run(self, fn: base.FunctionRecord, event: base.EventRecord, wire: dict[str, Any], now: int, *,
                key: str | None = None, events: Sequence[base.EventRecord] = (),
                collect: bool = True) -> base.NewRun:
        """A run of `fn` for `event` (or for all of `events`, a batch), with its cancel-on pauses and
        `timeouts` timers. With `collect` false the run starts as it is: its debounce or batch is done."""
        run_id = ids.new_ulid(now)
        timers = []
        timeouts = fn.config.timeouts
        if timeouts is not None and timeouts.start:
            timers.append(base.NewItem(base.ItemKind.RUN_TIMEOUT, run_id,
                                       now + _ms(protocol.parse_duration(timeouts.start)), {"which": "start"}))
        if timeouts is not None and timeouts.finish:
            timers.append(base.NewItem(base.ItemKind.RUN_TIMEOUT, run_id,
                                       now + _ms(protocol.parse_duration(timeouts.finish)), {"which": "finish"}))
        run_flow, idempotency = self._flow(fn, wire, now)
        if not collect:
            run_flow = None if run_flow is None else dataclasses.replace(run_flow, debounce=None, batch=None)
            key = key or f"{fn.slug}\x00collected\x00{run_id}"
        event_ids = tuple(e.internal_id for e in events) or (event.internal_id,)
        return base.NewRun(id=run_id, function_slug=fn.slug, app_id=fn.app_id, event_ids=event_ids,
                           idempotency_key=key or idempotency or f"{fn.slug}\x00{event.id}", due_at=now,
                           pauses=waits.cancel_pauses(run_id, fn.config, wire, now), timers=tuple(timers),
                           flow=run_flow)

    def _flow(self, fn: base.FunctionRecord, wire: dict[str, Any], now: int) -> tuple[base.RunFlow | None, str | None]:
        """The flow control a new run of `fn` for this event gets, and its idempotency key (if configured)."""
        spec = _flow_spec(fn.config)
        if spec is None:
            return None, None
        k = flow.keys(spec, wire, now)
        run_flow = base.RunFlow(
            priority_ms=k.priority_s * 1000,
            rate_limit=None if spec.rate_limit is None or k.rate_limit is None else
            (k.rate_limit, spec.rate_limit.limit, spec.rate_limit.period_ms),
            throttle=None if spec.throttle is None or k.throttle is None else
            (k.throttle, spec.throttle.limit, spec.throttle.period_ms, spec.throttle.burst),
            singleton=None if spec.singleton is None or k.singleton is None else
            (k.singleton, spec.singleton.mode.value),
            concurrency=tuple(k.limits),
            debounce=None if spec.debounce is None or k.debounce is None else
            (k.debounce, spec.debounce.period_ms, spec.debounce.timeout_ms),
            batch=None if spec.batch is None or not k.batched or k.batch is None else
            (k.batch, spec.batch.max_size, spec.batch.timeout_ms))
        idempotency = None if k.idempotency is None else f"{fn.slug}\x00idempotency\x00{k.idempotency}"
        return run_flow, idempotency

    def has_listeners(self, event_name: str) -> bool:
        """Does any synced function trigger on `event_name`?"""
        return bool(self._functions.for_event(event_name))

    async def _resumes_for(self, event: base.EventRecord, wire: dict[str, Any], now: int,
                           taken: set[str], lookups: _PauseLookups) -> list[base.Resume]:
        """The pauses `event` resolves (each pause at most once, the oldest first)."""
        store = self._store
        keys = []
        for path in await lookups.paths(event.name):
            value = expressions.index_values(wire, path)
            if value is not None:
                keys.append((path, value))
        out = []
        incoming: expressions.Bindings | None = None  # converted once, only if some pause needs it
        for pause in await lookups.pauses(event.name, keys):
            if pause.id in taken:
                continue
            if pause.expression is not None and incoming is None:
                incoming = expressions.Bindings(async_=wire, now_ms=now)
            if incoming is not None and not waits.resolves(pause, incoming):
                continue
            taken.add(pause.id)
            ended: tuple[dict[str, Any], ...] = ()
            if pause.kind == base.PauseKind.CANCEL:
                ended = await self._ended_events(pause.run_id, f"cancelled by event {event.name!r}")
            out.append(waits.resume(pause, wire, now, ended=ended))
        if event.name == lifecycle.INVOKED:
            # An invocation of a function that does not exist resolves the caller's pause with an error.
            meta = lifecycle.invoke_meta(wire)
            if self._functions.get(str(meta.get("fn_id", ""))) is None and meta.get("correlation_id"):
                pause = await store.get_pause(str(meta["correlation_id"]))
                if pause is not None and pause.id not in taken:
                    taken.add(pause.id)
                    error = {"name": "FunctionNotFound", "message": f"function {meta.get('fn_id')!r} is not synced"}
                    out.append(waits.resume(pause, {"name": lifecycle.FINISHED, "data": {"error": error}}, now))
        return out

    async def _ended_events(self, run_id: str, reason: str) -> tuple[dict[str, Any], ...]:
        """The lifecycle events of a run being cancelled (for its invoker and on-cancel listeners)."""
        run = await self._store.get_run(run_id)
        if run is None:
            return ()
        events = [e.wire() for e in await self._store.get_events(list(run.event_ids))]
        return lifecycle.run_ended_events(run_id=run_id, function_slug=run.function_slug, events=events,
                                          status=protocol.RunStatus.CANCELLED,
                                          output={"name": "FunctionCancelled", "message": reason})


class _PauseLookups:
    """The pause lookups of one send, each asked of the store once: the index paths of an event name,
    and the pauses of a name and its events' index keys. A send of many events of one name (the usual
    case, with no pause waiting) made two queries per event; the pauses are read before the send's
    transaction either way, and a pause found for one event is `taken` and skipped by the later ones."""

    def __init__(self, store: base.Store) -> None:
        self._store = store
        self._paths: dict[str, list[str]] = {}
        self._pauses: dict[tuple[str, tuple[tuple[str, str], ...]], list[base.PauseRecord]] = {}

    async def paths(self, event_name: str) -> list[str]:
        found = self._paths.get(event_name)
        if found is None:
            # The unindexed pauses come with the paths (one read): they are all an event finds when none
            # of its index keys can be made, the usual case with nothing waiting.
            found, unindexed = await self._store.pause_index(event_name)
            self._paths[event_name] = found
            self._pauses[(event_name, ())] = unindexed
        return found

    async def pauses(self, event_name: str, keys: list[tuple[str, str]]) -> list[base.PauseRecord]:
        ask = (event_name, tuple(keys))
        found = self._pauses.get(ask)
        if found is None:
            found = self._pauses[ask] = await self._store.find_pauses(event_name, keys)
        return found


@functools.lru_cache(maxsize=1024)
def _flow_spec_cached(config_json: str) -> flow.FlowSpec:
    return flow.spec(protocol.FunctionConfig.model_validate_json(config_json))


def _flow_spec(config: protocol.FunctionConfig) -> flow.FlowSpec | None:
    """The function's normalised flow-control config, or None when it has none (the common case)."""
    if not (config.throttle or config.rate_limit or config.singleton or config.idempotency or config.priority
            or config.concurrency or config.debounce or config.batch_events):
        return None
    return _flow_spec_cached(config.model_dump_json(by_alias=True, exclude_none=True))


def _ms(d: timedelta) -> int:
    return int(d.total_seconds() * 1000)


class EventTooLargeResult(Exception):
    """Carries the partial result of a send stopped by an oversized event (the API replies 413)."""

    def __init__(self, result: IngestResult) -> None:
        super().__init__(result.error)
        self.result = result

