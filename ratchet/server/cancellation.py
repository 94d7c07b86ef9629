"""Cancelling runs on request (the API, the CLI, bulk cancel): status CANCELLED, pending work removed,
and the lifecycle events emitted so an invoking parent resumes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ratchet import protocol
from ratchet.server.engine import lifecycle
from ratchet.server.store import base


async def cancel(store: base.Store, run_ids: Sequence[str], reason: str, *, now: int,
                 notify: Callable[[], None]) -> list[str]:
    """Cancel the runs among `run_ids` that have not ended; returns the ids cancelled."""
    emits: dict[str, base.Emit] = {}
    output = {"name": "FunctionCancelled", "message": reason}
    for run_id in run_ids:
        run = await store.get_run(run_id)
        if run is None or run.status.is_terminal:
            continue
        events = [e.wire() for e in await store.get_events(list(run.event_ids))]
        emits[run_id] = base.Emit(lifecycle.run_ended_events(
            run_id=run_id, function_slug=run.function_slug, events=events, status=protocol.RunStatus.CANCELLED,
            output=output))
    cancelled = await store.cancel_runs(list(emits), reason, now, emits) if emits else []
    if cancelled:
        notify()
    return cancelled
