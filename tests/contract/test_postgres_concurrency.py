"""PostgreSQL only: several servers on one database (a SQLite file has one owner, so these have no
SQLite twin). Two stores with their own pools race on the same queue."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest

from ratchet import protocol
from ratchet.server.store import base
from tests.contract.conftest import pg_database
from tests.contract.test_store import LEASE, NOW, event, keyed_run, new_run


@pytest.fixture
async def two(pg_template: str) -> AsyncIterator[tuple[base.Store, base.Store]]:
    from ratchet.server.store.postgres import PostgresStore

    async with pg_database(pg_template) as url:
        a, b = await PostgresStore.connect(url), await PostgresStore.connect(url)
        yield a, b
        await a.close()
        await b.close()


async def test_concurrent_claims_never_lease_an_item_twice(two: tuple[base.Store, base.Store]) -> None:
    a, b = two
    await a.ingest([event()], [new_run(f"r{i:02}") for i in range(40)], NOW)
    ids: list[int] = []
    for _ in range(40):  # rounds of 16 racing claimers; a claimer may come back empty (rows skipped)
        claims = await asyncio.gather(*(store.claim_due(NOW, 3, f"node-{n}", LEASE)
                                        for n in range(8) for store in (a, b)))
        ids += [i.id for claim in claims for i in claim]
        if len(ids) >= 40:
            break
    assert len(ids) == len(set(ids)) == 40


async def test_concurrent_claims_and_applies_respect_a_concurrency_limit(two: tuple[base.Store, base.Store]) -> None:
    a, b = two
    await a.ingest([event()], [keyed_run(f"k{i:02}", limit=2) for i in range(12)], NOW)
    finished: list[str] = []
    peak = 0
    held: list[base.QueueItem] = []

    async def worker(store: base.Store, name: str) -> None:
        nonlocal peak
        for _ in range(60):
            if len(finished) == 12:
                return
            items = await store.claim_due(NOW, 2, name, LEASE)
            held.extend(items)  # leased: in flight until its apply starts (never overcounted)
            peak = max(peak, len(held))
            for item in items:
                await asyncio.sleep(0)
                held.remove(item)
                done = await store.apply(item, name, [base.FinishRun(protocol.RunStatus.COMPLETED, 1)], NOW, LEASE)
                assert done.accepted
                finished.append(item.run_id)
            await asyncio.sleep(0.001)

    await asyncio.gather(worker(a, "node-a"), worker(b, "node-b"), worker(a, "node-c"), worker(b, "node-d"))
    assert sorted(finished) == [f"k{i:02}" for i in range(12)]
    assert peak <= 2


async def test_a_rate_limit_holds_across_nodes_ingesting_at_once(two: tuple[base.Store, base.Store]) -> None:
    a, b = two
    flow = base.RunFlow(rate_limit=("tenant", 5, 60_000))  # 5 per minute for the key, cluster-wide

    def run(i: int) -> base.NewRun:
        return base.NewRun(id=f"r{i:02}", function_slug="app-f", app_id="app-1", event_ids=("ev1",),
                           idempotency_key=None, due_at=NOW, flow=flow)

    await a.ingest([event()], [], NOW)
    await asyncio.gather(*(store.ingest([], [run(i)], NOW) for i in range(30) for store in ((a, b)[i % 2],)))
    statuses = [(await a.get_run(f"r{i:02}")).status for i in range(30)]  # type: ignore[union-attr]
    assert statuses.count(protocol.RunStatus.QUEUED) == 5
    assert statuses.count(protocol.RunStatus.SKIPPED) == 25


async def test_a_throttle_spaces_runs_across_nodes_ingesting_at_once(two: tuple[base.Store, base.Store]) -> None:
    a, b = two
    flow = base.RunFlow(throttle=("t", 2, 1000, 1))  # 2 per second, evenly: one every 500 ms

    def run(i: int) -> base.NewRun:
        return base.NewRun(id=f"t{i:02}", function_slug="app-f", app_id="app-1", event_ids=("ev1",),
                           idempotency_key=None, due_at=NOW, flow=flow)

    await a.ingest([event()], [], NOW)
    await asyncio.gather(*(store.ingest([], [run(i)], NOW) for i in range(10) for store in ((a, b)[i % 2],)))
    starts = []
    for t in range(0, 5001, 250):
        starts += [t for _ in await a.claim_due(NOW + t, 10, "node-a", LEASE)]
    assert len(starts) == 10
    assert all(later - earlier >= 500 for earlier, later in itertools.pairwise(starts)), starts
