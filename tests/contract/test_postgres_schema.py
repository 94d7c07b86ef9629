"""Schema drift (procrastinate's test): the PostgreSQL migrations build exactly the declared schema.

One database is migrated by `migrations.apply_postgres` (the template every contract test copies), one
is built from `store/postgres/schema.sql`; their tables, columns, constraints, indexes and functions must match.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from ratchet.server.store import migrations
from tests.contract.conftest import _connect, pg_database

#: Columns: table, name, type, nullability, default, identity.
COLUMNS = ("SELECT table_name, column_name, data_type, is_nullable, column_default, is_identity "
           "FROM information_schema.columns WHERE table_schema = 'public' AND table_name != 'schema_migrations' "
           "ORDER BY table_name, column_name")
#: Constraints (primary keys, uniques, foreign keys, checks) by definition.
CONSTRAINTS = ("SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
               "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'public' "
               "AND c.conrelid::regclass::text != 'schema_migrations' ORDER BY 1, 2")
#: Indexes by definition (names included: migrations refer to them).
INDEXES = ("SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
           "AND tablename != 'schema_migrations' ORDER BY tablename, indexname")

#: Functions of the schema (not of extensions) by their whole definition.
FUNCTIONS = ("SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
             "WHERE n.nspname = 'public' AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid "
             "AND d.deptype = 'e') ORDER BY 1, 2")


async def _shape(database: str) -> dict[str, list[tuple[Any, ...]]]:
    conn = await _connect(database)
    try:
        return {name: [tuple(r) for r in await conn.fetch(sql)]
                for name, sql in (("columns", COLUMNS), ("constraints", CONSTRAINTS), ("indexes", INDEXES),
                                  ("functions", FUNCTIONS))}
    finally:
        await conn.close()


async def test_migrations_build_the_declared_schema(pg_template: str) -> None:
    declared = resources.files("ratchet.server.store.postgres").joinpath("schema.sql").read_text()
    # A copy of the template, never the template itself: a session on it would block other workers'
    # `CREATE DATABASE ... TEMPLATE`.
    async with pg_database(pg_template) as migrated_url, pg_database("template0") as built_url:
        conn = await _connect(_name(built_url))
        try:
            await conn.execute(declared)
        finally:
            await conn.close()
        migrated, built = await _shape(_name(migrated_url)), await _shape(_name(built_url))
    assert migrated["columns"], "the migrated database has no tables"
    assert [name for name, _ in migrated["functions"]] == ["ratchet_apply", "ratchet_apply_many", "ratchet_claim"]
    for part in ("columns", "constraints", "indexes", "functions"):
        assert migrated[part] == built[part], f"{part} differ between the migrations and schema.sql"


async def test_migrations_are_recorded_and_applied_once(pg_template: str) -> None:
    async with pg_database(pg_template) as url:
        conn = await _connect(_name(url))
        try:
            versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")]
            assert versions == [v for v, _, _ in migrations._files("postgres")]
            assert await migrations.apply_postgres(conn) == []  # up to date: applying again changes nothing
        finally:
            await conn.close()


def _name(url: str) -> str:
    return url.rsplit("/", 1)[1]
