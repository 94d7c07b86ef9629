"""`make bench`: Ratchet's workloads (DESIGN.md §6), printed as tables. Not a test: it prints figures.

    python -m bench [--backends sqlite,postgres] [--sdk ratchet,inngest] [--workloads w1,w2,w4,w5,w6,w7]
                    [--w1-runs 100] [--w2-runs 2000] [--w5-runs 10000] [--w6-runs 10000] [--w6-rate 200]
                    [--w7-runs 2000] [--w7-kill-at 0.4] [--w7-lease 2] [--pg-admin-url URL]

Each backend and SDK gets a fresh `ratchet dev` and its own bench app (bench/apps/), both as subprocesses
on this machine: on SQLite a new file, on PostgreSQL a new database (`CREATE DATABASE ratchet_bench_<random>`
through --pg-admin-url, then a CHECKPOINT, dropped at the end). W7 gets a server and app of its own (with --lease-seconds
--w7-lease), since it kills the server. When PostgreSQL is unreachable the bench says so and goes on with
SQLite. Figures are medians/percentiles of one invocation; run it several times and quote the median, since
the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import os
import platform
import random
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests import harness

WORKLOADS = ("w1", "w2", "w4", "w5", "w6", "w7")
BACKENDS = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
PG_ADMIN_URL = os.environ.get("RATCHET_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
APPS = {"ratchet": Path(__file__).parent / "apps" / "ratchet_app.py",
        "inngest": Path(__file__).parent / "apps" / "inngest_app.py"}


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def w1_latency(http: httpx.Client, app_url: str, steps: int, runs: int) -> dict[str, float]:
    """One run at a time: event -> completion latency, and the gap between consecutive step bodies."""
    latencies: list[float] = []
    gaps: list[float] = []
    for _ in range(runs):
        t0 = time.perf_counter()
        (event_id,) = http.post("/e/bench", json={"name": f"bench/steps-{steps}", "data": {}}).json()["ids"]
        while True:
            got = http.get(f"/v1/events/{event_id}/runs").json()["data"]
            if got and got[0]["status"] in harness.TERMINAL:
                break
            if time.perf_counter() - t0 > 60:
                raise AssertionError(f"W1: the run of event {event_id} did not end within 60 s: {got}")
            time.sleep(0.0005)  # poll gently: the server shares the 2 cores with this loop
        latencies.append((time.perf_counter() - t0) * 1000)
        assert got[0]["status"] == "COMPLETED", got[0]
        gaps += httpx.get(f"{app_url}/bench/gaps", params={"run_id": got[0]["id"]}).json()
    return {"p50": pct(latencies, 50), "p95": pct(latencies, 95), "p99": pct(latencies, 99),
            "gap_p50": pct(gaps, 50), "gap_p99": pct(gaps, 99)}


def w2_throughput(http: httpx.Client, server_pid: int, runs: int, steps: int = 5) -> dict[str, float]:
    """`runs` runs of `steps` steps sent at once; time until all complete."""
    t0 = time.perf_counter()
    batch = 200
    for start in range(0, runs, batch):
        n = min(batch, runs - start)
        resp = http.post("/e/bench", json=[{"name": f"bench/steps-{steps}", "data": {"i": start + i}}
                                           for i in range(n)])
        assert resp.status_code == 200, resp.text
    sent = time.perf_counter() - t0

    def done() -> bool:
        counts = http.get("/v1/runs/count", params={"function_id": f"bench-steps-{steps}"}).json()["data"]["count"]
        finished = http.get("/v1/runs/count", params={"function_id": f"bench-steps-{steps}",
                                                      "status": "COMPLETED"}).json()["data"]["count"]
        return counts >= runs and finished >= runs

    harness.wait_until(done, timeout=600, message=f"{runs} runs to complete", interval=0.05)
    elapsed = time.perf_counter() - t0
    failed = http.get("/v1/runs/count", params={"status": "FAILED"}).json()["data"]["count"]
    return {"runs_s": runs / elapsed, "steps_s": runs * steps / elapsed, "seconds": elapsed, "send_s": sent,
            "rss_mb": rss_peak_mb(server_pid), "failed": failed}


def send_batched(http: httpx.Client, events: list[dict[str, Any]], batch: int = 200) -> None:
    for start in range(0, len(events), batch):
        resp = http.post("/e/bench", json=events[start:start + batch])
        assert resp.status_code == 200, resp.text


def wait_completed(http: httpx.Client, function_id: str, runs: int, timeout: float) -> None:
    def done() -> bool:
        got = http.get("/v1/runs/count", params={"function_id": function_id, "status": "COMPLETED"}).json()
        return got["data"]["count"] >= runs

    harness.wait_until(done, timeout=timeout, message=f"{runs} runs of {function_id} to complete", interval=0.2)


def count_status(http: httpx.Client, function_id: str, status: str) -> int:
    return http.get("/v1/runs/count", params={"function_id": function_id, "status": status}).json()["data"]["count"]


def w5_timers(http: httpx.Client, app_url: str, runs: int, rate: float = 0,
              setup_s: float = 20.0) -> dict[str, float]:
    """`runs` runs, each sleeping until a wake time 1-5 s after a common start `setup_s` from now, so
    every sleep is pending before the first one wakes; lateness = the wake call's arrival in the app
    minus the wake time. (Sleeps that only start after a 10,000-run backlog would measure the backlog.)"""
    rand = random.Random(5)
    base = time.time_ns() // 1_000_000 + int(setup_s * 1000)
    events = [{"name": "bench/sleep", "data": {"wake_at": base + rand.randint(1000, 5000)}} for _ in range(runs)]
    t0 = time.perf_counter()
    if rate > 0:  # paced: 100 events per request at `rate` events/s
        for k in range(0, runs, 100):
            delay = t0 + k / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            send_batched(http, events[k:k + 100])
    else:
        send_batched(http, events)
    sent = time.perf_counter() - t0
    wait_completed(http, "bench-sleeper", runs, timeout=600)
    elapsed = time.perf_counter() - t0
    late = list(httpx.get(f"{app_url}/bench/lateness", timeout=60).json().values())
    planned = httpx.get(f"{app_url}/bench/planned", timeout=60).json()
    return {"completed": count_status(http, "bench-sleeper", "COMPLETED"),
            "failed": count_status(http, "bench-sleeper", "FAILED"), "measured": len(late),
            "p50": pct(late, 50), "p99": pct(late, 99), "max": max(late, default=float("nan")),
            "early": sum(1 for x in late if x < 0), "seconds": elapsed, "send_s": sent,
            "spread_s": (max(planned) - min(planned)) / 1000 if planned else float("nan"),
            "pending_before_first_wake": sum(1 for p in planned if p < base + 1000)}


FLOW_FUNCTIONS = ["bench-flow-conc", "bench-flow-throttle", "bench-flow-debounce", "bench-flow-batch",
                  "bench-flow-ratelimit"]


def count_runs(http: httpx.Client, function_id: str) -> int:
    return http.get("/v1/runs/count", params={"function_id": function_id}).json()["data"]["count"]


def w4_flow(http: httpx.Client, app_url: str, keys: int = 100, runs_per_key: int = 20) -> dict[str, Any]:
    """Flow control, one limit at a time; what each let through is noted in the app (`timings.flow_report`).

    - concurrency: `keys` x `runs_per_key` runs of 2 steps (20 ms each), key limit 1, sent key by key (the
      first key's runs, then the next key's...); max step bodies in flight per key, and when each key's
      first and last runs completed (relative to the first send).
    - throttle 10/s: 50 runs sent at once; achieved rate = 49 / (last start - first start).
    - debounce (period 1 s, per key): 1,000 events over 10 keys, interleaved, 100 per request.
    - batch (max 100, timeout 5 s): 1,000 events, 200 per request.
    - rate limit (10 per minute per key): 50 events over 2 keys.
    """
    out: dict[str, Any] = {}
    # concurrency with keys
    total = keys * runs_per_key
    t0 = time.time()
    send_batched(http, [{"name": "bench/flow-conc", "data": {"key": f"k{k}", "r": r}}
                        for k in range(keys) for r in range(runs_per_key)])
    out["conc_send_s"] = time.time() - t0
    wait_completed(http, "bench-flow-conc", total, timeout=600)
    out["conc_s"] = time.time() - t0
    rep = httpx.get(f"{app_url}/bench/flow", timeout=60).json()
    peaks = rep["conc_peak"]
    last = [span[1] - t0 for span in rep["conc_done"].values()]
    first = [span[0] - t0 for span in rep["conc_done"].values()]
    out |= {"conc_peak": max(peaks.values(), default=0), "conc_keys_over": sum(1 for p in peaks.values() if p > 1),
            "conc_keys": len(rep["conc_done"]), "conc_runs": rep["conc_runs"],
            "conc_completed": count_status(http, "bench-flow-conc", "COMPLETED"),
            "conc_failed": count_status(http, "bench-flow-conc", "FAILED"),
            "last_min": min(last, default=float("nan")), "last_p50": pct(last, 50),
            "last_max": max(last, default=float("nan")), "first_max": max(first, default=float("nan"))}

    # throttle 10/s
    n_throttle = 50
    send_batched(http, [{"name": "bench/flow-throttle", "data": {"i": i}} for i in range(n_throttle)])
    wait_completed(http, "bench-flow-throttle", n_throttle, timeout=120)
    starts = httpx.get(f"{app_url}/bench/flow", timeout=60).json()["throttle_starts"]
    span = starts[-1] - starts[0] if len(starts) > 1 else float("nan")
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    out |= {"thr_runs": len(starts), "thr_rate": (len(starts) - 1) / span if span else float("nan"),
            "thr_span_s": span, "thr_gap_min_ms": min(gaps, default=float("nan")) * 1000,
            "thr_gap_max_ms": max(gaps, default=float("nan")) * 1000}

    # debounce storm
    n_deb, deb_keys = 1000, 10
    events = [{"name": "bench/flow-debounce", "data": {"key": f"d{i % deb_keys}", "n": i}} for i in range(n_deb)]
    t = time.perf_counter()
    send_batched(http, events, batch=100)
    out["deb_send_s"] = time.perf_counter() - t
    last_n = {}
    for e in events:
        last_n[e["data"]["key"]] = e["data"]["n"]
    with contextlib.suppress(AssertionError):
        wait_completed(http, "bench-flow-debounce", deb_keys, timeout=60)
    out["deb_first_wait_s"] = time.perf_counter() - t
    time.sleep(3)  # a second run for a key would have started by now (period 1 s)
    got = httpx.get(f"{app_url}/bench/flow", timeout=60).json()["debounced"]
    out |= {"deb_runs": count_runs(http, "bench-flow-debounce"), "deb_app_runs": len(got),
            "deb_keys": len({k for k, _ in got}), "deb_last": sum(1 for k, n in got if last_n.get(k) == n)}

    # batches of 100
    n_batch = 1000
    t = time.perf_counter()
    send_batched(http, [{"name": "bench/flow-batch", "data": {"n": i}} for i in range(n_batch)])
    harness.wait_until(lambda: sum(map(len, httpx.get(f"{app_url}/bench/flow", timeout=60).json()["batches"]))
                       >= n_batch, timeout=60, message=f"{n_batch} batched events", interval=0.2)
    out["bat_s"] = time.perf_counter() - t
    time.sleep(1)
    batches = httpx.get(f"{app_url}/bench/flow", timeout=60).json()["batches"]
    seen = sorted(n for b in batches for n in b)
    out |= {"bat_sizes": sorted((len(b) for b in batches), reverse=True), "bat_exact": seen == list(range(n_batch)),
            "bat_runs": count_runs(http, "bench-flow-batch")}

    # rate limit: drops
    n_rl, rl_keys = 50, 2
    send_batched(http, [{"name": "bench/flow-ratelimit", "data": {"key": f"r{i % rl_keys}"}} for i in range(n_rl)])
    harness.wait_until(lambda: count_status(http, "bench-flow-ratelimit", "COMPLETED")
                       + count_status(http, "bench-flow-ratelimit", "SKIPPED") >= n_rl,
                       timeout=60, message=f"{n_rl} rate-limited runs to finish", interval=0.2)
    ran = httpx.get(f"{app_url}/bench/flow", timeout=60).json()["rate_limited"]
    out |= {"rl_completed": count_status(http, "bench-flow-ratelimit", "COMPLETED"),
            "rl_skipped": count_status(http, "bench-flow-ratelimit", "SKIPPED"),
            "rl_runs": count_runs(http, "bench-flow-ratelimit"),
            "rl_per_key": {k: ran.count(k) for k in sorted(set(ran))}}
    out["load"] = os.getloadavg()
    return out


def print_w4(w4: dict[str, Any], keys: int, runs_per_key: int) -> None:
    def ok(cond: bool) -> str:
        return "yes" if cond else "**NO**"

    total = keys * runs_per_key
    sizes = w4["bat_sizes"]
    size_text = ", ".join(f"{sizes.count(v)} × {v}" for v in sorted(set(sizes), reverse=True))
    per_key = ", ".join(f"{k}: {v}" for k, v in w4["rl_per_key"].items())
    print(f"\n| W4 flow control (load avg after: {w4['load'][0]:.2f}) | target | observed | met |")
    print("|---|---|---|---|")
    print(f"| concurrency: {keys} keys × {runs_per_key} runs × 2 steps (20 ms), key limit 1 | ≤ 1 step in flight "
          f"per key | max {w4['conc_peak']} ({w4['conc_keys_over']} keys over); {w4['conc_completed']}/{total} "
          f"completed, {w4['conc_failed']} failed, {w4['conc_s']:.1f} s | "
          f"{ok(w4['conc_peak'] <= 1 and w4['conc_completed'] == total)} |")
    print(f"| completion spread across {w4['conc_keys']} keys (sent key by key) | – | each key's last run done "
          f"min {w4['last_min']:.1f} / median {w4['last_p50']:.1f} / max {w4['last_max']:.1f} s after the first send"
          f"; every key's first run done by {w4['first_max']:.1f} s (sending took {w4['conc_send_s']:.1f} s) | – |")
    print(f"| throttle 10/s: {w4['thr_runs']} runs at once | 9–11 runs/s | {w4['thr_rate']:.2f} runs/s "
          f"({w4['thr_span_s']:.2f} s; gaps {w4['thr_gap_min_ms']:.0f}–{w4['thr_gap_max_ms']:.0f} ms) | "
          f"{ok(abs(w4['thr_rate'] - 10) <= 1)} |")
    print(f"| debounce 1 s: 1,000 events over 10 keys (sent in {w4['deb_send_s']:.2f} s) | 10 runs, each with its "
          f"key's last event | {w4['deb_runs']} runs ({w4['deb_keys']} keys), {w4['deb_last']} with the last event |"
          f" {ok(w4['deb_runs'] == 10 and w4['deb_app_runs'] == 10 and w4['deb_last'] == 10)} |")
    print(f"| batch max 100: 1,000 events | 10 × 100 | {size_text} ({w4['bat_runs']} runs; every event once: "
          f"{w4['bat_exact']}; {w4['bat_s']:.1f} s) | {ok(sizes == [100] * 10 and w4['bat_exact'])} |")
    print(f"| rate limit 10/min per key: 50 events over 2 keys | 20 admitted, 30 dropped | {w4['rl_completed']} "
          f"COMPLETED, {w4['rl_skipped']} SKIPPED (ran per key: {per_key}) | "
          f"{ok(w4['rl_completed'] == 20 and w4['rl_skipped'] == 30)} |")


@dataclasses.dataclass(frozen=True)
class Store:
    """Where a bench server keeps its state: a SQLite file, or a PostgreSQL database (`pg_url`)."""

    backend: str
    db_path: Path  #: the SQLite file (unused on PostgreSQL: the server is given --postgres-uri)
    pg_url: str | None = None

    @property
    def server_args(self) -> list[str]:
        return ["--postgres-uri", self.pg_url] if self.pg_url else []


async def pg_admin(admin_url: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url, timeout=5)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


async def pg_describe(admin_url: str) -> str:
    """PostgreSQL's version and the settings that decide a commit's cost; raises when it is unreachable."""
    import asyncpg

    conn = await asyncpg.connect(admin_url, timeout=5)
    try:
        version = (await conn.fetchval("SHOW server_version")).split()[0]
        sync = await conn.fetchval("SHOW synchronous_commit")
        fsync = await conn.fetchval("SHOW fsync")
        buffers = await conn.fetchval("SHOW shared_buffers")
    finally:
        await conn.close()
    return f"PostgreSQL {version} (synchronous_commit={sync}, fsync={fsync}, shared_buffers={buffers})"


@contextlib.contextmanager
def fresh_store(backend: str, workdir: Path, tag: str, admin_url: str) -> Iterator[Store]:
    """A new, empty store for one server: a new SQLite file, or a new PostgreSQL database dropped afterwards."""
    if backend == "sqlite":
        yield Store(backend, workdir / f"{tag}.db")
        return
    name = f"ratchet_bench_{uuid.uuid4().hex[:12]}"
    asyncio.run(pg_admin(admin_url, f'CREATE DATABASE "{name}"'))
    # Creating (and the last run's dropping) a database leaves a checkpoint due or under way; taken now, it
    # does not land inside a measurement (its full-page writes slowed W2's commits by up to half).
    asyncio.run(pg_admin(admin_url, "CHECKPOINT"))
    try:
        yield Store(backend, workdir / f"{tag}-unused.db", admin_url.rsplit("/", 1)[0] + f"/{name}")
    finally:
        asyncio.run(pg_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _pg_count(url: str, sql: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


def pending_waits(store: Store) -> int:
    """Wait pauses stored by the server, read from its store (the SQLite file in WAL mode, or PostgreSQL)."""
    sql = "SELECT count(*) FROM pauses WHERE kind = 'wait'"
    if store.pg_url:
        return asyncio.run(_pg_count(store.pg_url, sql))
    with contextlib.closing(sqlite3.connect(store.db_path, timeout=10)) as db:
        return int(db.execute(sql).fetchone()[0])


def w6_waits(http: httpx.Client, app_url: str, store: Store, runs: int, rate: float,
             non_matching_every: int = 10) -> dict[str, float]:
    """`runs` runs each wait for `bench/match` with their own `data.id`; once all wait, matching events are
    sent one per request at `rate`/s, with a non-matching one after every `non_matching_every`.
    Match latency = start of the step after the wait (in the app) minus the matching event's send time."""
    t0 = time.perf_counter()
    send_batched(http, [{"name": "bench/wait-start", "data": {"id": i}} for i in range(runs)])
    harness.wait_until(lambda: pending_waits(store) >= runs, timeout=600, message=f"{runs} pending waits",
                       interval=0.2)
    armed = time.perf_counter() - t0
    order = list(range(runs))
    random.Random(6).shuffle(order)
    start = time.perf_counter()
    non_matching = 0
    for k, i in enumerate(order):
        delay = start + k / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        resp = http.post("/e/bench", json={"name": "bench/match", "data": {"id": i, "sent_ns": time.time_ns()}})
        assert resp.status_code == 200, resp.text
        if k % non_matching_every == non_matching_every - 1:
            resp = http.post("/e/bench", json={"name": "bench/match",
                                               "data": {"id": runs + 1_000_000 + k, "sent_ns": time.time_ns()}})
            assert resp.status_code == 200, resp.text
            non_matching += 1
    send_s = time.perf_counter() - start
    with contextlib.suppress(AssertionError):
        wait_completed(http, "bench-waiter", runs, timeout=120)
    matches = httpx.get(f"{app_url}/bench/matches", timeout=60).json()
    sent = [m[0] for m in matches.values() if m[3] is not None and m[3] == m[2]]
    accepted = [m[1] for m in matches.values() if m[3] is not None and m[3] == m[2] and m[1] is not None]
    false = sum(1 for m in matches.values() if m[3] is not None and m[3] != m[2])
    timed_out = sum(1 for m in matches.values() if m[3] is None)
    completed = count_status(http, "bench-waiter", "COMPLETED")
    return {"armed_s": armed, "send_s": send_s, "rate": runs / send_s, "non_matching": non_matching,
            "p50": pct(sent, 50), "p99": pct(sent, 99), "max": max(sent, default=float("nan")),
            "acc_p50": pct(accepted, 50), "acc_p99": pct(accepted, 99), "false": false,
            "missed": runs - len(sent) - false, "timed_out": timed_out, "completed": completed}


def w7_crash(http: httpx.Client, server: harness.ServerProcess, app_url: str, runs: int,
             kill_at: float, steps: int = 5) -> dict[str, Any]:
    """W2 with a crash: `runs` runs of `steps` steps, sent 200 per request by a thread of their own; once
    `kill_at` of them have completed the server is killed with SIGKILL (its whole process group) and started
    again at once on the same store. The kill may come while events are still being sent (PostgreSQL ingests
    more slowly than it executes): a request that fails is sent again until the server takes it, and as each
    event has its own `id` (the runs' idempotency key), a request the dead server had stored starts no second
    runs. Lost runs = runs not COMPLETED in the end; recovery is timed from the restart (the new process's
    launch) to its first step body in the app and to the last run's completion; steps re-run = step body
    executions beyond runs x steps (the app counts them per run and step). The kill waits, past `kill_at`,
    until at least 50 step bodies of unfinished runs have run, so that it interrupts runs part-way."""
    fn = "bench-crash"
    tag = uuid.uuid4().hex[:8]
    events = [{"name": "bench/crash", "id": f"crash-{tag}-{i}", "data": {"i": i}} for i in range(runs)]
    accepted = [0]  # events the server has taken so far
    resent = [0]  # requests sent again after a failure
    sent_at: list[float] = []

    def send_all() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for k in range(0, runs, 200):
                while True:
                    try:
                        if client.post("/e/bench", json=events[k:k + 200]).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    resent[0] += 1
                    time.sleep(0.05)
                accepted[0] = min(runs, k + 200)
        sent_at.append(time.perf_counter())

    t0 = time.perf_counter()
    sender = threading.Thread(target=send_all, name="w7-sender", daemon=True)
    sender.start()
    target = max(1, int(runs * kill_at))
    seen = [0]

    def enough() -> bool:
        # At least `target` runs completed, and others part-way: on PostgreSQL a batch of runs can finish
        # before the next request is ingested, and a kill then would find no step in flight.
        seen[0] = count_status(http, fn, "COMPLETED")
        if seen[0] < target:
            return False
        bodies = httpx.get(f"{app_url}/bench/crash", timeout=60).json()["executions"]
        return bodies - seen[0] * steps >= 50 or seen[0] >= runs

    harness.wait_until(enough, timeout=600, message=f"{target} runs to complete before the kill", interval=0.01)
    server.kill9()
    killed = time.perf_counter()
    unsent = runs - accepted[0]
    at_kill = httpx.get(f"{app_url}/bench/crash", timeout=60).json()
    restart_ns = time.time_ns()
    restarted = time.perf_counter()
    server.start(timeout=60)
    ready = time.perf_counter()

    def all_done() -> bool:
        return count_status(http, fn, "COMPLETED") >= runs

    with contextlib.suppress(AssertionError):
        harness.wait_until(all_done, timeout=300, message=f"{runs} runs to complete after the restart",
                           interval=0.02)
    done = time.perf_counter()
    sender.join(timeout=60)
    report = httpx.get(f"{app_url}/bench/crash", params={"since_ns": restart_ns}, timeout=60).json()
    completed = count_status(http, fn, "COMPLETED")
    first = report["first_after_ns"]
    return {"runs": runs, "send_s": (sent_at[0] - t0) if sent_at else float("nan"), "kill_after_s": killed - t0,
            "target": target, "completed_at_kill": seen[0], "steps_at_kill": at_kill["executions"],
            "unsent_at_kill": unsent, "resent": resent[0], "ready_s": ready - restarted,
            "first_step_s": (first - restart_ns) / 1e9 if first is not None else float("nan"),
            "all_done_s": done - restarted, "total_s": done - t0,
            "completed": completed, "total_runs": count_runs(http, fn),
            "failed": count_status(http, fn, "FAILED"), "lost": runs - completed,
            "executions": report["executions"], "distinct": report["distinct"],
            "rerun": report["executions"] - runs * steps, "repeated": report["repeated"]}


SYNCED = [*(f"bench-steps-{n}" for n in (1, 5, 10)), "bench-sleeper", "bench-waiter", "bench-crash",
          *FLOW_FUNCTIONS]


@contextlib.contextmanager
def bench_stack(sdk: str, store: Store, workdir: Path, tag: str,
                extra_args: list[str] | None = None) -> Iterator[tuple[harness.ServerProcess, str]]:
    """A `ratchet dev` on `store` and the SDK's bench app, synced; yields the server and the app's base URL."""
    server = harness.ServerProcess(store.db_path, workdir / f"{tag}-server.log", retry_interval=1.0,
                                   extra_args=["--log-level", "warning", *store.server_args, *(extra_args or [])])
    app = harness.AppProcess(APPS[sdk], workdir / f"{tag}-app.log",
                             env={**harness.sdk_env(f"http://127.0.0.1:{server.port}"), "PYTHONPATH": os.getcwd()})
    try:
        app.start()
        server.app_urls = [app.url]
        server.start()
        api = harness.Api(server.url)
        harness.wait_synced(api, SYNCED)
        api.close()
        yield server, app.url.rsplit("/api/", 1)[0]
    finally:
        server.stop()
        app.stop()


def run_sdk(sdk: str, backend: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    tag = f"{backend}-{sdk}"
    if any(w in args.workloads for w in ("w1", "w2", "w4", "w5", "w6")):
        with fresh_store(backend, workdir, tag, args.pg_admin_url) as store, \
                bench_stack(sdk, store, workdir, tag) as (server, app_base), \
                httpx.Client(base_url=server.url, timeout=30) as http:
            assert server.proc is not None
            w1_latency(http, app_base, 5, 10)  # warm-up
            if "w1" in args.workloads:
                for n in (1, 5, 10):
                    result[f"w1_{n}"] = w1_latency(http, app_base, n, args.w1_runs)
            if "w2" in args.workloads:
                result["w2"] = w2_throughput(http, server.proc.pid, args.w2_runs)
            if "w4" in args.workloads:
                result["w4"] = w4_flow(http, app_base, args.w4_keys, args.w4_runs_per_key)
            if "w5" in args.workloads:
                result["w5"] = w5_timers(http, app_base, args.w5_runs, args.w5_rate, args.w5_setup)
            if "w6" in args.workloads:
                result["w6"] = w6_waits(http, app_base, store, args.w6_runs, args.w6_rate)
    if "w7" in args.workloads:
        tag += "-w7"
        lease = ["--lease-seconds", f"{args.w7_lease:g}"]
        with fresh_store(backend, workdir, tag, args.pg_admin_url) as store, \
                bench_stack(sdk, store, workdir, tag, lease) as (server, app_base), \
                httpx.Client(base_url=server.url, timeout=30) as http:
            result["w7"] = w7_crash(http, server, app_base, args.w7_runs, args.w7_kill_at)
    return result


def print_section(r: dict[str, Any], args: argparse.Namespace) -> None:
    if "w1" in args.workloads:
        print("| W1 (one run at a time) | event→done p50 | p95 | p99 | inter-step gap p50 | gap p99 |")
        print("|---|---|---|---|---|---|")
        for n in (1, 5, 10):
            w = r[f"w1_{n}"]
            print(f"| {n} step(s) | {w['p50']:.2f} ms | {w['p95']:.2f} ms | {w['p99']:.2f} ms | "
                  f"{w['gap_p50']:.2f} ms | {w['gap_p99']:.2f} ms |" if n > 1 else
                  f"| {n} step(s) | {w['p50']:.2f} ms | {w['p95']:.2f} ms | {w['p99']:.2f} ms | – | – |")
    if "w2" in args.workloads:
        w2 = r["w2"]
        print(f"\nW2 ({args.w2_runs} runs × 5 steps at once): {w2['runs_s']:.0f} runs/s, "
              f"{w2['steps_s']:.0f} steps/s ({w2['seconds']:.1f} s; sending took {w2['send_s']:.2f} s), "
              f"server peak RSS {w2['rss_mb']:.0f} MB, failed runs {w2['failed']}")
    if "w4" in args.workloads:
        print_w4(r["w4"], args.w4_keys, args.w4_runs_per_key)
    if "w5" in args.workloads:
        w5 = r["w5"]
        how = "sent at once" if args.w5_rate <= 0 else f"sent at {args.w5_rate:.0f}/s"
        print(f"\n| W5 ({args.w5_runs} sleeps waking 1–5 s after all are pending, {how}) | lateness p50 "
              "| p99 | max | completed | failed | woke early | asleep before first wake | total |")
        print("|---|---|---|---|---|---|---|---|---|")
        print(f"| target p99 ≤ 50 ms | {w5['p50']:.1f} ms | {w5['p99']:.1f} ms | {w5['max']:.1f} ms | "
              f"{w5['completed']} ({w5['measured']} measured) | {w5['failed']} | {w5['early']} | "
              f"{w5['pending_before_first_wake']} (all within {w5['spread_s']:.1f} s) | "
              f"{w5['seconds']:.1f} s (sending {w5['send_s']:.1f} s) |")
    if "w6" in args.workloads:
        w6 = r["w6"]
        print(f"\n| W6 ({args.w6_runs} pending waits; matches at {w6['rate']:.0f}/s, one per request) | "
              "send→step p50 | p99 | max | accepted→step p50 | p99 | false | missed | completed |")
        print("|---|---|---|---|---|---|---|---|---|")
        print(f"| target p99 ≤ 20 ms; +{w6['non_matching']} non-matching; {w6['armed_s']:.1f} s to arm | "
              f"{w6['p50']:.2f} ms | {w6['p99']:.2f} ms | {w6['max']:.1f} ms | {w6['acc_p50']:.1f} ms | "
              f"{w6['acc_p99']:.1f} ms | {w6['false']} | {w6['missed']} | {w6['completed']} |")
    if "w7" in args.workloads:
        w7 = r["w7"]
        lost = w7["lost"] if w7["lost"] == 0 else f"**{w7['lost']}**"
        print(f"\n| W7 crash ({w7['runs']} runs × 5 steps at once; kill -9 at {w7['completed_at_kill']} completed, "
              f"{w7['kill_after_s']:.1f} s in; lease {args.w7_lease:g} s) | lost runs | restart→ready | "
              "restart→first step | restart→all done | steps re-run | total |")
        print("|---|---|---|---|---|---|---|")
        unsent = (f"{w7['unsent_at_kill']} events not yet accepted at the kill ({w7['resent']} requests sent again)"
                  if w7["unsent_at_kill"] else f"all events sent ({w7['send_s']:.1f} s) before the kill")
        print(f"| target: 0 lost; {w7['completed']}/{w7['runs']} COMPLETED ({w7['total_runs']} runs, {w7['failed']} "
              f"failed); {w7['steps_at_kill']} step bodies ran before the kill "
              f"({w7['steps_at_kill'] - 5 * w7['completed_at_kill']} of unfinished runs); {unsent} | {lost} | "
              f"{w7['ready_s']:.2f} s | "
              f"{w7['first_step_s']:.2f} s | {w7['all_done_s']:.2f} s | {w7['rerun']} ({w7['repeated']} steps ran "
              f"more than once; {w7['executions']} bodies for {w7['runs'] * 5}) | {w7['total_s']:.1f} s |")


def print_ratios(results: dict[tuple[str, str], dict[str, Any]], sdks: list[str], args: argparse.Namespace) -> None:
    """PostgreSQL against SQLite, per SDK: latency and time per step as PG / SQLite (target: at most 2x)."""
    rows = []
    for sdk in sdks:
        pg, lite = results.get(("postgres", sdk)), results.get(("sqlite", sdk))
        if not pg or not lite:
            continue
        if "w1" in args.workloads:
            for n in (1, 5, 10):
                a, b = pg[f"w1_{n}"]["p50"], lite[f"w1_{n}"]["p50"]
                rows.append((sdk, f"W1 {n} step(s) event→done p50", f"{a:.2f} ms", f"{b:.2f} ms", a / b))
            a, b = pg["w1_10"]["gap_p50"], lite["w1_10"]["gap_p50"]
            rows.append((sdk, "W1 inter-step gap p50 (10 steps)", f"{a:.2f} ms", f"{b:.2f} ms", a / b))
        if "w2" in args.workloads:
            a, b = pg["w2"]["steps_s"], lite["w2"]["steps_s"]
            rows.append((sdk, "W2 steps/s (ratio: SQLite / PG)", f"{a:.0f}", f"{b:.0f}", b / a))
        if "w7" in args.workloads:
            a, b = pg["w7"]["all_done_s"], lite["w7"]["all_done_s"]
            rows.append((sdk, "W7 restart→all done", f"{a:.2f} s", f"{b:.2f} s", a / b))
    if not rows:
        return
    print("\n## PostgreSQL vs SQLite (slowdown = how many times slower PostgreSQL is; target ≤ 2×)")
    print("| app SDK | figure | PostgreSQL | SQLite | slowdown | within 2× |")
    print("|---|---|---|---|---|---|")
    for sdk, name, a, b, ratio in rows:
        within = "–" if name.startswith("W7") else ("yes" if ratio <= 2 else "**no**")
        print(f"| {sdk} | {name} | {a} | {b} | {ratio:.2f}× | {within} |")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL,
                        help="PostgreSQL database to connect to for CREATE/DROP DATABASE "
                             "(default $RATCHET_BENCH_PG_URL or %(default)s)")
    parser.add_argument("--sdk", default="ratchet,inngest", help="comma-separated: ratchet, inngest")
    parser.add_argument("--w1-runs", type=int, default=100, help="runs per W1 size")
    parser.add_argument("--w2-runs", type=int, default=2000, help="runs in W2")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated: {', '.join(WORKLOADS)}")
    parser.add_argument("--w4-keys", type=int, default=100, help="concurrency keys in W4")
    parser.add_argument("--w4-runs-per-key", type=int, default=20, help="runs per concurrency key in W4")
    parser.add_argument("--w5-runs", type=int, default=10_000, help="sleeping runs in W5")
    parser.add_argument("--w5-setup", type=float, default=25.0,
                        help="seconds allowed for every W5 run to reach its sleep before the first wakes")
    parser.add_argument("--w5-rate", type=float, default=0.0,
                        help="W5 start events per second (0: all at once, the default)")
    parser.add_argument("--w6-runs", type=int, default=10_000, help="waiting runs in W6")
    parser.add_argument("--w6-rate", type=float, default=200.0, help="matching events per second in W6")
    parser.add_argument("--w7-runs", type=int, default=2000, help="runs in W7")
    parser.add_argument("--w7-kill-at", type=float, default=0.4,
                        help="W7 kills the server once this fraction of its runs has completed")
    parser.add_argument("--w7-lease", type=float, default=2.0,
                        help="--lease-seconds of the W7 server: on PostgreSQL the restarted node takes over the "
                             "dead node's calls when their leases expire (SQLite releases them at start)")
    args = parser.parse_args()
    args.workloads = [w.strip().lower() for w in args.workloads.split(",") if w.strip()]
    for w in args.workloads:
        if w not in WORKLOADS:
            parser.error(f"--workloads: unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")
    sdks = [s.strip() for s in args.sdk.split(",") if s.strip()]
    for s in sdks:
        if s not in APPS:
            parser.error(f"--sdk: unknown SDK {s!r}; choose from {', '.join(APPS)}")
    backends = [b.strip().lower() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in BACKENDS:
            parser.error(f"--backends: unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
    if not 0 < args.w7_kill_at < 1:
        parser.error("--w7-kill-at must be between 0 and 1")
    described = {"sqlite": "SQLite (WAL, synchronous=NORMAL)"}
    if "postgres" in backends:
        try:
            host = args.pg_admin_url.split("@")[-1].rsplit("/", 1)[0]
            local = host.split(":")[0] in ("127.0.0.1", "localhost", "[::1]", "")
            described["postgres"] = (asyncio.run(pg_describe(args.pg_admin_url)) + f" on {host}"
                                     + (" (this machine)" if local else ""))
        except Exception as exc:  # noqa: BLE001 - any failure to connect: go on without it
            print(f"# PostgreSQL unreachable at {args.pg_admin_url} ({type(exc).__name__}: {exc}); "
                  "benchmarking SQLite only")
            backends.remove("postgres")
    if not backends:
        return 1
    print(f"# Ratchet bench — {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.machine()}; backend{'s' if len(backends) > 1 else ''} "
          f"{', '.join(described[b] for b in backends)}; load average at start {os.getloadavg()[0]:.2f}")
    if "postgres" in backends and "w2" in args.workloads:
        print("# server peak RSS is the Ratchet process only (not the PostgreSQL backends)")
    results: dict[tuple[str, str], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="ratchet-bench-") as tmp:
        for sdk in sdks:  # both backends of one SDK back to back, so their ratio sees the same machine load
            for backend in backends:
                r = results[(backend, sdk)] = run_sdk(sdk, backend, args, Path(tmp))
                print(f"\n## {BACKENDS[backend]}, app on the {sdk} SDK (load average {os.getloadavg()[0]:.2f})")
                print_section(r, args)
                sys.stdout.flush()
        print_ratios(results, sdks, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
