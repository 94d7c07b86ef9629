"""`make bench`: Ratchet's workloads (DESIGN.md §6), printed as tables. Not a test: it prints figures.

    python -m bench [--sdk ratchet,inngest] [--workloads w1,w2,w5,w6] [--w1-runs 100] [--w2-runs 2000]
                    [--w5-runs 10000] [--w6-runs 10000] [--w6-rate 200]

Each SDK gets a fresh `ratchet dev` on SQLite and its own bench app (bench/apps/), both as subprocesses
on this machine. Figures are medians/percentiles of one invocation; run it several times and quote the
median, since the machine is shared.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests import harness

WORKLOADS = ("w1", "w2", "w5", "w6")
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


def pending_waits(db_path: Path) -> int:
    """Wait pauses stored by the server, read from its (WAL-mode) SQLite file beside it."""
    with contextlib.closing(sqlite3.connect(db_path, timeout=10)) as db:
        return int(db.execute("SELECT count(*) FROM pauses WHERE kind = 'wait'").fetchone()[0])


def w6_waits(http: httpx.Client, app_url: str, db_path: Path, runs: int, rate: float,
             non_matching_every: int = 10) -> dict[str, float]:
    """`runs` runs each wait for `bench/match` with their own `data.id`; once all wait, matching events are
    sent one per request at `rate`/s, with a non-matching one after every `non_matching_every`.
    Match latency = start of the step after the wait (in the app) minus the matching event's send time."""
    t0 = time.perf_counter()
    send_batched(http, [{"name": "bench/wait-start", "data": {"id": i}} for i in range(runs)])
    harness.wait_until(lambda: pending_waits(db_path) >= runs, timeout=600, message=f"{runs} pending waits",
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


def run_sdk(sdk: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    server = harness.ServerProcess(workdir / f"{sdk}.db", workdir / f"{sdk}-server.log", retry_interval=1.0,
                                   extra_args=["--log-level", "warning"])
    app = harness.AppProcess(APPS[sdk], workdir / f"{sdk}-app.log",
                             env={**harness.sdk_env(f"http://127.0.0.1:{server.port}"), "PYTHONPATH": os.getcwd()})
    app.start()
    server.app_urls = [app.url]
    server.start()
    result: dict[str, Any] = {}
    try:
        api = harness.Api(server.url)
        harness.wait_synced(api, [*(f"bench-steps-{n}" for n in (1, 5, 10)), "bench-sleeper", "bench-waiter"])
        api.close()
        app_base = app.url.rsplit("/api/", 1)[0]
        with httpx.Client(base_url=server.url, timeout=30) as http:
            w1_latency(http, app_base, 5, 10)  # warm-up
            if "w1" in args.workloads:
                for n in (1, 5, 10):
                    result[f"w1_{n}"] = w1_latency(http, app_base, n, args.w1_runs)
            if "w2" in args.workloads:
                result["w2"] = w2_throughput(http, server.proc.pid, args.w2_runs)
            if "w5" in args.workloads:
                result["w5"] = w5_timers(http, app_base, args.w5_runs, args.w5_rate, args.w5_setup)
            if "w6" in args.workloads:
                result["w6"] = w6_waits(http, app_base, server.db_path, args.w6_runs, args.w6_rate)
    finally:
        server.stop()
        app.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--sdk", default="ratchet,inngest", help="comma-separated: ratchet, inngest")
    parser.add_argument("--w1-runs", type=int, default=100, help="runs per W1 size")
    parser.add_argument("--w2-runs", type=int, default=2000, help="runs in W2")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated: {', '.join(WORKLOADS)}")
    parser.add_argument("--w5-runs", type=int, default=10_000, help="sleeping runs in W5")
    parser.add_argument("--w5-setup", type=float, default=25.0,
                        help="seconds allowed for every W5 run to reach its sleep before the first wakes")
    parser.add_argument("--w5-rate", type=float, default=0.0,
                        help="W5 start events per second (0: all at once, the default)")
    parser.add_argument("--w6-runs", type=int, default=10_000, help="waiting runs in W6")
    parser.add_argument("--w6-rate", type=float, default=200.0, help="matching events per second in W6")
    args = parser.parse_args()
    args.workloads = [w.strip().lower() for w in args.workloads.split(",") if w.strip()]
    for w in args.workloads:
        if w not in WORKLOADS:
            parser.error(f"--workloads: unknown workload {w!r}; choose from {', '.join(WORKLOADS)}")
    sdks = [s.strip() for s in args.sdk.split(",") if s.strip()]
    for s in sdks:
        if s not in APPS:
            parser.error(f"--sdk: unknown SDK {s!r}; choose from {', '.join(APPS)}")
    print(f"# Ratchet bench — {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.machine()}, backend SQLite (WAL, synchronous=NORMAL)")
    with tempfile.TemporaryDirectory(prefix="ratchet-bench-") as tmp:
        for sdk in sdks:
            r = run_sdk(sdk, args, Path(tmp))
            print(f"\n## SQLite, app on the {sdk} SDK")
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
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
