"""Versioned schema migrations: numbered `.sql` files per backend, applied in order at start-up."""

from __future__ import annotations

import sqlite3
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the driver is an optional extra, imported by the PostgreSQL backend only
    import asyncpg

#: The advisory lock that serialises migrations when several servers start against one database.
PG_MIGRATION_LOCK = 0x52415443_48455401  # "RATCHET" + 1


def _files(backend: str) -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration of `backend`, in version order."""
    folder = resources.files(__package__).joinpath(backend)
    out = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            out.append((int(entry.name.split("_", 1)[0]), entry.name, entry.read_text()))
    return sorted(out)


def apply_sqlite(db: sqlite3.Connection) -> list[str]:
    """Apply the SQLite migrations not yet applied; returns the names applied."""
    db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
               "applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)")
    done = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
    applied = []
    for version, name, sql in _files("sqlite"):
        if version in done:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(sql):
                db.execute(statement)
            db.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", (version, name))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        applied.append(name)
    return applied


async def apply_postgres(conn: asyncpg.Connection) -> list[str]:
    """Apply the PostgreSQL migrations not yet applied, each in its own transaction; returns the names
    applied. A session advisory lock makes concurrent starts wait for the first one's migrations."""
    await conn.execute("SELECT pg_advisory_lock($1)", PG_MIGRATION_LOCK)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                           "name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        done = {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for version, name, sql in _files("postgres"):
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)  # a whole file: asyncpg runs a multi-statement script as is
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
            applied.append(name)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", PG_MIGRATION_LOCK)


def _statements(sql: str) -> list[str]:
    """Split a migration file into statements, line by line, using SQLite's own notion of a complete
    statement (so a trigger body's inner `;` does not end it)."""
    out, buf = [], ""
    for line in sql.splitlines():
        if not buf and (not line.strip() or line.strip().startswith("--")):
            continue
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        raise ValueError(f"migration ends inside a statement: {buf.strip()[:80]!r}")
    return out
