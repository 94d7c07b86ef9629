"""Cron on several nodes: two `ratchet dev` processes on one PostgreSQL database, both syncing the same app,
fire each tick of a schedule exactly once between them (one queued tick per schedule and due time, claimed
by one node), tick after tick."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from tests import harness

pytestmark = pytest.mark.e2e

APP = Path(__file__).parent / "apps" / "primitives_app.py"
SLUG = "e2e-prim-cron"


async def _ticks(url: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT due_at FROM queue WHERE kind = 'cron' AND run_id = $1", f"cron:{SLUG}")
        return [int(r[0]) for r in rows]
    finally:
        await conn.close()


async def _make_due_now(url: str) -> int:
    """White-box nudge: the schedule is yearly; move its one queued tick to now and wake the nodes."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            now = await conn.fetchval("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
            done = await conn.execute("UPDATE queue SET due_at = $1 WHERE kind = 'cron' AND run_id = $2",
                                      now, f"cron:{SLUG}")
            assert done == "UPDATE 1", done
            await conn.execute("SELECT pg_notify('ratchet_work', '')")
        return int(now)
    finally:
        await conn.close()


def test_two_nodes_fire_each_cron_tick_once(tmp_path: Path, pg_db: str) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    a = harness.ServerProcess(tmp_path / "a.db", tmp_path / "a.log", extra_args=["--postgres-uri", pg_db])
    b = harness.ServerProcess(tmp_path / "b.db", tmp_path / "b.log", extra_args=["--postgres-uri", pg_db])
    app = harness.AppProcess(APP, tmp_path / "app.log", env={**harness.sdk_env(a.url), "E2E_DIR": str(marks)})
    try:
        app.start()
        a.app_urls = b.app_urls = [app.url]  # both nodes sync the app, so both write its schedule
        a.start()
        b.start()
        api = harness.Api(a.url)
        harness.wait_synced(api, [SLUG])
        harness.wait_until(lambda: len(asyncio.run(_ticks(pg_db))) == 1, 10, "one queued tick")
        for n in range(1, 5):
            due = asyncio.run(_make_due_now(pg_db))
            harness.wait_until(lambda n=n: len(api.runs(function_id=SLUG)) >= n, 15, f"tick {n} to start a run")
            # the next tick is queued once, a year ahead, whichever node fired this one
            harness.wait_until(lambda due=due: (ticks := asyncio.run(_ticks(pg_db))) and len(ticks) == 1
                               and ticks[0] > due + 86_400_000, 10, "the next tick")
        runs = api.runs(function_id=SLUG)
        assert len(runs) == 4, runs  # never a second run for a tick
        for run in runs:
            done = harness.wait_run(api, run["id"], "COMPLETED", timeout=15)
            assert done["output"]["name"] == "inngest/scheduled.timer"
    finally:
        a.stop()
        b.stop()
        app.stop()
