"""Storage: the `Store` interface (`base`) and its backends, chosen by URL in `open_store`."""

from __future__ import annotations

from ratchet.server.store import base


def open_store(url: str) -> base.Store:
    """Open a store from a URL: `sqlite:///path/to.db`, a bare path, or (later) `postgresql://...`."""
    if url.startswith(("postgres://", "postgresql://")):
        raise base.StoreError("the PostgreSQL backend is not available yet")
    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    from ratchet.server.store import sqlite  # lazy: backends import their drivers only when used

    return sqlite.SqliteStore(path)
