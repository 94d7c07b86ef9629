"""The embedded SQLite store (the default backend).

One connection, used only from the event loop's thread. Every method runs its SQL without awaiting in
between, so a method is one transaction and two methods never interleave. Calling sqlite3 directly on
the loop (instead of through a thread pool such as aiosqlite) is deliberate: a WAL commit with
synchronous=NORMAL costs ~12 µs here, far less than a thread hop, and a single writer is what SQLite
wants anyway. A server owns its SQLite file alone; scale-out uses the PostgreSQL backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from ratchet import protocol
from ratchet.server.engine import flow, lifecycle
from ratchet.server.store import base, migrations

# Pragmas, each with its reason:
_PRAGMAS = (
    # Readers never block the writer and a commit is one append to the WAL file.
    "PRAGMA journal_mode=WAL",
    # In WAL mode NORMAL survives a process crash (kill -9): the commit is in the WAL in the OS page
    # cache. Only a power loss can drop the last commits, which the dev server accepts.
    "PRAGMA synchronous=NORMAL",
    # Our schema has references; keep them honest.
    "PRAGMA foreign_keys=ON",
    # Another process (a CLI reading the file) may hold a lock briefly; wait instead of failing.
    "PRAGMA busy_timeout=5000",
    # Keep temp b-trees in memory; sorts for list pages stay off the disk.
    "PRAGMA temp_store=MEMORY",
    # No checkpoints on the writer's commits: a checkpoint copies pages and syncs the file, stalling the
    # event loop for tens of ms. `_Checkpointer` runs them on its own connection and thread instead.
    "PRAGMA wal_autocheckpoint=0",
)
#: Due candidates read per claimed item, so calls held back by a full concurrency key do not crowd out
#: the others in one claim.
CANDIDATES_PER_CLAIM = 4
#: How often the background checkpointer folds the WAL back into the database file.
CHECKPOINT_INTERVAL_S = 1.0

_RUN_COLS = ("id, function_slug, app_id, status, event_ids, created_at, started_at, ended_at, output, "
             "stack, force_step_plan, error")
_EVENT_COLS = "internal_id, id, name, data, ts, received_at, v, user, seq"
_STEP_COLS = "run_id, hash, name, op, status, memo, started_at, ended_at, attempts"
_QUEUE_COLS = "id, run_id, target, attempt, due_at, lease_owner, lease_until, kind, payload"
_PAUSE_COLS = ("id, run_id, kind, step_hash, step_name, event_name, expression, index_path, index_value, "
               "created_at, expires_at")


#: How long a run idempotency key is kept (24 h).
IDEMPOTENCY_MS = 24 * 3600 * 1000


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _loads(text: str | bytes | None) -> Any:
    return None if text is None else orjson.loads(text)


def _where(*conditions: tuple[str, Any]) -> tuple[str, list[Any]]:
    """A ` WHERE a AND b` clause of the conditions whose value is not None, and their arguments."""
    used = [(sql, value) for sql, value in conditions if value is not None]
    if not used:
        return "", []
    return " WHERE " + " AND ".join(sql for sql, _ in used), [value for _, value in used]


def _run(row: tuple[Any, ...]) -> base.RunRecord:
    return base.RunRecord(
        id=row[0], function_slug=row[1], app_id=row[2], status=protocol.RunStatus(row[3]),
        event_ids=tuple(orjson.loads(row[4])), created_at=row[5], started_at=row[6], ended_at=row[7],
        output=_loads(row[8]), stack=tuple(orjson.loads(row[9])), force_step_plan=bool(row[10]),
        error=row[11],
    )


def _event(row: tuple[Any, ...]) -> base.EventRecord:
    return base.EventRecord(internal_id=row[0], id=row[1], name=row[2], data=orjson.loads(row[3]),
                            ts=row[4], received_at=row[5], v=row[6], user=_loads(row[7]), seq=row[8])


def _step(row: tuple[Any, ...]) -> base.StepRecord:
    return base.StepRecord(run_id=row[0], hash=row[1], name=row[2], op=row[3],
                           status=base.StepStatus(row[4]), memo=_loads(row[5]), started_at=row[6],
                           ended_at=row[7], attempts=row[8])


def _item(row: tuple[Any, ...]) -> base.QueueItem:
    return base.QueueItem(id=row[0], run_id=row[1], target=row[2], attempt=row[3], due_at=row[4],
                          lease_owner=row[5], lease_until=row[6], kind=row[7], payload=_loads(row[8]))


def _pause(row: tuple[Any, ...]) -> base.PauseRecord:
    return base.PauseRecord(id=row[0], run_id=row[1], kind=base.PauseKind(row[2]), step_hash=row[3],
                            step_name=row[4], event_name=row[5], expression=row[6], index_path=row[7],
                            index_value=row[8], created_at=row[9], expires_at=row[10])


@functools.lru_cache(maxsize=1024)
def _function_cached(slug: str, app_id: str, name: str, config: str, url: str) -> base.FunctionRecord:
    # Validating a config costs ~50 µs and every call needs its function; the row's text is the key, so
    # the parsed record is reused until the row changes. Callers never mutate a record's config.
    return base.FunctionRecord(slug=slug, app_id=app_id, name=name,
                               config=protocol.FunctionConfig.model_validate_json(config), url=url)


def _function(row: tuple[Any, ...]) -> base.FunctionRecord:
    return _function_cached(row[0], row[1], row[2], row[3], row[4])


def _app(row: tuple[Any, ...]) -> base.AppRecord:
    return base.AppRecord(id=row[0], name=row[1], url=row[2], sdk=row[3], framework=row[4], checksum=row[5],
                          synced_at=row[6], error=row[7], function_count=row[8])


class SqliteStore:
    """`base.Store` on one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a write transaction takes the
        # write lock up front instead of failing half-way with SQLITE_BUSY on upgrade.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in _PRAGMAS:
            self._db.execute(pragma)
        migrations.apply_sqlite(self._db)
        self._group = _GroupCommit(self._db)
        self._checkpointer = _Checkpointer(self.path) if self.path != ":memory:" else None

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self._db.close()

    # ------------------------------------------------------------------------------ transaction helper

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._group.write()

    # ------------------------------------------------------------------------------ apps and functions

    async def sync_app(self, app: base.AppRecord, functions: list[base.FunctionRecord],
                       crons: Sequence[base.NewItem] = ()) -> tuple[base.AppRecord, bool]:
        db = self._db
        with self._write():
            row = db.execute("SELECT id, checksum FROM apps WHERE name = ?", (app.name,)).fetchone()
            app_id = row[0] if row else app.id
            changed = row is None or row[1] != app.checksum
            db.execute(
                "INSERT INTO apps (id, name, url, sdk, framework, checksum, synced_at, error) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, NULL) ON CONFLICT(name) DO UPDATE SET url=excluded.url, "
                "sdk=excluded.sdk, framework=excluded.framework, checksum=excluded.checksum, "
                "synced_at=excluded.synced_at, error=NULL",
                (app_id, app.name, app.url, app.sdk, app.framework, app.checksum, app.synced_at),
            )
            if changed:
                db.execute("UPDATE functions SET archived = 1, updated_at = ? WHERE app_id = ?",
                           (app.synced_at, app_id))
                for fn in functions:
                    db.execute(
                        "INSERT INTO functions (slug, app_id, name, config, url, archived, updated_at) "
                        "VALUES (?, ?, ?, ?, ?, 0, ?) ON CONFLICT(slug) DO UPDATE SET app_id=excluded.app_id, "
                        "name=excluded.name, config=excluded.config, url=excluded.url, archived=0, "
                        "updated_at=excluded.updated_at",
                        (fn.slug, app_id, fn.name, fn.config.model_dump_json(by_alias=True, exclude_none=True),
                         fn.url, app.synced_at),
                    )
                # The app's schedules are exactly `crons` now; a changed schedule replaces its tick.
                db.execute("DELETE FROM queue WHERE kind = 'cron' AND run_id IN "
                           "(SELECT 'cron:' || slug FROM functions WHERE app_id = ?)", (app_id,))
                self._insert_items_txn(crons)
        await self._group.committed()
        stored = await self._get_app(app.name)
        assert stored is not None
        return stored, changed

    async def _get_app(self, name: str) -> base.AppRecord | None:
        row = self._db.execute(
            "SELECT a.id, a.name, a.url, a.sdk, a.framework, a.checksum, a.synced_at, a.error, "
            "(SELECT count(*) FROM functions f WHERE f.app_id = a.id AND f.archived = 0) "
            "FROM apps a WHERE a.name = ?", (name,)).fetchone()
        return _app(row) if row else None

    async def set_app_error(self, url: str, error: str | None) -> None:
        with self._write():
            self._db.execute("UPDATE apps SET error = ? WHERE url = ?", (error, url))
        await self._group.committed()

    async def list_apps(self) -> list[base.AppRecord]:
        rows = self._db.execute(
            "SELECT a.id, a.name, a.url, a.sdk, a.framework, a.checksum, a.synced_at, a.error, "
            "(SELECT count(*) FROM functions f WHERE f.app_id = a.id AND f.archived = 0) "
            "FROM apps a ORDER BY a.name").fetchall()
        return [_app(r) for r in rows]

    async def list_functions(self) -> list[base.FunctionRecord]:
        rows = self._db.execute(
            "SELECT slug, app_id, name, config, url FROM functions WHERE archived = 0 ORDER BY slug").fetchall()
        return [_function(r) for r in rows]

    async def get_function(self, slug: str) -> base.FunctionRecord | None:
        row = self._db.execute("SELECT slug, app_id, name, config, url FROM functions WHERE slug = ?",
                               (slug,)).fetchone()
        return _function(row) if row else None

    # ------------------------------------------------------------------------------ events and runs

    async def ingest(self, events: list[base.EventRecord], runs: list[base.NewRun], now: int, *,
                     resumes: Sequence[base.Resume] = (), items: Sequence[base.NewItem] = (),
                     done: tuple[base.QueueItem, str] | None = None) -> list[str]:
        db = self._db
        created: list[str] = []
        with self._write():
            if done is not None:
                item, owner = done
                cur = db.execute("DELETE FROM queue WHERE id = ? AND lease_owner = ?", (item.id, owner))
                if cur.rowcount == 0:
                    return []  # no longer ours: whoever holds it now does this work
            db.executemany(
                "INSERT INTO events (internal_id, id, name, data, ts, received_at, v, user) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(e.internal_id, e.id, e.name, _dumps(e.data), e.ts, e.received_at, e.v,
                  None if e.user is None else _dumps(e.user)) for e in events],
            )
            for run in runs:
                if run.idempotency_key is not None:
                    # Take the key unless a live (unexpired) run holds it.
                    cur = db.execute(
                        "INSERT INTO run_keys (key, run_id, expires_at) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE "
                        "SET run_id = excluded.run_id, expires_at = excluded.expires_at WHERE run_keys.expires_at <= ?",
                        (run.idempotency_key, run.id, now + IDEMPOTENCY_MS, now))
                    if cur.rowcount == 0:
                        continue
                if run.flow is not None and (run.flow.debounce or run.flow.batch):
                    run = self._collect_txn(run, now)  # the run waits for more events, or starts full
                    if run is None:
                        continue
                self._create_run_txn(run, now)
                created.append(run.id)
            for resume in resumes:
                self._apply_run_txn(resume.run_id, resume.commands, now, owner=None, lease_ms=0, item_id=None)
            self._insert_items_txn(items)
        await self._group.committed()
        return created

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
                   (key, run.function_slug, _dumps(list(new.event_ids)), new.first_at, new.fire_at))
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

    def _create_run_txn(self, run: base.NewRun, now: int) -> None:
        db = self._db
        fl = run.flow or base.RunFlow()
        skipped, due_at = self._flow_txn(run, fl, now)
        status = protocol.RunStatus.SKIPPED if skipped else protocol.RunStatus.QUEUED
        db.execute(
            "INSERT INTO runs (id, function_slug, app_id, status, event_ids, created_at, ended_at, error, "
            "singleton_key, concurrency) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run.id, run.function_slug, run.app_id, status.value, _dumps(list(run.event_ids)), now,
             now if skipped else None, skipped, None if fl.singleton is None else fl.singleton[0],
             _dumps([list(k) for k in fl.concurrency]) if fl.concurrency else None),
        )
        db.executemany("INSERT OR IGNORE INTO run_events (event_id, run_id) VALUES (?, ?)",
                       [(eid, run.id) for eid in run.event_ids])
        if skipped:
            return
        cur = db.execute("INSERT INTO queue (run_id, target, attempt, due_at, priority) VALUES (?, ?, 0, ?, ?)",
                         (run.id, protocol.DISCOVERY_STEP_ID, due_at, fl.priority_ms))
        self._add_keys_txn(cur.lastrowid or 0, [tuple(k) for k in fl.concurrency])
        for pause in run.pauses:
            self._insert_pause_txn(pause)
        self._insert_items_txn(run.timers)

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
                         (key, _dumps(state), expires_at))

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

    def _insert_items_txn(self, items: Iterable[base.NewItem]) -> None:
        self._db.executemany(
            "INSERT OR IGNORE INTO queue (run_id, target, attempt, due_at, kind, payload) VALUES (?, ?, 0, ?, ?, ?)",
            [(i.run_id, i.target, i.due_at, i.kind, None if i.payload is None else _dumps(i.payload))
             for i in items])

    def _insert_pause_txn(self, p: base.PauseRecord) -> None:
        self._db.execute(
            f"INSERT INTO pauses ({_PAUSE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (p.id, p.run_id, p.kind.value, p.step_hash, p.step_name, p.event_name, p.expression, p.index_path,
             p.index_value, p.created_at, p.expires_at))
        if p.expires_at is not None:
            self._db.execute("INSERT INTO queue (run_id, target, attempt, due_at, kind, payload) "
                             "VALUES (?, '', 0, ?, 'timeout', ?)", (p.run_id, p.expires_at, _dumps(p.id)))

    async def get_event(self, internal_id: str) -> base.EventRecord | None:
        row = self._db.execute(f"SELECT {_EVENT_COLS} FROM events WHERE internal_id = ? ORDER BY seq LIMIT 1",
                               (internal_id,)).fetchone()
        return _event(row) if row else None

    async def get_events(self, internal_ids: Sequence[str]) -> list[base.EventRecord]:
        return self._events_txn(internal_ids)

    def _events_txn(self, internal_ids: Sequence[str]) -> list[base.EventRecord]:
        out = []
        for eid in internal_ids:
            row = self._db.execute(f"SELECT {_EVENT_COLS} FROM events WHERE internal_id = ? ORDER BY seq LIMIT 1",
                                   (eid,)).fetchone()
            if row is not None:
                out.append(_event(row))
        return out

    async def list_events(self, *, name: str | None, limit: int, before: int | None = None
                          ) -> list[base.EventRecord]:
        where, args = _where(("name = ?", name), ("seq < ?", before))
        rows = self._db.execute(f"SELECT {_EVENT_COLS} FROM events{where} ORDER BY seq DESC LIMIT ?",
                                (*args, limit)).fetchall()
        return [_event(r) for r in rows]

    async def runs_for_event(self, internal_id: str) -> list[base.RunRecord]:
        rows = self._db.execute(
            f"SELECT {', '.join('r.' + c.strip() for c in _RUN_COLS.split(','))} FROM run_events re "
            "JOIN runs r ON r.id = re.run_id WHERE re.event_id = ? ORDER BY r.id", (internal_id,)).fetchall()
        return [_run(r) for r in rows]

    async def get_run(self, run_id: str) -> base.RunRecord | None:
        row = self._db.execute(f"SELECT {_RUN_COLS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _run(row) if row else None

    async def list_runs(self, *, function_slug: str | None = None, status: str | None = None,
                        limit: int = 50, before: str | None = None) -> list[base.RunRecord]:
        where, args = _where(("function_slug = ?", function_slug), ("status = ?", status), ("id < ?", before))
        rows = self._db.execute(f"SELECT {_RUN_COLS} FROM runs{where} ORDER BY id DESC LIMIT ?",
                                (*args, limit)).fetchall()
        return [_run(r) for r in rows]

    async def count_runs(self, *, function_slug: str | None = None, status: str | None = None) -> int:
        where, args = _where(("function_slug = ?", function_slug), ("status = ?", status))
        return int(self._db.execute(f"SELECT count(*) FROM runs{where}", args).fetchone()[0])

    async def get_steps(self, run_id: str) -> list[base.StepRecord]:
        rows = self._db.execute(f"SELECT {_STEP_COLS} FROM steps WHERE run_id = ? ORDER BY seq",
                                (run_id,)).fetchall()
        return [_step(r) for r in rows]

    async def load_run_state(self, run_id: str, now: int) -> base.RunState | None:
        db = self._db
        # A read transaction so the run, its events and its memo are one snapshot (inside an open
        # group transaction the reads already are one).
        own = not self._group.open
        if own:
            db.execute("BEGIN")
        try:
            row = db.execute(f"SELECT {_RUN_COLS} FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                return None
            run = _run(row)
            fn_row = db.execute("SELECT slug, app_id, name, config, url FROM functions WHERE slug = ?",
                                (run.function_slug,)).fetchone()
            events = self._events_txn(run.event_ids)
            # A sleep is in the memo only once it is over; before that the SDK must still see it pending.
            memo = {h: _loads(m) for h, m in db.execute(
                "SELECT hash, memo FROM steps WHERE run_id = ? AND (status IN ('completed', 'failed') "
                "OR (status = 'sleeping' AND ended_at <= ?))", (run_id, now))}
        finally:
            if own:
                db.execute("COMMIT")
        return base.RunState(run=run, function=_function(fn_row) if fn_row else None, events=tuple(events),
                             memo=memo)

    async def mark_running(self, run_id: str, now: int) -> None:
        with self._write():
            self._db.execute(
                "UPDATE runs SET status = ?, started_at = ? WHERE id = ? AND status = ?",
                (protocol.RunStatus.RUNNING.value, now, run_id, protocol.RunStatus.QUEUED.value))
        await self._group.committed()

    # ------------------------------------------------------------------------------ queue

    async def claim_due(self, now: int, limit: int, owner: str, lease_ms: int) -> list[base.QueueItem]:
        db = self._db
        with self._write():
            rows = self._admit_txn(db.execute(
                f"SELECT {_QUEUE_COLS} FROM queue WHERE lease_owner IS NULL AND blocked = 0 AND due_at <= ? "
                "ORDER BY due_at - priority, id LIMIT ?", (now, limit * CANDIDATES_PER_CLAIM)).fetchall(), limit)
            if len(rows) < limit:
                rows += db.execute(
                    f"SELECT {_QUEUE_COLS} FROM queue WHERE lease_owner IS NOT NULL AND lease_until <= ? "
                    "ORDER BY lease_until LIMIT ?", (now, limit - len(rows))).fetchall()
            until = now + lease_ms
            db.executemany("UPDATE queue SET lease_owner = ?, lease_until = ? WHERE id = ?",
                           [(owner, until, r[0]) for r in rows])
            # A claimed run is running from now on (saves the executor a separate write).
            db.executemany("UPDATE runs SET status = ?, started_at = ? WHERE id = ? AND status = ?",
                           [(protocol.RunStatus.RUNNING.value, now, r[1], protocol.RunStatus.QUEUED.value)
                            for r in rows if r[7] == base.ItemKind.CALL])
        if rows:
            await self._group.committed()
        return [dataclasses.replace(_item(r), lease_owner=owner, lease_until=until) for r in rows]

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
        """A call holding these keys ended or let go: blocked calls of the keys may have room now."""
        total = 0
        for key, lim in keys:
            room = lim - self._in_flight_txn(key)
            if room > 0:
                total += self._db.execute(
                    "UPDATE queue SET blocked = 0 WHERE id IN (SELECT q.id FROM item_keys k JOIN queue q ON "
                    "q.id = k.item_id WHERE k.key = ? AND q.blocked = 1 ORDER BY q.due_at - q.priority, q.id "
                    "LIMIT ?)", (key, room)).rowcount
        return total

    async def next_due_at(self) -> int | None:
        row = self._db.execute(
            "SELECT min(t) FROM (SELECT min(due_at) AS t FROM queue WHERE lease_owner IS NULL AND blocked = 0 "
            "UNION ALL SELECT min(lease_until) FROM queue WHERE lease_owner IS NOT NULL)").fetchone()
        return row[0] if row else None

    async def release_leases(self, owner: str | None = None) -> int:
        with self._write():
            if owner is None:
                self._db.execute("UPDATE queue SET blocked = 0 WHERE blocked = 1")  # every slot is free again
                cur = self._db.execute(
                    "UPDATE queue SET lease_owner = NULL, lease_until = NULL WHERE lease_owner IS NOT NULL")
            else:
                cur = self._db.execute(
                    "UPDATE queue SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?", (owner,))
        await self._group.committed()
        return cur.rowcount

    # ------------------------------------------------------------------------------ pauses

    async def pause_index_paths(self, event_name: str) -> list[str]:
        rows = self._db.execute("SELECT DISTINCT index_path FROM pauses WHERE event_name = ? "
                                "AND index_path IS NOT NULL", (event_name,)).fetchall()
        return [r[0] for r in rows]

    async def find_pauses(self, event_name: str, keys: list[tuple[str, str]]) -> list[base.PauseRecord]:
        db = self._db
        rows = db.execute(f"SELECT {_PAUSE_COLS} FROM pauses WHERE event_name = ? AND index_path IS NULL",
                          (event_name,)).fetchall()
        for path, value in keys:
            rows += db.execute(f"SELECT {_PAUSE_COLS} FROM pauses WHERE event_name = ? AND index_path = ? "
                               "AND index_value = ?", (event_name, path, value)).fetchall()
        return sorted((_pause(r) for r in rows), key=lambda p: (p.created_at, p.id))

    async def get_pause(self, pause_id: str) -> base.PauseRecord | None:
        row = self._db.execute(f"SELECT {_PAUSE_COLS} FROM pauses WHERE id = ?", (pause_id,)).fetchone()
        return _pause(row) if row else None

    async def pauses_for_run(self, run_id: str) -> list[base.PauseRecord]:
        rows = self._db.execute(f"SELECT {_PAUSE_COLS} FROM pauses WHERE run_id = ? ORDER BY created_at, id",
                                (run_id,)).fetchall()
        return [_pause(r) for r in rows]

    async def active_run_ids(self, function_slug: str, *, created_from: int | None = None,
                             created_to: int | None = None, limit: int = 1000) -> list[str]:
        sql = "SELECT id FROM runs WHERE function_slug = ? AND status IN ('QUEUED', 'RUNNING')"
        args: list[Any] = [function_slug]
        if created_from is not None:
            sql += " AND created_at >= ?"
            args.append(created_from)
        if created_to is not None:
            sql += " AND created_at < ?"
            args.append(created_to)
        rows = self._db.execute(sql + " ORDER BY id LIMIT ?", (*args, limit)).fetchall()
        return [r[0] for r in rows]

    async def cancel_runs(self, run_ids: Sequence[str], reason: str, now: int,
                          emits: Mapping[str, base.Emit]) -> list[str]:
        cancelled = []
        with self._write():
            for run_id in run_ids:
                finish = base.FinishRun(protocol.RunStatus.CANCELLED, {"name": "FunctionCancelled",
                                                                       "message": reason}, error=reason)
                emit = emits.get(run_id)
                commands: tuple[base.Command, ...] = (finish,) if emit is None else (finish, emit)
                if self._apply_run_txn(run_id, commands, now, owner=None, lease_ms=0, item_id=None).accepted:
                    cancelled.append(run_id)
        await self._group.committed()
        return cancelled

    # ------------------------------------------------------------------------------ applying decisions

    async def apply(self, item: base.QueueItem, owner: str, commands: list[base.Command], now: int,
                    lease_ms: int) -> base.Applied:
        db = self._db
        with self._write():
            held = db.execute("SELECT 1 FROM queue WHERE id = ? AND lease_owner = ?", (item.id, owner)).fetchone()
            if held is None:
                result = base.Applied(accepted=False)
            else:
                keys = db.execute("SELECT key, lim FROM item_keys WHERE item_id = ?", (item.id,)).fetchall()
                result = self._apply_run_txn(item.run_id, commands, now, owner=owner, lease_ms=lease_ms,
                                             item_id=item.id)
                if not any(isinstance(c, base.RetryItem) for c in commands) or not result.accepted:
                    db.execute("DELETE FROM queue WHERE id = ?", (item.id,))
                # This call no longer holds its concurrency slots (unless a follow-up took them over).
                if keys and self._unblock_txn(keys):
                    result = dataclasses.replace(result, enqueued_future=True)
        await self._group.committed()
        return result

    def _apply_run_txn(self, run_id: str, commands: Sequence[base.Command], now: int, *, owner: str | None,
                       lease_ms: int, item_id: int | None) -> base.Applied:
        """Apply `commands` to a run that has not ended. `item_id` is the queue item being handled, if
        any (kept out of "other work in progress"); `owner` leases calls due now back to the caller."""
        db = self._db
        row = db.execute("SELECT status, stack FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None or protocol.RunStatus(row[0]).is_terminal:
            return base.Applied(accepted=False)
        stack: list[str] = orjson.loads(row[1])
        stack_changed = False
        ready: list[base.QueueItem] = []
        future = False
        finished = False
        this = -1 if item_id is None else item_id
        for cmd in commands:
            if isinstance(cmd, base.ConsumePause):
                if db.execute("DELETE FROM pauses WHERE id = ?", (cmd.pause_id,)).rowcount == 0:
                    return base.Applied(accepted=False)  # resolved already: first one wins
                # By run first: the (run_id, kind, target) index finds the timeout instead of a queue scan.
                db.execute("DELETE FROM queue WHERE run_id = ? AND kind = 'timeout' AND payload = ?",
                           (run_id, _dumps(cmd.pause_id)))
            elif isinstance(cmd, base.SaveStep):
                # A step recorded once is never recorded again: the first result wins.
                cur = db.execute(
                    f"INSERT OR IGNORE INTO steps ({_STEP_COLS}, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (run_id, cmd.hash, cmd.name, cmd.op, cmd.status.value, _dumps(cmd.memo),
                     cmd.started_at, cmd.ended_at, cmd.attempts, len(stack)))
                if cur.rowcount:
                    stack.append(cmd.hash)
                    stack_changed = True
                elif cmd.status != base.StepStatus.WAITING:
                    # A wait/invoke step row is created WAITING and completed here when it resolves.
                    db.execute("UPDATE steps SET status = ?, memo = ?, ended_at = ? WHERE run_id = ? AND hash = ? "
                               "AND status = 'waiting'", (cmd.status.value, _dumps(cmd.memo), cmd.ended_at,
                                                          run_id, cmd.hash))
            elif isinstance(cmd, base.Enqueue):
                enqueued = self._enqueue_txn(run_id, cmd, now, owner=owner, lease_ms=lease_ms, this=this)
                if enqueued is not None:
                    ready.append(enqueued)
                else:
                    future = True  # a later call, or one the scheduler must admit (concurrency)
            elif isinstance(cmd, base.RetryItem):
                db.execute(
                    "UPDATE queue SET attempt = attempt + 1, due_at = ?, lease_owner = NULL, "
                    "lease_until = NULL, last_error = ? WHERE id = ?",
                    (cmd.due_at, None if cmd.error is None else _dumps(cmd.error), this))
                future = True
            elif isinstance(cmd, base.FinishRun):
                db.execute("UPDATE runs SET status = ?, output = ?, ended_at = ?, error = ? WHERE id = ?",
                           (cmd.status.value, _dumps(cmd.output), now, cmd.error, run_id))
                db.execute("DELETE FROM queue WHERE run_id = ? AND id != ? AND kind != 'emit'", (run_id, this))
                db.execute("DELETE FROM pauses WHERE run_id = ?", (run_id,))
                finished = True
            elif isinstance(cmd, base.SetForceStepPlan):
                db.execute("UPDATE runs SET force_step_plan = ? WHERE id = ?", (int(cmd.value), run_id))
            elif isinstance(cmd, base.CreatePause):
                self._insert_pause_txn(cmd.pause)
                future = future or cmd.pause.expires_at is not None
            elif isinstance(cmd, base.Emit):
                self._insert_items_txn([base.NewItem(base.ItemKind.EMIT, run_id, now, list(cmd.events))])
                future = True  # the scheduler picks the outbox up
        if stack_changed:
            db.execute("UPDATE runs SET stack = ? WHERE id = ?", (_dumps(stack), run_id))
        if finished and self._unblock_txn(self._run_keys_txn(run_id)):
            future = True  # calls of the ended run in flight gave their slots back
        return base.Applied(accepted=True, ready=tuple(ready), enqueued_future=future)

    def _enqueue_txn(self, run_id: str, cmd: base.Enqueue, now: int, *, owner: str | None, lease_ms: int,
                     this: int) -> base.QueueItem | None:
        """Queue a call unless it is queued already (or, `when_idle`, other work is in progress).

        Returns the item when it is due now and leased to `owner`, so the caller runs it at once.
        """
        db = self._db
        # A step call is not queued while one for the same step is queued or running. A discovery call is
        # not queued while another one waits to start; one that is already running may have loaded the
        # run before this change, so another is needed after it.
        pending_only = " AND lease_owner IS NULL" if cmd.target == protocol.DISCOVERY_STEP_ID else ""
        if db.execute("SELECT 1 FROM queue WHERE run_id = ? AND kind = 'call' AND target = ? AND id != ?"
                      f"{pending_only} LIMIT 1", (run_id, cmd.target, this)).fetchone():
            return None
        if cmd.target != protocol.DISCOVERY_STEP_ID and db.execute(
                "SELECT 1 FROM steps WHERE run_id = ? AND hash = ?", (run_id, cmd.target)).fetchone():
            return None  # a step re-planned after it finished (race mode) is not run again
        if cmd.when_idle:
            busy = db.execute(
                "SELECT 1 FROM queue WHERE run_id = ? AND kind = 'call' AND id != ? AND target != ? "
                "UNION ALL SELECT 1 FROM pauses WHERE run_id = ? AND kind != 'cancel' LIMIT 1",
                (run_id, this, protocol.DISCOVERY_STEP_ID, run_id)).fetchone()
            if busy:
                return None
            if cmd.end_parallel:
                db.execute("UPDATE runs SET force_step_plan = 0 WHERE id = ? AND force_step_plan = 1", (run_id,))
        payload = _dumps({"race": True}) if cmd.race else None
        keys = self._run_keys_txn(run_id)
        # Run it at once only if every concurrency key has room (the call being finished, `this`, is
        # about to give its slot back); otherwise the scheduler admits it when there is room.
        if owner is not None and cmd.due_at <= now and all(
                self._in_flight_txn(k, excluding=this) < lim for k, lim in keys):
            until = now + lease_ms
            cur = db.execute(
                "INSERT INTO queue (run_id, target, attempt, due_at, lease_owner, lease_until, payload) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", (run_id, cmd.target, cmd.attempt, cmd.due_at, owner, until, payload))
            self._add_keys_txn(cur.lastrowid or 0, keys)
            return base.QueueItem(id=cur.lastrowid or 0, run_id=run_id, target=cmd.target, attempt=cmd.attempt,
                                  due_at=cmd.due_at, lease_owner=owner, lease_until=until,
                                  payload=None if payload is None else {"race": True})
        cur = db.execute("INSERT INTO queue (run_id, target, attempt, due_at, payload) VALUES (?, ?, ?, ?, ?)",
                         (run_id, cmd.target, cmd.attempt, cmd.due_at, payload))
        self._add_keys_txn(cur.lastrowid or 0, keys)
        return None


class _Checkpointer:
    """Folds the WAL into the database file from a thread with its own connection (PASSIVE: it never
    blocks the writer; pages still in use by a reader wait for the next round)."""

    def __init__(self, path: str) -> None:
        self._stop = threading.Event()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout=5000")
        self._thread = threading.Thread(target=self._loop, name="ratchet-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(CHECKPOINT_INTERVAL_S):
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self._db.close()


class _GroupCommit:
    """Write transactions begun in the same event-loop turn share one COMMIT.

    Each write method runs inside a SAVEPOINT of the shared transaction (so a failing method rolls back
    only its own writes) and then awaits the commit, which runs once the loop has served every ready task.
    Under load many queue items finish in one turn, and one commit replaces dozens; a lone write pays one
    loop turn. Nothing returns to a caller before its writes are committed.
    """

    __slots__ = ("_db", "_open", "_waiters")

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._open = False
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def open(self) -> bool:
        return self._open

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        db = self._db
        if not self._open:
            db.execute("BEGIN IMMEDIATE")
            self._open = True
            asyncio.get_running_loop().call_soon(self._commit)
        db.execute("SAVEPOINT w")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK TO w")
            db.execute("RELEASE w")
            raise
        db.execute("RELEASE w")

    async def committed(self) -> None:
        """Wait until the transaction holding this task's writes has committed."""
        if not self._open:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        await fut

    def _commit(self) -> None:
        waiters, self._waiters = self._waiters, []
        self._open = False
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            for w in waiters:
                if not w.done():
                    w.set_exception(base.StoreError(f"commit failed: {exc}"))
            return
        for w in waiters:
            if not w.done():
                w.set_result(None)
