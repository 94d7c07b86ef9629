from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import harness

APP = Path(__file__).parent / "apps" / "durable_app.py"
FUNCTIONS = ("e2e-sleep", "e2e-block", "e2e-many")


class E2EEnv:
    def __init__(self, stack: harness.Stack, marks: Path) -> None:
        self.stack = stack
        self.server = stack.server
        self.api = stack.api
        self.marks = marks

    def count(self, run_id: str, label: str) -> int:
        """How many times the app ran `label` for `run_id`."""
        path = self.marks / f"{run_id}.{label}"
        return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture
def e2e(tmp_path: Path) -> Iterator[E2EEnv]:
    """A fresh `ratchet dev` (own SQLite file) with the official-SDK durable app; both killed afterwards."""
    marks = tmp_path / "marks"
    marks.mkdir()
    with harness.Stack(tmp_path, APP, env={"E2E_DIR": str(marks)}) as stack:
        stack.start(FUNCTIONS)
        yield E2EEnv(stack, marks)


PRIMITIVES_APP = Path(__file__).parent / "apps" / "primitives_app.py"
PRIMITIVES = ("e2e-prim-batch", "e2e-prim-waiter", "e2e-prim-short-wait", "e2e-prim-child", "e2e-prim-parent", "e2e-prim-parallel",
              "e2e-prim-cron")


@pytest.fixture
def e2e_prim(tmp_path: Path) -> Iterator[E2EEnv]:
    """Like `e2e`, with the app of waits, invoke, parallel steps and cron (`apps/primitives_app.py`)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    with harness.Stack(tmp_path, PRIMITIVES_APP, env={"E2E_DIR": str(marks)}) as stack:
        stack.start(PRIMITIVES)
        yield E2EEnv(stack, marks)


#: The PostgreSQL server of the dev and CI machines (admin connection; databases are made per test).
PG_ADMIN = os.environ.get("RATCHET_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def pg_db() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (its URL), dropped afterwards; skips when the server is
    unreachable, but fails on CI (`harness.unavailable`)."""
    import asyncpg

    name = f"ratchet_e2e_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        harness.unavailable(f"PostgreSQL unreachable: {exc!r}")
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
