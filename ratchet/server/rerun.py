"""Rerunning runs on request (`POST /v1/runs/{id}/rerun`, bulk replay): a new run of the same function
with the same events, or with a new event carrying edited data, that may keep the original's steps
before a chosen one as its memo (`engine/rerun.py` decides which)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ratchet.server import ids, ingest, registry
from ratchet.server.engine import rerun as decide
from ratchet.server.store import base


class RerunRefused(Exception):
    """The run cannot be rerun as asked; `status` is the HTTP status that says why (400 or 409)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def rerun(store: base.Store, functions: registry.Registry, ingestor: ingest.Ingestor, run: base.RunRecord,
                *, now: int, notify: Callable[[], None], from_step: str | None = None,
                data: dict[str, Any] | None = None) -> str:
    """Start a rerun of `run` and return its id; raises RerunRefused.

    With `data`, the rerun's event is a new one (fresh id) with the original's name and this data; the
    original event is left as it was. With `from_step` (a step id or hash of `run`), the finished steps
    recorded before it are copied into the rerun as its memo. The rerun skips the function's idempotency
    key, rate limit, singleton, debounce and batching, but keeps its concurrency, throttle and priority.
    """
    fn = functions.get(run.function_slug)
    if fn is None:
        raise RerunRefused(409, f"function {run.function_slug!r} of run {run.id} no longer exists: its app's last "
                                "sync removed it; sync an app that serves it to rerun its runs")
    events = await store.get_events(list(run.event_ids))
    if not events or len(events) != len(run.event_ids):
        raise RerunRefused(409, f"the events that started run {run.id} are no longer stored")
    new_events: list[base.EventRecord] = []
    if data is not None:
        if len(events) != 1:
            raise RerunRefused(400, f"data: run {run.id} was started by a batch of {len(events)} events; only a "
                                    "run of one event can be rerun with edited data")
        original = events[0]
        internal = ids.new_ulid(now)
        events = new_events = [base.EventRecord(internal_id=internal, id=internal, name=original.name, data=data,
                                                ts=now, received_at=now, v=original.v, user=original.user)]
    chosen: base.StepRecord | None = None
    memo: list[base.StepRecord] = []
    if from_step is not None:
        try:
            chosen, memo = decide.memo_to_copy(await store.get_steps(run.id), run.stack, from_step, now)
        except decide.UnknownStep as exc:
            raise RerunRefused(400, f"{exc} (run {run.id})") from exc
    first = events[0]
    new = ingestor.new_run(fn, first, first.wire(), now, events=events)
    new = dataclasses.replace(new, idempotency_key=None, flow=decide.rerun_flow(new.flow), rerun_of=run.id,
                              rerun_from=None if chosen is None else chosen.hash)
    await store.start_rerun(new, now, events=new_events, steps=memo)
    notify()
    return new.id
