"""The retention job deletes ended runs and the events nothing needs, and keeps live ones."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import ratchet
from tests.integration import inprocess


async def test_ended_runs_go_after_the_retention_period_live_ones_stay(tmp_path: Path) -> None:
    async with inprocess.start_stack(tmp_path, retention_s=0.5) as s:
        @s.client.function(id="quick", trigger=ratchet.on_event("t/quick"))
        async def quick(ctx: ratchet.Context) -> int:
            return 1

        @s.client.function(id="slow", trigger=ratchet.on_event("t/slow"))
        async def slow(ctx: ratchet.Context) -> int:
            await ctx.step.sleep("long", timedelta(hours=1))
            return 2

        await s.sync([quick, slow])
        done = await s.wait_run(await s.send("t/quick"))
        sleeping_event = await s.send("t/slow")
        deadline = time.monotonic() + 10
        while (await s.api.get(f"/v1/runs/{done['id']}")).status_code != 404:
            assert time.monotonic() < deadline, "the ended run was never deleted"
            await asyncio.sleep(0.05)
        assert (await s.api.get(f"/v1/events/{done['event_ids'][0]}")).status_code == 404
        (live,) = await s.runs_of(sleeping_event)  # a run that has not ended stays, with its event
        assert live["status"] == "RUNNING"
