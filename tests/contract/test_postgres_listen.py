"""PostgreSQL only: a node's LISTEN connection (other nodes' syncs and new work) survives being lost."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable

import asyncpg
import pytest

from ratchet.server import registry
from ratchet.server.store import base
from ratchet.server.store.postgres import connection
from tests.contract.test_store import NOW, app_record, event, fn_record, new_run

DEADLINE_S = 10.0


def listener_pid(store: base.Store) -> int:
    conn = store._pool._listener  # type: ignore[attr-defined]
    assert conn is not None and not conn.is_closed()
    return int(conn.get_server_pid())


async def terminate(store: base.Store, pid: int) -> None:
    admin = await asyncpg.connect(store.url)  # type: ignore[attr-defined]
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_a_node_still_hears_syncs_and_work_after_its_listen_backend_is_terminated(
        two: tuple[base.Store, base.Store], caplog: pytest.LogCaptureFixture) -> None:
    a, b = two
    caplog.set_level(logging.INFO, logger="ratchet.store")
    functions = registry.Registry(b)  # what node b knows, reloaded on each sync it hears (as services.py does)
    reloads: set[asyncio.Task[None]] = set()
    heard = {"work": 0, "sync": 0}

    def on_work() -> None:
        heard["work"] += 1

    def on_sync() -> None:
        heard["sync"] += 1
        task = asyncio.get_running_loop().create_task(functions.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    await b.subscribe(on_work, on_sync)
    pid = listener_pid(b)
    await terminate(b, pid)

    # Reconnected, and each callback called once for the notices it may have missed.
    await until(lambda: heard == {"work": 1, "sync": 1}, "the callbacks after the reconnect")
    assert listener_pid(b) != pid
    assert "LISTEN connection lost" in caplog.text and "LISTEN connection back" in caplog.text

    # A sync through the other node is heard, so this node learns the new function.
    await a.sync_app(app_record(), [fn_record("app-new")])
    await until(lambda: functions.get("app-new") is not None, "node b to learn the function synced on a")
    assert heard["sync"] == 2
    await a.ingest([event()], [new_run()], NOW)
    await until(lambda: heard["work"] == 2, "node b to hear the work queued on a")

    # And again: a second loss is handled like the first.
    await terminate(b, listener_pid(b))
    await until(lambda: heard == {"work": 3, "sync": 3}, "the callbacks after the second reconnect")
    await a.sync_app(app_record(checksum="c2"), [fn_record("app-new"), fn_record("app-newer")])
    await until(lambda: functions.get("app-newer") is not None, "node b to learn the second sync")


async def test_a_listen_connection_that_stops_answering_is_replaced(
        two: tuple[base.Store, base.Store], monkeypatch: pytest.MonkeyPatch) -> None:
    # A connection whose socket reports nothing (a network drop) is found by the periodic check.
    a, b = two
    monkeypatch.setattr(connection, "LISTEN_CHECK_EVERY_S", 0.05)
    monkeypatch.setattr(connection, "LISTEN_CHECK_TIMEOUT_S", 0.2)
    heard = {"sync": 0}
    await b.subscribe(lambda: None, lambda: heard.__setitem__("sync", heard["sync"] + 1))
    stuck = b._pool._listener  # type: ignore[attr-defined]
    locker = await asyncpg.connect(a.url)  # type: ignore[attr-defined]
    try:
        # The check's `SELECT 1` cannot answer while the connection waits on a lock held elsewhere.
        await locker.execute("SELECT pg_advisory_lock(42)")
        waiting = asyncio.get_running_loop().create_task(stuck.execute("SELECT pg_advisory_lock(42)"))
        await until(lambda: b._pool._listener is not stuck, "the stuck connection to be replaced")  # type: ignore[attr-defined]
        await until(lambda: heard["sync"] == 1, "the callbacks after the reconnect")
        await asyncio.gather(waiting, return_exceptions=True)
        await a.sync_app(app_record(), [fn_record()])
        await until(lambda: heard["sync"] == 2, "the sync heard on the new connection")
    finally:
        await locker.close()


async def test_reconnecting_backs_off_until_the_server_is_back(
        two: tuple[base.Store, base.Store], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = two
    heard = {"sync": 0}
    await b.subscribe(lambda: None, lambda: heard.__setitem__("sync", heard["sync"] + 1))
    real_connect = asyncpg.connect
    admin = await real_connect(a.url)  # type: ignore[attr-defined]
    attempts: list[float] = []

    async def refused(*args: object, **kwargs: object) -> asyncpg.Connection:
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) <= 3:
            raise ConnectionRefusedError("the server is restarting")
        return await real_connect(*args, **kwargs)

    monkeypatch.setattr(connection.asyncpg, "connect", refused)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", listener_pid(b))
    finally:
        await admin.close()
    await until(lambda: heard["sync"] == 1, "the reconnect after three refusals")
    assert len(attempts) == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert gaps[1] > gaps[0] * 1.5 and gaps[2] > gaps[1] * 1.5, gaps  # backs off
    await a.sync_app(app_record(), [fn_record()])
    await until(lambda: heard["sync"] == 2, "the sync heard on the new connection")
