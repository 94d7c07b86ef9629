"""The PostgreSQL store: several servers may share one database (the scale-out backend).

asyncpg with a pool; each public method is one transaction; row locks (`FOR UPDATE`, and `FOR UPDATE
SKIP LOCKED` for claiming) where read-modify-write happens. `store.py` the Store methods, `runs.py` run
creation and `apply`'s commands, `flow_control.py` the flow-control state, `connection.py` the pool,
transactions and locking scheme, `queries.py` every statement, `rows.py` the row mappers. Migrations
are in `store/migrations/postgres/`.
"""

from __future__ import annotations

from ratchet.server.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
