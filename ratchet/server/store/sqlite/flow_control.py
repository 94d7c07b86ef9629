"""Flow control inside the SQLite store's transactions: the pure decisions of `engine.flow` applied to
per-key state (rate limits, throttles, singletons, debounces, batches, concurrency slots)."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from ratchet import protocol
from ratchet.server.engine import flow, lifecycle
from ratchet.server.store import base
from ratchet.server.store.sqlite.connection import GroupCommit
from ratchet.server.store.sqlite.rows import dumps

#: Due candidates read per claimed item, so calls held back by a full concurrency key do not crowd out
#: the others in one claim.
CANDIDATES_PER_CLAIM = 4


class FlowMixin:
    """The flow-control half of `SqliteStore` (which provides the connection and the run helpers)."""

    _db: sqlite3.Connection
    _group: GroupCommit

    if TYPE_CHECKING:
        def _write(self) -> Any: ...
        def _apply_run_txn(self, run_id: str, commands: Sequence[base.Command], now: int, *,
                           owner: str | None, lease_ms: int, item_id: int | None) -> base.Applied: ...
        def _events_txn(self, internal_ids: Sequence[str]) -> list[base.EventRecord]: ...
        def _create_run_txn(self, run: base.NewRun, now: int) -> None: ...
        def _insert_items_txn(self, items: Iterable[base.NewItem]) -> None: ...

    def _collect_txn(self, run: base.NewRun, now: int) -> base.NewRun | None:
        """Debounce or batch a new run's event. Returns the run to start now (a batch that is full, with
        all its events), or None: the run starts when its timer fires."""
        db = self._db
        fl = run.flow
        assert fl is not None
        event_id = run.event_ids[0]
        if fl.debounce is not None:
            key, period_ms, timeout_ms = fl.debounce
            row = db.execute("SELECT first_seen, event_id, fire_at FROM debounces WHERE key = ?", (key,)).fetchone()
            state = flow.DebounceState(row[0], row[1], row[2]) if row else None
            if state is not None and state.fire_at <= now:
                # Due but its timer has not fired yet: the run has not started, so this event simply
                # becomes its last one (the timeout still caps the delay from the first event).
                state = dataclasses.replace(state, fire_at=now + 1)
            new = flow.debounce(state, now=now, period_ms=period_ms, timeout_ms=timeout_ms, event_id=event_id)
            db.execute("INSERT INTO debounces (key, function_slug, event_id, first_seen, fire_at) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT(key) DO UPDATE SET event_id = excluded.event_id, first_seen = excluded.first_seen, "
                       "fire_at = excluded.fire_at", (key, run.function_slug, event_id, new.first_seen, new.fire_at))
            self._arm_txn(base.ItemKind.DEBOUNCE, key, run.function_slug, new.fire_at)
            return None
        assert fl.batch is not None
        key, max_size, timeout_ms = fl.batch
        row = db.execute("SELECT event_ids, first_at, fire_at FROM batches WHERE key = ?", (key,)).fetchone()
        state = flow.BatchState(row[1], tuple(orjson.loads(row[0])), row[2]) if row else None
        new, full = flow.batch_add(state, now=now, max_size=max_size, timeout_ms=timeout_ms, event_id=event_id)
        if full:
            db.execute("DELETE FROM batches WHERE key = ?", (key,))
            db.execute("DELETE FROM queue WHERE kind = 'batch' AND run_id = ?", (f"batch:{key}",))
            return dataclasses.replace(run, event_ids=new.event_ids, idempotency_key=None,
                                       flow=dataclasses.replace(fl, batch=None))
        db.execute("INSERT INTO batches (key, function_slug, event_ids, first_at, fire_at) VALUES (?, ?, ?, ?, ?) "
                   "ON CONFLICT(key) DO UPDATE SET event_ids = excluded.event_ids",
                   (key, run.function_slug, dumps(list(new.event_ids)), new.first_at, new.fire_at))
        self._arm_txn(base.ItemKind.BATCH, key, run.function_slug, new.fire_at)
        return None

    def _arm_txn(self, kind: str, key: str, function_slug: str, due_at: int) -> None:
        """The one timer item of an open debounce or batch, due at `due_at` (moved if it exists)."""
        cur = self._db.execute("UPDATE queue SET due_at = ? WHERE kind = ? AND run_id = ?",
                               (due_at, kind, f"{kind}:{key}"))
        if cur.rowcount == 0:
            self._insert_items_txn([base.NewItem(kind, f"{kind}:{key}", due_at,
                                                 {"key": key, "function": function_slug})])

    async def get_pending(self, kind: str, key: str) -> base.Pending | None:
        return self._pending_txn(kind, key)

    async def fire_pending(self, item: base.QueueItem, owner: str, pending: base.Pending, run: base.NewRun,
                           now: int) -> bool:
        db = self._db
        fired = False
        with self._write():
            if db.execute("SELECT 1 FROM queue WHERE id = ? AND lease_owner = ?", (item.id, owner)).fetchone():
                current = self._pending_txn(pending.kind, pending.key)
                if current is None:
                    db.execute("DELETE FROM queue WHERE id = ?", (item.id,))
                elif current != pending or current.fire_at > now:
                    # Another event moved it since we looked: fire at its new time instead.
                    db.execute("UPDATE queue SET due_at = ?, lease_owner = NULL, lease_until = NULL WHERE id = ?",
                               (current.fire_at, item.id))
                else:
                    table = "debounces" if pending.kind == base.ItemKind.DEBOUNCE else "batches"
                    db.execute(f"DELETE FROM {table} WHERE key = ?", (pending.key,))
                    db.execute("DELETE FROM queue WHERE id = ?", (item.id,))
                    self._create_run_txn(run, now)
                    fired = True
        await self._group.committed()
        return fired

    def _pending_txn(self, kind: str, key: str) -> base.Pending | None:
        if kind == base.ItemKind.DEBOUNCE:
            row = self._db.execute("SELECT function_slug, event_id, fire_at FROM debounces WHERE key = ?",
                                   (key,)).fetchone()
            return base.Pending(kind, key, row[0], (row[1],), row[2]) if row else None
        row = self._db.execute("SELECT function_slug, event_ids, fire_at FROM batches WHERE key = ?",
                               (key,)).fetchone()
        return base.Pending(kind, key, row[0], tuple(orjson.loads(row[1])), row[2]) if row else None

    def _flow_txn(self, run: base.NewRun, fl: base.RunFlow, now: int) -> tuple[str | None, int]:
        """Apply rate limit, singleton and throttle to a new run, against (and updating) their state.

        Returns why the run is skipped (None: it starts) and when its first call is due.
        """
        db = self._db
        if fl.rate_limit is not None:
            key, limit, period_ms = fl.rate_limit
            row = db.execute("SELECT state FROM flow_state WHERE key = ?", (key,)).fetchone()
            state = flow.RateLimitState(tuple(orjson.loads(row[0])["admitted"])) if row else None
            decision = flow.rate_limit(state, now=now, limit=limit, period_ms=period_ms)
            if isinstance(decision, flow.Drop):
                return f"rate limited: more than {limit} runs in {period_ms} ms for this key", run.due_at
            assert isinstance(decision.state, flow.RateLimitState)
            self._save_flow_state(key, {"admitted": list(decision.state.admitted)},
                                  decision.state.expires_at(period_ms))
        if fl.singleton is not None:
            key, mode = fl.singleton
            row = db.execute("SELECT id FROM runs WHERE singleton_key = ? AND status IN ('QUEUED', 'RUNNING') "
                             "LIMIT 1", (key,)).fetchone()
            verdict = flow.singleton(row[0] if row else None, flow.SingletonMode(mode))
            if isinstance(verdict, flow.Skip):
                return f"singleton: run {verdict.active_run} is active for this key", run.due_at
            if isinstance(verdict, flow.CancelThenStart):
                self._cancel_txn(verdict.run_id, f"singleton: replaced by run {run.id}", now)
        due_at = run.due_at
        if fl.throttle is not None:
            key, limit, period_ms, burst = fl.throttle
            row = db.execute("SELECT state FROM flow_state WHERE key = ?", (key,)).fetchone()
            gcra = flow.GcraState(orjson.loads(row[0])["tat_ns"]) if row else None
            decision = flow.throttle(gcra, now=now, limit=limit, period_ms=period_ms, burst=burst)
            if isinstance(decision, flow.DelayUntil):
                # Excess runs are delayed, never dropped: reserve the first slot that conforms.
                due_at = max(due_at, decision.at)
                decision = flow.throttle(gcra, now=decision.at, limit=limit, period_ms=period_ms, burst=burst)
            assert isinstance(decision, flow.Admit) and isinstance(decision.state, flow.GcraState)
            self._save_flow_state(key, {"tat_ns": decision.state.tat_ns}, decision.state.expires_at)
        return None, due_at

    def _save_flow_state(self, key: str, state: dict[str, Any], expires_at: int) -> None:
        self._db.execute("INSERT INTO flow_state (key, state, expires_at) VALUES (?, ?, ?) ON CONFLICT(key) "
                         "DO UPDATE SET state = excluded.state, expires_at = excluded.expires_at",
                         (key, dumps(state), expires_at))

    def _cancel_txn(self, run_id: str, reason: str, now: int) -> None:
        """Cancel a run inside the current transaction, with its lifecycle events."""
        row = self._db.execute("SELECT function_slug, event_ids FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            return
        output = {"name": "FunctionCancelled", "message": reason}
        events = [e.wire() for e in self._events_txn(orjson.loads(row[1]))]
        ended = lifecycle.run_ended_events(run_id=run_id, function_slug=row[0], events=events,
                                           status=protocol.RunStatus.CANCELLED, output=output)
        self._apply_run_txn(run_id, (base.FinishRun(protocol.RunStatus.CANCELLED, output, error=reason),
                                     base.Emit(ended)), now, owner=None, lease_ms=0, item_id=None)

    def _admit_txn(self, rows: list[tuple[Any, ...]], limit: int) -> list[tuple[Any, ...]]:
        """Of the due candidates (in queue order), the ones to lease now: up to `limit`, never more calls
        in flight per concurrency key than its limit, shared fairly across keys (`flow.select`). The
        candidates a full key holds back are marked blocked until a call with that key ends."""
        keyed: dict[int, list[tuple[str, int]]] = {}
        for key, item_id, lim in self._db.execute(
                f"SELECT key, item_id, lim FROM item_keys WHERE item_id IN ({','.join('?' * len(rows))})",
                [r[0] for r in rows]).fetchall() if rows else ():
            keyed.setdefault(item_id, []).append((key, lim))
        if not keyed:
            return rows[:limit]
        limits = {k: lim for pairs in keyed.values() for k, lim in pairs}
        in_flight = {k: self._in_flight_txn(k) for k in limits}
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
        self._db.executemany("UPDATE queue SET blocked = 1 WHERE id = ?", [(i,) for i in blocked])
        return [r for r in rows if r[0] in picked]

    def _in_flight_txn(self, key: str, *, excluding: int = -1) -> int:
        """Calls holding `key` that are leased (in flight), not counting item `excluding`."""
        return int(self._db.execute(
            "SELECT count(*) FROM item_keys k JOIN queue q ON q.id = k.item_id WHERE k.key = ? "
            "AND q.lease_owner IS NOT NULL AND q.id != ?", (key, excluding)).fetchone()[0])

    def _add_keys_txn(self, item_id: int, keys: Sequence[tuple[str, int]]) -> None:
        self._db.executemany("INSERT OR IGNORE INTO item_keys (key, item_id, lim) VALUES (?, ?, ?)",
                             [(k, item_id, lim) for k, lim in keys])

    def _run_keys_txn(self, run_id: str) -> list[tuple[str, int]]:
        row = self._db.execute("SELECT concurrency FROM runs WHERE id = ?", (run_id,)).fetchone()
        return [(k, int(lim)) for k, lim in orjson.loads(row[0])] if row and row[0] else []

    def _unblock_txn(self, keys: Iterable[tuple[str, int]]) -> int:
        """A call holding these keys ended or let go: blocked calls of the keys may have room now.

        Only calls whose *other* keys have room too are unblocked: with two limits, the first call in
        line may still wait for its other key, and must not take the freed slot's turn from a call
        behind it that can run (it is unblocked when its other key frees up)."""
        total = 0
        for key, lim in keys:
            room = lim - self._in_flight_txn(key)
            if room > 0:
                total += self._db.execute(
                    "UPDATE queue SET blocked = 0 WHERE id IN (SELECT q.id FROM item_keys k JOIN queue q ON "
                    "q.id = k.item_id WHERE k.key = ? AND q.blocked = 1 AND NOT EXISTS (SELECT 1 FROM item_keys o "
                    "WHERE o.item_id = q.id AND o.key != k.key AND (SELECT count(*) FROM item_keys f JOIN queue fq "
                    "ON fq.id = f.item_id WHERE f.key = o.key AND fq.lease_owner IS NOT NULL) >= o.lim) "
                    "ORDER BY q.due_at - q.priority, q.id LIMIT ?)", (key, room)).rowcount
        return total
