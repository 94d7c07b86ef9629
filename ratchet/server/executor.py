"""The imperative shell around the engine: run a claimed queue item against the app.

For one item: load the run's state, build the call (reference §2.1), POST it to the app through the
`Transport` (aiohttp), hand the reply to `engine.steps.decide`, and apply the decision
with `Store.apply`, which also releases the item in the same transaction. When the decision enqueues a
call that is due at once (the next discovery after a step), `apply` hands it back already leased and
the executor runs it straight away: the hot path never waits for the scheduler.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import random
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import orjson

from ratchet import protocol
from ratchet.server import auth, ids, ingest
from ratchet.server import config as config_mod
from ratchet.server import transport as transport_mod
from ratchet.server.engine import cron, lifecycle, retry, steps, waits
from ratchet.server.store import base

log = logging.getLogger("ratchet.executor")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def call_url(function_url: str, fn_slug: str, target: str) -> str:
    """The function's runtime URL with `fnId` and `stepId` set for this call."""
    return _url_prefix(function_url, fn_slug) + urllib.parse.quote(target, safe="")


@functools.lru_cache(maxsize=1024)
def _url_prefix(function_url: str, fn_slug: str) -> str:
    """Everything of the call URL but the step id (parsed once per function, not once per call)."""
    parts = urllib.parse.urlsplit(function_url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
             if k not in ("fnId", "stepId")]
    query += [("fnId", fn_slug), ("stepId", "")]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


#: A call body larger than this is sent without its events and memo (`use_api`); the SDK then fetches
#: them from `/v0/runs/{id}/batch` and `/v0/runs/{id}/actions`.
MAX_INLINE_BODY_BYTES = 4 * 1024 * 1024


def build_request(state: base.RunState, item: base.QueueItem, *, max_attempts: int,
                  use_api: bool = False) -> dict[str, Any]:
    """The JSON body of a call (reference §2.1)."""
    events = [e.wire() for e in state.events]
    event = events[0] if events else {"name": "", "data": {}, "id": "", "ts": 0}
    stack = [h for h in state.run.stack if h in state.memo]
    return {
        "event": event,
        "events": [] if use_api else events,
        "steps": {} if use_api else {h: state.memo[h] for h in stack},
        "ctx": {
            "run_id": state.run.id,
            "attempt": item.attempt,
            "max_attempts": max_attempts,
            "disable_immediate_execution": state.run.force_step_plan,
            "use_api": use_api,
            "stack": {"stack": stack, "current": len(stack)},
            "fn_id": state.run.function_slug,
            "step_id": item.target,
            "env": "",
            "qi_id": str(item.id),
        },
        "version": protocol.REQUEST_VERSION,
        "use_api": use_api,
    }


def call_body(state: base.RunState, item: base.QueueItem, *, max_attempts: int) -> bytes:
    """The serialized call, switching to `use_api` when the events and memo would make it too large."""
    body = orjson.dumps(build_request(state, item, max_attempts=max_attempts))
    if len(body) > MAX_INLINE_BODY_BYTES:
        body = orjson.dumps(build_request(state, item, max_attempts=max_attempts, use_api=True))
    return body


class Executor:
    """Runs queue items. `notify` wakes the scheduler when an item is put back for later."""

    def __init__(self, store: base.Store, cfg: config_mod.ServerConfig, transport: transport_mod.Transport, *,
                 owner: str, notify: Callable[[], None]) -> None:
        self._store = store
        self._cfg = cfg
        self._transport = transport
        self.owner = owner
        self._notify = notify
        self._lease_ms = int(cfg.lease_s * 1000)
        self._rand = random.Random()
        self.ingestor: ingest.Ingestor  # set once the ingestor exists (it needs the scheduler's notify)

    async def run(self, item: base.QueueItem) -> None:
        """Run `item`, then any follow-up items that are due at once, until the run waits or ends."""
        while (early_ms := item.due_at - _now_ms()) > 0:  # noqa: ASYNC110 - a wall-clock time, not an event
            # Claimed a little ahead of time (the scheduler's lookahead): never start early. The loop
            # covers a timer that fires a moment before the wall clock reaches the due time.
            await asyncio.sleep(early_ms / 1000)
        if item.failures >= retry.MAX_ITEM_FAILURES:
            # Its lease ran out once too often (each node handling it died or hung): a poison item.
            await self._give_up(item, item.failure or base.LEASE_EXPIRED)
            return
        pending: list[tuple[base.QueueItem, base.RunState | None]] = [(item, None)]
        while pending:
            current, state = pending.pop()
            try:
                ready, state = await self._run_one(current, state)
            except Exception as exc:
                log.exception("executor failed on queue item %s of run %s", current.id, current.run_id)
                await self._item_failed(current, f"{type(exc).__name__}: {exc}"[:2000])
                return
            if ready:
                pending.append((ready[0], state))
                for extra in ready[1:]:
                    asyncio.get_running_loop().create_task(self.run(extra))

    async def _run_one(self, item: base.QueueItem, state: base.RunState | None
                       ) -> tuple[tuple[base.QueueItem, ...], base.RunState | None]:
        """One call. `state` is the run as this node just wrote it (a follow-up item), else it is loaded."""
        if item.kind != base.ItemKind.CALL:
            return await self._timer(item), None
        store = self._store
        # A call is never made before it is due, so a sleep that ends at the due time is over.
        now = max(_now_ms(), item.due_at)
        if state is None:
            state = await store.load_run_state(item.run_id, now)
        if state is None or state.run.status.is_terminal:
            await store.apply(item, self.owner, [], now, self._lease_ms)
            return (), None
        if state.function is None:
            # Nothing can ever handle it: dead-lettered (and the run failed) at once, not tried again.
            message = f"function {state.run.function_slug!r} no longer exists"
            await self._give_up(item, message, name="FunctionNotFound", state=state)
            return (), None
        if state.run.status == protocol.RunStatus.QUEUED:
            await store.mark_running(item.run_id, now)
        max_attempts = state.function.config.max_attempts(self._cfg.default_retries)
        body = call_body(state, item, max_attempts=max_attempts)
        url = call_url(state.function.url, state.function.slug, item.target)
        sent_at = _now_ms()
        reply = await self._post(url, body, state.run.id, item)
        now = _now_ms()
        call = steps.Call(target=item.target, attempt=item.attempt, max_attempts=max_attempts,
                          step_count=len(state.run.stack), sent_at=sent_at, run_id=state.run.id,
                          function_slug=state.run.function_slug, app_id=state.run.app_id,
                          events=tuple(e.wire() for e in state.events),
                          race=bool(isinstance(item.payload, dict) and item.payload.get("race")),
                          emit_finished=self.ingestor.has_listeners(lifecycle.FINISHED))
        commands = steps.decide(call, reply, now=now, policy=self._cfg.retry, rand=self._rand.random())
        applied = await store.apply(item, self.owner, commands, now, self._lease_ms)
        if applied.enqueued_future:
            self._notify()
        if not applied.accepted or not applied.ready:
            return (), None
        if state.run.force_step_plan or any(isinstance(c, base.SetForceStepPlan) for c in commands):
            # Parallel steps: other calls of this run may have recorded steps (and ended parallel mode)
            # since `state` was loaded, so a follow-up call loads the run again.
            return applied.ready, None
        return applied.ready, _advance(state, commands, now)

    async def _timer(self, item: base.QueueItem) -> tuple[base.QueueItem, ...]:
        """Items that are not app calls: pause expiry, the outbox, cron ticks, run timeouts.

        Returns the calls they queued that are due now (leased to this node, to run at once)."""
        store = self._store
        now = _now_ms()
        if item.kind == base.ItemKind.TIMEOUT:
            pause = await store.get_pause(str(item.payload))
            commands = waits.expire(pause, now) if pause is not None else []
            applied = await store.apply(item, self.owner, commands, now, self._lease_ms)
            if applied.enqueued_future:
                self._notify()
            return applied.ready
        elif item.kind == base.ItemKind.EMIT:
            await self.ingestor.ingest_internal(list(item.payload or []), now, done=(item, self.owner))
        elif item.kind == base.ItemKind.CRON:
            await self._cron_tick(item, now)
        elif item.kind == base.ItemKind.RUN_TIMEOUT:
            await self._run_timeout(item, now)
        elif item.kind in (base.ItemKind.DEBOUNCE, base.ItemKind.BATCH):
            await self._fire_pending(item, now)
        else:
            await self._give_up(item, f"unknown queue item kind {item.kind!r}")
        return ()

    async def _item_failed(self, item: base.QueueItem, reason: str) -> None:
        """Handling `item` raised: release it to be tried again after a backoff, or dead-letter it once it
        failed `retry.MAX_ITEM_FAILURES` times. If even that cannot be written (the store is down), the
        item stays leased and comes back when the lease runs out, which counts as a failure too."""
        failures = item.failures + 1
        delay = retry.item_retry_delay_ms(failures, self._cfg.item_retry_base_ms)
        try:
            if delay is None:
                await self._give_up(item, reason, failures=failures)
            else:
                now = _now_ms()
                if await self._store.fail_item(item, self.owner, reason, now, now + delay):
                    self._notify()
        except Exception:
            log.exception("could not record the failure of queue item %s", item.id)

    async def _give_up(self, item: base.QueueItem, reason: str, *, failures: int | None = None,
                       name: str = "DeadLettered", state: base.RunState | None = None) -> None:
        """Take a poison item out of the queue into the dead letters with `reason`; the run it belongs to
        (if it has not ended) fails with that reason, emitting its lifecycle events as any failure does."""
        failures = item.failures if failures is None else failures
        detail = f"{reason} (after {failures} failures)" if failures else reason
        log.error("dead-lettering queue item %s (%s) of %s: %s", item.id, item.kind, item.run_id, detail)
        now = _now_ms()
        commands: list[base.Command] = []
        if item.kind in (base.ItemKind.CALL, base.ItemKind.TIMEOUT, base.ItemKind.RUN_TIMEOUT):
            output = {"name": name, "message": detail}
            commands = [base.FinishRun(protocol.RunStatus.FAILED, output, error=detail)]
            try:
                run = state.run if state is not None else await self._store.get_run(item.run_id)
                if run is not None and not run.status.is_terminal:
                    events = ([e.wire() for e in state.events] if state is not None
                              else [e.wire() for e in await self._store.get_events(list(run.event_ids))])
                    commands.append(base.Emit(lifecycle.run_ended_events(
                        run_id=run.id, function_slug=run.function_slug, events=events,
                        status=protocol.RunStatus.FAILED, output=output,
                        finished=self.ingestor.has_listeners(lifecycle.FINISHED))))
            except Exception:
                # The run still fails (without its lifecycle events) rather than hanging for ever.
                log.exception("could not load run %s to emit its failure", item.run_id)
        if item.kind == base.ItemKind.CRON:
            await self._queue_next_tick(item, now)
        applied = await self._store.apply(item, self.owner, commands, now, self._lease_ms,
                                          dead_letter=base.GiveUp(reason, failures))
        if applied.enqueued_future:
            self._notify()

    async def _queue_next_tick(self, item: base.QueueItem, now: int) -> None:
        """A dead-lettered cron tick loses its run, not its schedule: queue the next tick, before the dead
        letter (a crash in between hands the tick back, never leaves the schedule without one)."""
        try:
            _, next_item = cron.tick(item.payload or {}, fired_at=item.due_at, now=now, rand=self._rand.random())
            await self._store.ingest([], [], now, items=[next_item])
            self._notify()
        except Exception:
            log.exception("could not queue the tick after dead-lettered cron item %s: the schedule stops until "
                          "its app is synced again", item.id)

    async def _run_timeout(self, item: base.QueueItem, now: int) -> None:
        """`timeouts.start`: cancel a run that has not started; `timeouts.finish`: one that has not ended."""
        store = self._store
        run = await store.get_run(item.run_id)
        fn = await store.get_function(run.function_slug) if run is not None else None
        which = (item.payload or {}).get("which")
        if run is None or run.status.is_terminal or fn is None or fn.config.timeouts is None:
            await store.apply(item, self.owner, [], now, self._lease_ms)
            return
        timeouts = fn.config.timeouts
        if which == "start":
            if run.status != protocol.RunStatus.QUEUED:
                await store.apply(item, self.owner, [], now, self._lease_ms)
                return
            reason = f"the run did not start within timeouts.start ({timeouts.start})"
        else:
            limit = int(protocol.parse_duration(timeouts.finish or "0").total_seconds() * 1000)
            if run.started_at is None or run.started_at + limit > now:
                # Not started yet, or started after it was queued: the finish clock runs from the start.
                due = (run.started_at or now) + limit
                await store.ingest([], [], now, items=[base.NewItem(base.ItemKind.RUN_TIMEOUT, run.id, due,
                                                                    {"which": "finish"})], done=(item, self.owner))
                self._notify()
                return
            reason = f"the run did not finish within timeouts.finish ({timeouts.finish})"
        events = [e.wire() for e in await store.get_events(list(run.event_ids))]
        output = {"name": "FunctionTimedOut", "message": reason}
        commands: list[base.Command] = [
            base.FinishRun(protocol.RunStatus.CANCELLED, output, error=reason),
            base.Emit(lifecycle.run_ended_events(run_id=run.id, function_slug=run.function_slug, events=events,
                                                 status=protocol.RunStatus.CANCELLED, output=output))]
        await store.apply(item, self.owner, commands, now, self._lease_ms)
        self._notify()

    async def _fire_pending(self, item: base.QueueItem, now: int) -> None:
        """A debounce's quiet period or a batch's timeout ended: start its run with its event(s)."""
        store = self._store
        pending = await store.get_pending(item.kind, str((item.payload or {}).get("key")))
        fn = await store.get_function(pending.function_slug) if pending is not None else None
        events = await store.get_events(list(pending.event_ids)) if pending is not None else []
        if pending is None or fn is None or not events:
            await store.apply(item, self.owner, [], now, self._lease_ms)  # nothing left to start
            return
        first = events[-1] if item.kind == base.ItemKind.DEBOUNCE else events[0]
        run = self.ingestor.new_run(fn, first, first.wire(), now, events=events if len(events) > 1 else (),
                                    collect=False)
        await store.fire_pending(item, self.owner, pending, run, now)
        self._notify()

    async def _cron_tick(self, item: base.QueueItem, now: int) -> None:
        """Fire a schedule: its `inngest/scheduled.timer` event starts one run; the next tick is queued."""
        payload = item.payload or {}
        fn = await self._store.get_function(str(payload.get("function")))
        spec = str(payload.get("cron"))
        if fn is None or not any(t.cron == spec for t in fn.config.triggers):
            await self._store.apply(item, self.owner, [], now, self._lease_ms)  # schedule gone
            return
        event, next_item = cron.tick(payload, fired_at=item.due_at, now=now, rand=self._rand.random())
        record_id = ids.new_ulid(now)
        record = base.EventRecord(internal_id=record_id, id=record_id, name=event["name"], data=event["data"],
                                  ts=event["ts"], received_at=now)
        run = self.ingestor.new_run(fn, record, record.wire(), now, key=f"{fn.slug}\x00cron\x00{item.due_at}")
        await self._store.ingest([record], [run], now, items=[next_item], done=(item, self.owner))
        self._notify()

    async def _post(self, url: str, body: bytes, run_id: str, item: base.QueueItem) -> steps.Reply | steps.NoReply:
        headers = {
            "content-type": "application/json",
            protocol.Header.SERVER_KIND: self._cfg.kind,
            protocol.Header.REQ_VERSION: str(protocol.REQUEST_VERSION),
            protocol.Header.RUN_ID: run_id,
            protocol.Header.REQUEST_ID: f"{run_id}:{item.id}:{item.attempt}",
            protocol.Header.STEP_ID: item.target,
        }
        if self._cfg.signing_keys:
            # Sign the canonical (JCS) form and send exactly those bytes, so the SDK's check matches.
            body = protocol.canonical_json(orjson.loads(body))
            headers[protocol.Header.SIGNATURE] = protocol.sign(body, self._cfg.signing_keys[0])
        reply = await self._transport.request("POST", url, body, headers, self._cfg.call_timeout_s)
        if (self._cfg.signing_keys and isinstance(reply, steps.Reply)
                and not auth.reply_signed(reply, self._cfg.signing_keys)):
            # Production mode: only replies signed with our key count (a tampered one is a failed call).
            return steps.NoReply(f"the reply from {url} (status {reply.status}) has no valid signature")
        return reply


def _advance(state: base.RunState, commands: list[base.Command], now: int) -> base.RunState:
    """The run state after `commands` were applied, so a follow-up call needs no reload.

    Mirrors what `Store.apply` and `Store.load_run_state` do with the same commands; a step already in
    the memo keeps its first result, as in the store.
    """
    memo = dict(state.memo)
    stack = list(state.run.stack)
    force = state.run.force_step_plan
    for cmd in commands:
        if isinstance(cmd, base.SaveStep):
            if cmd.hash not in stack:
                stack.append(cmd.hash)
            elif cmd.status != base.StepStatus.SLEEPING:
                continue  # recorded before: the store kept the first result, and so does the memo
            # A sleep is in the memo once over. A sleep reported again with a wake time already past
            # must be over too (its first wake time was no later), or the next call would loop on it.
            if cmd.status != base.StepStatus.SLEEPING or (cmd.ended_at is not None and cmd.ended_at <= now):
                memo[cmd.hash] = cmd.memo
        elif isinstance(cmd, base.SetForceStepPlan):
            force = cmd.value
    run = dataclasses.replace(state.run, status=protocol.RunStatus.RUNNING, stack=tuple(stack),
                              force_step_plan=force)
    return dataclasses.replace(state, run=run, memo=memo)
