"""PostgreSQL only: several servers on one database (a SQLite file has one owner, so these have no
SQLite twin). Two stores with their own pools race on the same queue."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator

import asyncpg
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


# Leases granted after a wait. A claim or an apply can wait long for the advisory lock of a busy
# concurrency key (every call of the key takes it) or for a pooled connection. A lease counted from the
# caller's `now` alone could then be nearly over, or over, when it is granted: another node would take
# over a call still in flight. A wait longer than a quarter of the lease stretches it by the excess.

SHORT_LEASE = 800
HOLD_S = 0.6


@contextlib.asynccontextmanager
async def key_locked(store: base.Store, key: str) -> AsyncIterator[None]:
    """Hold concurrency key `key`'s advisory lock from another connection (as a busy node would)."""
    conn = await asyncpg.connect(store.url)  # type: ignore[attr-defined]
    try:
        await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", f"concurrency:{key}")
        yield
    finally:
        await conn.close()


async def _after(delay: float, cm: contextlib.AbstractAsyncContextManager[None], started: asyncio.Event) -> None:
    async with cm:
        started.set()
        await asyncio.sleep(delay)


async def test_a_claim_that_waited_for_a_busy_key_gets_a_stretched_lease(two: tuple[base.Store, base.Store]) -> None:
    a, _ = two
    await a.ingest([event()], [keyed_run("k1")], NOW)
    locked = asyncio.Event()
    holder = asyncio.create_task(_after(HOLD_S, key_locked(a, "tenant-a"), locked))
    await locked.wait()
    (item,) = await a.claim_due(NOW, 10, "node-a", SHORT_LEASE)  # waits about HOLD_S for the key
    await holder
    assert item.lease_until is not None
    assert item.lease_until >= NOW + SHORT_LEASE + int(HOLD_S * 1000) - SHORT_LEASE // 4 - 50


async def test_a_follow_up_granted_after_waiting_for_a_busy_key_gets_a_stretched_lease(
        two: tuple[base.Store, base.Store]) -> None:
    a, _ = two
    await a.ingest([event()], [keyed_run("k1")], NOW)
    (item,) = await a.claim_due(NOW, 10, "node-a", SHORT_LEASE)
    assert item.lease_until == NOW + SHORT_LEASE  # no wait: exactly the lease
    locked = asyncio.Event()
    holder = asyncio.create_task(_after(HOLD_S, key_locked(a, "tenant-a"), locked))
    await locked.wait()
    save = base.SaveStep("h1", "s1", "StepRun", base.StepStatus.COMPLETED, {"data": 1}, NOW, NOW)
    applied = await a.apply(item, "node-a", [save, base.Enqueue("step", NOW)], NOW, SHORT_LEASE)
    await holder
    (ready,) = applied.ready
    assert ready.lease_until is not None
    assert ready.lease_until >= NOW + SHORT_LEASE + int(HOLD_S * 1000) - SHORT_LEASE // 4 - 50


async def test_the_heartbeat_does_not_wait_for_a_locked_item(two: tuple[base.Store, base.Store]) -> None:
    a, _ = two
    await a.ingest([event()], [new_run("r1"), new_run("r2")], NOW)
    first, second = await a.claim_due(NOW, 10, "node-a", LEASE)
    conn = await asyncpg.connect(a.url)  # type: ignore[attr-defined]
    try:
        async with conn.transaction():  # e.g. an apply of `first` waiting for a busy key's lock
            await conn.execute("SELECT 1 FROM queue WHERE id = $1 FOR UPDATE", first.id)
            # the other call's lease is renewed at once, not after the locked one is released
            assert await asyncio.wait_for(a.extend_leases("node-a", NOW + 2 * LEASE), 5) == 1
    finally:
        await conn.close()
    assert await a.extend_leases("node-a", NOW + 2 * LEASE) == 1  # the one that was locked
    assert await a.claim_due(NOW + LEASE, 10, "node-b", LEASE) == []  # both renewed
    assert second.run_id in {"r1", "r2"}
