"""Flow control's decisions, as tables (arithmetic in the comments) and hypothesis properties.

No I/O and no clock: every time is an integer of epoch milliseconds passed in.
"""

from __future__ import annotations

import heapq
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratchet import protocol
from ratchet.server.engine import flow
from ratchet.server.engine.flow import config as flow_config

MS = 1_000_000  # ns per ms
S = 1000  # ms per s


def fn(**fields: Any) -> protocol.FunctionConfig:
    return protocol.FunctionConfig.model_validate({"id": "app-fn", **fields})


def ev(**data: Any) -> dict[str, Any]:
    return {"name": "app/x", "data": data, "id": "e1", "ts": 0}


# --------------------------------------------------------------------------------------------- validate


@pytest.mark.parametrize("fields", [
    {},
    {"concurrency": 5},
    {"concurrency": 0},  # 0 = no limit
    {"concurrency": [{"limit": 0}]},
    {"concurrency": [{"limit": 10}, {"limit": 2, "key": "event.data.user"}]},
    {"concurrency": [{"limit": 60, "key": '"openai"', "scope": "account"}]},
    {"concurrency": [{"limit": 3, "key": "event.data.user", "scope": "env"}]},
    {"throttle": {"limit": 5, "period": "1m", "burst": 2, "key": "event.data.user"}},
    {"throttle": {"limit": 1, "period": "300ms"}},  # other SDKs send ms; burst absent = 1
    {"rateLimit": {"limit": 10, "period": "24h", "key": "event.data.user"}},
    {"debounce": {"period": "1s", "timeout": "1m", "key": ""}},  # "" = no key
    {"debounce": {"period": "7d"}},
    {"batchEvents": {"maxSize": 1}},  # timeout absent = 60 s
    {"batchEvents": {"maxSize": 1000, "timeout": "5s", "key": "event.data.user", "if": "event.data.x > 1"}},
    {"batchEvents": {"maxSize": 10, "timeout": "5s"}, "rateLimit": {"limit": 1, "period": "1m"},
     "idempotency": "event.data.id", "throttle": {"limit": 1, "period": "1s"}, "concurrency": 2},
    {"priority": {"run": "event.data.prio"}, "singleton": {"key": "event.data.user", "mode": "cancel"}},
    {"priority": {}, "singleton": {"mode": "skip"}},
    {"cancel": [{"event": "app/cancel"}], "debounce": {"period": "5s"}},
])
def test_valid_configs_pass(fields: dict[str, Any]) -> None:
    flow.validate(fn(**fields))


@pytest.mark.parametrize(("fields", "path", "fragment"), [
    ({"concurrency": -1}, "concurrency", "must not be negative"),
    ({"concurrency": [{"limit": -2}]}, "concurrency[0].limit", "must not be negative"),
    ({"concurrency": [{"limit": 1}, {"limit": 2}, {"limit": 3}]}, "concurrency", "at most 2"),
    ({"concurrency": [{"limit": 1, "scope": "team"}]}, "concurrency[0].scope", "'team'"),
    ({"concurrency": [{"limit": 1}, {"limit": 1, "scope": "env"}]}, "concurrency[1].key", "required"),
    ({"concurrency": [{"limit": 1}, {"limit": 1, "key": "async.data.x"}]}, "concurrency[1].key",
     "async.data.x"),
    ({"concurrency": [{"limit": 1, "key": "event.data.("}]}, "concurrency[0].key", "event.data.("),
    ({"throttle": {"limit": 0, "period": "1m"}}, "throttle.limit", "at least 1, got 0"),
    ({"throttle": {"limit": 1, "period": "1m", "burst": 0}}, "throttle.burst", "at least 1, got 0"),
    ({"throttle": {"limit": 1, "period": "0s"}}, "throttle.period", "shorter than the minimum"),
    ({"throttle": {"limit": 1, "period": "soon"}}, "throttle.period", "invalid duration 'soon'"),
    ({"throttle": {"limit": 1, "period": "8d"}}, "throttle.period", "longer than the maximum of 1w"),
    ({"throttle": {"limit": 1, "period": "1m", "key": "nope(1)"}}, "throttle.key", "nope(1)"),
    ({"rateLimit": {"limit": 0, "period": "1h"}}, "rateLimit.limit", "at least 1"),
    ({"rateLimit": {"limit": 1, "period": "25h"}}, "rateLimit.period", "maximum of 1d"),
    ({"rateLimit": {"limit": 1, "period": ""}}, "rateLimit.period", "required"),
    ({"debounce": {"period": "500ms"}}, "debounce.period", "minimum of 1s"),
    ({"debounce": {"period": "8d"}}, "debounce.period", "maximum of 1w"),
    ({"debounce": {"period": "1s", "timeout": "x"}}, "debounce.timeout", "invalid duration"),
    ({"debounce": {"period": "1s", "key": "vars.x + async.y"}}, "debounce.key", "async"),
    ({"batchEvents": {"maxSize": 0}}, "batchEvents.maxSize", "at least 1, got 0"),
    ({"batchEvents": {"maxSize": 1001}}, "batchEvents.maxSize", "at most 1000"),
    ({"batchEvents": {"maxSize": 2, "timeout": "999ms"}}, "batchEvents.timeout", "minimum of 1s"),
    ({"batchEvents": {"maxSize": 2, "if": "async.x"}}, "batchEvents.if", "async"),
    ({"batchEvents": {"maxSize": 2}, "cancel": [{"event": "app/c"}]}, "batchEvents", "cancel"),
    ({"batchEvents": {"maxSize": 2}, "debounce": {"period": "1s"}}, "batchEvents", "debounce"),
    ({"batchEvents": {"maxSize": 2}, "priority": {"run": "1"}}, "batchEvents", "priority.run"),
    ({"batchEvents": {"maxSize": 2}, "singleton": {"mode": "skip"}}, "batchEvents", "singleton"),
    ({"priority": {"run": "event.data.("}}, "priority.run", "event.data.("),
    ({"singleton": {"mode": "queue"}}, "singleton.mode", "'queue'"),
    ({"idempotency": "async.id"}, "idempotency", "async.id"),
])
def test_invalid_configs_name_the_field(fields: dict[str, Any], path: str, fragment: str) -> None:
    with pytest.raises(flow.FlowConfigInvalid) as info:
        flow.validate(fn(**fields))
    assert [p for p in info.value.problems if p.path == path and fragment in p.message], info.value.problems
    assert f"{path}: " in str(info.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(flow.FlowConfigInvalid) as info:
        flow.validate(fn(throttle={"limit": 0, "period": "x"}, rateLimit={"limit": 0, "period": "1h"}))
    assert [p.path for p in info.value.problems] == ["throttle.limit", "throttle.period", "rateLimit.limit"]


def test_spec_normalises_durations_and_defaults() -> None:
    s = flow.spec(fn(concurrency=[{"limit": 0}, {"limit": 2, "key": "event.data.u", "scope": "env"}],
                     throttle={"limit": 5, "period": "1m"}, debounce={"period": "5s", "timeout": "1m"}))
    assert s.concurrency == (flow.ConcurrencySpec(2, flow.Scope.ENV, "event.data.u"),)  # the 0 entry is gone
    assert s.throttle == flow.ThrottleSpec(limit=5, period_ms=60 * S, burst=1)
    assert s.debounce == flow.DebounceSpec(period_ms=5 * S, timeout_ms=60 * S)
    assert flow.spec(fn(batchEvents={"maxSize": 3})).batch == flow.BatchSpec(max_size=3, timeout_ms=60 * S)


# --------------------------------------------------------------------------------------------- keys


def test_keys_of_a_full_config() -> None:
    config = fn(concurrency=[{"limit": 10}, {"limit": 2, "key": "event.data.user"}],
                throttle={"limit": 1, "period": "1s", "key": "event.data.user"},
                rateLimit={"limit": 1, "period": "1s"}, debounce={"period": "1s"},
                singleton={"mode": "skip"}, idempotency="event.data.id", priority={"run": "event.data.p"})
    k = flow.keys(config, ev(user="u1", id="i1", p=900), 0)
    assert [(c.limit, c.scope, c.keyed) for c in k.concurrency] == [(10, "fn", False), (2, "fn", True)]
    assert k.fair_key == k.concurrency[1].key  # the per-tenant key
    assert k.limits == [(k.concurrency[0].key, 10), (k.concurrency[1].key, 2)]
    assert k.priority_s == 600  # 900 clamped
    assert k.batch is None and not k.batched
    every = [c.key for c in k.concurrency] + [k.throttle, k.rate_limit, k.debounce, k.singleton, k.idempotency]
    assert len(set(every)) == len(every)  # kinds never collide
    assert all(isinstance(x, str) and len(x) == 32 and int(x, 16) >= 0 for x in every)


def test_keys_without_expression_are_one_per_function() -> None:
    config = fn(concurrency=3, rateLimit={"limit": 1, "period": "1s"})
    a, b = flow.keys(config, ev(user="u1"), 0), flow.keys(config, ev(user="u2"), 0)
    assert a == b
    other = fn(concurrency=3, rateLimit={"limit": 1, "period": "1s"}).model_copy(update={"id": "app-other"})
    c = flow.keys(other, ev(user="u1"), 0)
    assert c.concurrency[0].key != a.concurrency[0].key and c.rate_limit != a.rate_limit


def test_key_values_split_tenants_and_numbers_compare_loosely() -> None:
    config = fn(throttle={"limit": 1, "period": "1s", "key": "event.data.user"})
    assert flow.keys(config, ev(user=1), 0).throttle == flow.keys(config, ev(user=1.0), 0).throttle
    assert flow.keys(config, ev(user=1), 0).throttle == flow.keys(config, ev(user="1"), 0).throttle  # as Go's %v
    assert flow.keys(config, ev(user="a"), 0).throttle != flow.keys(config, ev(user="b"), 0).throttle


@pytest.mark.parametrize(("scope", "same_across_functions"), [("fn", False), ("env", True), ("account", True)])
def test_concurrency_scope_decides_who_shares_the_key(scope: str, same_across_functions: bool) -> None:
    entry = {"limit": 1, "key": '"openai"', "scope": scope}
    one = flow.keys(fn(concurrency=[entry]), ev(), 0, env="prod", account="acme")
    two = flow.keys(fn(concurrency=[entry]).model_copy(update={"id": "app-two"}), ev(), 0,
                    env="prod", account="acme")
    assert (one.concurrency[0].key == two.concurrency[0].key) is same_across_functions
    other_env = flow.keys(fn(concurrency=[entry]), ev(), 0, env="staging", account="acme")
    assert (other_env.concurrency[0].key == one.concurrency[0].key) is (scope == "account")
    other_account = flow.keys(fn(concurrency=[entry]), ev(), 0, env="prod", account="other")
    assert other_account.concurrency[0].key != one.concurrency[0].key


@pytest.mark.parametrize(("x", "batched"), [(2, True), (0, False), (None, False)])
def test_batch_if_decides_whether_the_event_is_batched(x: int | None, batched: bool) -> None:
    k = flow.keys(fn(batchEvents={"maxSize": 2, "if": "event.data.x > 1"}), ev(x=x), 0)
    assert k.batched is batched and (k.batch is not None) is batched


def test_keys_accepts_a_spec_and_rejects_an_invalid_config() -> None:
    s = flow.spec(fn(rateLimit={"limit": 1, "period": "1s"}))
    assert flow.keys(s, ev(), 0).rate_limit == flow_config.hash_key("rateLimit", "fn", "", "", "app-fn", None)
    with pytest.raises(flow.FlowConfigInvalid):
        flow.keys(fn(rateLimit={"limit": 0, "period": "1s"}), ev(), 0)


# --------------------------------------------------------------------------------------------- throttle


def gcra(tat_ns: int) -> flow.GcraState:
    return flow.GcraState(tat_ns)


@pytest.mark.parametrize(("state", "now", "limit", "period_ms", "burst", "expected"), [
    # T = 60 s / 5 = 12 s. No state: admit, TAT = 1 s + 12 s = 13 s.
    (None, 1 * S, 5, 60 * S, 1, flow.Admit(gcra(13 * S * MS))),
    # burst 1 (τ = 0): TAT 13 s > now 1 s: delay until TAT - τ = 13 s.
    (gcra(13 * S * MS), 1 * S, 5, 60 * S, 1, flow.DelayUntil(13 * S, gcra(13 * S * MS))),
    # ... and at 13 s it conforms: TAT = max(13, 13) + 12 = 25 s.
    (gcra(13 * S * MS), 13 * S, 5, 60 * S, 1, flow.Admit(gcra(25 * S * MS))),
    # burst 2 (τ = 12 s): second run at once: 13 - 12 = 1 <= 1 -> admit, TAT = 13 + 12 = 25 s.
    (gcra(13 * S * MS), 1 * S, 5, 60 * S, 2, flow.Admit(gcra(25 * S * MS))),
    # third run at once: 25 - 12 = 13 s > 1 s -> delay until 13 s.
    (gcra(25 * S * MS), 1 * S, 5, 60 * S, 2, flow.DelayUntil(13 * S, gcra(25 * S * MS))),
    # idle key (TAT 5 s, in the past): like no state, TAT = 100 + 12 = 112 s.
    (gcra(5 * S * MS), 100 * S, 5, 60 * S, 1, flow.Admit(gcra(112 * S * MS))),
    # T = 1 s / 3 = 333_333_333.3 ns, rounded up to 333_333_334 ns.
    (None, 0, 3, 1 * S, 1, flow.Admit(gcra(333_333_334))),
    # the next conforms at 333_333_334 ns: at 333 ms it is too early; the delay is to ceil = 334 ms,
    (gcra(333_333_334), 333, 3, 1 * S, 1, flow.DelayUntil(334, gcra(333_333_334))),
    # where it is admitted: TAT = 334 ms + 333_333_334 ns.
    (gcra(333_333_334), 334, 3, 1 * S, 1, flow.Admit(gcra(334 * MS + 333_333_334))),
])
def test_throttle(state: flow.GcraState | None, now: int, limit: int, period_ms: int, burst: int,
                  expected: object) -> None:
    assert flow.throttle(state, now=now, limit=limit, period_ms=period_ms, burst=burst) == expected


def test_throttle_state_expires_at_its_tat() -> None:
    assert flow.GcraState(13 * S * MS + 1).expires_at == 13 * S + 1  # ceil to the ms


def test_throttle_rejects_zero_limits() -> None:
    with pytest.raises(ValueError, match="burst"):
        flow.throttle(None, now=0, limit=1, period_ms=1, burst=0)


# --------------------------------------------------------------------------------------------- rate limit


@pytest.mark.parametrize(("admitted", "now", "expected"), [
    # limit 2 per 1000 ms.
    ((), 0, flow.Admit(flow.RateLimitState((0,)))),
    ((0,), 500, flow.Admit(flow.RateLimitState((0, 500)))),
    # (100, 900] holds 0 and 500 = 2 = limit: drop; the oldest leaves at 0 + 1000.
    ((0, 500), 900, flow.Drop(1000, flow.RateLimitState((0, 500)))),
    # (0, 1000] no longer holds 0: admit, and 0 is forgotten.
    ((0, 500), 1000, flow.Admit(flow.RateLimitState((500, 1000)))),
    # both entries are older than the window (2500 - 1000 = 1500 >= 1000): like no state.
    ((500, 1000), 2500, flow.Admit(flow.RateLimitState((2500,)))),
    # a clock that stepped back still counts the later entries: (-100, 900] holds 500 and 950.
    ((500, 950), 900, flow.Drop(1500, flow.RateLimitState((500, 950)))),
])
def test_rate_limit(admitted: tuple[int, ...], now: int, expected: object) -> None:
    state = flow.RateLimitState(admitted) if admitted else None
    assert flow.rate_limit(state, now=now, limit=2, period_ms=1000) == expected


def test_rate_limit_state_expires_a_period_after_the_last_entry() -> None:
    assert flow.RateLimitState((500, 1000)).expires_at(1000) == 2000  # 1000 + 1000
    assert flow.RateLimitState().expires_at(1000) == 0


def test_idempotency_is_a_rate_limit_of_one_per_day() -> None:
    day = flow_config.IDEMPOTENCY_PERIOD_MS
    first = flow.rate_limit(None, now=0, limit=1, period_ms=day)
    assert isinstance(first, flow.Admit) and isinstance(first.state, flow.RateLimitState)
    assert flow.rate_limit(first.state, now=day - 1, limit=1, period_ms=day) == flow.Drop(day, first.state)
    assert isinstance(flow.rate_limit(first.state, now=day, limit=1, period_ms=day), flow.Admit)


# --------------------------------------------------------------------------------------------- concurrency


@pytest.mark.parametrize(("in_flight", "limits", "ok"), [
    ({}, [], True),  # no limits
    ({"a": 1}, [("a", 2)], True),  # 1 < 2
    ({"a": 2}, [("a", 2)], False),  # 2 = 2: full
    ({"a": 0, "b": 5}, [("a", 2), ("b", 5)], False),  # every limit must have room
    ({"b": 5}, [("a", 1)], True),  # other keys do not matter
])
def test_admit_call(in_flight: dict[str, int], limits: list[tuple[str, int]], ok: bool) -> None:
    assert flow.admit_call(in_flight, limits) is ok


@pytest.mark.parametrize(("due_at", "priority_s", "expected"), [
    (10_000, 0, 10_000),
    (10_000, 5, 5_000),  # 10_000 - 5 * 1000
    (10_000, -5, 15_000),  # 10_000 + 5 * 1000
    (1_000_000, 900, 400_000),  # clamped to 600: 1_000_000 - 600_000
    (1_000_000, -900, 1_600_000),
])
def test_order_key(due_at: int, priority_s: int, expected: int) -> None:
    assert flow.order_key(due_at, priority_s) == expected


def cand(item_id: str, *keys: str, order: int = 0, fair_key: str | None = None) -> flow.Candidate:
    return flow.Candidate(item_id, keys, order, fair_key)


@pytest.mark.parametrize(("candidates", "in_flight", "limits", "capacity", "expected"), [
    # One busy tenant (a, 10 queued) and a quiet one (b): rounds alternate a, b, a, ...
    ([cand(f"a{i}", "A", order=i) for i in range(10)] + [cand("b0", "B", order=50)], {}, {"A": 5, "B": 5}, 4,
     ["a0", "b0", "a1", "a2"]),
    # A is full (2 in flight = limit 2): only B's items start.
    ([cand("a0", "A", order=0), cand("b0", "B", order=1), cand("b1", "B", order=2)], {"A": 2},
     {"A": 2, "B": 5}, 5, ["b0", "b1"]),
    # A has room for one more (1 in flight, limit 2): a0 then B, then nothing fits in A.
    ([cand("a0", "A", order=0), cand("a1", "A", order=1), cand("b0", "B", order=9)], {"A": 1},
     {"A": 2, "B": 5}, 5, ["a0", "b0"]),
    # Within a round the group with the earliest head goes first (b0 has the higher priority).
    ([cand("a0", "A", order=10), cand("b0", "B", order=-590)], {}, {}, 2, ["b0", "a0"]),
    # A shared env key E (limit 1) blocks a0 after b0 took it; a1 has no E and is taken instead.
    ([cand("b0", "B", "E", order=0), cand("a0", "A", "E", order=1), cand("a1", "A", order=2)], {},
     {"E": 1}, 5, ["b0", "a1"]),
    # Fair over the explicit fair key (tenant T1/T2), not the function-wide first key F (limit 10).
    ([cand("x0", "F", "T1", order=0, fair_key="T1"), cand("x1", "F", "T1", order=1, fair_key="T1"),
      cand("y0", "F", "T2", order=5, fair_key="T2")], {}, {"F": 10, "T1": 5, "T2": 5}, 2, ["x0", "y0"]),
    # capacity 0 picks nothing.
    ([cand("a0", "A")], {}, {}, 0, []),
])
def test_select(candidates: list[flow.Candidate], in_flight: dict[str, int], limits: dict[str, int],
                capacity: int, expected: list[str]) -> None:
    assert flow.select(candidates, in_flight, limits, capacity) == expected


# --------------------------------------------------------------------------------------------- debounce


@pytest.mark.parametrize(("state", "now", "timeout_ms", "expected"), [
    # period 5 s. First event: fire at 0 + 5 = 5 s.
    (None, 0, None, flow.DebounceState(0, "e", 5 * S)),
    # another at 3 s: fire at 3 + 5 = 8 s, first_seen kept.
    (flow.DebounceState(0, "d", 5 * S), 3 * S, None, flow.DebounceState(0, "e", 8 * S)),
    # timeout 6 s caps it: min(3 + 5, 0 + 6) = 6 s.
    (flow.DebounceState(0, "d", 5 * S), 3 * S, 6 * S, flow.DebounceState(0, "e", 6 * S)),
    # the old one is due (fire_at 5 s <= now 5 s): a new debounce starts at 5 s, fires at 10 s.
    (flow.DebounceState(0, "d", 5 * S), 5 * S, 6 * S, flow.DebounceState(5 * S, "e", 10 * S)),
])
def test_debounce(state: flow.DebounceState | None, now: int, timeout_ms: int | None,
                  expected: flow.DebounceState) -> None:
    assert flow.debounce(state, now=now, period_ms=5 * S, timeout_ms=timeout_ms, event_id="e") == expected


# --------------------------------------------------------------------------------------------- batch


@pytest.mark.parametrize(("state", "now", "expected"), [
    # max_size 3, timeout 5 s. First event: fire at 1 + 5 = 6 s.
    (None, 1 * S, (flow.BatchState(1 * S, ("e",), 6 * S), False)),
    (flow.BatchState(1 * S, ("a",), 6 * S), 2 * S, (flow.BatchState(1 * S, ("a", "e"), 6 * S), False)),
    # the third event fills it: start at once.
    (flow.BatchState(1 * S, ("a", "b"), 6 * S), 2 * S, (flow.BatchState(1 * S, ("a", "b", "e"), 6 * S), True)),
    # past its timeout but not started yet: still takes the event.
    (flow.BatchState(1 * S, ("a",), 6 * S), 7 * S, (flow.BatchState(1 * S, ("a", "e"), 6 * S), False)),
])
def test_batch_add(state: flow.BatchState | None, now: int, expected: tuple[flow.BatchState, bool]) -> None:
    assert flow.batch_add(state, now=now, max_size=3, timeout_ms=5 * S, event_id="e") == expected


def test_batch_add_refuses_a_full_batch() -> None:
    with pytest.raises(ValueError, match="start it"):
        flow.batch_add(flow.BatchState(0, ("a", "b"), 5), now=1, max_size=2, timeout_ms=5, event_id="e")


@pytest.mark.parametrize(("size", "now", "max_size", "due"), [
    (1, 5, 3, False),  # 1 < 3 and 5 < fire_at 6
    (1, 6, 3, True),  # timeout reached
    (3, 0, 3, True),  # full
    (3, 0, 2, True),  # maxSize lowered by a re-sync
])
def test_batch_due(size: int, now: int, max_size: int, due: bool) -> None:
    state = flow.BatchState(1, tuple("abc"[:size]), 6)
    assert flow.batch_due(state, now=now, max_size=max_size) is due


# --------------------------------------------------------------------------------------------- singleton


@pytest.mark.parametrize(("active", "mode", "expected"), [
    (None, "skip", flow.Start()),
    (None, "cancel", flow.Start()),
    ("run-1", "skip", flow.Skip("run-1")),
    ("run-1", flow.SingletonMode.CANCEL, flow.CancelThenStart("run-1")),
])
def test_singleton(active: str | None, mode: str, expected: object) -> None:
    assert flow.singleton(active, mode) == expected


# --------------------------------------------------------------------------------------------- properties

arrivals = st.lists(st.integers(0, 20_000), min_size=1, max_size=60).map(sorted)


@settings(max_examples=300, deadline=None)
@given(arrivals, st.integers(1, 6), st.integers(1, 5_000), st.integers(1, 4))
def test_throttle_never_exceeds_its_rate_and_drops_nothing(
        times: list[int], limit: int, period_ms: int, burst: int) -> None:
    """Runs go through a queue: a delayed run comes back at its `DelayUntil.at`. Invariants:
    every run is admitted eventually; in every closed window [s, s + w] of admission times at most
    burst + floor(w * limit / period) runs are admitted; each run's delays only move forward, and the
    time a delay names is the first at which that state admits."""
    queue = [(t, i) for i, t in enumerate(times)]
    heapq.heapify(queue)
    state: flow.GcraState | None = None
    admitted: list[int] = []
    last_delay: dict[int, int] = {}
    while queue:
        now, i = heapq.heappop(queue)
        decision = flow.throttle(state, now=now, limit=limit, period_ms=period_ms, burst=burst)
        if isinstance(decision, flow.Admit):
            assert isinstance(decision.state, flow.GcraState)
            state = decision.state
            admitted.append(now)
            continue
        assert decision.at > now and decision.state == state
        assert decision.at >= last_delay.get(i, decision.at)
        last_delay[i] = decision.at
        assert isinstance(flow.throttle(state, now=decision.at, limit=limit, period_ms=period_ms, burst=burst),
                          flow.Admit)
        assert isinstance(flow.throttle(state, now=decision.at - 1, limit=limit, period_ms=period_ms,
                                        burst=burst), flow.DelayUntil)
        heapq.heappush(queue, (decision.at, i))
    assert len(admitted) == len(times)
    for a in range(len(admitted)):
        for b in range(a, len(admitted)):
            assert b - a + 1 <= burst + (admitted[b] - admitted[a]) * limit // period_ms


@settings(max_examples=300, deadline=None)
@given(arrivals, st.integers(1, 5), st.integers(1, 5_000))
def test_rate_limit_admits_at_most_limit_per_sliding_period(times: list[int], limit: int, period_ms: int) -> None:
    """Invariants: every half-open window (t - period, t] holds at most `limit` admitted runs; a run is
    dropped only when its window already holds `limit` (nothing is dropped needlessly); the `until` of a
    drop is the first time the same state admits."""
    state: flow.RateLimitState | None = None
    admitted: list[int] = []
    for now in times:
        decision = flow.rate_limit(state, now=now, limit=limit, period_ms=period_ms)
        if isinstance(decision, flow.Admit):
            assert isinstance(decision.state, flow.RateLimitState)
            state = decision.state
            admitted.append(now)
            assert len(state.admitted) <= limit
        else:
            assert sum(1 for t in admitted if now - period_ms < t <= now) >= limit
            until = decision.until
            assert isinstance(flow.rate_limit(state, now=until, limit=limit, period_ms=period_ms), flow.Admit)
            assert isinstance(flow.rate_limit(state, now=until - 1, limit=limit, period_ms=period_ms), flow.Drop)
    for t in admitted:
        assert sum(1 for u in admitted if t - period_ms < u <= t) <= limit


KEYS = ["A", "B", "C", "D", "E"]


@st.composite
def selections(draw: st.DrawFn) -> tuple[list[flow.Candidate], dict[str, int], dict[str, int], int]:
    n = draw(st.integers(0, 25))
    candidates = [
        flow.Candidate(f"i{i}", tuple(draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=2))),
                       draw(st.integers(-10, 10)))
        for i in range(n)]
    limits = draw(st.dictionaries(st.sampled_from(KEYS), st.integers(1, 4)))
    in_flight = draw(st.dictionaries(st.sampled_from(KEYS), st.integers(0, 5)))
    return candidates, in_flight, limits, draw(st.integers(0, 12))


@settings(max_examples=500, deadline=None)
@given(selections())
def test_select_never_exceeds_a_limit_and_is_fair(
        case: tuple[list[flow.Candidate], dict[str, int], dict[str, int], int]) -> None:
    candidates, in_flight, limits, capacity = case
    picked = flow.select(candidates, in_flight, limits, capacity)
    by_id = {c.item_id: c for c in candidates}
    assert len(picked) == len(set(picked)) <= capacity and set(picked) <= set(by_id)
    counts = dict(in_flight)
    for item in picked:  # every pick fitted when it was made
        c = by_id[item]
        assert flow.admit_call(counts, [(k, limits[k]) for k in set(c.keys) if k in limits])
        for k in set(c.keys):
            counts[k] = counts.get(k, 0) + 1
    for k, limit in limits.items():  # so no limit is exceeded (beyond what was already in flight)
        assert counts.get(k, 0) <= max(limit, in_flight.get(k, 0))

    def fits_now(c: flow.Candidate) -> bool:
        return flow.admit_call(counts, [(k, limits[k]) for k in set(c.keys) if k in limits])

    left = [c for c in candidates if c.item_id not in picked]
    if len(picked) < capacity:  # work-conserving: stops only when nothing else fits
        assert not any(fits_now(c) for c in left)
    picks = {g: 0 for g in {c.group for c in candidates}}
    for item in picked:
        picks[by_id[item].group] += 1
    groups_with_room = {c.group for c in left if fits_now(c)}
    for g in groups_with_room:  # round robin: a group that could still go is at most one round behind
        assert all(p <= picks[g] + 1 for p in picks.values())
    if capacity >= len(picks):  # every group gets a pick unless all of its candidates are blocked
        for g, p in picks.items():
            assert p > 0 or not any(fits_now(c) for c in left if c.group == g)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KEYS), st.integers(-10, 10)), max_size=30),
       st.dictionaries(st.sampled_from(KEYS), st.integers(0, 3)), st.integers(1, 3))
def test_select_gives_every_tenant_with_room_a_pick(
        items: list[tuple[str, int]], in_flight: dict[str, int], limit: int) -> None:
    """One key per call (one keyed limit per tenant): with capacity for every tenant, every tenant whose
    key has room and that has a queued call gets at least one pick, however busy the others are."""
    candidates = [flow.Candidate(f"i{i}", (k,), o) for i, (k, o) in enumerate(items)]
    tenants = {k for k, _ in items}
    picked = flow.select(candidates, in_flight, dict.fromkeys(KEYS, limit), len(tenants))
    got = {k for k, _ in (items[int(p[1:])] for p in picked)}
    assert got == {k for k in tenants if in_flight.get(k, 0) < limit}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=40), st.integers(1, 5_000),
       st.none() | st.integers(1, 20_000))
def test_debounce_never_fires_after_its_timeout(gaps: list[int], period_ms: int, timeout_ms: int | None) -> None:
    state: flow.DebounceState | None = None
    now = 0
    for i, gap in enumerate(gaps):
        now += gap
        state = flow.debounce(state, now=now, period_ms=period_ms, timeout_ms=timeout_ms, event_id=f"e{i}")
        assert now < state.fire_at <= now + period_ms
        assert state.event_id == f"e{i}" and state.first_seen <= now
        if timeout_ms is not None:
            assert state.fire_at <= state.first_seen + timeout_ms


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 3_000), min_size=1, max_size=60), st.integers(1, 6), st.integers(1, 5_000))
def test_batches_never_exceed_max_size_and_keep_every_event(gaps: list[int], max_size: int, timeout_ms: int) -> None:
    """The store's loop: start a due batch before adding, start a full one at once."""
    state: flow.BatchState | None = None
    started: list[tuple[tuple[str, ...], bool]] = []  # (events, full)
    now = 0
    for i, gap in enumerate(gaps):
        now += gap
        if state is not None and flow.batch_due(state, now=now, max_size=max_size):
            started.append((state.event_ids, False))
            state = None
        state, full = flow.batch_add(state, now=now, max_size=max_size, timeout_ms=timeout_ms, event_id=f"e{i}")
        assert state.fire_at == state.first_at + timeout_ms and len(state.event_ids) <= max_size
        if full:
            started.append((state.event_ids, True))
            state = None
    if state is not None:
        started.append((state.event_ids, False))
    assert [e for events, _ in started for e in events] == [f"e{i}" for i in range(len(gaps))]
    assert all(0 < len(events) <= max_size for events, _ in started)
    assert all(len(events) == max_size for events, full in started if full)
