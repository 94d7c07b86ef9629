"""The SQLite connection's settings and its transaction machinery: group commit and background checkpoints."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator

from ratchet.server.store import base

# Pragmas, each with its reason:
PRAGMAS = (
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
#: How often the background checkpointer folds the WAL back into the database file.
CHECKPOINT_INTERVAL_S = 1.0


class Checkpointer:
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


class GroupCommit:
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


class OwnerLock:
    """An exclusive lock on `<db>.lock`: one server process per SQLite file. The OS drops it when the
    process dies (even by SIGKILL), so a restart after a crash is never blocked."""

    def __init__(self, db_path: str) -> None:
        self.path = db_path + ".lock"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise base.StoreError(f"the database {db_path} is in use by another Ratchet server process "
                                  "(one server per SQLite file; use PostgreSQL to run several)") from None

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
