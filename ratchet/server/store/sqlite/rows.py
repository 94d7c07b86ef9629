"""Column lists of the SQLite schema and its WHERE-clause builder, with the shared record mappers (`store.rows`)."""

from __future__ import annotations

from typing import Any

from ratchet.server.store.rows import (  # noqa: F401 - re-exported for the backend
    IDEMPOTENCY_MS,
    app_row,
    dead_letter_row,
    dumps,
    event_row,
    function_row,
    item_row,
    loads,
    pause_row,
    run_conditions,
    run_row,
    step_row,
)

RUN_COLS = ("id, function_slug, app_id, status, event_ids, created_at, started_at, ended_at, output, "
             "stack, force_step_plan, error, rerun_of, rerun_from, invoked_by, invoked_step")
EVENT_COLS = "internal_id, id, name, data, ts, received_at, v, user, seq"
STEP_COLS = "run_id, hash, name, op, status, memo, started_at, ended_at, attempts, input"
QUEUE_COLS = "id, run_id, target, attempt, due_at, lease_owner, lease_until, kind, payload, failures, failure"
DEAD_LETTER_COLS = "id, item_id, run_id, kind, target, attempt, payload, failures, reason, created_at"
PAUSE_COLS = ("id, run_id, kind, step_hash, step_name, event_name, expression, index_path, index_value, "
               "created_at, expires_at")


def where_clause(*conditions: tuple[str, Any]) -> tuple[str, list[Any]]:
    """A ` WHERE a AND b` clause of the conditions whose value is not None, and their arguments."""
    used = [(sql, value) for sql, value in conditions if value is not None]
    if not used:
        return "", []
    return " WHERE " + " AND ".join(sql for sql, _ in used), [value for _, value in used]
