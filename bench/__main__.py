"""`make bench`: Ratchet's workloads (DESIGN.md §6), printed as tables. Not a test: it prints figures.

    python -m bench [--sdk ratchet,inngest] [--w2-runs 2000] [--w1-runs 100]

Each SDK gets a fresh `ratchet dev` on SQLite and its own bench app (bench/apps/), both as subprocesses
on this machine. Figures are medians/percentiles of one invocation; run it several times and quote the
median, since the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests import harness

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
        harness.wait_synced(api, [f"bench-steps-{n}" for n in (1, 5, 10)])
        api.close()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            w1_latency(http, app.url.rsplit("/api/", 1)[0], 5, 10)  # warm-up
            for n in (1, 5, 10):
                result[f"w1_{n}"] = w1_latency(http, app.url.rsplit("/api/", 1)[0], n, args.w1_runs)
            result["w2"] = w2_throughput(http, server.proc.pid, args.w2_runs)
    finally:
        server.stop()
        app.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--sdk", default="ratchet,inngest", help="comma-separated: ratchet, inngest")
    parser.add_argument("--w1-runs", type=int, default=100, help="runs per W1 size")
    parser.add_argument("--w2-runs", type=int, default=2000, help="runs in W2")
    args = parser.parse_args()
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
            print("| W1 (one run at a time) | event→done p50 | p95 | p99 | inter-step gap p50 | gap p99 |")
            print("|---|---|---|---|---|---|")
            for n in (1, 5, 10):
                w = r[f"w1_{n}"]
                print(f"| {n} step(s) | {w['p50']:.2f} ms | {w['p95']:.2f} ms | {w['p99']:.2f} ms | "
                      f"{w['gap_p50']:.2f} ms | {w['gap_p99']:.2f} ms |" if n > 1 else
                      f"| {n} step(s) | {w['p50']:.2f} ms | {w['p95']:.2f} ms | {w['p99']:.2f} ms | – | – |")
            w2 = r["w2"]
            print(f"\nW2 ({args.w2_runs} runs × 5 steps at once): {w2['runs_s']:.0f} runs/s, "
                  f"{w2['steps_s']:.0f} steps/s ({w2['seconds']:.1f} s; sending took {w2['send_s']:.2f} s), "
                  f"server peak RSS {w2['rss_mb']:.0f} MB, failed runs {w2['failed']}")
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
