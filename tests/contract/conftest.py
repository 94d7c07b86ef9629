"""One Store suite over every backend: SQLite (a file per test) and PostgreSQL (a database per test).

PostgreSQL uses procrastinate's template-database fixture: the first session that needs it builds
`ratchet_test_template_<digest of the migrations>` once; each test gets `CREATE DATABASE
ratchet_t_<pid>_<n> TEMPLATE ...`, dropped afterwards, so sessions running at once never touch each
other's databases. The server
is `RATCHET_TEST_PG_URL` (default 127.0.0.1:5432, user postgres, database test for admin work). When
it is unreachable the PostgreSQL tests skip locally but FAIL when `CI=true`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import itertools
import os
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


def _template_name() -> str:
    """The template's name carries a digest of the migrations: test sessions running at once (two
    developers' runs, a helper's) share a template built from the same migrations and never drop one
    another's, and a changed migration gets a template of its own."""
    digest = hashlib.sha256()
    for _version, name, sql in migrations._files("postgres"):
        digest.update(name.encode() + b"\0" + sql.encode() + b"\0")
    return f"{TEMPLATE}_{digest.hexdigest()[:12]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _build_template(template: str) -> None:
    """Create and migrate the template unless it exists (built under a temporary name and renamed, so
    no session ever copies a half-built one). Also drops what crashed sessions left: test databases of
    processes no longer alive, and templates of other migrations nobody is using."""
    admin = await pg_admin()
    try:
        await admin.execute("SELECT pg_advisory_lock($1)", TEMPLATE_LOCK)
        try:
            names = [r[0] for r in await admin.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'ratchet\\_%'")]
            for name in names:
                parts = name.split("_")
                if name.startswith("ratchet_t_") and len(parts) == 4 and parts[2].isdigit() and not _alive(int(parts[2])):
                    await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
                elif name.startswith(TEMPLATE) and name != template:
                    with contextlib.suppress(Exception):  # in use: another session's migrations
                        await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)}")
            if template in names:
                return
            building = f"ratchet_building_{os.getpid()}"
            await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(building)} WITH (FORCE)")
            await admin.execute(f"CREATE DATABASE {quote_ident(building)}")
            conn = await _connect(building)
            try:
                await migrations.apply_postgres(conn)
            finally:
                await conn.close()
            await admin.execute(f"ALTER DATABASE {quote_ident(building)} RENAME TO {quote_ident(template)}")
        finally:
            await admin.execute("SELECT pg_advisory_unlock($1)", TEMPLATE_LOCK)
    finally:
        await admin.close()


async def _connect(database: str):  # type: ignore[no-untyped-def]
    import asyncpg

    return await asyncpg.connect(pg_url(database), timeout=5)


@pytest.fixture(scope="session")
def pg_template(request: pytest.FixtureRequest) -> Iterator[str]:
    """The migrated template database's name (built by the first session that needs it)."""
    template = _template_name()
    try:
        import asyncpg  # noqa: F401

        # On a thread of its own: this fixture may be first requested from inside a running event loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, _build_template(template)).result()
    except (TimeoutError, OSError, ImportError) as exc:
        harness.unavailable(f"PostgreSQL at {PG_URL} is unavailable: {exc!r}")
    yield template


@contextlib.asynccontextmanager
async def pg_database(template: str) -> AsyncIterator[str]:
    """A fresh database copied from `template`, dropped afterwards; yields its URL."""
    name = f"ratchet_t_{os.getpid()}_{next(_counter)}"  # unique among sessions running at once
    admin = await pg_admin()
    try:
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


@pytest.fixture
async def two(pg_template: str) -> AsyncIterator[tuple[base.Store, base.Store]]:
    """Two PostgreSQL stores (two nodes) on one fresh database."""
    from ratchet.server.store.postgres import PostgresStore

    async with pg_database(pg_template) as url:
        a, b = await PostgresStore.connect(url), await PostgresStore.connect(url)
        yield a, b
        await a.close()
        await b.close()
