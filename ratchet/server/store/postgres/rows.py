"""Row helpers of the PostgreSQL backend: the shared record mappers (`store.rows`) and asyncpg status counts."""

from __future__ import annotations

from ratchet.server.store.rows import (  # noqa: F401 - re-exported for the backend
    IDEMPOTENCY_MS,
    Row,
    app_row,
    dead_letter_row,
    dumps,
    event_row,
    function_row,
    item_row,
    loads,
    numbered,
    pause_row,
    run_conditions,
    run_row,
    step_row,
)


def status_count(status: str) -> int:
    """The row count of an asyncpg command status (`UPDATE 3`, `INSERT 0 1`, `DELETE 0`)."""
    return int(status.rsplit(" ", 1)[-1])
