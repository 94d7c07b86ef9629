"""`ratchet dev --postgres-uri`: the real CLI on PostgreSQL with an official-SDK app, including a
SIGKILL during a sleep. Needs the PostgreSQL server of the dev and CI machines (fails under CI=true
when it is unreachable, skips elsewhere)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from tests import harness

pytestmark = pytest.mark.e2e

APP = Path(__file__).parent / "apps" / "durable_app.py"
PRIMITIVES_APP = Path(__file__).parent / "apps" / "primitives_app.py"


def test_dev_on_postgres_survives_a_kill9_during_a_sleep(tmp_path: Path, pg_db: str) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    server = harness.ServerProcess(tmp_path / "unused.db", tmp_path / "server.log",
                                   extra_args=["--postgres-uri", pg_db])
    app = harness.AppProcess(APP, tmp_path / "app.log",
                             env={**harness.sdk_env(server.url), "E2E_DIR": str(marks)})
    try:
        app.start()
        server.app_urls = [app.url]
        server.start()
        api = harness.Api(server.url)
        harness.wait_synced(api, ["e2e-sleep"])
        run_id = harness.send_and_get_run(api, "e2e/sleep")
        harness.wait_until(lambda: any(s["id"] == "nap" for s in api.run(run_id)["steps"]), 10, "the sleep")
        server.kill9()
        server.restart()  # a new node on the same database: the dead one's lease runs out, then it resumes
        run = harness.wait_run(api, run_id, "COMPLETED", timeout=30)
        assert [s["id"] for s in run["steps"]] == ["before", "nap", "after"]
        assert not (tmp_path / "unused.db").exists()
    finally:
        server.stop()
        app.stop()


def test_two_nodes_share_one_database(tmp_path: Path, pg_db: str) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    a = harness.ServerProcess(tmp_path / "a.db", tmp_path / "a.log", extra_args=["--postgres-uri", pg_db])
    b = harness.ServerProcess(tmp_path / "b.db", tmp_path / "b.log", extra_args=["--postgres-uri", pg_db])
    app = harness.AppProcess(APP, tmp_path / "app.log", env={**harness.sdk_env(a.url), "E2E_DIR": str(marks)})
    try:
        app.start()
        a.app_urls = [app.url]
        a.start()
        b.start()  # b never syncs the app itself: it learns the functions from a's sync (NOTIFY)
        api_a, api_b = harness.Api(a.url), harness.Api(b.url)
        harness.wait_synced(api_b, ["e2e-many"])
        # events go to both nodes; every run must complete, each step recorded once
        ids = []
        for i in range(40):
            api = api_a if i % 2 else api_b
            ids += api.send([{"name": "e2e/many", "data": {"n": 3, "i": i}}])
        runs = [r for eid in ids for r in harness.wait_runs_for_event(api_a, eid)]
        for run_id in runs:
            run = harness.wait_run(api_b, run_id, "COMPLETED", timeout=30)
            assert run["output"] == 6 and [s["id"] for s in run["steps"]] == ["double"], run
    finally:
        a.stop()
        b.stop()
        app.stop()


def test_a_dead_nodes_calls_are_taken_over_after_its_lease(tmp_path: Path, pg_db: str) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    lease = ["--postgres-uri", pg_db, "--lease-seconds", "2"]
    a = harness.ServerProcess(tmp_path / "a.db", tmp_path / "a.log", extra_args=lease)
    b = harness.ServerProcess(tmp_path / "b.db", tmp_path / "b.log", extra_args=lease)
    app = harness.AppProcess(APP, tmp_path / "app.log", env={**harness.sdk_env(a.url), "E2E_DIR": str(marks)})
    try:
        app.start()
        a.app_urls = [app.url]
        a.start()
        api = harness.Api(a.url)
        harness.wait_synced(api, ["e2e-block"])
        run_id = harness.send_and_get_run(api, "e2e/block")
        # the slow step is in flight on node a (the only node so far): kill a there
        harness.wait_until(lambda: (marks / f"{run_id}.slow-started-1").exists(), 10, "the slow step to start")
        a.kill9()
        b.start()  # b sees a's lease still live, waits it out (2 s), then calls again
        (marks / "release").touch()
        api_b = harness.Api(b.url)
        run = harness.wait_run(api_b, run_id, "COMPLETED", timeout=30)
        assert [s["id"] for s in run["steps"]] == ["first", "slow", "last"]
        assert run["output"]["slow"] == "slow-2"  # a's call died with a; b's call is the one recorded
    finally:
        a.stop()
        b.stop()
        app.stop()


async def _listening_backends(url: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                "AND query LIKE 'LISTEN %' AND pid <> pg_backend_pid()")
        return [r[0] for r in rows]
    finally:
        await conn.close()


async def _terminate(url: str, pids: list[int]) -> None:
    conn = await asyncpg.connect(url)
    try:
        for pid in pids:
            await conn.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


def test_a_node_hears_other_nodes_syncs_after_losing_its_listen_connection(tmp_path: Path, pg_db: str) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    (marks / "release").touch()  # the parallel steps of the second app need not wait
    a = harness.ServerProcess(tmp_path / "a.db", tmp_path / "a.log", extra_args=["--postgres-uri", pg_db])
    b = harness.ServerProcess(tmp_path / "b.db", tmp_path / "b.log", extra_args=["--postgres-uri", pg_db])
    app = harness.AppProcess(APP, tmp_path / "app.log", env={**harness.sdk_env(a.url), "E2E_DIR": str(marks)})
    later = harness.AppProcess(PRIMITIVES_APP, tmp_path / "later.log",
                               env={**harness.sdk_env(a.url), "E2E_DIR": str(marks)})
    try:
        app.start()
        later.start()
        a.app_urls = [app.url]
        a.start()
        b.start()
        api_a, api_b = harness.Api(a.url), harness.Api(b.url)
        harness.wait_synced(api_b, ["e2e-many"])
        # Both nodes' LISTEN connections are cut (as pg_terminate_backend or a PostgreSQL restart would).
        pids = harness.wait_until(lambda: (p := asyncio.run(_listening_backends(pg_db))) and len(p) == 2 and p,
                                  10, "both nodes to LISTEN")
        asyncio.run(_terminate(pg_db, pids))
        harness.wait_until(lambda: "LISTEN connection back" in b.log_path.read_text(errors="replace"), 15,
                           "node b to reconnect its LISTEN connection")
        # An app synced through node a afterwards: node b learns its functions and starts their runs.
        resp = api_a.http.post("/v1/apps/sync", json={"url": later.url})
        assert resp.status_code == 200, resp.text
        (event_id,) = api_b.send([{"name": "e2e/parallel", "data": {}}])
        (run_id,) = harness.wait_runs_for_event(api_b, event_id)
        run = harness.wait_run(api_b, run_id, "COMPLETED", timeout=30)
        assert run["function_id"] == "e2e-prim-parallel"
    finally:
        a.stop()
        b.stop()
        app.stop()
        later.stop()
