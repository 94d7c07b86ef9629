"""`PostgresStore`: `base.Store` on PostgreSQL through an asyncpg pool.

Each public write method is one transaction (`Pool.run`); reads of one statement run on their own.
The locking scheme is described in `connection.py`; the decisions are the engine's pure functions
(`engine.flow`, `engine.lifecycle`), called inside the transaction exactly as the SQLite backend does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

from ratchet import protocol
from ratchet.server.store import base
from ratchet.server.store.postgres import batch as batch_mod
from ratchet.server.store.postgres import queries as q
from ratchet.server.store.postgres.connection import (
    SYNC_CHANNEL,
    WORK_CHANNEL,
    Conn,
    Pool,
    lease_until,
    lock_names_txn,
)
from ratchet.server.store.postgres.flow_control import CANDIDATES_PER_CLAIM, FlowMixin
from ratchet.server.store.postgres.rows import (
    IDEMPOTENCY_MS,
    app_row,
    dead_letter_row,
    dumps,
    event_row,
    function_row,
    item_row,
    loads,
    numbered,
    pause_row,
    run_conditions,
    run_row,
    status_count,
    step_row,
)
from ratchet.server.store.postgres.runs import RunsMixin, is_plain, key_lock, one_statement_commands, run_keys
from ratchet.server.store.rows import common_search, data_has, dense_search


def _first_keys(runs: Sequence[base.NewRun]) -> dict[bytes, str]:
    """Each idempotency key of `runs` (UTF-8: BYTEA, as engine keys hold NUL separators) with the first run
    that has it; the later ones would find it held."""
    first: dict[bytes, str] = {}
    for run in runs:
        if run.idempotency_key is not None:
            first.setdefault(run.idempotency_key.encode(), run.id)
    return first


#: How many runs with concurrency keys `apply` remembers (to skip asking `ratchet_apply` first).
KEYED_RUNS_KEPT = 10_000


class PostgresStore(FlowMixin, RunsMixin):
    """`base.Store` on PostgreSQL. Construct, then `await start()` (or use `PostgresStore.connect`)."""

    single_owner = False  #: several server nodes share the database

    def __init__(self, url: str, *, one_statement: bool = True) -> None:
        self.url = url
        self._pool = Pool(url)
        #: `apply` and `ingest` write what they can in one statement (`ratchet_apply`, `INGEST_PLAIN`), one
        #: round trip; False: always their general paths, statements in a transaction (the contract suite
        #: runs both).
        self.one_statement = one_statement
        self._keyed_runs: set[str] = set()  #: runs found to have concurrency keys (general path)
        self._batcher = batch_mod.ApplyBatcher(self._pool)  #: one-statement applies, committed in batches

    @classmethod
    async def connect(cls, url: str) -> PostgresStore:
        store = cls(url)
        await store.start()
        return store

    async def start(self) -> None:
        """Open the pool and apply the migrations not yet applied."""
        await self._pool.open()

    async def close(self) -> None:
        await self._pool.close()

    # ------------------------------------------------------------------------------ apps and functions

    async def sync_app(self, app: base.AppRecord, functions: list[base.FunctionRecord],
                       crons: Sequence[base.NewItem] = ()) -> tuple[base.AppRecord, bool]:
        async def body(conn: Conn) -> tuple[base.AppRecord, bool]:
            row = await conn.fetchrow(q.APP_CHECKSUM_FOR_UPDATE, app.name)
            app_id = row[0] if row else app.id
            changed = row is None or row[1] != app.checksum
            await conn.execute(q.UPSERT_APP, app_id, app.name, app.url, app.sdk, app.framework, app.checksum,
                               app.synced_at)
            if changed:
                await conn.execute(q.ARCHIVE_FUNCTIONS, app.synced_at, app_id)
                await conn.executemany(q.UPSERT_FUNCTION, [
                    (fn.slug, app_id, fn.name, fn.config.model_dump_json(by_alias=True, exclude_none=True), fn.url,
                     app.synced_at) for fn in functions])
                # The app's schedules are exactly `crons` now; a changed schedule replaces its tick.
                await conn.execute(q.DELETE_APP_CRONS, app_id)
                await self._insert_items_txn(conn, crons)
            stored = await conn.fetchrow(q.APP_BY_NAME, app.name)
            assert stored is not None
            return app_row(stored), changed

        return await self._pool.run(body, notify=SYNC_CHANNEL)

    async def set_app_error(self, url: str, error: str | None) -> None:
        await self._pool.run(lambda conn: conn.execute(q.SET_APP_ERROR, url, error))

    async def list_apps(self) -> list[base.AppRecord]:
        return [app_row(r) for r in await self._pool.fetch(q.APPS)]

    async def list_functions(self) -> list[base.FunctionRecord]:
        return [function_row(r) for r in await self._pool.fetch(q.FUNCTIONS)]

    async def get_function(self, slug: str) -> base.FunctionRecord | None:
        row = await self._pool.fetchrow(q.FUNCTION, slug)
        return function_row(row) if row else None

    # ------------------------------------------------------------------------------ events and runs

    async def ingest(self, events: list[base.EventRecord], runs: list[base.NewRun], now: int, *,
                     resumes: Sequence[base.Resume] = (), items: Sequence[base.NewItem] = (),
                     done: tuple[base.QueueItem, str] | None = None) -> list[str]:
        if (self.one_statement and done is None and not resumes and not items
                and all(is_plain(r) and not r.pauses and not r.timers for r in runs)):
            return await self._pool.one(lambda conn: self._ingest_plain(conn, events, runs, now))

        async def body(conn: Conn) -> list[str]:
            if done is not None:
                item, owner = done
                if status_count(await conn.execute(q.DELETE_HELD, item.id, owner)) == 0:
                    return []  # no longer ours: whoever holds it now does this work
            await self._insert_events_txn(conn, events)
            took = await self._take_run_keys_txn(conn, runs, now)
            created: list[str] = []
            plain: list[base.NewRun] = []  # no flow control to decide: created together, in a few statements
            for run in runs:
                if run.idempotency_key is not None and run.id not in took:
                    continue  # a live (unexpired) run holds its key
                if run.flow is not None and (run.flow.debounce or run.flow.batch):
                    start = await self._collect_txn(conn, run, now)  # waits for more events, or starts full
                    if start is None:
                        continue
                    run = start
                if is_plain(run):
                    plain.append(run)
                else:
                    await self._create_run_txn(conn, run, now)
                created.append(run.id)
            await self._create_plain_runs_txn(conn, plain, now)
            for resume in resumes:
                await self._apply_run_txn(conn, resume.run_id, resume.commands, now, owner=None, lease_ms=0,
                                          item_id=None)
            await self._insert_items_txn(conn, items)
            return created

        return await self._pool.run(body, notify=WORK_CHANNEL)

    @staticmethod
    async def _ingest_plain(conn: Conn, events: Sequence[base.EventRecord], runs: Sequence[base.NewRun],
                            now: int) -> list[str]:
        """`ingest` of events whose runs are all plain (the usual send) in one statement (`INGEST_PLAIN`):
        the same rows as the general path, without its ~8 round trips."""
        first = _first_keys(runs)
        keys = sorted(first)
        row = await conn.fetchrow(
            q.INGEST_PLAIN,
            [e.internal_id for e in events], [e.id for e in events], [e.name for e in events],
            [dumps(e.data) for e in events], [e.ts for e in events], [e.received_at for e in events],
            [e.v for e in events], [None if e.user is None else dumps(e.user) for e in events],
            keys, [first[k] for k in keys], now + IDEMPOTENCY_MS, now,
            [r.id for r in runs], [r.function_slug for r in runs], [r.app_id for r in runs],
            [dumps(list(r.event_ids)) for r in runs], [r.due_at for r in runs],
            [0 if r.flow is None else r.flow.priority_ms for r in runs], [r.rerun_of for r in runs],
            [r.rerun_from for r in runs], [r.invoked_by for r in runs], [r.invoked_step for r in runs],
            [r.idempotency_key is None for r in runs],
            [eid for r in runs for eid in r.event_ids], [r.id for r in runs for _ in r.event_ids],
            protocol.DISCOVERY_STEP_ID, WORK_CHANNEL)
        return list(row[0])

    @staticmethod
    async def _take_run_keys_txn(conn: Conn, runs: Sequence[base.NewRun], now: int) -> set[str]:
        """Take the runs' idempotency keys in one statement, each unless a live (unexpired) run holds it;
        returns the ids of the runs that took theirs. A key repeated in `runs` goes to its first run (the
        later ones would find it held), and keys are taken in sorted order, as concurrent ingests must."""
        first = _first_keys(runs)
        if not first:
            return set()
        keys = sorted(first)
        rows = await conn.fetch(q.TAKE_RUN_KEYS, keys, [first[k] for k in keys], now + IDEMPOTENCY_MS, now)
        return {r[0] for r in rows}

    @staticmethod
    async def _insert_events_txn(conn: Conn, events: Sequence[base.EventRecord]) -> None:
        if events:
            await conn.executemany(q.INSERT_EVENT, [
                (e.internal_id, e.id, e.name, dumps(e.data), e.ts, e.received_at, e.v,
                 None if e.user is None else dumps(e.user)) for e in events])

    async def get_event(self, internal_id: str) -> base.EventRecord | None:
        row = await self._pool.fetchrow(q.EVENT, internal_id)
        return event_row(row) if row else None

    async def get_events(self, internal_ids: Sequence[str]) -> list[base.EventRecord]:
        return await self._pool.run(lambda conn: self._events_txn(conn, internal_ids), readonly=True)

    async def list_events(self, *, name: str | None, limit: int, before: int | None = None,
                          search: str | None = None) -> list[base.EventRecord]:
        if search:
            rows = await self._pool.fetch(q.SEARCH_EVENTS, name, before, limit, data_has(search, like="ILIKE")[1])
        else:
            rows = await self._pool.fetch(q.LIST_EVENTS, name, before, limit)
        return [event_row(r) for r in rows]

    async def runs_for_event(self, internal_id: str) -> list[base.RunRecord]:
        return [run_row(r) for r in await self._pool.fetch(q.RUNS_FOR_EVENT, internal_id)]

    async def get_run(self, run_id: str) -> base.RunRecord | None:
        row = await self._pool.fetchrow(q.RUN, run_id)
        return run_row(row) if row else None

    async def list_runs(self, *, function_slug: str | None = None, status: str | Sequence[str] | None = None,
                        limit: int = 50, before: str | None = None, app_id: str | None = None,
                        created_from: int | None = None, created_to: int | None = None,
                        search: str | None = None) -> list[base.RunRecord]:
        common = False
        if search:
            probe, probe_args, enough = common_search(search, like="ILIKE", indexed=True)
            common = (await self._pool.fetchrow(numbered(probe), *probe_args))[0] >= enough
        where, args = run_conditions(function_slug=function_slug, status=status, app_id=app_id,
                                     created_from=created_from, created_to=created_to, search=search, before=before,
                                     like="ILIKE", common=common)
        sql = numbered(f"SELECT {q.RUN_COLS} FROM runs{where} ORDER BY id DESC LIMIT ?")
        return [run_row(r) for r in await self._pool.fetch(sql, *args, limit)]

    async def count_runs(self, *, function_slug: str | None = None, status: str | Sequence[str] | None = None,
                         app_id: str | None = None, created_from: int | None = None, created_to: int | None = None,
                         search: str | None = None, at_most: int | None = None) -> int:
        common = False
        if search and at_most is not None:
            # A capped count of a text in most runs checks the newest runs one by one until the cap:
            # collecting every matching event first took ~400 ms with the text in all of 100,000 runs. A
            # sparser text is counted from its matching events (the cap would take too many checks).
            probe, probe_args, enough = dense_search(search, like="ILIKE")
            common = (await self._pool.fetchrow(numbered(probe), *probe_args))[0] >= enough
        where, args = run_conditions(function_slug=function_slug, status=status, app_id=app_id,
                                     created_from=created_from, created_to=created_to, search=search, like="ILIKE",
                                     common=common)
        if at_most is None:
            row = await self._pool.fetchrow(numbered(f"SELECT count(*) FROM runs{where}"), *args)
        else:
            order = " ORDER BY id DESC" if common else ""
            sql = numbered(f"SELECT count(*) FROM (SELECT 1 FROM runs{where}{order} LIMIT ?) capped")
            row = await self._pool.fetchrow(sql, *args, at_most)
        return int(row[0]) if row else 0

    async def change_marker(self) -> object:
        # The write-ahead log's position moves with every write by any node (and only with writes).
        row = await self._pool.fetchrow("SELECT pg_current_wal_lsn()::text")
        return row[0] if row else None

    async def get_steps(self, run_id: str) -> list[base.StepRecord]:
        return [step_row(r) for r in await self._pool.fetch(q.STEPS, run_id)]

    async def load_run_state(self, run_id: str, now: int) -> base.RunState | None:
        # One statement (one round trip, no transaction to open): the run, its function, its events and its
        # memo are one snapshot.
        row = await self._pool.fetchrow(q.LOAD_RUN_STATE, run_id, now)
        if row is None:
            return None
        run = run_row(row)
        fn_row, event_rows, memo_rows = row[16], row[17], row[18]
        found = {r[0]: event_row(r) for r in event_rows}
        events = tuple(found[eid] for eid in run.event_ids if eid in found)
        return base.RunState(run=run, function=function_row(fn_row) if fn_row is not None else None, events=events,
                             memo={h: loads(m) for h, m in memo_rows})

    async def mark_running(self, run_id: str, now: int) -> None:
        await self._pool.run(lambda conn: conn.execute(q.MARK_RUNNING, run_id, now))

    # ------------------------------------------------------------------------------ queue

    async def claim_due(self, now: int, limit: int, owner: str, lease_ms: int, *,
                        due_by: int | None = None) -> list[base.QueueItem]:
        if self.one_statement:
            claimed = await self._pool.one(lambda conn: self._claim_one_statement(conn, now, limit, owner, lease_ms,
                                                                                  due_by))
            if claimed is not None:
                return claimed

        async def body(conn: Conn) -> list[base.QueueItem]:
            # Rows other claimers hold are skipped, not waited for: several servers split the due items.
            # One statement reads the due candidates with their concurrency keys and the expired leases.
            found = await conn.fetch(q.CLAIM_CANDIDATES, now if due_by is None else due_by,
                                     limit * CANDIDATES_PER_CLAIM, now, limit)
            due = [r for r in found if not r[11]]
            keys = {r[0]: list(zip(r[12], r[13], strict=True)) for r in due if r[12]}
            rows = [tuple(r[:11]) for r in await self._admit_txn(conn, due, limit, keys)]
            # The node that held an expired item died or hung: a failure of each (an item that kills
            # every node handling it is dead-lettered in the end instead of going round forever).
            expired = [r for r in found if r[11]][:limit - len(rows)]
            rows += [(*r[:9], r[9] + 1, base.LEASE_EXPIRED) for r in expired]
            if not rows:
                return []
            until = lease_until(now, lease_ms)  # (stretched if this claim waited long for locks)
            # A claimed run is running from now on (saves the executor a separate write).
            calls = sorted({r[1] for r in rows if r[7] == base.ItemKind.CALL})
            await conn.execute(q.LEASE_CLAIMED, [r[0] for r in rows], owner, until, [r[0] for r in expired],
                               base.LEASE_EXPIRED, now, calls)
            return [dataclasses.replace(item_row(r), lease_owner=owner, lease_until=until) for r in rows]

        return await self._pool.run(body)

    @staticmethod
    async def _claim_one_statement(conn: Conn, now: int, limit: int, owner: str, lease_ms: int,
                                   due_by: int | None) -> list[base.QueueItem] | None:
        """`claim_due` by `ratchet_claim` (one round trip); None when a candidate has concurrency keys
        (nothing was written: the caller takes the general path, which admits them)."""
        until = lease_until(now, lease_ms)
        rows = await conn.fetch(q.CLAIM, now if due_by is None else due_by, limit * CANDIDATES_PER_CLAIM, now, limit,
                                owner, until, base.LEASE_EXPIRED)
        if rows and rows[0][0]:
            return None
        return [base.QueueItem(id=r[1], run_id=r[2], target=r[3], attempt=r[4], due_at=r[5], lease_owner=owner,
                               lease_until=until, kind=r[6], payload=loads(r[7]), failures=r[8], failure=r[9])
                for r in rows]

    async def next_due_at(self) -> int | None:
        row = await self._pool.fetchrow(q.NEXT_DUE_AT)
        return row[0] if row else None

    async def subscribe(self, on_work: Callable[[], None], on_sync: Callable[[], None]) -> None:
        """Wake this node when another one queues work or syncs an app (LISTEN/NOTIFY)."""
        await self._pool.listen(WORK_CHANNEL, on_work)
        await self._pool.listen(SYNC_CHANNEL, on_sync)

    async def purge(self, before: int, now: int) -> int:
        async def runs_batch(conn: Conn) -> int:
            ids = [r[0] for r in await conn.fetch(q.PURGE_RUN_IDS, before, base.PURGE_BATCH)]
            if ids:
                await conn.execute(q.PURGE_RUN_STEPS, ids)
                await conn.execute(q.PURGE_RUN_EVENTS, ids)
                await conn.execute(q.PURGE_RUNS, ids)
            return len(ids)

        async def events_batch(conn: Conn) -> int:
            held = [eid for (ids,) in await conn.fetch(q.BATCH_EVENT_IDS) for eid in loads(ids)]
            return status_count(await conn.execute(q.PURGE_EVENTS, before, held, base.PURGE_BATCH))

        async def the_rest(conn: Conn) -> None:
            await conn.execute(q.PURGE_RUN_KEYS, now)
            await conn.execute(q.PURGE_FLOW_STATE, now)
            await conn.execute(q.PURGE_DEAD_LETTERS, before)

        removed = 0
        for batch in (runs_batch, events_batch):  # each batch its own transaction: no long-held locks
            while (n := await self._pool.run(batch)) > 0:
                removed += n
                if n < base.PURGE_BATCH:
                    break
        await self._pool.run(the_rest)
        return removed

    async def applied_migrations(self) -> list[str]:
        return [r[0] for r in await self._pool.fetch(q.APPLIED_MIGRATIONS)]

    async def extend_leases(self, owner: str, until: int) -> int:
        async def body(conn: Conn) -> int:
            return int((await conn.execute(q.EXTEND_LEASES, owner, until)).split()[-1])

        return await self._pool.run(body)

    async def release_leases(self, owner: str | None = None) -> int:
        async def body(conn: Conn) -> int:
            if owner is None:
                await conn.execute(q.UNBLOCK_ALL)  # every slot is free again
                return status_count(await conn.execute(q.RELEASE_ALL, base.LEASE_EXPIRED))
            return status_count(await conn.execute(q.RELEASE_OWNER, owner))

        return await self._pool.run(body, notify=WORK_CHANNEL)

    # ------------------------------------------------------------------------------ pauses

    async def pause_index(self, event_name: str) -> tuple[list[str], list[base.PauseRecord]]:
        row = await self._pool.fetchrow(q.PAUSE_INDEX, event_name)
        assert row is not None
        return list(row[0]), sorted((pause_row(r) for r in row[1]), key=lambda p: (p.created_at, p.id))

    async def find_pauses(self, event_name: str, keys: list[tuple[str, str]]) -> list[base.PauseRecord]:
        rows = await self._pool.fetch(q.FIND_PAUSES, event_name, [p for p, _ in keys], [v for _, v in keys])
        return [pause_row(r) for r in rows]

    async def get_pause(self, pause_id: str) -> base.PauseRecord | None:
        row = await self._pool.fetchrow(q.PAUSE, pause_id)
        return pause_row(row) if row else None

    async def pauses_for_run(self, run_id: str) -> list[base.PauseRecord]:
        return [pause_row(r) for r in await self._pool.fetch(q.RUN_PAUSES, run_id)]

    async def active_run_ids(self, function_slug: str, *, created_from: int | None = None,
                             created_to: int | None = None, limit: int = 1000) -> list[str]:
        rows = await self._pool.fetch(q.ACTIVE_RUN_IDS, function_slug, created_from, created_to, limit)
        return [r[0] for r in rows]

    async def run_ids_by_status(self, function_slug: str, statuses: Sequence[str], *,
                                created_from: int | None = None, created_to: int | None = None,
                                after: str | None = None, limit: int = 1000) -> list[str]:
        if not statuses:
            return []
        rows = await self._pool.fetch(q.RUN_IDS_BY_STATUS, function_slug, list(statuses), created_from, created_to,
                                      after, limit)
        return [r[0] for r in rows]

    # ------------------------------------------------------------------------------ reruns and links

    async def start_rerun(self, run: base.NewRun, now: int, *, events: Sequence[base.EventRecord] = (),
                          steps: Sequence[base.StepRecord] = ()) -> None:
        async def body(conn: Conn) -> None:
            await self._insert_events_txn(conn, events)
            await self._create_run_txn(conn, dataclasses.replace(run, idempotency_key=None), now)
            seq = {h: i for i, h in enumerate(dict.fromkeys(s.hash for s in steps))}  # the first of a hash wins
            if seq:
                await conn.executemany(q.INSERT_STEP, [
                    (run.id, s.hash, s.name, s.op, s.status.value, dumps(s.memo), s.started_at, s.ended_at,
                     s.attempts, None if s.input is None else dumps(s.input), seq[s.hash]) for s in steps])
                await conn.execute(q.SET_STACK, run.id, dumps(list(seq)))

        await self._pool.run(body, notify=WORK_CHANNEL)

    async def get_run_links(self, run_id: str) -> base.RunLinks:
        async def body(conn: Conn) -> base.RunLinks:
            reruns = tuple(r[0] for r in await conn.fetch(q.RERUNS_OF, run_id))
            children: dict[str, str] = {}
            for step, child in await conn.fetch(q.INVOKED_CHILDREN, run_id):
                children.setdefault(step, child)
            return base.RunLinks(reruns=reruns, children=children)

        return await self._pool.run(body, readonly=True)

    async def cancel_runs(self, run_ids: Sequence[str], reason: str, now: int,
                          emits: Mapping[str, base.Emit]) -> list[str]:
        async def body(conn: Conn) -> list[str]:
            cancelled = []
            for run_id in run_ids:
                finish = base.FinishRun(protocol.RunStatus.CANCELLED, {"name": "FunctionCancelled",
                                                                       "message": reason}, error=reason)
                emit = emits.get(run_id)
                commands: tuple[base.Command, ...] = (finish,) if emit is None else (finish, emit)
                applied = await self._apply_run_txn(conn, run_id, commands, now, owner=None, lease_ms=0, item_id=None)
                if applied.accepted:
                    cancelled.append(run_id)
            return cancelled

        return await self._pool.run(body, notify=WORK_CHANNEL)

    # ------------------------------------------------------------------------------ applying decisions

    async def apply(self, item: base.QueueItem, owner: str, commands: list[base.Command], now: int,
                    lease_ms: int, *, dead_letter: base.GiveUp | None = None) -> base.Applied:
        if (self.one_statement and dead_letter is None and item.run_id not in self._keyed_runs
                and one_statement_commands(commands)):
            applied = await self._batcher.apply(item, owner, commands, now, lease_ms)
            if applied is not None:
                return applied
            # The run has concurrency keys (they never change): its applies take the general path.
            if len(self._keyed_runs) >= KEYED_RUNS_KEPT:
                self._keyed_runs.clear()
            self._keyed_runs.add(item.run_id)

        async def body(conn: Conn) -> base.Applied:
            # The held item first (a claimer taking over its expired lease skips it while we hold it), with
            # its concurrency keys and the run's in the same statement. It is deleted at the end unless it
            # is retried; an item that ends no run is deleted in that statement instead (the apply leaves it
            # out of every count; finishing counts the run's calls in flight to unblock others, this one too).
            retry = any(isinstance(c, base.RetryItem) for c in commands)
            early = not retry and dead_letter is None and not any(isinstance(c, base.FinishRun) for c in commands)
            held = await conn.fetchrow(q.DELETE_HELD_KEYS if early else q.HELD_KEYS_FOR_UPDATE, item.id, owner,
                                       item.run_id)
            if held is None:
                return base.Applied(accepted=False)
            if dead_letter is not None:
                await conn.execute(q.INSERT_DEAD_LETTER, item.id, dead_letter.reason, now, dead_letter.failures)
            keys = list(zip(held[0], held[1], strict=True)) if held[0] else []
            # The item's keys are locked with the run's, before the run row.
            result = await self._apply_run_txn(conn, item.run_id, commands, now, owner=owner, lease_ms=lease_ms,
                                               item_id=item.id, extra_keys=keys, run_keys=run_keys(held[2]))
            if not early and (not retry or not result.accepted):
                await conn.execute(q.DELETE_ITEM, item.id)
            # This call no longer holds its concurrency slots (unless a follow-up took them over).
            if keys and await self._unblock_txn(conn, keys):
                result = dataclasses.replace(result, enqueued_future=True)
            if result.enqueued_future:
                await conn.execute(q.NOTIFY, WORK_CHANNEL)  # work for any node (on commit)
            return result

        return await self._pool.run(body)

    async def fail_item(self, item: base.QueueItem, owner: str, reason: str, now: int, retry_at: int) -> bool:
        async def body(conn: Conn) -> bool:
            if not await conn.fetchval(q.HELD_FOR_UPDATE, item.id, owner):
                return False
            keys = [(k, lim) for k, lim in await conn.fetch(q.ITEM_KEYS, item.id)]
            await lock_names_txn(conn, [key_lock(k) for k, _ in keys])
            await conn.execute(q.FAIL_ITEM, item.id, owner, reason, retry_at)
            if keys:
                await self._unblock_txn(conn, keys)
            await conn.execute(q.NOTIFY, WORK_CHANNEL)  # due again later, for any node
            return True

        return await self._pool.run(body)

    async def list_dead_letters(self, *, limit: int = 100, before: int | None = None,
                                run_id: str | None = None) -> list[base.DeadLetter]:
        return [dead_letter_row(r) for r in await self._pool.fetch(q.DEAD_LETTERS, before, run_id, limit)]
