"""Runs that wait to collect events (`debounce`, `batch_add`), and `singleton`.

The store keeps one `DebounceState` / `BatchState` per key, updates it with these functions as events
arrive, and starts the run when it is due (`fire_at` reached, or a batch is full), deleting the state
in the same transaction. Times are integer epoch milliseconds.
"""

from __future__ import annotations

import dataclasses

from ratchet.server.engine.flow.config import SingletonMode

# --------------------------------------------------------------------------------------------- debounce


@dataclasses.dataclass(frozen=True, slots=True)
class DebounceState:
    first_seen: int  #: arrival of the first event of this debounce
    event_id: str  #: the last event: the run starts with it
    fire_at: int  #: when to start the run


def debounce(state: DebounceState | None, *, now: int, period_ms: int, timeout_ms: int | None,
             event_id: str) -> DebounceState:
    """Add an event to the debounce of its key: the run moves to `now + period_ms`, but never later than
    `first_seen + timeout_ms`, and will start with this (the last) event.

    A `state` whose `fire_at` has passed is due: the caller starts its run (with `state.event_id`) and
    the new event opens a new debounce, as it does here.
    """
    first = now if state is None or state.fire_at <= now else state.first_seen
    fire_at = now + period_ms
    if timeout_ms is not None:
        fire_at = min(fire_at, first + timeout_ms)
    return DebounceState(first_seen=first, event_id=event_id, fire_at=fire_at)


# --------------------------------------------------------------------------------------------- batch


@dataclasses.dataclass(frozen=True, slots=True)
class BatchState:
    first_at: int  #: arrival of the first event
    event_ids: tuple[str, ...]  #: in arrival order: the run's `events`
    fire_at: int  #: first_at + timeout: start the run then even if not full


def batch_add(state: BatchState | None, *, now: int, max_size: int, timeout_ms: int,
              event_id: str) -> tuple[BatchState, bool]:
    """Add an event to the batch of its key. Returns the new state and whether it is now full (start the
    run at once). A batch past its `fire_at` that has not been started yet still takes the event.

    Raises:
        ValueError: `state` already holds `max_size` events: a full batch must be started when it
            fills (and on a re-sync that lowers `maxSize`, see `batch_due`), not added to.
    """
    if max_size < 1:
        raise ValueError(f"max_size must be at least 1, got {max_size}")
    if state is None:
        state = BatchState(first_at=now, event_ids=(), fire_at=now + timeout_ms)
    elif len(state.event_ids) >= max_size:
        raise ValueError(f"batch already holds {len(state.event_ids)} events (max_size {max_size}); "
                         "start it before adding")
    state = dataclasses.replace(state, event_ids=(*state.event_ids, event_id))
    return state, len(state.event_ids) >= max_size


def batch_due(state: BatchState, *, now: int, max_size: int) -> bool:
    """Whether the batch must start now: full (also after `maxSize` was lowered) or its timeout passed."""
    return len(state.event_ids) >= max_size or now >= state.fire_at


# --------------------------------------------------------------------------------------------- singleton


@dataclasses.dataclass(frozen=True, slots=True)
class Start:
    """Start the new run."""


@dataclasses.dataclass(frozen=True, slots=True)
class Skip:
    """Do not start the new run (record it as skipped): `active_run` holds the key."""

    active_run: str


@dataclasses.dataclass(frozen=True, slots=True)
class CancelThenStart:
    """Cancel `run_id`, then start the new run."""

    run_id: str


def singleton(active_run: str | None, mode: SingletonMode | str) -> Start | Skip | CancelThenStart:
    """What a new run does given the run (if any) active for its singleton key."""
    if active_run is None:
        return Start()
    if SingletonMode(mode) is SingletonMode.CANCEL:
        return CancelThenStart(active_run)
    return Skip(active_run)
