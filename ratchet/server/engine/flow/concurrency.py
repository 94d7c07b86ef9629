"""Concurrency: which queued calls may start now, without exceeding any limit and fairly across keys.

A concurrency limit counts *calls in flight* (steps executing), per key: a call holds one slot in each
of its run's keys (at most 2 limits per function, plus `env`/`account` keys shared across functions)
from when it is sent until its reply is recorded. A run that sleeps or waits for an event holds none.

`select` picks from the queue's due items, in this order:

- **Fair across groups.** Candidates are grouped by their fair key (`Candidate.group`: normally the
  tenant's concurrency key, `FlowKeys.fair_key`). Picking goes in rounds: in each round every group
  with a candidate that fits gets exactly one pick before any group gets another. So a busy key with
  thousands of queued calls takes one slot per round, like every other key; when `capacity` is at
  least the number of groups, every group with a candidate that fits gets at least one pick.
- **By order within a round.** Groups are served in the order of their best remaining candidate's
  `order_key` (due time shifted by priority, see `order_key`), ties by first appearance in the input.
- **By order within a group,** skipping a candidate blocked by a full key (e.g. its env-wide limit)
  for the next one of the same group. Counts only grow during a call, so a skipped candidate stays
  blocked and is not looked at again.
- **Never over a limit.** A pick adds one to the count of each of its (distinct) keys; a candidate fits
  only when every key it has is below its limit. Keys missing from `limits_by_key` have no limit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from ratchet.server.engine.expressions import PRIORITY_LIMIT_S


@dataclasses.dataclass(frozen=True, slots=True)
class Candidate:
    """A due queue item that wants to make a call."""

    item_id: str
    keys: tuple[str, ...]  #: concurrency keys of its run (`FlowKeys.limits`)
    order_key: int  #: smaller starts first (`order_key(due_at, priority_s)`)
    fair_key: str | None = None  #: the group to be fair over; default: the first key

    @property
    def group(self) -> str:
        if self.fair_key is not None:
            return self.fair_key
        return self.keys[0] if self.keys else ""


def order_key(due_at: int, priority_s: int) -> int:
    """Queue order of an item due at `due_at` (ms) with `priority.run` = `priority_s` seconds: an item
    with priority p sorts as if it were due p seconds earlier (p is clamped to ±600 s)."""
    p = max(-PRIORITY_LIMIT_S, min(PRIORITY_LIMIT_S, priority_s))
    return due_at - p * 1000


def admit_call(in_flight: Mapping[str, int], limits: Iterable[tuple[str, int]]) -> bool:
    """True when a call may start: every `(key, limit)` of its run has `in_flight[key] < limit`."""
    return all(in_flight.get(key, 0) < limit for key, limit in limits)


def select(candidates: Sequence[Candidate], in_flight: Mapping[str, int], limits_by_key: Mapping[str, int],
           capacity: int) -> list[str]:
    """The `item_id`s to start now, in the order picked (see the module doc for the rules).

    Args:
        candidates: due items, in any order.
        in_flight: calls in flight per key now.
        limits_by_key: the limit of each key.
        capacity: most items to pick (free worker slots).
    """
    counts = dict(in_flight)
    queues: dict[str, list[Candidate]] = {}
    first_seen: dict[str, int] = {}
    for i, c in enumerate(candidates):
        queues.setdefault(c.group, []).append(c)
        first_seen.setdefault(c.group, i)
    for q in queues.values():
        q.sort(key=lambda c: c.order_key)  # stable: ties keep input order
        q.reverse()  # pop() from the end takes the best

    def fits(c: Candidate) -> bool:
        return all(counts.get(k, 0) < limits_by_key[k] for k in set(c.keys) if k in limits_by_key)

    picked: list[str] = []
    while len(picked) < capacity and queues:
        for group in sorted(queues, key=lambda g: (queues[g][-1].order_key, first_seen[g])):
            if len(picked) >= capacity:
                break
            q = queues[group]
            while q and not fits(q[-1]):
                q.pop()  # blocked now means blocked for the rest of this call
            if q:
                c = q.pop()
                picked.append(c.item_id)
                for k in set(c.keys):
                    counts[k] = counts.get(k, 0) + 1
            if not q:
                del queues[group]
    return picked
