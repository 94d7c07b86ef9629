"""Flow control inside the PostgreSQL store's transactions: the pure decisions of `engine.flow` applied to
per-key state (rate limits, throttles, singletons, debounces, batches, concurrency slots).

Each key's state is read-modified-written under an advisory lock on the key's name (the row may not
exist yet) and its row is read `FOR UPDATE`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import orjson

from ratchet import protocol
from ratchet.server.engine import flow, lifecycle
from ratchet.server.store import base
from ratchet.server.store.postgres import queries as q
from ratchet.server.store.postgres.connection import WORK_CHANNEL, Conn, Pool, lock_names_txn
from ratchet.server.store.postgres.rows import Row, dumps, status_count
from ratchet.server.store.postgres.runs import key_lock

#: Due candidates read per claimed item, so calls held back by a full concurrency key do not crowd out
#: the others in one claim.
CANDIDATES_PER_CLAIM = 4

_PENDING_LOCK = {base.ItemKind.DEBOUNCE: "debounce:", base.ItemKind.BATCH: "batch:"}


class FlowMixin:
    """The flow-control half of `PostgresStore` (which provides the pool and the run helpers)."""

    _pool: Pool

    if TYPE_CHECKING:
        async def _apply_run_txn(self, conn: Conn, run_id: str, commands: Sequence[base.Command], now: int, *,
                                 owner: str | None, lease_ms: int, item_id: int | None) -> base.Applied: ...
        async def _events_txn(self, conn: Conn, internal_ids: Sequence[str]) -> list[base.EventRecord]: ...
        async def _create_run_txn(self, conn: Conn, run: base.NewRun, now: int) -> None: ...
        async def _insert_items_txn(self, conn: Conn, items: Iterable[base.NewItem]) -> None: ...

    # ------------------------------------------------------------------------------ debounce and batch

    async def _collect_txn(self, conn: Conn, run: base.NewRun, now: int) -> base.NewRun | None:
        """Debounce or batch a new run's event. Returns the run to start now (a batch that is full, with
        all its events), or None: the run starts when its timer fires."""
        fl = run.flow
        assert fl is not None
        event_id = run.event_ids[0]
        if fl.debounce is not None:
            key, period_ms, timeout_ms = fl.debounce
            await lock_names_txn(conn, [_PENDING_LOCK[base.ItemKind.DEBOUNCE] + key])
            row = await conn.fetchrow(q.DEBOUNCE_FOR_UPDATE, key)
            state = flow.DebounceState(row[2], row[1], row[3]) if row else None
            if state is not None and state.fire_at <= now:
                # Due but its timer has not fired yet: the run has not started, so this event simply
                # becomes its last one (the timeout still caps the delay from the first event).
                state = dataclasses.replace(state, fire_at=now + 1)
            new = flow.debounce(state, now=now, period_ms=period_ms, timeout_ms=timeout_ms, event_id=event_id)
            await conn.execute(q.SAVE_DEBOUNCE, key, run.function_slug, event_id, new.first_seen, new.fire_at)
            await self._arm_txn(conn, base.ItemKind.DEBOUNCE, key, run.function_slug, new.fire_at)
            return None
        assert fl.batch is not None
        key, max_size, timeout_ms = fl.batch
        await lock_names_txn(conn, [_PENDING_LOCK[base.ItemKind.BATCH] + key])
        row = await conn.fetchrow(q.BATCH_FOR_UPDATE, key)
        state = flow.BatchState(row[2], tuple(orjson.loads(row[1])), row[3]) if row else None
        new, full = flow.batch_add(state, now=now, max_size=max_size, timeout_ms=timeout_ms, event_id=event_id)
        if full:
            await conn.execute(q.DELETE_BATCH, key)
            await conn.execute(q.DELETE_TIMER, base.ItemKind.BATCH.value, f"batch:{key}")
            return dataclasses.replace(run, event_ids=new.event_ids, idempotency_key=None,
                                       flow=dataclasses.replace(fl, batch=None))
        await conn.execute(q.SAVE_BATCH, key, run.function_slug, dumps(list(new.event_ids)), new.first_at,
                           new.fire_at)
        await self._arm_txn(conn, base.ItemKind.BATCH, key, run.function_slug, new.fire_at)
        return None

    async def _arm_txn(self, conn: Conn, kind: str, key: str, function_slug: str, due_at: int) -> None:
        """The one timer item of an open debounce or batch, due at `due_at` (moved if it exists)."""
        if status_count(await conn.execute(q.MOVE_TIMER, kind, f"{kind}:{key}", due_at)) == 0:
            await self._insert_items_txn(conn, [base.NewItem(kind, f"{kind}:{key}", due_at,
                                                             {"key": key, "function": function_slug})])

    async def get_pending(self, kind: str, key: str) -> base.Pending | None:
        return await self._pool.run(lambda conn: self._pending_txn(conn, kind, key), readonly=True)

    async def fire_pending(self, item: base.QueueItem, owner: str, pending: base.Pending, run: base.NewRun,
                           now: int) -> bool:
        async def body(conn: Conn) -> bool:
            # The key first, then the timer row: the order `_collect_txn` uses (key, then `_arm_txn`).
            await lock_names_txn(conn, [_PENDING_LOCK[base.ItemKind(pending.kind)] + pending.key])
            if not await conn.fetchval(q.HELD_FOR_UPDATE, item.id, owner):
                return False
            current = await self._pending_txn(conn, pending.kind, pending.key, lock=True)
            if current is None:
                await conn.execute(q.DELETE_ITEM, item.id)
                return False
            if current != pending or current.fire_at > now:
                # Another event moved it since we looked: fire at its new time instead.
                await conn.execute(q.REARM_TIMER, item.id, current.fire_at)
                return False
            delete = q.DELETE_DEBOUNCE if pending.kind == base.ItemKind.DEBOUNCE else q.DELETE_BATCH
            await conn.execute(delete, pending.key)
            await conn.execute(q.DELETE_ITEM, item.id)
            await self._create_run_txn(conn, run, now)
            return True

        return await self._pool.run(body, notify=WORK_CHANNEL)

    async def _pending_txn(self, conn: Conn, kind: str, key: str, *, lock: bool = False) -> base.Pending | None:
        # `lock`: inside a write (`FOR UPDATE`); a read-only transaction reads its snapshot instead.
        if kind == base.ItemKind.DEBOUNCE:
            row = await conn.fetchrow(q.DEBOUNCE_FOR_UPDATE if lock else q.DEBOUNCE, key)
            return base.Pending(kind, key, row[0], (row[1],), row[3]) if row else None
        row = await conn.fetchrow(q.BATCH_FOR_UPDATE if lock else q.BATCH, key)
        return base.Pending(kind, key, row[0], tuple(orjson.loads(row[1])), row[3]) if row else None

    # ------------------------------------------------------------------------------ at run start

    async def _flow_txn(self, conn: Conn, run: base.NewRun, fl: base.RunFlow, now: int) -> tuple[str | None, int]:
        """Apply rate limit, singleton and throttle to a new run, against (and updating) their state.

        Returns why the run is skipped (None: it starts) and when its first call is due.
        """
        if fl.rate_limit is not None:
            key, limit, period_ms = fl.rate_limit
            text = await self._flow_state_txn(conn, key)
            state = flow.RateLimitState(tuple(orjson.loads(text)["admitted"])) if text else None
            decision = flow.rate_limit(state, now=now, limit=limit, period_ms=period_ms)
            if isinstance(decision, flow.Drop):
                return f"rate limited: more than {limit} runs in {period_ms} ms for this key", run.due_at
            assert isinstance(decision.state, flow.RateLimitState)
            await conn.execute(q.SAVE_FLOW_STATE, key, dumps({"admitted": list(decision.state.admitted)}),
                               decision.state.expires_at(period_ms))
        if fl.singleton is not None:
            key, mode = fl.singleton
            await lock_names_txn(conn, ["singleton:" + key])
            active = await conn.fetchval(q.ACTIVE_SINGLETON, key)
            verdict = flow.singleton(active, flow.SingletonMode(mode))
            if isinstance(verdict, flow.Skip):
                return f"singleton: run {verdict.active_run} is active for this key", run.due_at
            if isinstance(verdict, flow.CancelThenStart):
                await self._cancel_txn(conn, verdict.run_id, f"singleton: replaced by run {run.id}", now)
        due_at = run.due_at
        if fl.throttle is not None:
            key, limit, period_ms, burst = fl.throttle
            text = await self._flow_state_txn(conn, key)
            gcra = flow.GcraState(orjson.loads(text)["tat_ns"]) if text else None
            decision = flow.throttle(gcra, now=now, limit=limit, period_ms=period_ms, burst=burst)
            if isinstance(decision, flow.DelayUntil):
                # Excess runs are delayed, never dropped: reserve the first slot that conforms.
                due_at = max(due_at, decision.at)
                decision = flow.throttle(gcra, now=decision.at, limit=limit, period_ms=period_ms, burst=burst)
            assert isinstance(decision, flow.Admit) and isinstance(decision.state, flow.GcraState)
            await conn.execute(q.SAVE_FLOW_STATE, key, dumps({"tat_ns": decision.state.tat_ns}),
                               decision.state.expires_at)
        return None, due_at

    async def _flow_state_txn(self, conn: Conn, key: str) -> str | None:
        """The key's state, locked until the commit (the name first: the row may not exist yet)."""
        await lock_names_txn(conn, ["flow:" + key])
        return await conn.fetchval(q.FLOW_STATE_FOR_UPDATE, key)

    async def _cancel_txn(self, conn: Conn, run_id: str, reason: str, now: int) -> None:
        """Cancel a run inside the current transaction, with its lifecycle events."""
        row = await conn.fetchrow(q.RUN_FUNCTION_EVENTS, run_id)
        if row is None:
            return
        output = {"name": "FunctionCancelled", "message": reason}
        events = [e.wire() for e in await self._events_txn(conn, orjson.loads(row[1]))]
        ended = lifecycle.run_ended_events(run_id=run_id, function_slug=row[0], events=events,
                                           status=protocol.RunStatus.CANCELLED, output=output)
        await self._apply_run_txn(conn, run_id, (base.FinishRun(protocol.RunStatus.CANCELLED, output, error=reason),
                                                 base.Emit(ended)), now, owner=None, lease_ms=0, item_id=None)

    # ------------------------------------------------------------------------------ concurrency slots

    async def _admit_txn(self, conn: Conn, rows: list[Row], limit: int,
                         keyed: dict[int, list[tuple[str, int]]]) -> list[Row]:
        """Of the due candidates (in queue order, row-locked), the ones to lease now: up to `limit`, never
        more calls in flight per concurrency key than its limit, shared fairly across keys (`flow.select`).
        `keyed` holds the concurrency keys and limits of the candidates that have any. The candidates a
        full key holds back are marked blocked until a call with that key ends."""
        if not keyed:
            return rows[:limit]
        limits = {k: lim for pairs in keyed.values() for k, lim in pairs}
        # The in-flight counts must hold until the commit: another claimer or an `apply` that leases a
        # follow-up call takes the same key locks first.
        await lock_names_txn(conn, [key_lock(k) for k in limits])
        counted = dict(await conn.fetch(q.IN_FLIGHT_MANY, list(limits)))  # one round trip under the locks
        in_flight = {k: int(counted.get(k, 0)) for k in limits}
        candidates = [flow.Candidate(item_id=r[0], keys=tuple(k for k, _ in keyed.get(r[0], ())), order_key=i,
                                     fair_key=keyed[r[0]][0][0] if r[0] in keyed else None)
                      for i, r in enumerate(rows)]
        picked = set(flow.select(candidates, in_flight, limits, limit))
        counts = dict(in_flight)
        for c in candidates:
            if c.item_id in picked:
                for k in c.keys:
                    counts[k] = counts.get(k, 0) + 1
        blocked = [c.item_id for c in candidates if c.item_id not in picked
                   and any(counts.get(k, 0) >= limits[k] for k in c.keys)]
        if blocked:
            await conn.execute(q.BLOCK, blocked)
        return [r for r in rows if r[0] in picked]

    async def _in_flight_txn(self, conn: Conn, key: str, *, excluding: int = -1) -> int:
        """Calls holding `key` that are leased (in flight), not counting item `excluding`."""
        return int(await conn.fetchval(q.IN_FLIGHT, key, excluding))

    async def _unblock_txn(self, conn: Conn, keys: Iterable[tuple[str, int]]) -> int:
        """A call holding these keys ended or let go: blocked calls of the keys may have room now.

        Only calls whose *other* keys have room too are unblocked: with two limits, the first call in
        line may still wait for its other key, and must not take the freed slot's turn from a call
        behind it that can run (it is unblocked when its other key frees up)."""
        total = 0
        for key, lim in keys:
            room = lim - await self._in_flight_txn(conn, key)
            if room > 0:
                total += status_count(await conn.execute(q.UNBLOCK, key, room))
        return total
