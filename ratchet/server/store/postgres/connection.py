"""The PostgreSQL pool, its transactions (with a retry on deadlock) and the driver-error boundary.

Locking, in one place:
- Every public write method is one `READ COMMITTED` transaction on a pooled connection.
- Read-modify-write rows are locked with `SELECT ... FOR UPDATE`: the held queue item, then the run row
  (`apply`, resumes, cancels), and the flow-control rows (`flow_state`, `debounces`, `batches`).
- `claim_due` locks its candidates `FOR UPDATE SKIP LOCKED`, so concurrent claimers (other servers)
  split the due items instead of waiting on each other.
- State that may not exist yet (a first rate-limit window, a first debounce, a concurrency key's
  in-flight count) cannot be row-locked, so its *name* is locked with a transaction-scoped advisory
  lock (`lock_names_txn`) before it is read. A run's concurrency keys are locked before its run row,
  in sorted order, everywhere.
- Two transactions can still deadlock in rare interleavings (a claim holding a queue row the cancel of
  its run wants to delete); PostgreSQL detects it and aborts one, and `Pool.run` retries it from the
  start, which is safe because a method's transaction is a function of its arguments only.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import asyncpg

from ratchet.server.store import base, migrations
from ratchet.server.store.postgres import queries as q

log = logging.getLogger("ratchet.store")
T = TypeVar("T")
Conn = asyncpg.Connection

#: Pool size: one connection per concurrent store call; the executor runs calls concurrently.
POOL_MIN, POOL_MAX = 1, 10
#: Connections of their own for the calls a client waits on (`base.FOREGROUND`: the event API's sends),
#: opened when first needed. With up to `max_in_flight` calls queueing for the main pool, each store call
#: of a send waited behind them (W2 on PostgreSQL: 200-event sends took ~1 s each, ~20 ms in the store).
FOREGROUND_MAX = 2
#: Attempts of a transaction aborted by a deadlock or a serialization failure.
RETRIES = 8


#: When the current store call began, before it waited for a connection or for locks (`lease_until`).
_CALL_STARTED: contextvars.ContextVar[float | None] = contextvars.ContextVar("ratchet_store_call", default=None)


def lease_until(now: int, lease_ms: int) -> int:
    """The expiry of a lease a store call grants: `now + lease_ms`, where `now` is the caller's clock when
    it asked. A call that waited longer than a quarter of a lease (for a connection, for the locks of a
    busy concurrency key) stretches it by the excess, so at least three quarters are left when the grant
    commits and the heartbeat (every third of a lease) renews it in time. Otherwise a call or follow-up
    granted after a long wait could expire before the node even started it, and another node would take
    over a call still in flight (running the step twice, overlapping its concurrency slot)."""
    started = _CALL_STARTED.get()
    waited_ms = 0 if started is None else int((time.monotonic() - started) * 1000)
    return now + lease_ms + max(0, waited_ms - lease_ms // 4)


#: LISTEN/NOTIFY channels: new due work, and an app synced (functions changed) on some node.
WORK_CHANNEL = "ratchet_work"
SYNC_CHANNEL = "ratchet_sync"
#: The LISTEN connection is checked this often (a lost connection that its socket does not report, e.g.
#: a network drop), with this timeout; a closed one is noticed at once (asyncpg's termination listener).
LISTEN_CHECK_EVERY_S = 10.0
LISTEN_CHECK_TIMEOUT_S = 5.0
#: Backoff of LISTEN reconnects: the first wait, doubling up to the last.
LISTEN_RETRY_S, LISTEN_RETRY_MAX_S = 0.1, 5.0


async def _no_reset(conn: Conn) -> None:
    """The pool's reset of a connection it takes back: nothing to do (see `Pool.open`)."""


class Pool:
    """An asyncpg pool that runs each store method as one transaction, translating driver errors."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: asyncpg.Pool | None = None
        self._foreground: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._channels: dict[str, list[Callable[[], None]]] = {}
        self._listener_lost = asyncio.Event()  #: set when the LISTEN connection closes
        self._watcher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        try:
            # No reset query when a connection goes back to the pool (asyncpg's default: one more round
            # trip per call): store calls leave no session state (their locks end with the transaction,
            # LISTEN has a connection of its own), and asyncpg still rolls back a transaction left open.
            self._pool = await asyncpg.create_pool(self.url, min_size=POOL_MIN, max_size=POOL_MAX,
                                                   reset=_no_reset)
            async with self._pool.acquire() as conn:
                await migrations.apply_postgres(conn)
            self._foreground = await asyncpg.create_pool(self.url, min_size=0, max_size=FOREGROUND_MAX,
                                                         reset=_no_reset)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            await self.close()
            raise base.StoreError(f"cannot open the PostgreSQL store: {exc}") from exc

    async def listen(self, channel: str, callback: Callable[[], None]) -> None:
        """Call `callback` whenever a transaction notifies `channel` (on a connection of its own).

        The connection is watched: when it is lost (its backend terminated, a PostgreSQL restart, a
        network drop noticed by the periodic check) it is opened again with backoff and LISTENs on every
        channel again, and then every callback is called once, since notices sent meanwhile were missed.
        """
        new_channel = channel not in self._channels
        self._channels.setdefault(channel, []).append(callback)
        if self._listener is None:
            self._listener = await self._connect_listener()
            self._watcher = asyncio.get_running_loop().create_task(self._watch_listener())
        elif new_channel:
            await self._listener.add_listener(channel, self._dispatch)

    async def _connect_listener(self) -> asyncpg.Connection:
        """A new LISTEN connection on every channel, which tells the watcher when it closes."""
        conn = await asyncpg.connect(self.url, timeout=LISTEN_CHECK_TIMEOUT_S)
        try:
            lost = self._listener_lost
            conn.add_termination_listener(lambda _conn: lost.set())
            for channel in self._channels:
                await conn.add_listener(channel, self._dispatch)
        except BaseException:
            conn.terminate()
            raise
        return conn

    def _dispatch(self, _conn: object, _pid: int, channel: str, _payload: str) -> None:
        for callback in self._channels.get(channel, ()):
            callback()

    async def _watch_listener(self) -> None:
        """Check the LISTEN connection (closed, or not answering a `SELECT 1` every LISTEN_CHECK_EVERY_S);
        when it is lost, reconnect (backoff LISTEN_RETRY_S doubling up to LISTEN_RETRY_MAX_S), then call
        every callback once."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._listener_lost.wait(), LISTEN_CHECK_EVERY_S)
            conn = self._listener
            if conn is None:
                return
            if not self._listener_lost.is_set() and not conn.is_closed():
                try:
                    await conn.fetchval("SELECT 1", timeout=LISTEN_CHECK_TIMEOUT_S)
                    continue
                except Exception as exc:  # noqa: BLE001 - whatever the driver says, the connection is no use
                    log.warning("LISTEN connection not answering (%r); reconnecting", exc)
            else:
                log.warning("LISTEN connection lost; reconnecting")
            conn.terminate()
            await self._reconnect_listener()

    async def _reconnect_listener(self) -> None:
        delay = LISTEN_RETRY_S
        attempt = 0
        while True:
            self._listener_lost = asyncio.Event()
            attempt += 1
            try:
                self._listener = await self._connect_listener()
                break
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                log.warning("LISTEN reconnect attempt %d failed (%r); next in %.1f s", attempt, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, LISTEN_RETRY_MAX_S)
        log.info("LISTEN connection back after %d attempt(s); catching up on missed notices", attempt)
        for callbacks in self._channels.values():
            for callback in callbacks:
                try:
                    callback()
                except Exception:
                    log.exception("a LISTEN callback failed")

    async def close(self) -> None:
        if self._watcher is not None:
            watcher, self._watcher = self._watcher, None
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if self._listener is not None:
            listener, self._listener = self._listener, None
            try:
                await listener.close(timeout=LISTEN_CHECK_TIMEOUT_S)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
                listener.terminate()  # lost or hung: nothing to close politely
        self._channels.clear()
        if self._foreground is not None:
            foreground, self._foreground = self._foreground, None
            await foreground.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise base.StoreError("the PostgreSQL store is not open (await store.start() first)")
        if self._foreground is not None and base.FOREGROUND.get():
            return self._foreground
        return self._pool

    async def run(self, body: Callable[[Conn], Awaitable[T]], *, readonly: bool = False,
                  notify: str | None = None) -> T:
        """Run `body(conn)` in one transaction; retried from the start after a deadlock. With `notify`,
        the commit also wakes every node listening on that channel (PostgreSQL delivers on commit)."""
        async def attempt() -> T:
            async with self.pool.acquire() as conn, conn.transaction(
                    isolation="repeatable_read" if readonly else "read_committed", readonly=readonly):
                result = await body(conn)
                if notify is not None:
                    await conn.execute("SELECT pg_notify($1, '')", notify)  # delivered on commit
                return result

        return await self._retrying(attempt)

    async def one(self, body: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `body(conn)`, which sends one statement (its own implicit transaction, so no BEGIN and
        COMMIT round trips), retried after a deadlock as `run` does."""
        async def attempt() -> T:
            async with self.pool.acquire() as conn:
                return await body(conn)

        return await self._retrying(attempt)

    @staticmethod
    async def _retrying(attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt()` (a whole transaction), again from the start after a deadlock or a serialization
        failure; driver errors become `StoreError`."""
        _CALL_STARTED.set(time.monotonic())
        for n in range(RETRIES):
            try:
                return await attempt()
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError) as exc:
                if n == RETRIES - 1:
                    raise base.StoreError(f"transaction kept conflicting: {exc}") from exc
                await asyncio.sleep(random.uniform(0, 0.005 * (n + 1)))
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                raise base.StoreError(str(exc)) from exc
        raise AssertionError("unreachable")

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """One read statement (a transaction of its own)."""
        try:
            return await self.pool.fetch(sql, *args)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise base.StoreError(str(exc)) from exc

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        try:
            return await self.pool.fetchrow(sql, *args)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise base.StoreError(str(exc)) from exc


async def lock_names_txn(conn: Conn, names: Iterable[str]) -> None:
    """Advisory-lock `names` until the transaction ends, in sorted order (see the module docstring)."""
    ordered = sorted(set(names))
    if ordered:
        await conn.fetchval(q.LOCK_NAMES, ordered)
