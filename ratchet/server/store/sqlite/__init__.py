"""The embedded SQLite store (the default backend).

One connection, used only from the event loop's thread. Every method runs its SQL without awaiting in
between, so a method is one transaction and two methods never interleave. Calling sqlite3 directly on
the loop (instead of through a thread pool such as aiosqlite) is deliberate: a WAL commit with
synchronous=NORMAL costs ~12 µs here, far less than a thread hop, and a single writer is what SQLite
wants anyway. A server owns its SQLite file alone; scale-out uses the PostgreSQL backend.
"""

from __future__ import annotations

from ratchet.server.store.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
