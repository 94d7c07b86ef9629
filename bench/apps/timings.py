"""Step-body timestamps the bench apps record, so inter-step gaps are measured where the steps run."""

from __future__ import annotations

import itertools
import time
from collections import defaultdict

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
