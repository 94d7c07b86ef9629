"""Records from table rows, shared by both backends (rows are read by position; JSON is stored as TEXT,
times as integer ms). Each backend keeps its own SQL; the row shapes are the same in both schemas."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import orjson

from ratchet import protocol
from ratchet.server.store import base

Row = Sequence[Any]  # a sqlite3 tuple or an asyncpg Record

#: How long a run idempotency key is kept (24 h).
IDEMPOTENCY_MS = 24 * 3600 * 1000


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(text: str | bytes | None) -> Any:
    return None if text is None else orjson.loads(text)


def run_row(row: Row) -> base.RunRecord:
    return base.RunRecord(
        id=row[0], function_slug=row[1], app_id=row[2], status=protocol.RunStatus(row[3]),
        event_ids=tuple(orjson.loads(row[4])), created_at=row[5], started_at=row[6], ended_at=row[7],
        output=loads(row[8]), stack=tuple(orjson.loads(row[9])), force_step_plan=bool(row[10]),
        error=row[11],
    )


def event_row(row: Row) -> base.EventRecord:
    return base.EventRecord(internal_id=row[0], id=row[1], name=row[2], data=orjson.loads(row[3]),
                            ts=row[4], received_at=row[5], v=row[6], user=loads(row[7]), seq=row[8])


def step_row(row: Row) -> base.StepRecord:
    return base.StepRecord(run_id=row[0], hash=row[1], name=row[2], op=row[3],
                           status=base.StepStatus(row[4]), memo=loads(row[5]), started_at=row[6],
                           ended_at=row[7], attempts=row[8])


def item_row(row: Row) -> base.QueueItem:
    return base.QueueItem(id=row[0], run_id=row[1], target=row[2], attempt=row[3], due_at=row[4],
                          lease_owner=row[5], lease_until=row[6], kind=row[7], payload=loads(row[8]),
                          failures=row[9], failure=row[10])


def dead_letter_row(row: Row) -> base.DeadLetter:
    return base.DeadLetter(id=row[0], item_id=row[1], run_id=row[2], kind=row[3], target=row[4], attempt=row[5],
                           payload=loads(row[6]), failures=row[7], reason=row[8], created_at=row[9])


def pause_row(row: Row) -> base.PauseRecord:
    return base.PauseRecord(id=row[0], run_id=row[1], kind=base.PauseKind(row[2]), step_hash=row[3],
                            step_name=row[4], event_name=row[5], expression=row[6], index_path=row[7],
                            index_value=row[8], created_at=row[9], expires_at=row[10])


@functools.lru_cache(maxsize=1024)
def _function_cached(slug: str, app_id: str, name: str, config: str, url: str) -> base.FunctionRecord:
    # Validating a config costs ~50 µs and every call needs its function; the row's text is the key, so
    # the parsed record is reused until the row changes. Callers never mutate a record's config.
    return base.FunctionRecord(slug=slug, app_id=app_id, name=name,
                               config=protocol.FunctionConfig.model_validate_json(config), url=url)


def function_row(row: Row) -> base.FunctionRecord:
    return _function_cached(row[0], row[1], row[2], row[3], row[4])


def app_row(row: Row) -> base.AppRecord:
    return base.AppRecord(id=row[0], name=row[1], url=row[2], sdk=row[3], framework=row[4], checksum=row[5],
                          synced_at=row[6], error=row[7], function_count=row[8])
