"""When to try a failed call again."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from ratchet import protocol

#: Exponential backoff by attempt (seconds), as the protocol's reference server uses.
DEFAULT_BACKOFF_S = (15, 30, 60, 120, 300, 600, 1200, 2400, 3600, 7200)
#: Handling a queue item may fail this many times (engine errors, or leases that ran out because the node
#: holding it died) before the item is dead-lettered instead of tried again.
MAX_ITEM_FAILURES = 5
#: `retry-after` is clamped to this range (ms).
RETRY_AFTER_MIN_MS = 1000
RETRY_AFTER_MAX_MS = 24 * 3600 * 1000


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff for retries of one queue item.

    `fixed_s` replaces the exponential table with one interval (the dev server's `--retry-interval`),
    which keeps tests and local debugging fast.
    """

    backoff_s: tuple[float, ...] = DEFAULT_BACKOFF_S
    jitter_s: float = 30.0
    fixed_s: float | None = None

    def delay_ms(self, attempt: int, rand: float) -> int:
        """Delay before attempt `attempt + 1`, given the 0-based `attempt` that failed and `rand` in [0, 1)."""
        if self.fixed_s is not None:
            return int(self.fixed_s * 1000)
        base = self.backoff_s[min(attempt, len(self.backoff_s) - 1)]
        return int((base + rand * self.jitter_s) * 1000)


def parse_retry_after(value: str | None, now_ms: int) -> int | None:
    """The due time (ms) a `retry-after` header asks for, clamped to 1 s .. 24 h; None if absent or bad.

    Accepts an ISO-8601 timestamp or a number of seconds (at most 7 characters).
    """
    if not value:
        return None
    value = value.strip()
    delay: int | None = None
    if value.isdigit() and len(value) <= 7:
        delay = int(value) * 1000
    else:
        try:
            at: datetime = protocol.parse_time(value)
        except ValueError:
            return None
        delay = int(at.timestamp() * 1000) - now_ms
    delay = max(RETRY_AFTER_MIN_MS, min(RETRY_AFTER_MAX_MS, delay))
    return now_ms + delay


def item_retry_delay_ms(failures: int, base_ms: int = 1000) -> int | None:
    """How long to wait before handling a queue item again after its `failures`-th failure (`base_ms`,
    then 4x more each time: 1 s, 4 s, 16 s, 64 s by default); None once it must be dead-lettered."""
    if failures >= MAX_ITEM_FAILURES:
        return None
    return base_ms * 4 ** max(0, failures - 1)
