"""Flow control with the official `inngest` SDK (0.5.19), unmodified, against a real `ratchet dev`.

The functions are in apps/flow_app.py. Each case sends events through the event API and checks what
really happened: the runs through the REST read API, and what the app ran through its record files.
Cases share the stack, so each keys its events by a fresh id.
"""

from __future__ import annotations

import itertools
import time
import uuid

import pytest

from tests.harness import wait_run, wait_runs_for_event, wait_until

pytestmark = pytest.mark.compat


def _uid() -> str:
    return uuid.uuid4().hex


def _send(api, name: str, data: dict) -> str:
    (event_id,) = api.send({"name": name, "data": data})
    return event_id


def _event(api, event_id: str) -> dict:
    return api.http.get(f"/v1/events/{event_id}").json()["data"]


def _spans(lines: list[str]) -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b in (line.split() for line in lines)]


def _max_overlap(spans: list[tuple[float, float]]) -> int:
    """Most spans open at one instant (an exit at t closes before an enter at t opens)."""
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    open_, peak = 0, 0
    for _, d in edges:
        open_ += d
        peak = max(peak, open_)
    return peak


def _wait_step(api, run_id: str, step_id: str, status: str, timeout: float = 10) -> None:
    def ok() -> bool:
        return any(s["id"] == step_id and s["status"] == status for s in api.run(run_id)["steps"])
    wait_until(ok, timeout, f"step {step_id!r} of run {run_id} to be {status}")


# --------------------------------------------------------------------------------------------- concurrency

def test_concurrency_limit_one_per_key_while_another_key_proceeds(compat_flow) -> None:
    api = compat_flow.api
    busy, quiet = _uid(), _uid()
    busy_events = [_send(api, "flow/concurrency", {"tenant": busy}) for _ in range(4)]
    quiet_events = [_send(api, "flow/concurrency", {"tenant": quiet}) for _ in range(2)]
    runs = [wait_runs_for_event(api, e)[0] for e in busy_events + quiet_events]
    for run_id in runs:
        wait_run(api, run_id, "COMPLETED", timeout=20)

    busy_spans = _spans(compat_flow.lines(busy, "spans"))
    quiet_spans = _spans(compat_flow.lines(quiet, "spans"))
    assert (len(busy_spans), len(quiet_spans)) == (8, 4)  # two steps a run, each body run once
    # Never more than one step body of a tenant in flight (without the limit the 4 runs overlap).
    assert _max_overlap(busy_spans) == 1, busy_spans
    assert _max_overlap(quiet_spans) == 1, quiet_spans
    # ... while the other tenant's steps ran alongside, not after the busy tenant's backlog.
    assert _max_overlap(busy_spans + quiet_spans) == 2, (busy_spans, quiet_spans)
    assert max(e for _, e in quiet_spans) < max(e for _, e in busy_spans), (busy_spans, quiet_spans)


# ------------------------------------------------------------------------------------------------ throttle

def test_throttle_spaces_run_starts_by_period_over_limit_and_drops_none(compat_flow) -> None:
    """limit=2 per 1 s, burst 1: one run every 0.5 s per key; another key is not held back."""
    api = compat_flow.api
    k, other = _uid(), _uid()
    events = [_send(api, "flow/throttle", {"k": k}) for _ in range(4)]
    other_event = _send(api, "flow/throttle", {"k": other})
    runs = [wait_runs_for_event(api, e)[0] for e in events]
    starts = sorted(wait_run(api, r, "COMPLETED", timeout=10)["output"] for r in runs)
    other_start = wait_run(api, wait_runs_for_event(api, other_event)[0], "COMPLETED")["output"]

    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(g >= 0.4 for g in gaps), gaps
    assert 1.4 <= starts[-1] - starts[0] <= 2.5, starts
    assert other_start - starts[0] < 0.4, (starts, other_start)


# ---------------------------------------------------------------------------------------------- rate limit

def test_rate_limit_completes_limit_runs_per_key_and_skips_the_rest(compat_flow) -> None:
    """limit=2 per minute per key: 5 events for one key give 2 runs and 3 skipped; another key's run starts."""
    api = compat_flow.api
    k, other = _uid(), _uid()
    events = [_send(api, "flow/rate-limit", {"k": k, "n": n}) for n in range(5)]
    other_event = _send(api, "flow/rate-limit", {"k": other, "n": 9})
    # A skipped run is still a run of its event, stored SKIPPED as the event is taken.
    runs = [api.run(wait_runs_for_event(api, e)[0]) for e in events]
    assert [r["status"] for r in runs[2:]] == ["SKIPPED"] * 3, runs
    ended = [wait_run(api, r["id"], "COMPLETED") for r in runs[:2]] + runs[2:]
    assert [r["output"] for r in ended[:2]] == [0, 1]
    for r in ended[2:]:
        assert "rate limited" in r["error"], r
        assert r["output"] is None and r["started_at"] is None, r
    assert wait_run(api, wait_runs_for_event(api, other_event)[0], "COMPLETED")["output"] == 9
    assert len(compat_flow.lines(k, "body")) == 2
    assert len(compat_flow.lines(other, "body")) == 1


# ------------------------------------------------------------------------------------------------ debounce

def test_debounce_starts_one_run_per_key_with_the_last_event(compat_flow) -> None:
    api = compat_flow.api
    a, b = _uid(), _uid()
    sent: dict[str, list[str]] = {a: [], b: []}
    for n in range(3):
        sent[a].append(_send(api, "flow/debounce", {"k": a, "n": n}))
        if n < 2:
            sent[b].append(_send(api, "flow/debounce", {"k": b, "n": n * 10}))

    run_a = wait_run(api, wait_runs_for_event(api, sent[a][-1], timeout=10)[0], "COMPLETED")
    run_b = wait_run(api, wait_runs_for_event(api, sent[b][-1], timeout=10)[0], "COMPLETED")
    assert run_a["output"] == {"data": {"k": a, "n": 2}, "events": 1}
    assert run_b["output"] == {"data": {"k": b, "n": 10}, "events": 1}
    # The run waited out the period after the last event.
    assert run_a["created_at"] - _event(api, sent[a][-1])["received_at"] >= 1000, run_a
    # Exactly one run per key: the earlier events started none, and the bodies ran once.
    time.sleep(0.3)
    for key in (a, b):
        assert [len(api.event_runs(e)) for e in sent[key][:-1]] == [0] * (len(sent[key]) - 1)
        assert len(compat_flow.lines(key, "body")) == 1


# --------------------------------------------------------------------------------------------------- batch

def test_batch_starts_full_batches_at_once_and_the_rest_at_the_timeout(compat_flow) -> None:
    """max_size=3, timeout 1 s, keyed: 7 events of one key give runs of 3, 3 and 1 events; an event of
    another key sent in between is batched apart."""
    api = compat_flow.api
    k, other = _uid(), _uid()
    events = []
    for n in range(7):
        events.append(_send(api, "flow/batch", {"k": k, "n": n}))
        if n == 1:
            other_event = _send(api, "flow/batch", {"k": other, "n": 100})
        if n in (2, 5):
            # A full batch starts with the event that fills it, in the same transaction.
            (full,) = api.event_runs(events[-1])
            assert api.event_runs(events[-3])[0]["id"] == full["id"]
    assert api.event_runs(events[6]) == []  # waits for the timeout

    run_ids = [wait_runs_for_event(api, events[i], timeout=10)[0] for i in (0, 3, 6)]
    outputs = [wait_run(api, r, "COMPLETED")["output"] for r in run_ids]
    assert outputs == [{"first": 0, "events": [0, 1, 2]}, {"first": 3, "events": [3, 4, 5]},
                       {"first": 6, "events": [6]}]
    for i, run_id in enumerate(run_ids):  # each event belongs to exactly its batch's run
        assert [[r["id"] for r in api.event_runs(e)] for e in events[3 * i:3 * i + 3]] == \
            [[run_id]] * len(events[3 * i:3 * i + 3])
    last = api.run(run_ids[2])
    assert last["created_at"] - _event(api, events[6])["received_at"] >= 1000, last

    (other_run,) = wait_runs_for_event(api, other_event, timeout=10)
    assert wait_run(api, other_run, "COMPLETED")["output"] == {"first": 100, "events": [100]}


# ------------------------------------------------------------------------------------------------ priority

def test_priority_run_orders_queued_runs_behind_a_concurrency_limit(compat_flow) -> None:
    """A blocker holds the group's one slot; low (-100 s), mid (0) and high (+100 s), sent in that order,
    then run highest first."""
    api = compat_flow.api
    group = _uid()
    blocker = _send(api, "flow/priority", {"group": group, "tag": "blocker", "prio": 0, "hold": True})
    wait_until(lambda: compat_flow.lines(group, "order") == ["blocker"], 10, "the blocker to start")
    events = [blocker] + [_send(api, "flow/priority", {"group": group, "tag": tag, "prio": prio})
                          for tag, prio in (("low", -100), ("mid", 0), ("high", 100))]
    for e in events:
        wait_run(api, wait_runs_for_event(api, e)[0], "COMPLETED")
    assert compat_flow.lines(group, "order") == ["blocker", "high", "mid", "low"]


# ----------------------------------------------------------------------------------------------- singleton

def test_singleton_skip_drops_new_runs_while_one_is_active_for_the_key(compat_flow) -> None:
    api = compat_flow.api
    k, other = _uid(), _uid()
    (first,) = wait_runs_for_event(api, _send(api, "flow/singleton-skip", {"k": k, "n": 1}))
    (second,) = wait_runs_for_event(api, _send(api, "flow/singleton-skip", {"k": k, "n": 2}))
    (third,) = wait_runs_for_event(api, _send(api, "flow/singleton-skip", {"k": other, "n": 3}))

    skipped = api.run(second)
    assert skipped["status"] == "SKIPPED" and "singleton" in skipped["error"], skipped
    _wait_step(api, first, "hold", "waiting")
    _wait_step(api, third, "hold", "waiting")  # another key is not affected
    api.send({"name": "flow/release", "data": {"k": k}})
    assert wait_run(api, first, "COMPLETED")["output"] == 1

    # With the key free again, the next run starts.
    (fourth,) = wait_runs_for_event(api, _send(api, "flow/singleton-skip", {"k": k, "n": 4}))
    _wait_step(api, fourth, "hold", "waiting")
    api.send({"name": "flow/release", "data": {"k": k}})
    api.send({"name": "flow/release", "data": {"k": other}})
    assert wait_run(api, fourth, "COMPLETED")["output"] == 4
    assert wait_run(api, third, "COMPLETED")["output"] == 3
    assert api.run(second)["status"] == "SKIPPED"


def test_singleton_cancel_replaces_the_active_run_for_the_key(compat_flow) -> None:
    api = compat_flow.api
    k, other = _uid(), _uid()
    (first,) = wait_runs_for_event(api, _send(api, "flow/singleton-cancel", {"k": k, "n": 1}))
    (bystander,) = wait_runs_for_event(api, _send(api, "flow/singleton-cancel", {"k": other, "n": 9}))
    _wait_step(api, first, "hold", "waiting")
    (second,) = wait_runs_for_event(api, _send(api, "flow/singleton-cancel", {"k": k, "n": 2}))

    cancelled = wait_run(api, first, "CANCELLED")
    assert "singleton" in cancelled["error"], cancelled
    _wait_step(api, second, "hold", "waiting")
    _wait_step(api, bystander, "hold", "waiting")
    api.send({"name": "flow/release", "data": {"k": k}})
    assert wait_run(api, second, "COMPLETED")["output"] == 2
    assert api.run(bystander)["status"] == "RUNNING"  # another key's run was neither cancelled nor released
    api.send({"name": "flow/release", "data": {"k": other}})
    assert wait_run(api, bystander, "COMPLETED")["output"] == 9


# --------------------------------------------------------------------------------------------- idempotency

def test_idempotency_key_starts_one_run_per_value(compat_flow) -> None:
    api = compat_flow.api
    one, two = _uid(), _uid()
    events = [_send(api, "flow/idempotency", {"order": o}) for o in (one, one, two, one)]
    # Runs are created with their event, so the counts are final once the sends return.
    counts = [len(api.event_runs(e)) for e in events]
    assert counts == [1, 0, 1, 0]
    outputs = [wait_run(api, api.event_runs(events[i])[0]["id"], "COMPLETED")["output"] for i in (0, 2)]
    assert outputs == [one, two]
    assert (len(compat_flow.lines(one, "body")), len(compat_flow.lines(two, "body"))) == (1, 1)


# -------------------------------------------------------------------------------------------------- sync

def test_sync_rejects_batching_with_cancel_naming_batch_events(compat_flow) -> None:
    api = compat_flow.api
    resp = api.http.post("/v1/apps/sync", json={"url": compat_flow.bad_url})
    assert resp.status_code == 502, resp.text
    (result,) = resp.json()["data"]
    assert result["ok"] is False, result
    assert "batchEvents" in result["error"] and "cancel" in result["error"], result
    assert "compat-flow-bad-batch-cancel" in result["error"], result
    assert "compat-flow-bad-batch-cancel" not in {f["id"] for f in api.functions()}
