"""One Store suite over every backend: SQLite (a file per test) and PostgreSQL (a database per test).

PostgreSQL uses procrastinate's template-database fixture: the first worker of a test run builds
`ratchet_test_template` once (dropped first if left over, then migrated); each test gets
`CREATE DATABASE ratchet_t_<worker>_<n> TEMPLATE ratchet_test_template`, dropped afterwards. The server
is `RATCHET_TEST_PG_URL` (default 127.0.0.1:5432, user postgres, database test for admin work). When
it is unreachable the PostgreSQL tests skip locally but FAIL when `CI=true`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from ratchet.server.store import base, migrations, open_store
from tests import harness

#: "postgres-general": PostgreSQL with `apply` and `ingest` always on their general paths (separate
#: statements in a transaction), so both paths pass the suite (by default most writes take one round trip).
BACKENDS = ["sqlite", "postgres", "postgres-general"]

PG_URL = os.environ.get("RATCHET_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
TEMPLATE = "ratchet_test_template"
#: Serialises building the template between xdist workers (an advisory lock on the admin database).
TEMPLATE_LOCK = 0x52415443_48545401
_counter = itertools.count()


def pg_url(database: str) -> str:
    """`PG_URL` pointing at another database."""
    parts = urlsplit(PG_URL)
    return urlunsplit(parts._replace(path="/" + database))


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def pg_admin():  # type: ignore[no-untyped-def]
    import asyncpg

    return await asyncpg.connect(PG_URL, timeout=5)


async def _build_template(run_id: str) -> None:
    """Create and migrate the template once per test run: a worker that finds it tagged with this run's
    id reuses it; anything else (a leftover of an earlier run) is dropped and rebuilt."""
    admin = await pg_admin()
    try:
        await admin.execute("SELECT pg_advisory_lock($1)", TEMPLATE_LOCK)
        try:
            tag = await admin.fetchval("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                                       "WHERE datname = $1", TEMPLATE)
            if tag == run_id:
                return
            await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(TEMPLATE)} WITH (FORCE)")
            await admin.execute(f"CREATE DATABASE {quote_ident(TEMPLATE)}")
            conn = await _connect(TEMPLATE)
            try:
                await migrations.apply_postgres(conn)
            finally:
                await conn.close()
            await admin.execute(f"COMMENT ON DATABASE {quote_ident(TEMPLATE)} IS {_literal(run_id)}")
        finally:
            await admin.execute("SELECT pg_advisory_unlock($1)", TEMPLATE_LOCK)
    finally:
        await admin.close()


async def _connect(database: str):  # type: ignore[no-untyped-def]
    import asyncpg

    return await asyncpg.connect(pg_url(database), timeout=5)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _run_id(config: pytest.Config) -> str:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return str(workerinput["testrunuid"])
    if not hasattr(config, "_ratchet_run_id"):
        config._ratchet_run_id = uuid.uuid4().hex  # type: ignore[attr-defined]
    return config._ratchet_run_id  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def pg_template(request: pytest.FixtureRequest) -> Iterator[str]:
    """The migrated template database's name (built once per test run)."""
    try:
        import asyncpg  # noqa: F401

        # On a thread of its own: this fixture may be first requested from inside a running event loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, _build_template(_run_id(request.config))).result()
    except (TimeoutError, OSError, ImportError) as exc:
        harness.unavailable(f"PostgreSQL at {PG_URL} is unavailable: {exc!r}")
    yield TEMPLATE


@contextlib.asynccontextmanager
async def pg_database(template: str) -> AsyncIterator[str]:
    """A fresh database copied from `template`, dropped afterwards; yields its URL."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"ratchet_t_{worker}_{next(_counter)}"
    admin = await pg_admin()
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")  # a crashed run's
        await admin.execute(f"CREATE DATABASE {quote_ident(name)} TEMPLATE {quote_ident(template)}")
        yield pg_url(name)
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        await admin.close()


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[base.Store]:
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'ratchet.db'}")
        yield s
        await s.close()
        return
    from ratchet.server.store.postgres import PostgresStore

    async with pg_database(request.getfixturevalue("pg_template")) as url:
        s = PostgresStore(url, one_statement=request.param == "postgres")
        await s.start()
        yield s
        await s.close()
