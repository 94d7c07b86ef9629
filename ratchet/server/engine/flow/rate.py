"""Run-start rates: `throttle` delays excess runs, `rate_limit` drops them.

Both are checked once per run, when it would start, against state kept per key. Times are integer epoch
milliseconds; the throttle's state is kept in nanoseconds so that `period / limit` loses (almost)
nothing to rounding.

**Throttle: GCRA** (the generic cell rate algorithm, "virtual scheduling" form). With emission interval
`T = period / limit` and tolerance `τ = (burst - 1) · T`, the state is the theoretical arrival time
`TAT` of the next run. A run arriving at `t` conforms iff `t >= TAT - τ`; then
`TAT := max(TAT, t) + T`. So:

- `burst = 1` (τ = 0): runs start at least `T` apart: exactly `limit` per `period`, evenly spaced.
- `burst = b`: from idle, `b` runs start at once, then one every `T`.
- In every closed window `[s, s + w]` at most `burst + floor(w · limit / period)` runs are admitted
  (the classic GCRA bound `1 + floor((w + τ) / T)`; `T` is rounded *up* to a whole nanosecond, which
  only makes the throttle stricter, by under a nanosecond per run).

A run that does not conform gets `DelayUntil(at)` with `at` the first millisecond at which it would:
`ceil((TAT - τ) / 1 ms)`. The state is unchanged (a delayed run takes no slot); when the run comes back
at `at` it conforms unless another run took the slot first, in which case it is delayed again, never
dropped. Inngest's scheduler uses GCRA too (its Lua lets `burst + 1` start at once; we follow the
documented meaning of `burst`: the runs that may start in one burst).

**Rate limit: a sliding-window log.** The state is the start times of the runs admitted in the last
`period`; a run is admitted iff fewer than `limit` of them lie in `(now - period, now]`. Invariant: in
every half-open window of length `period` at most `limit` runs are admitted, and no run is dropped
that could have been admitted without breaking that. The cost is up to `limit` timestamps per key.
(A GCRA would keep O(1) state but either admit up to `2·limit - 1` per period, or drop runs that are
merely closer together than `period / limit`.) `idempotency` is `rate_limit(limit=1,
period_ms=IDEMPOTENCY_PERIOD_MS)`.
"""

from __future__ import annotations

import dataclasses

NS_PER_MS = 1_000_000


@dataclasses.dataclass(frozen=True, slots=True)
class GcraState:
    """Throttle state of one key: the theoretical arrival time of the next run, in epoch nanoseconds."""

    tat_ns: int

    @property
    def expires_at(self) -> int:
        """From this time (ms) on, the state decides exactly as no state would: the store may drop it."""
        return -(-self.tat_ns // NS_PER_MS)


@dataclasses.dataclass(frozen=True, slots=True)
class RateLimitState:
    """Rate-limit state of one key: start times (ms, ascending) of the runs admitted in the last period."""

    admitted: tuple[int, ...] = ()

    def expires_at(self, period_ms: int) -> int:
        """From this time (ms) on, every entry has left the window: the store may drop the state."""
        return self.admitted[-1] + period_ms if self.admitted else 0


@dataclasses.dataclass(frozen=True, slots=True)
class Admit:
    """Start the run and store `state` for the key."""

    state: GcraState | RateLimitState


@dataclasses.dataclass(frozen=True, slots=True)
class DelayUntil:
    """Try again at `at` (ms); `state` is unchanged."""

    at: int
    state: GcraState | None


@dataclasses.dataclass(frozen=True, slots=True)
class Drop:
    """Skip the run (recorded as skipped). `until` (ms) is when the next run for the key would be
    admitted, for the skip reason; `state` is the stored state trimmed to the window (storing it is
    optional)."""

    until: int
    state: RateLimitState


def _positive(**values: int) -> None:
    for name, v in values.items():
        if v < 1:
            raise ValueError(f"{name} must be at least 1, got {v}")


def throttle(state: GcraState | None, *, now: int, limit: int, period_ms: int,
             burst: int = 1) -> Admit | DelayUntil:
    """GCRA with `limit` runs per `period_ms` and `burst` at once (see the module doc)."""
    _positive(limit=limit, period_ms=period_ms, burst=burst)
    interval = -(-period_ms * NS_PER_MS // limit)  # T, rounded up
    tolerance = (burst - 1) * interval  # τ
    now_ns = now * NS_PER_MS
    tat = now_ns if state is None else max(state.tat_ns, now_ns)
    conform_at = tat - tolerance
    if now_ns >= conform_at:
        return Admit(GcraState(tat + interval))
    return DelayUntil(-(-conform_at // NS_PER_MS), state)


def rate_limit(state: RateLimitState | None, *, now: int, limit: int, period_ms: int) -> Admit | Drop:
    """At most `limit` runs in any `period_ms` window (see the module doc).

    Calls for one key are expected with non-decreasing `now` (the store serialises them); entries later
    than `now` are still counted, so a clock that steps back cannot admit extra runs.
    """
    _positive(limit=limit, period_ms=period_ms)
    recent = tuple(t for t in (state.admitted if state else ()) if t > now - period_ms)
    if len(recent) < limit:
        return Admit(RateLimitState(tuple(sorted((*recent, now)))))
    # The window (now - period, now] holds >= limit entries; the next run fits once all but limit - 1
    # of them have left it, i.e. at recent[-limit] + period.
    return Drop(recent[-limit] + period_ms, RateLimitState(recent))
