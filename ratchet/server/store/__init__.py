"""Storage: the `Store` interface (`base`) and its backends, chosen by URL in `open_store`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ratchet.server.store import base

if TYPE_CHECKING:
    from ratchet.server.store.postgres import PostgresStore

POSTGRES_SCHEMES = ("postgres://", "postgresql://")


def open_store(url: str) -> base.Store:
    """Open a store from a URL: `sqlite:///path/to.db`, a bare path, or `postgresql://...`.

    A PostgreSQL store comes back unopened (opening it is async): `await store.start()` before use, or
    call `open_store_async`, which does both.
    """
    if url.startswith(POSTGRES_SCHEMES):
        return _postgres(url)
    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    from ratchet.server.store import sqlite  # lazy: backends import their drivers only when used

    return sqlite.SqliteStore(path)


async def open_store_async(url: str) -> base.Store:
    """`open_store`, opened and migrated, ready to use."""
    if url.startswith(POSTGRES_SCHEMES):
        store = _postgres(url)
        await store.start()
        return store
    return open_store(url)


def _postgres(url: str) -> PostgresStore:
    try:
        from ratchet.server.store import postgres  # lazy: asyncpg is the optional `postgres` extra
    except ImportError as exc:
        raise base.StoreError("the PostgreSQL backend needs asyncpg: pip install 'ratchet[postgres]'") from exc
    return postgres.PostgresStore(url)
