"""Runs inside a PostgreSQL transaction: creating them and applying the engine's commands to them.

Every helper here runs inside the caller's transaction and takes its connection (`_txn` suffix).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from ratchet import protocol
from ratchet.server.engine import lifecycle
from ratchet.server.store import base
from ratchet.server.store.postgres import queries as q
from ratchet.server.store.postgres.connection import Conn, lease_until, lock_names_txn
from ratchet.server.store.postgres.rows import dumps, event_row, status_count

Keys = list[tuple[str, int]]


def key_lock(key: str) -> str:
    """The advisory-lock name of a concurrency key."""
    return "concurrency:" + key


def is_plain(run: base.NewRun) -> bool:
    """A new run with no flow-control state to decide against (at most a priority): `_create_plain_runs_txn`
    creates many of them in a few statements."""
    fl = run.flow
    return fl is None or (fl.rate_limit is None and fl.throttle is None and fl.singleton is None
                          and not fl.concurrency and fl.debounce is None and fl.batch is None)


def one_statement_commands(commands: Sequence[base.Command]) -> bool:
    """Whether `ratchet_apply` (one round trip) can write all of `commands`: steps, calls, parallel mode,
    the run's end and the outbox; pauses and retries take the general path."""
    return all(isinstance(c, base.SaveStep | base.Enqueue | base.SetForceStepPlan | base.FinishRun | base.Emit)
               for c in commands)


def one_statement_result(row: Any, item: base.QueueItem, owner: str, commands: Sequence[base.Command],
                         until: int) -> base.Applied | None:
    """What `ratchet_apply` did, from its row `(outcome, leased ids, their commands' positions, future)`;
    None when it declined (the run has concurrency keys: nothing was written)."""
    outcome, leased, index, future = row
    if outcome == "keyed":
        return None
    if outcome != "applied":
        return base.Applied(accepted=False)
    ready = []
    for item_id, i in zip(leased, index, strict=True):
        cmd = commands[i - 1]
        assert isinstance(cmd, base.Enqueue)
        ready.append(base.QueueItem(id=item_id, run_id=item.run_id, target=cmd.target, attempt=cmd.attempt,
                                    due_at=cmd.due_at, lease_owner=owner, lease_until=until,
                                    payload={"race": True} if cmd.race else None))
    return base.Applied(accepted=True, ready=tuple(ready), enqueued_future=bool(future))


def commands_json(commands: Sequence[base.Command]) -> str:
    """`commands` as the JSON array `ratchet_apply` reads (JSON values inside it are texts, stored as is)."""
    out: list[dict[str, Any]] = []
    for c in commands:
        if isinstance(c, base.SaveStep):
            out.append({"t": "save", "hash": c.hash, "name": c.name, "op": c.op, "status": c.status.value,
                        "memo": dumps(c.memo), "started_at": c.started_at, "ended_at": c.ended_at,
                        "attempts": c.attempts, "input": None if c.input is None else dumps(c.input)})
        elif isinstance(c, base.Enqueue):
            out.append({"t": "enqueue", "target": c.target, "due_at": c.due_at, "attempt": c.attempt,
                        "when_idle": c.when_idle, "end_parallel": c.end_parallel,
                        "payload": dumps({"race": True}) if c.race else None})
        elif isinstance(c, base.SetForceStepPlan):
            out.append({"t": "force", "value": bool(c.value)})
        elif isinstance(c, base.FinishRun):
            out.append({"t": "finish", "status": c.status.value, "output": dumps(c.output), "error": c.error})
        elif isinstance(c, base.Emit):
            out.append({"t": "emit", "payload": dumps(list(c.events))})
        else:
            raise TypeError(f"ratchet_apply does not write {type(c).__name__}")
    return dumps(out)


def run_keys(concurrency: str | None) -> Keys:
    """A run's concurrency keys from its `concurrency` column."""
    return [(k, int(lim)) for k, lim in orjson.loads(concurrency)] if concurrency else []


class RunsMixin:
    """Run creation and `apply`'s command loop (`PostgresStore` mixes it in with `FlowMixin`)."""

    if TYPE_CHECKING:
        async def _flow_txn(self, conn: Conn, run: base.NewRun, fl: base.RunFlow, now: int
                            ) -> tuple[str | None, int]: ...
        async def _in_flight_txn(self, conn: Conn, key: str, *, excluding: int = -1) -> int: ...
        async def _unblock_txn(self, conn: Conn, keys: Iterable[tuple[str, int]]) -> int: ...

    # ------------------------------------------------------------------------------ creating runs

    async def _create_run_txn(self, conn: Conn, run: base.NewRun, now: int) -> None:
        fl = run.flow or base.RunFlow()
        skipped, due_at = await self._flow_txn(conn, run, fl, now)
        status = protocol.RunStatus.SKIPPED if skipped else protocol.RunStatus.QUEUED
        await conn.execute(
            q.INSERT_RUN, run.id, run.function_slug, run.app_id, status.value, dumps(list(run.event_ids)), now,
            now if skipped else None, skipped, None if fl.singleton is None else fl.singleton[0],
            dumps([list(k) for k in fl.concurrency]) if fl.concurrency else None, run.rerun_of, run.rerun_from,
            run.invoked_by, run.invoked_step)
        await conn.executemany(q.INSERT_RUN_EVENT, [(eid, run.id) for eid in run.event_ids])
        if skipped:
            await self._skipped_txn(conn, run, skipped, now)
            return
        item_id = await conn.fetchval(q.INSERT_FIRST_CALL, run.id, protocol.DISCOVERY_STEP_ID, due_at,
                                      fl.priority_ms)
        await self._add_keys_txn(conn, item_id, [(k, lim) for k, lim in fl.concurrency])
        for pause in run.pauses:
            await self._insert_pause_txn(conn, pause)
        await self._insert_items_txn(conn, run.timers)

    async def _create_plain_runs_txn(self, conn: Conn, runs: Sequence[base.NewRun], now: int) -> None:
        """`_create_run_txn` for runs that are all `is_plain`: each statement once for all of them (asyncpg
        sends the rows of `executemany` in one pipeline), instead of one round trip per run and statement."""
        if not runs:
            return
        status = protocol.RunStatus.QUEUED.value
        await conn.executemany(q.INSERT_RUN, [
            (run.id, run.function_slug, run.app_id, status, dumps(list(run.event_ids)), now, None, None, None, None,
             run.rerun_of, run.rerun_from, run.invoked_by, run.invoked_step) for run in runs])
        await conn.executemany(q.INSERT_RUN_EVENT, [(eid, run.id) for run in runs for eid in run.event_ids])
        await conn.executemany(q.INSERT_FIRST_CALL, [
            (run.id, protocol.DISCOVERY_STEP_ID, run.due_at, 0 if run.flow is None else run.flow.priority_ms)
            for run in runs])
        for run in runs:
            for pause in run.pauses:
                await self._insert_pause_txn(conn, pause)
        await self._insert_items_txn(conn, [timer for run in runs for timer in run.timers])

    async def _skipped_txn(self, conn: Conn, run: base.NewRun, reason: str, now: int) -> None:
        """A skipped run that was invoked still answers its caller: `function.finished` with an error."""
        events = [e.wire() for e in await self._events_txn(conn, run.event_ids)]
        if not events or not lifecycle.invoke_meta(events[0]).get("correlation_id"):
            return
        ended = lifecycle.run_ended_events(run_id=run.id, function_slug=run.function_slug, events=events,
                                           status=protocol.RunStatus.SKIPPED,
                                           output={"name": "FunctionSkipped", "message": reason})
        await self._insert_items_txn(conn, [base.NewItem(base.ItemKind.EMIT, run.id, now, list(ended))])

    async def _insert_items_txn(self, conn: Conn, items: Iterable[base.NewItem]) -> None:
        rows = [(i.run_id, i.target, i.due_at, i.kind, None if i.payload is None else dumps(i.payload))
                for i in items]
        if rows:
            await conn.executemany(q.INSERT_ITEM, rows)

    async def _insert_pause_txn(self, conn: Conn, p: base.PauseRecord) -> None:
        await conn.execute(q.INSERT_PAUSE, p.id, p.run_id, p.kind.value, p.step_hash, p.step_name, p.event_name,
                           p.expression, p.index_path, p.index_value, p.created_at, p.expires_at)
        if p.expires_at is not None:
            await conn.execute(q.INSERT_TIMEOUT, p.run_id, p.expires_at, dumps(p.id))

    async def _events_txn(self, conn: Conn, internal_ids: Sequence[str]) -> list[base.EventRecord]:
        """The events in the order asked (the first stored row of each id), missing ones left out."""
        if not internal_ids:
            return []
        found = {r[0]: event_row(r) for r in await conn.fetch(q.EVENTS_FIRST, list(internal_ids))}
        return [found[eid] for eid in internal_ids if eid in found]

    async def _add_keys_txn(self, conn: Conn, item_id: int, keys: Sequence[tuple[str, int]]) -> None:
        if keys:
            await conn.executemany(q.ADD_ITEM_KEY, [(k, item_id, lim) for k, lim in keys])

    async def _run_keys_txn(self, conn: Conn, run_id: str) -> Keys:
        """The run's concurrency keys (set when it is created, never changed: read without a lock)."""
        return run_keys(await conn.fetchval(q.RUN_CONCURRENCY, run_id))

    # ------------------------------------------------------------------------------ applying commands

    async def _lock_run_txn(self, conn: Conn, run_id: str, extra_keys: Iterable[tuple[str, int]] = (),
                            keys: Keys | None = None) -> tuple[Any, Keys]:
        """Lock the run's concurrency keys (and `extra_keys`), then its row: the order every writer uses.
        Returns the locked `(status, stack, force_step_plan)` row (None if there is no such run) and the
        run's keys (`keys`, when the caller read them already)."""
        if keys is None:
            keys = await self._run_keys_txn(conn, run_id)
        await lock_names_txn(conn, [key_lock(k) for k, _ in (*keys, *extra_keys)])
        return await conn.fetchrow(q.RUN_FOR_UPDATE, run_id), keys

    async def _apply_run_txn(self, conn: Conn, run_id: str, commands: Sequence[base.Command], now: int, *,
                             owner: str | None, lease_ms: int, item_id: int | None,
                             extra_keys: Iterable[tuple[str, int]] = (), run_keys: Keys | None = None
                             ) -> base.Applied:
        """Apply `commands` to a run that has not ended. `item_id` is the queue item being handled, if
        any (kept out of "other work in progress"); `owner` leases calls due now back to the caller.
        `extra_keys` (the item's concurrency keys) are locked together with the run's (`run_keys`, if
        the caller read them already)."""
        row, keys = await self._lock_run_txn(conn, run_id, extra_keys, run_keys)
        if row is None or protocol.RunStatus(row[0]).is_terminal:
            return base.Applied(accepted=False)
        stack: list[str] = orjson.loads(row[1])
        parallel = [bool(row[2])]  # force_step_plan as this transaction left it (read under the run lock)
        ready: list[base.QueueItem] = []
        future = False
        finished = False
        this = -1 if item_id is None else item_id
        for cmd in commands:
            if isinstance(cmd, base.ConsumePause):
                if status_count(await conn.execute(q.DELETE_PAUSE, cmd.pause_id)) == 0:
                    return base.Applied(accepted=False)  # resolved already: first one wins
                await conn.execute(q.DELETE_TIMEOUT, run_id, dumps(cmd.pause_id))
            elif isinstance(cmd, base.SaveStep):
                # A step recorded once is never recorded again: the first result wins.
                # The run's stack gets the step in the same statement, if it was inserted.
                inserted = await conn.fetchval(
                    q.INSERT_STEP_STACK, run_id, cmd.hash, cmd.name, cmd.op, cmd.status.value, dumps(cmd.memo),
                    cmd.started_at, cmd.ended_at, cmd.attempts, None if cmd.input is None else dumps(cmd.input),
                    len(stack), dumps([*stack, cmd.hash]))
                if inserted:
                    stack.append(cmd.hash)
                elif cmd.status != base.StepStatus.WAITING:
                    # A wait/invoke step row is created WAITING and completed here when it resolves.
                    await conn.execute(q.COMPLETE_WAITING_STEP, run_id, cmd.hash, cmd.status.value,
                                       dumps(cmd.memo), cmd.ended_at)
            elif isinstance(cmd, base.Enqueue):
                enqueued = await self._enqueue_txn(conn, run_id, cmd, now, keys, owner=owner, lease_ms=lease_ms,
                                                   this=this, parallel=parallel)
                if enqueued is not None:
                    ready.append(enqueued)
                else:
                    future = True  # a later call, or one the scheduler must admit (concurrency)
            elif isinstance(cmd, base.RetryItem):
                await conn.execute(q.RETRY_ITEM, this, cmd.due_at, None if cmd.error is None else dumps(cmd.error))
                future = True
            elif isinstance(cmd, base.FinishRun):
                await conn.execute(q.FINISH_RUN, run_id, cmd.status.value, dumps(cmd.output), now, cmd.error)
                await conn.execute(q.DELETE_RUN_ITEMS, run_id, this)
                await conn.execute(q.DELETE_RUN_PAUSES, run_id)
                finished = True
            elif isinstance(cmd, base.SetForceStepPlan):
                await conn.execute(q.SET_FORCE_STEP_PLAN, run_id, cmd.value)
                parallel[0] = bool(cmd.value)
            elif isinstance(cmd, base.CreatePause):
                await self._insert_pause_txn(conn, cmd.pause)
                future = future or cmd.pause.expires_at is not None
            elif isinstance(cmd, base.Emit):
                await self._insert_items_txn(conn, [base.NewItem(base.ItemKind.EMIT, run_id, now, list(cmd.events))])
                future = True  # the scheduler picks the outbox up
        if finished and await self._unblock_txn(conn, keys):
            future = True  # calls of the ended run in flight gave their slots back
        return base.Applied(accepted=True, ready=tuple(ready), enqueued_future=future)

    async def _enqueue_txn(self, conn: Conn, run_id: str, cmd: base.Enqueue, now: int, keys: Keys, *,
                           owner: str | None, lease_ms: int, this: int, parallel: list[bool] | None = None
                           ) -> base.QueueItem | None:
        """Queue a call unless it is queued already (or, `when_idle`, other work is in progress).

        Returns the item when it is due now and leased to `owner`, so the caller runs it at once.
        `parallel` holds the run's force_step_plan as this transaction has it (None: not known); an
        `end_parallel` call clears it only if it is set.
        """
        # A step call is not queued while one for the same step is queued or running. A discovery call is
        # not queued while another one waits to start; one that is already running may have loaded the
        # run before this change, so another is needed after it.
        # A step re-planned after it finished (race mode) is not run again. (All in one round trip.)
        discovery = cmd.target == protocol.DISCOVERY_STEP_ID
        if not keys:  # nothing to count first: the checks and the insert are one statement
            return await self._enqueue_free_txn(conn, run_id, cmd, now, owner=owner, lease_ms=lease_ms, this=this,
                                                parallel=parallel)
        queued, busy = await conn.fetchrow(q.ENQUEUE_CHECKS, run_id, cmd.target, this, discovery,
                                           cmd.when_idle, protocol.DISCOVERY_STEP_ID)
        if queued:
            return None
        if cmd.when_idle:
            if busy:
                return None
            if cmd.end_parallel and (parallel is None or parallel[0]):
                await conn.execute(q.END_PARALLEL, run_id)
                if parallel is not None:
                    parallel[0] = False
        payload = dumps({"race": True}) if cmd.race else None
        # Run it at once only if every concurrency key has room (the call being finished, `this`, is
        # about to give its slot back); otherwise the scheduler admits it when there is room. The keys
        # are locked (`_lock_run_txn`), so the counts hold until the commit.
        if owner is not None and cmd.due_at <= now and all(
                [await self._in_flight_txn(conn, k, excluding=this) < lim for k, lim in keys]):
            until = lease_until(now, lease_ms)
            item_id = await conn.fetchval(q.INSERT_CALL, run_id, cmd.target, cmd.attempt, cmd.due_at, owner, until,
                                          payload)
            await self._add_keys_txn(conn, item_id, keys)
            return base.QueueItem(id=item_id, run_id=run_id, target=cmd.target, attempt=cmd.attempt,
                                  due_at=cmd.due_at, lease_owner=owner, lease_until=until,
                                  payload=None if payload is None else {"race": True})
        item_id = await conn.fetchval(q.INSERT_CALL, run_id, cmd.target, cmd.attempt, cmd.due_at, None, None, payload)
        await self._add_keys_txn(conn, item_id, keys)
        return None

    async def _enqueue_free_txn(self, conn: Conn, run_id: str, cmd: base.Enqueue, now: int, *,
                                owner: str | None, lease_ms: int, this: int, parallel: list[bool] | None
                                ) -> base.QueueItem | None:
        """`_enqueue_txn` of a run without concurrency keys: the checks and the insert in one statement
        (`ENQUEUE_CALL`); a call due now is leased to `owner`."""
        payload = dumps({"race": True}) if cmd.race else None
        leased = owner is not None and cmd.due_at <= now
        until = lease_until(now, lease_ms) if leased else None
        queued, busy, item_id = await conn.fetchrow(
            q.ENQUEUE_CALL, run_id, cmd.target, this, cmd.target == protocol.DISCOVERY_STEP_ID, cmd.when_idle,
            protocol.DISCOVERY_STEP_ID, cmd.attempt, cmd.due_at, owner if leased else None, until, payload)
        if queued or busy:
            return None
        if cmd.when_idle and cmd.end_parallel and (parallel is None or parallel[0]):
            await conn.execute(q.END_PARALLEL, run_id)
            if parallel is not None:
                parallel[0] = False
        if not leased:
            return None
        return base.QueueItem(id=item_id, run_id=run_id, target=cmd.target, attempt=cmd.attempt, due_at=cmd.due_at,
                              lease_owner=owner, lease_until=until, payload=None if payload is None else {"race": True})
