"""Step-body timestamps the bench apps record, so inter-step gaps are measured where the steps run."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import time
from collections import defaultdict
from typing import Any

#: run id -> [(start_ns, end_ns), ...] of step bodies, in execution order
TIMES: dict[str, list[tuple[int, int]]] = defaultdict(list)


def noop_step(run_id: str) -> None:
    """A step body that does nothing but note when it ran."""
    t = time.time_ns()
    TIMES[run_id].append((t, time.time_ns()))


def gaps_ms(run_id: str) -> list[float]:
    """Time from one step body's end to the next one's start (engine + HTTP overhead per step)."""
    spans = TIMES.get(run_id, [])
    return [(b[0] - a[1]) / 1e6 for a, b in itertools.pairwise(spans)]


# W5: timers. Each run sleeps until an absolute wake time chosen by the bench; `plan_wake` (a step) notes
# when the run reached its sleep, and the code after the sleep notes how late the wake call came.

#: run id -> lateness (ms): start of the step after the sleep minus the intended wake time
LATENESS: dict[str, float] = {}


#: when each run reached its sleep (ms since the epoch), to show how long starting them all took
PLANNED: list[int] = []


def plan_wake(wake_ms: int) -> int:
    """Note that a run reached its sleep now; returns its wake time (ms since the epoch)."""
    PLANNED.append(time.time_ns() // 1_000_000)
    return wake_ms


def wake_datetime(wake_ms: int) -> datetime.datetime:
    """`wake_ms` as an exact (millisecond) UTC datetime for `sleep_until`."""
    return datetime.datetime.fromtimestamp(wake_ms // 1000, datetime.UTC).replace(microsecond=wake_ms % 1000 * 1000)


def after_sleep(run_id: str, wake_ms: int) -> None:
    t = time.time_ns()
    LATENESS.setdefault(run_id, t / 1e6 - wake_ms)


# W6: waits. The matching event carries its send time; the step after the wait notes when it started and
# which event resumed the run.

#: run id -> (latency from the client's send in ms, from the server's receive time `ts` in ms,
#: the id the run waited for, the id of the event it got or None on timeout)
MATCHES: dict[str, tuple[float | None, float | None, int, int | None]] = {}


def after_wait(run_id: str, want: int, got: dict[str, Any] | None, got_ts: int | None) -> None:
    t = time.time_ns()
    if got is None:
        MATCHES.setdefault(run_id, (None, None, want, None))
        return
    sent = (t - int(got["sent_ns"])) / 1e6
    accepted = t / 1e6 - got_ts if got_ts else None
    MATCHES.setdefault(run_id, (sent, accepted, want, int(got["id"])))


# W4: flow control. Each function notes, in the app, what the limit under test must guarantee.

#: concurrency: key -> step bodies of that key in flight now / at most at once
CONC_IN: dict[str, int] = defaultdict(int)
CONC_PEAK: dict[str, int] = defaultdict(int)
#: concurrency: key -> [first, last] completion (s since the epoch) of the key's runs; run ids completed
CONC_DONE: dict[str, list[float]] = {}
CONC_RUNS: dict[str, str] = {}
#: how long a concurrency step body holds its slot (s): long enough for an overlap to show if one happens
CONC_HOLD_S = 0.02


async def conc_step(key: str) -> None:
    """A step body that notes how many bodies of its key are in flight, and holds for `CONC_HOLD_S`."""
    CONC_IN[key] += 1
    CONC_PEAK[key] = max(CONC_PEAK[key], CONC_IN[key])
    try:
        await asyncio.sleep(CONC_HOLD_S)
    finally:
        CONC_IN[key] -= 1


def conc_done(run_id: str, key: str) -> None:
    """The run's last call (after its steps): note when the key's runs completed."""
    t = time.time()
    CONC_RUNS[run_id] = key
    span = CONC_DONE.setdefault(key, [t, t])
    span[0], span[1] = min(span[0], t), max(span[1], t)


#: throttle: run id -> when its first call started (s since the epoch)
THROTTLE_STARTS: dict[str, float] = {}


def throttle_start(run_id: str) -> None:
    THROTTLE_STARTS.setdefault(run_id, time.time())


#: debounce: run id -> (key, n) of the event the run got
DEBOUNCED: dict[str, tuple[str, int]] = {}


def debounced(run_id: str, key: str, n: int) -> None:
    DEBOUNCED.setdefault(run_id, (key, n))


#: batch: run id -> the `n` of each event in its batch
BATCHES: dict[str, list[int]] = {}


def batched(run_id: str, ns: list[int]) -> None:
    BATCHES.setdefault(run_id, ns)


#: rate limit: run id -> key of the runs that started
RATE_LIMITED: dict[str, str] = {}


def rate_limited(run_id: str, key: str) -> None:
    RATE_LIMITED.setdefault(run_id, key)


# W7: crash. The bench kills the server while runs of `crash` are under way; each step body notes when it
# ran, so the bench can count the bodies run more than once and see when work resumed after the restart.

#: (run id, step index) -> how many times that step body ran
CRASH_COUNTS: dict[tuple[str, int], int] = defaultdict(int)
#: start (ns since the epoch) of every crash step body, in execution order
CRASH_TIMES: list[int] = []


def crash_step(run_id: str, index: int) -> None:
    CRASH_TIMES.append(time.time_ns())
    CRASH_COUNTS[(run_id, index)] += 1


def crash_report(since_ns: int = 0) -> dict[str, Any]:
    """Step bodies run so far: in all, distinct (run, step), run again, and the first one at or after
    `since_ns` (None if none yet)."""
    after = [t for t in CRASH_TIMES if t >= since_ns]
    return {"executions": len(CRASH_TIMES), "distinct": len(CRASH_COUNTS),
            "runs": len({run_id for run_id, _ in CRASH_COUNTS}),
            "repeated": sum(1 for n in CRASH_COUNTS.values() if n > 1),
            "after": len(after), "first_after_ns": min(after, default=None)}


def flow_report() -> dict[str, Any]:
    return {"conc_peak": dict(CONC_PEAK), "conc_done": CONC_DONE, "conc_runs": len(CONC_RUNS),
            "throttle_starts": sorted(THROTTLE_STARTS.values()), "debounced": list(DEBOUNCED.values()),
            "batches": list(BATCHES.values()), "rate_limited": list(RATE_LIMITED.values())}


def add_routes(app: Any) -> None:
    """The `/bench/*` routes the bench reads its figures from (the same for every bench app)."""
    app.add_api_route("/bench/gaps", lambda run_id: gaps_ms(run_id), methods=["GET"])
    app.add_api_route("/bench/lateness", lambda: LATENESS, methods=["GET"])
    app.add_api_route("/bench/planned", lambda: PLANNED, methods=["GET"])
    app.add_api_route("/bench/flow", lambda: flow_report(), methods=["GET"])
    app.add_api_route("/bench/matches", lambda: MATCHES, methods=["GET"])
    app.add_api_route("/bench/crash", lambda since_ns=0: crash_report(int(since_ns)), methods=["GET"])
