"""PostgreSQL only: applies at the same moment are written in batches (`store/postgres/batch.py`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ratchet.server.store import base
from tests.contract.conftest import pg_database
from tests.contract.test_store import LEASE, NOW, OWNER, app_record, event, fn_record, new_run, save


@pytest.fixture
async def pg(pg_template: str) -> AsyncIterator[base.Store]:
    from ratchet.server.store.postgres import PostgresStore

    async with pg_database(pg_template) as url:
        store = await PostgresStore.connect(url)
        yield store
        await store.close()


async def test_an_outcome_that_cannot_be_written_fails_alone(pg: base.Store) -> None:
    """One outcome of a batch that PostgreSQL refuses (a lease time past BIGINT) fails for its caller; the
    others of the same batch are applied."""
    await pg.sync_app(app_record(), [fn_record()])
    await pg.ingest([event(f"ev{n}") for n in range(5)], [new_run(f"run{n}", f"ev{n}") for n in range(5)], NOW)
    items = sorted(await pg.claim_due(NOW, 10, OWNER, LEASE), key=lambda i: i.run_id)
    assert len(items) == 5
    results = await asyncio.gather(*(
        pg.apply(item, OWNER, [save("h1", n), base.Enqueue("step", NOW)], NOW, 2**63 if n == 2 else LEASE)
        for n, item in enumerate(items)), return_exceptions=True)
    assert isinstance(results[2], Exception), results[2]
    assert all(isinstance(r, base.Applied) and r.accepted for n, r in enumerate(results) if n != 2), results
    assert await pg.get_steps("run2") == []  # nothing of the refused outcome was written
    assert [s.memo for s in await pg.get_steps("run4")] == [{"data": 4}]
