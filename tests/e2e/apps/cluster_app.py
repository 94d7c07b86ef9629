"""A Ratchet-SDK app in production mode (INNGEST_SIGNING_KEY, no INNGEST_DEV) for the two-node cluster test.

`cluster-work` runs three short steps under two concurrency limits, one per user (`event.data.user`)
and one per organisation (`event.data.org`, several users each). Every step body counts itself in
flight (per user, per organisation and overall) for its whole duration, so steps the server let
overlap are seen here, where they run; each execution is also logged with a unique token that it
returns, so the test can tell which execution's result the server recorded. `GET /stats` reports the
maxima and the executions.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import fastapi

import ratchet
import ratchet.sdk.fastapi

#: Limits of `cluster-work` (the test checks it expects the same).
USER_LIMIT = 2
ORG_LIMIT = 5
#: How long each step body runs: long enough for overlaps to show, far shorter than a lease.
STEP_S = 0.02
STEPS = ("s1", "s2", "s3")

client = ratchet.Client(app_id="cluster")  # production mode, keys and URLs from the INNGEST_* environment

#: in flight now and at most, by "user:<id>", "org:<id>" and "all"
in_flight: Counter[str] = Counter()
max_in_flight: Counter[str] = Counter()
#: (run id, step id, token, started at, ended at) of every step body that ran, in order of ending
executions: list[tuple[str, str, str, float, float]] = []


async def body(run_id: str, user: str, org: str, step_id: str) -> str:
    token = f"{step_id}-{uuid.uuid4().hex[:12]}"
    started = time.time()
    counters = (f"user:{user}", f"org:{org}", "all")
    for c in counters:
        in_flight[c] += 1
        max_in_flight[c] = max(max_in_flight[c], in_flight[c])
    try:
        await asyncio.sleep(STEP_S)
    finally:
        for c in counters:
            in_flight[c] -= 1
        executions.append((run_id, step_id, token, started, time.time()))
    return token


@client.function(id="work", trigger=ratchet.on_event("cluster/work"), retries=2,
                 concurrency=[ratchet.Concurrency(limit=USER_LIMIT, key="event.data.user"),
                              ratchet.Concurrency(limit=ORG_LIMIT, key="event.data.org")])
async def work(ctx: ratchet.Context) -> dict[str, str]:
    user, org = str(ctx.event.data["user"]), str(ctx.event.data["org"])
    out = {}
    for step_id in STEPS:
        out[step_id] = await ctx.step.run(step_id, body, ctx.run_id, user, org, step_id)
    return out


app = fastapi.FastAPI()
ratchet.sdk.fastapi.serve(app, client, [work])


@app.get("/stats")
async def stats() -> dict[str, object]:  # async: read on the event loop the step bodies run on
    return {"limits": {"user": USER_LIMIT, "org": ORG_LIMIT}, "max_in_flight": dict(max_in_flight),
            "in_flight": sum(in_flight.values()), "executions": executions}
