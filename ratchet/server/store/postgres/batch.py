"""Group commit of `apply` on PostgreSQL: outcomes applied at the same moment share a round trip and a commit.

The executor applies many outcomes at once under load (one per call in flight). Each on its own costs a
round trip, a commit and a wait for the WAL flush; SQLite's store shares one commit among the writes of a
loop turn for the same reason. Here the outcomes that arrive while earlier ones are being written wait
for the next batch, which `ratchet_apply_many` writes in one statement: each element exactly as
`ratchet_apply` alone would, all committed together (so none is reported applied before all are durable).
A lone outcome (a quiet server) goes out at once, in a batch of one: batching adds no wait of its own.

Hand-rolled because it is a few lines around the pool that no library offers for asyncpg.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence

from ratchet import protocol
from ratchet.server.store import base
from ratchet.server.store.postgres import queries as q
from ratchet.server.store.postgres.connection import Conn, Pool, lease_until
from ratchet.server.store.postgres.runs import commands_json, one_statement_result

log = logging.getLogger("ratchet.store")

#: Outcomes per statement at most, and statements in flight at once.
MAX_BATCH = 64
FLUSHERS = 2


@dataclasses.dataclass(slots=True)
class _Outcome:
    item: base.QueueItem
    owner: str
    commands: Sequence[base.Command]
    now: int
    lease_ms: int
    done: asyncio.Future[base.Applied | None]


class ApplyBatcher:
    """Collects one-statement `apply`s and writes them in batches (see the module docstring)."""

    def __init__(self, pool: Pool, *, max_batch: int = MAX_BATCH, flushers: int = FLUSHERS) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._flushers = flushers
        self._pending: list[_Outcome] = []
        self._running = 0
        self.statements = 0  #: batches sent (each one statement), for tests and curiosity

    async def apply(self, item: base.QueueItem, owner: str, commands: Sequence[base.Command], now: int,
                    lease_ms: int) -> base.Applied | None:
        """`ratchet_apply`'s result for this outcome, once its batch has committed; None when it declined
        (the run has concurrency keys: nothing was written)."""
        done: asyncio.Future[base.Applied | None] = asyncio.get_running_loop().create_future()
        outcome = _Outcome(item, owner, commands, now, lease_ms, done)
        if not self._pending and self._running < self._flushers:
            # Nothing waits: written at once from this task (a batch of one, no hand-over to a flusher).
            self._running += 1
            try:
                return (await self._pool.one(lambda conn: self._write_txn(conn, [outcome])))[0]
            finally:
                self._running -= 1
                self._kick()
        self._pending.append(outcome)
        self._kick()
        return await done

    def _kick(self) -> None:
        """Start a flusher if outcomes wait and fewer than `flushers` statements are in flight."""
        if self._pending and self._running < self._flushers:
            self._running += 1
            asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:self._max_batch], self._pending[self._max_batch:]
                try:
                    await self._write(batch)
                except BaseException as exc:  # cancelled (the server stops): no caller waits for ever
                    for o in batch:
                        if not o.done.done():
                            o.done.set_exception(base.StoreError(f"apply interrupted: {exc!r}"))
                    raise
        finally:
            self._running -= 1

    async def _write(self, batch: list[_Outcome]) -> None:
        # Sorted by run, so two batches with runs in common lock them in the same order.
        batch.sort(key=lambda o: (o.item.run_id, o.item.id))
        try:
            results = await self._pool.one(lambda conn: self._write_txn(conn, batch))
        except Exception as exc:  # noqa: BLE001 - one bad outcome must not fail the others: each alone
            log.warning("a batch of %d outcomes failed (%s); applying them one by one", len(batch), exc)
            for o in batch:
                try:
                    result = await self._pool.one(lambda conn, o=o: self._write_txn(conn, [o]))
                except Exception as one_exc:  # noqa: BLE001 - handed to the caller
                    if not o.done.done():
                        o.done.set_exception(one_exc)
                    continue
                if not o.done.done():
                    o.done.set_result(result[0])
            return
        for o, result in zip(batch, results, strict=True):
            if not o.done.done():
                o.done.set_result(result)

    async def _write_txn(self, conn: Conn, batch: list[_Outcome]) -> list[base.Applied | None]:
        self.statements += 1
        untils = [lease_until(o.now, o.lease_ms) for o in batch]
        if len(batch) == 1:  # the usual case on a quiet server: the function itself, without the loop around it
            (o,) = batch
            row = await conn.fetchrow(q.APPLY, o.item.id, o.owner, o.item.run_id, o.now, untils[0],
                                      commands_json(o.commands), protocol.DISCOVERY_STEP_ID)
            return [one_statement_result(row, o.item, o.owner, o.commands, untils[0])]
        rows = await conn.fetch(q.APPLY_MANY, [o.item.id for o in batch], [o.owner for o in batch],
                                [o.item.run_id for o in batch], [o.now for o in batch], untils,
                                [commands_json(o.commands) for o in batch], protocol.DISCOVERY_STEP_ID)
        by_index = {r[0]: r[1:] for r in rows}
        return [one_statement_result(by_index[i + 1], o.item, o.owner, o.commands, until)
                for i, (o, until) in enumerate(zip(batch, untils, strict=True))]
