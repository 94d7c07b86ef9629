"""PostgreSQL only: several servers on one database (a SQLite file has one owner, so these have no
SQLite twin). Two stores with their own pools race on the same queue."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import AsyncIterator

import asyncpg
import pytest

from ratchet import protocol
from ratchet.server.store import base
from tests.contract.test_store import LEASE, NOW, event, keyed_run, new_run


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


# Flow control decided at ingest, with both nodes accepting events for the same key at the same time: each
# key's state must come out as if the events had arrived one by one (no lost event, no second timer, no
# second run).

RACERS = 40


def flow_run(i: int, flow: base.RunFlow | None, key: str | None = None) -> base.NewRun:
    return base.NewRun(id=f"r{i:02}", function_slug="app-f", app_id="app-1", event_ids=(f"ev{i:02}",),
                       idempotency_key=key, due_at=NOW, flow=flow)


async def race_ingest(two: tuple[base.Store, base.Store], runs: list[base.NewRun], now: int = NOW) -> list[str]:
    """Ingest each run with its own event, alternating between the two stores, all at once; the runs created."""
    created = await asyncio.gather(*((two[i % 2]).ingest([event(run.event_ids[0])], [run], now)
                                     for i, run in enumerate(runs)))
    return [run_id for ids in created for run_id in ids]


async def queue_rows(store: base.Store, kind: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(store.url)  # type: ignore[attr-defined]
    try:
        return await conn.fetch("SELECT run_id, due_at FROM queue WHERE kind = $1", kind)
    finally:
        await conn.close()


async def test_a_debounce_holds_one_event_and_one_timer_across_nodes_ingesting_at_once(
        two: tuple[base.Store, base.Store]) -> None:
    a, b = two
    flow = base.RunFlow(debounce=("d", 1000, None))
    assert await race_ingest(two, [flow_run(i, flow) for i in range(RACERS)]) == []  # no run yet
    pending = await a.get_pending(base.ItemKind.DEBOUNCE, "d")
    assert pending is not None and pending.fire_at == NOW + 1000
    assert len(pending.event_ids) == 1 and pending.event_ids[0] in {f"ev{i:02}" for i in range(RACERS)}
    assert [tuple(r) for r in await queue_rows(a, base.ItemKind.DEBOUNCE)] == [("debounce:d", NOW + 1000)]
    # Both nodes' timers race: the run starts once.
    claims = await asyncio.gather(a.claim_due(NOW + 1000, 10, "node-a", LEASE),
                                  b.claim_due(NOW + 1000, 10, "node-b", LEASE))
    (item, owner), = [(i, name) for claim, name in zip(claims, ("node-a", "node-b"), strict=True) for i in claim]
    run = base.NewRun(id="debounced", function_slug="app-f", app_id="app-1", event_ids=pending.event_ids,
                      idempotency_key=None, due_at=NOW + 1000)
    fired = await asyncio.gather(a.fire_pending(item, owner, pending, run, NOW + 1000),
                                 b.fire_pending(item, owner, pending, run, NOW + 1000), return_exceptions=True)
    assert fired.count(True) == 1, fired
    assert (await a.get_run("debounced")) is not None
    assert await a.get_pending(base.ItemKind.DEBOUNCE, "d") is None
    assert await queue_rows(a, base.ItemKind.DEBOUNCE) == []


async def test_a_batch_keeps_every_event_once_across_nodes_ingesting_at_once(
        two: tuple[base.Store, base.Store]) -> None:
    a, _ = two
    n, size = 95, 10
    flow = base.RunFlow(batch=("b", size, 60_000))
    created = await asyncio.gather(*((two[i % 2]).ingest([event(f"ev{i:02}")], [flow_run(i, flow)], NOW)
                                     for i in range(n)))
    started = [run_id for ids in created for run_id in ids]
    assert len(started) == n // size  # each full batch started one run
    runs = [await a.get_run(run_id) for run_id in started]
    assert all(r is not None and len(r.event_ids) == size for r in runs), runs
    batched = [eid for r in runs if r is not None for eid in r.event_ids]
    pending = await a.get_pending(base.ItemKind.BATCH, "b")
    assert pending is not None and len(pending.event_ids) == n % size
    every = batched + list(pending.event_ids)
    assert sorted(every) == [f"ev{i:02}" for i in range(n)]  # every event exactly once, none lost
    assert len(await queue_rows(a, base.ItemKind.BATCH)) == 1  # the open batch's one timer


async def test_a_singleton_skips_all_but_one_run_across_nodes_ingesting_at_once(
        two: tuple[base.Store, base.Store]) -> None:
    a, _ = two
    flow = base.RunFlow(singleton=("s", "skip"))
    await race_ingest(two, [flow_run(i, flow) for i in range(RACERS)])
    statuses = [(await a.get_run(f"r{i:02}")).status for i in range(RACERS)]  # type: ignore[union-attr]
    assert statuses.count(protocol.RunStatus.QUEUED) == 1, statuses
    assert statuses.count(protocol.RunStatus.SKIPPED) == RACERS - 1, statuses


async def test_a_cancelling_singleton_leaves_one_live_run_across_nodes_ingesting_at_once(
        two: tuple[base.Store, base.Store]) -> None:
    a, _ = two
    flow = base.RunFlow(singleton=("s", "cancel"))
    await race_ingest(two, [flow_run(i, flow) for i in range(RACERS)])
    statuses = [(await a.get_run(f"r{i:02}")).status for i in range(RACERS)]  # type: ignore[union-attr]
    assert statuses.count(protocol.RunStatus.QUEUED) == 1, statuses
    assert statuses.count(protocol.RunStatus.CANCELLED) == RACERS - 1, statuses


@pytest.mark.parametrize("plain", [True, False], ids=["one-statement-ingest", "general-ingest"])
async def test_an_idempotency_key_starts_one_run_across_nodes_ingesting_at_once(
        two: tuple[base.Store, base.Store], plain: bool) -> None:
    a, _ = two
    # A rate limit that admits everything sends the runs down the general ingest path.
    flow = None if plain else base.RunFlow(rate_limit=("roomy", 1000, 60_000))
    created = await race_ingest(two, [flow_run(i, flow, key="f\x00same") for i in range(RACERS)])
    assert len(created) == 1, created
    runs = [await a.get_run(f"r{i:02}") for i in range(RACERS)]
    assert [r.id for r in runs if r is not None] == created
    # Once the key has expired, racing nodes again start exactly one run with it.
    day = 24 * 3600 * 1000
    later = [dataclasses.replace(flow_run(i, flow, key="f\x00same"), id=f"x{i:02}") for i in range(RACERS)]
    assert len(await race_ingest(two, later, NOW + day)) == 1
