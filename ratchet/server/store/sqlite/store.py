"""`SqliteStore`: `base.Store` on one SQLite file (see the package docstring for the threading model)."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from ratchet import protocol
from ratchet.server.engine import lifecycle
from ratchet.server.store import base, migrations
from ratchet.server.store.rows import common_search, data_has
from ratchet.server.store.sqlite.connection import PRAGMAS, Checkpointer, GroupCommit, OwnerLock
from ratchet.server.store.sqlite.flow_control import CANDIDATES_PER_CLAIM, FlowMixin
from ratchet.server.store.sqlite.rows import (
    DEAD_LETTER_COLS,
    EVENT_COLS,
    IDEMPOTENCY_MS,
    PAUSE_COLS,
    QUEUE_COLS,
    RUN_COLS,
    STEP_COLS,
    app_row,
    dead_letter_row,
    dumps,
    event_row,
    function_row,
    item_row,
    loads,
    pause_row,
    run_conditions,
    run_row,
    step_row,
    where_clause,
)

# Retention (`purge`), in batches of `base.PURGE_BATCH` (a transaction each, so other writes get the writer
# in between): runs that ended before the cutoff go with their steps; events go once nothing live needs
# them (a run not ended, an open debounce or batch). Indexes runs_ended and events_received (migration 11).
PURGE_RUN_IDS = "SELECT id FROM runs WHERE ended_at < ? AND status NOT IN ('QUEUED', 'RUNNING') LIMIT ?"
PURGE_RUN_STEPS = "DELETE FROM steps WHERE run_id IN (SELECT value FROM json_each(?))"
PURGE_RUN_EVENTS = "DELETE FROM run_events WHERE run_id IN (SELECT value FROM json_each(?))"
PURGE_RUNS = "DELETE FROM runs WHERE id IN (SELECT value FROM json_each(?))"
PURGE_EVENTS = ("DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE received_at < ? "
                "AND internal_id NOT IN (SELECT event_id FROM run_events) "
                "AND internal_id NOT IN (SELECT event_id FROM debounces) "
                "AND internal_id NOT IN (SELECT event_id FROM purge_keep) LIMIT ?)")


class SqliteStore(FlowMixin):
    """`base.Store` on one SQLite file."""

    single_owner = True  #: one server process per file (`OwnerLock`)

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock: OwnerLock | None = None
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # One server per file: this process voids leases at start-up, which is only right if no
            # other process is running calls from the same queue.
            self._lock = OwnerLock(self.path)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a write transaction takes the
        # write lock up front instead of failing half-way with SQLITE_BUSY on upgrade.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in PRAGMAS:
            self._db.execute(pragma)
        migrations.apply_sqlite(self._db)
        self._group = GroupCommit(self._db)
        self._checkpointer = Checkpointer(self.path) if self.path != ":memory:" else None

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self._db.close()
        if self._lock is not None:
            self._lock.release()

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
        return app_row(row) if row else None

    async def set_app_error(self, url: str, error: str | None) -> None:
        with self._write():
            self._db.execute("UPDATE apps SET error = ? WHERE url = ?", (error, url))
        await self._group.committed()

    async def list_apps(self) -> list[base.AppRecord]:
        rows = self._db.execute(
            "SELECT a.id, a.name, a.url, a.sdk, a.framework, a.checksum, a.synced_at, a.error, "
            "(SELECT count(*) FROM functions f WHERE f.app_id = a.id AND f.archived = 0) "
            "FROM apps a ORDER BY a.name").fetchall()
        return [app_row(r) for r in rows]

    async def list_functions(self) -> list[base.FunctionRecord]:
        rows = self._db.execute(
            "SELECT slug, app_id, name, config, url FROM functions WHERE archived = 0 ORDER BY slug").fetchall()
        return [function_row(r) for r in rows]

    async def get_function(self, slug: str) -> base.FunctionRecord | None:
        row = self._db.execute("SELECT slug, app_id, name, config, url FROM functions WHERE slug = ?",
                               (slug,)).fetchone()
        return function_row(row) if row else None

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
            self._insert_events_txn(events)
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

    def _insert_events_txn(self, events: Iterable[base.EventRecord]) -> None:
        self._db.executemany(
            "INSERT INTO events (internal_id, id, name, data, ts, received_at, v, user) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(e.internal_id, e.id, e.name, dumps(e.data), e.ts, e.received_at, e.v,
              None if e.user is None else dumps(e.user)) for e in events])

    def _create_run_txn(self, run: base.NewRun, now: int) -> None:
        db = self._db
        fl = run.flow or base.RunFlow()
        skipped, due_at = self._flow_txn(run, fl, now)
        status = protocol.RunStatus.SKIPPED if skipped else protocol.RunStatus.QUEUED
        db.execute(
            "INSERT INTO runs (id, function_slug, app_id, status, event_ids, created_at, ended_at, error, "
            "singleton_key, concurrency, rerun_of, rerun_from, invoked_by, invoked_step) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run.id, run.function_slug, run.app_id, status.value, dumps(list(run.event_ids)), now,
             now if skipped else None, skipped, None if fl.singleton is None else fl.singleton[0],
             dumps([list(k) for k in fl.concurrency]) if fl.concurrency else None, run.rerun_of, run.rerun_from,
             run.invoked_by, run.invoked_step),
        )
        db.executemany("INSERT OR IGNORE INTO run_events (event_id, run_id) VALUES (?, ?)",
                       [(eid, run.id) for eid in run.event_ids])
        if skipped:
            self._skipped_txn(run, skipped, now)
            return
        cur = db.execute("INSERT INTO queue (run_id, target, attempt, due_at, priority) VALUES (?, ?, 0, ?, ?)",
                         (run.id, protocol.DISCOVERY_STEP_ID, due_at, fl.priority_ms))
        self._add_keys_txn(cur.lastrowid or 0, [tuple(k) for k in fl.concurrency])
        for pause in run.pauses:
            self._insert_pause_txn(pause)
        self._insert_items_txn(run.timers)

    def _skipped_txn(self, run: base.NewRun, reason: str, now: int) -> None:
        """A skipped run that was invoked still answers its caller: `function.finished` with an error."""
        events = [e.wire() for e in self._events_txn(run.event_ids)]
        if not events or not lifecycle.invoke_meta(events[0]).get("correlation_id"):
            return
        ended = lifecycle.run_ended_events(run_id=run.id, function_slug=run.function_slug, events=events,
                                           status=protocol.RunStatus.SKIPPED,
                                           output={"name": "FunctionSkipped", "message": reason})
        self._insert_items_txn([base.NewItem(base.ItemKind.EMIT, run.id, now, list(ended))])

    def _insert_items_txn(self, items: Iterable[base.NewItem]) -> None:
        self._db.executemany(
            "INSERT OR IGNORE INTO queue (run_id, target, attempt, due_at, kind, payload) VALUES (?, ?, 0, ?, ?, ?)",
            [(i.run_id, i.target, i.due_at, i.kind, None if i.payload is None else dumps(i.payload))
             for i in items])

    def _insert_pause_txn(self, p: base.PauseRecord) -> None:
        self._db.execute(
            f"INSERT INTO pauses ({PAUSE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (p.id, p.run_id, p.kind.value, p.step_hash, p.step_name, p.event_name, p.expression, p.index_path,
             p.index_value, p.created_at, p.expires_at))
        if p.expires_at is not None:
            self._db.execute("INSERT INTO queue (run_id, target, attempt, due_at, kind, payload) "
                             "VALUES (?, '', 0, ?, 'timeout', ?)", (p.run_id, p.expires_at, dumps(p.id)))

    async def get_event(self, internal_id: str) -> base.EventRecord | None:
        row = self._db.execute(f"SELECT {EVENT_COLS} FROM events WHERE internal_id = ? ORDER BY seq LIMIT 1",
                               (internal_id,)).fetchone()
        return event_row(row) if row else None

    async def get_events(self, internal_ids: Sequence[str]) -> list[base.EventRecord]:
        return self._events_txn(internal_ids)

    def _events_txn(self, internal_ids: Sequence[str]) -> list[base.EventRecord]:
        out = []
        for eid in internal_ids:
            row = self._db.execute(f"SELECT {EVENT_COLS} FROM events WHERE internal_id = ? ORDER BY seq LIMIT 1",
                                   (eid,)).fetchone()
            if row is not None:
                out.append(event_row(row))
        return out

    async def list_events(self, *, name: str | None, limit: int, before: int | None = None,
                          search: str | None = None) -> list[base.EventRecord]:
        where, args = where_clause(("name = ?", name), ("seq < ?", before),
                                   data_has(search) if search else ("", None))
        rows = self._db.execute(f"SELECT {EVENT_COLS} FROM events{where} ORDER BY seq DESC LIMIT ?",
                                (*args, limit)).fetchall()
        return [event_row(r) for r in rows]

    async def runs_for_event(self, internal_id: str) -> list[base.RunRecord]:
        rows = self._db.execute(
            f"SELECT {', '.join('r.' + c.strip() for c in RUN_COLS.split(','))} FROM run_events re "
            "JOIN runs r ON r.id = re.run_id WHERE re.event_id = ? ORDER BY r.id", (internal_id,)).fetchall()
        return [run_row(r) for r in rows]

    async def get_run(self, run_id: str) -> base.RunRecord | None:
        row = self._db.execute(f"SELECT {RUN_COLS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        return run_row(row) if row else None

    async def list_runs(self, *, function_slug: str | None = None, status: str | Sequence[str] | None = None,
                        limit: int = 50, before: str | None = None, app_id: str | None = None,
                        created_from: int | None = None, created_to: int | None = None,
                        search: str | None = None) -> list[base.RunRecord]:
        common = False
        if search:
            probe, probe_args, enough = common_search(search)
            common = self._db.execute(probe, probe_args).fetchone()[0] >= enough
        where, args = run_conditions(function_slug=function_slug, status=status, app_id=app_id,
                                     created_from=created_from, created_to=created_to, search=search, before=before,
                                     common=common)
        rows = self._db.execute(f"SELECT {RUN_COLS} FROM runs{where} ORDER BY id DESC LIMIT ?",
                                (*args, limit)).fetchall()
        return [run_row(r) for r in rows]

    async def count_runs(self, *, function_slug: str | None = None, status: str | Sequence[str] | None = None,
                         app_id: str | None = None, created_from: int | None = None, created_to: int | None = None,
                         search: str | None = None, at_most: int | None = None) -> int:
        where, args = run_conditions(function_slug=function_slug, status=status, app_id=app_id,
                                     created_from=created_from, created_to=created_to, search=search)
        if at_most is None:
            return int(self._db.execute(f"SELECT count(*) FROM runs{where}", args).fetchone()[0])
        sql = f"SELECT count(*) FROM (SELECT 1 FROM runs{where} LIMIT ?)"
        return int(self._db.execute(sql, (*args, at_most)).fetchone()[0])

    async def change_marker(self) -> object:
        # Every write goes through this one connection (a single writer per file).
        return self._db.total_changes

    async def get_steps(self, run_id: str) -> list[base.StepRecord]:
        rows = self._db.execute(f"SELECT {STEP_COLS} FROM steps WHERE run_id = ? ORDER BY seq",
                                (run_id,)).fetchall()
        return [step_row(r) for r in rows]

    async def load_run_state(self, run_id: str, now: int) -> base.RunState | None:
        db = self._db
        # A read transaction so the run, its events and its memo are one snapshot (inside an open
        # group transaction the reads already are one).
        own = not self._group.open
        if own:
            db.execute("BEGIN")
        try:
            row = db.execute(f"SELECT {RUN_COLS} FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                return None
            run = run_row(row)
            fn_row = db.execute("SELECT slug, app_id, name, config, url FROM functions WHERE slug = ? "
                                "AND archived = 0", (run.function_slug,)).fetchone()
            events = self._events_txn(run.event_ids)
            # A sleep is in the memo only once it is over; before that the SDK must still see it pending.
            memo = {h: loads(m) for h, m in db.execute(
                "SELECT hash, memo FROM steps WHERE run_id = ? AND (status IN ('completed', 'failed') "
                "OR (status = 'sleeping' AND ended_at <= ?))", (run_id, now))}
        finally:
            if own:
                db.execute("COMMIT")
        return base.RunState(run=run, function=function_row(fn_row) if fn_row else None, events=tuple(events),
                             memo=memo)

    async def mark_running(self, run_id: str, now: int) -> None:
        with self._write():
            self._db.execute(
                "UPDATE runs SET status = ?, started_at = ? WHERE id = ? AND status = ?",
                (protocol.RunStatus.RUNNING.value, now, run_id, protocol.RunStatus.QUEUED.value))
        await self._group.committed()

    # ------------------------------------------------------------------------------ queue

    async def claim_due(self, now: int, limit: int, owner: str, lease_ms: int, *,
                        due_by: int | None = None) -> list[base.QueueItem]:
        db = self._db
        with self._write():
            rows = self._admit_txn(db.execute(
                f"SELECT {QUEUE_COLS} FROM queue WHERE lease_owner IS NULL AND blocked = 0 AND due_at <= ? "
                "ORDER BY due_at - priority, id LIMIT ?", (now if due_by is None else due_by,
                                                            limit * CANDIDATES_PER_CLAIM)).fetchall(), limit)
            if len(rows) < limit:
                expired = db.execute(
                    f"SELECT {QUEUE_COLS} FROM queue WHERE lease_owner IS NOT NULL AND lease_until <= ? "
                    "ORDER BY lease_until LIMIT ?", (now, limit - len(rows))).fetchall()
                # The node that held them died or hung: a failure of each (an item that kills every node
                # handling it is dead-lettered in the end instead of going round forever).
                db.executemany("UPDATE queue SET failures = failures + 1, failure = ? WHERE id = ?",
                               [(base.LEASE_EXPIRED, r[0]) for r in expired])
                rows += [(*r[:9], r[9] + 1, base.LEASE_EXPIRED) for r in expired]
            until = now + lease_ms
            db.executemany("UPDATE queue SET lease_owner = ?, lease_until = ? WHERE id = ?",
                           [(owner, until, r[0]) for r in rows])
            # A claimed run is running from now on (saves the executor a separate write).
            db.executemany("UPDATE runs SET status = ?, started_at = ? WHERE id = ? AND status = ?",
                           [(protocol.RunStatus.RUNNING.value, now, r[1], protocol.RunStatus.QUEUED.value)
                            for r in rows if r[7] == base.ItemKind.CALL])
        if rows:
            await self._group.committed()
        return [dataclasses.replace(item_row(r), lease_owner=owner, lease_until=until) for r in rows]

    async def next_due_at(self) -> int | None:
        row = self._db.execute(
            "SELECT min(t) FROM (SELECT min(due_at) AS t FROM queue WHERE lease_owner IS NULL AND blocked = 0 "
            "UNION ALL SELECT min(lease_until) FROM queue WHERE lease_owner IS NOT NULL)").fetchone()
        return row[0] if row else None

    async def subscribe(self, on_work: Callable[[], None], on_sync: Callable[[], None]) -> None:
        """Nothing to hear: this process owns the file, so every change is its own."""

    async def purge(self, before: int, now: int) -> int:
        db = self._db
        removed = 0
        while True:  # runs, a batch per commit
            with self._write():
                ids = [r[0] for r in db.execute(PURGE_RUN_IDS, (before, base.PURGE_BATCH))]
                if ids:
                    for sql in (PURGE_RUN_STEPS, PURGE_RUN_EVENTS, PURGE_RUNS):
                        db.execute(sql, (dumps(ids),))
            await self._group.committed()
            removed += len(ids)
            if len(ids) < base.PURGE_BATCH:
                break
        while True:  # events, a batch per commit
            with self._write():
                # Events an open batch holds are kept (they are listed in its JSON, not in run_events).
                held = [eid for (ids,) in db.execute("SELECT event_ids FROM batches") for eid in loads(ids)]
                db.execute("CREATE TEMP TABLE IF NOT EXISTS purge_keep (event_id TEXT PRIMARY KEY)")
                db.execute("DELETE FROM purge_keep")
                db.executemany("INSERT OR IGNORE INTO purge_keep VALUES (?)", [(e,) for e in held])
                events = db.execute(PURGE_EVENTS, (before, base.PURGE_BATCH)).rowcount
            await self._group.committed()
            removed += events
            if events < base.PURGE_BATCH:
                break
        with self._write():
            db.execute("DELETE FROM run_keys WHERE expires_at < ?", (now,))
            db.execute("DELETE FROM flow_state WHERE expires_at < ?", (now,))
            db.execute("DELETE FROM dead_letters WHERE created_at < ?", (before,))
        await self._group.committed()
        return removed

    async def applied_migrations(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT name FROM schema_migrations ORDER BY version")]

    async def extend_leases(self, owner: str, until: int) -> int:
        with self._write():
            cur = self._db.execute("UPDATE queue SET lease_until = ? WHERE lease_owner = ? AND lease_until < ?",
                                   (until, owner, until))
        await self._group.committed()
        return cur.rowcount

    async def release_leases(self, owner: str | None = None) -> int:
        with self._write():
            if owner is None:
                self._db.execute("UPDATE queue SET blocked = 0 WHERE blocked = 1")  # every slot is free again
                cur = self._db.execute(
                    "UPDATE queue SET lease_owner = NULL, lease_until = NULL, failures = failures + 1, failure = ? "
                    "WHERE lease_owner IS NOT NULL", (base.LEASE_EXPIRED,))
            else:
                cur = self._db.execute(
                    "UPDATE queue SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?", (owner,))
        await self._group.committed()
        return cur.rowcount

    # ------------------------------------------------------------------------------ pauses

    async def pause_index(self, event_name: str) -> tuple[list[str], list[base.PauseRecord]]:
        rows = self._db.execute("SELECT DISTINCT index_path FROM pauses WHERE event_name = ? "
                                "AND index_path IS NOT NULL", (event_name,)).fetchall()
        return [r[0] for r in rows], await self.find_pauses(event_name, [])

    async def find_pauses(self, event_name: str, keys: list[tuple[str, str]]) -> list[base.PauseRecord]:
        db = self._db
        rows = db.execute(f"SELECT {PAUSE_COLS} FROM pauses WHERE event_name = ? AND index_path IS NULL",
                          (event_name,)).fetchall()
        for path, value in keys:
            rows += db.execute(f"SELECT {PAUSE_COLS} FROM pauses WHERE event_name = ? AND index_path = ? "
                               "AND index_value = ?", (event_name, path, value)).fetchall()
        return sorted((pause_row(r) for r in rows), key=lambda p: (p.created_at, p.id))

    async def get_pause(self, pause_id: str) -> base.PauseRecord | None:
        row = self._db.execute(f"SELECT {PAUSE_COLS} FROM pauses WHERE id = ?", (pause_id,)).fetchone()
        return pause_row(row) if row else None

    async def pauses_for_run(self, run_id: str) -> list[base.PauseRecord]:
        rows = self._db.execute(f"SELECT {PAUSE_COLS} FROM pauses WHERE run_id = ? ORDER BY created_at, id",
                                (run_id,)).fetchall()
        return [pause_row(r) for r in rows]

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

    async def run_ids_by_status(self, function_slug: str, statuses: Sequence[str], *,
                                created_from: int | None = None, created_to: int | None = None,
                                after: str | None = None, limit: int = 1000) -> list[str]:
        if not statuses:
            return []
        where, args = where_clause(("function_slug = ?", function_slug), ("created_at >= ?", created_from),
                                   ("created_at < ?", created_to), ("id > ?", after))
        rows = self._db.execute(f"SELECT id FROM runs{where} AND status IN ({', '.join('?' * len(statuses))}) "
                                "ORDER BY id LIMIT ?", (*args, *statuses, limit)).fetchall()
        return [r[0] for r in rows]

    # ------------------------------------------------------------------------------ reruns and links

    async def start_rerun(self, run: base.NewRun, now: int, *, events: Sequence[base.EventRecord] = (),
                          steps: Sequence[base.StepRecord] = ()) -> None:
        db = self._db
        with self._write():
            self._insert_events_txn(events)
            self._create_run_txn(dataclasses.replace(run, idempotency_key=None), now)
            seq = {h: i for i, h in enumerate(dict.fromkeys(s.hash for s in steps))}  # the first of a hash wins
            db.executemany(
                f"INSERT OR IGNORE INTO steps ({STEP_COLS}, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run.id, s.hash, s.name, s.op, s.status.value, dumps(s.memo), s.started_at, s.ended_at,
                  s.attempts, None if s.input is None else dumps(s.input), seq[s.hash]) for s in steps])
            stack = list(seq)
            if stack:
                db.execute("UPDATE runs SET stack = ? WHERE id = ?", (dumps(stack), run.id))
        await self._group.committed()

    async def get_run_links(self, run_id: str) -> base.RunLinks:
        db = self._db
        reruns = tuple(r[0] for r in db.execute("SELECT id FROM runs WHERE rerun_of = ? ORDER BY id", (run_id,)))
        children: dict[str, str] = {}
        for step, child in db.execute("SELECT invoked_step, id FROM runs WHERE invoked_by = ? ORDER BY id",
                                      (run_id,)):
            children.setdefault(step, child)
        return base.RunLinks(reruns=reruns, children=children)

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
                    lease_ms: int, *, dead_letter: base.GiveUp | None = None) -> base.Applied:
        db = self._db
        with self._write():
            held = db.execute("SELECT 1 FROM queue WHERE id = ? AND lease_owner = ?", (item.id, owner)).fetchone()
            if held is None:
                result = base.Applied(accepted=False)
            else:
                if dead_letter is not None:
                    db.execute(f"INSERT INTO dead_letters ({DEAD_LETTER_COLS}) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               (item.id, item.run_id, item.kind, item.target, item.attempt,
                                None if item.payload is None else dumps(item.payload), dead_letter.failures,
                                dead_letter.reason, now))
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

    async def fail_item(self, item: base.QueueItem, owner: str, reason: str, now: int, retry_at: int) -> bool:
        db = self._db
        with self._write():
            cur = db.execute("UPDATE queue SET failures = failures + 1, failure = ?, due_at = ?, lease_owner = NULL, "
                             "lease_until = NULL WHERE id = ? AND lease_owner = ?", (reason, retry_at, item.id, owner))
            if cur.rowcount:
                keys = db.execute("SELECT key, lim FROM item_keys WHERE item_id = ?", (item.id,)).fetchall()
                if keys:
                    self._unblock_txn(keys)
        await self._group.committed()
        return bool(cur.rowcount)

    async def list_dead_letters(self, *, limit: int = 100, before: int | None = None,
                                run_id: str | None = None) -> list[base.DeadLetter]:
        rows = self._db.execute(
            f"SELECT {DEAD_LETTER_COLS} FROM dead_letters WHERE (? IS NULL OR id < ?) AND (? IS NULL OR run_id = ?) "
            "ORDER BY id DESC LIMIT ?", (before, before, run_id, run_id, limit)).fetchall()
        return [dead_letter_row(r) for r in rows]

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
                           (run_id, dumps(cmd.pause_id)))
            elif isinstance(cmd, base.SaveStep):
                # A step recorded once is never recorded again: the first result wins.
                cur = db.execute(
                    f"INSERT OR IGNORE INTO steps ({STEP_COLS}, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (run_id, cmd.hash, cmd.name, cmd.op, cmd.status.value, dumps(cmd.memo),
                     cmd.started_at, cmd.ended_at, cmd.attempts, None if cmd.input is None else dumps(cmd.input),
                     len(stack)))
                if cur.rowcount:
                    stack.append(cmd.hash)
                    stack_changed = True
                elif cmd.status != base.StepStatus.WAITING:
                    # A wait/invoke step row is created WAITING and completed here when it resolves.
                    db.execute("UPDATE steps SET status = ?, memo = ?, ended_at = ? WHERE run_id = ? AND hash = ? "
                               "AND status = 'waiting'", (cmd.status.value, dumps(cmd.memo), cmd.ended_at,
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
                    (cmd.due_at, None if cmd.error is None else dumps(cmd.error), this))
                future = True
            elif isinstance(cmd, base.FinishRun):
                db.execute("UPDATE runs SET status = ?, output = ?, ended_at = ?, error = ? WHERE id = ?",
                           (cmd.status.value, dumps(cmd.output), now, cmd.error, run_id))
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
            db.execute("UPDATE runs SET stack = ? WHERE id = ?", (dumps(stack), run_id))
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
        payload = dumps({"race": True}) if cmd.race else None
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
