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
        error=row[11], rerun_of=row[12], rerun_from=row[13], invoked_by=row[14], invoked_step=row[15],
    )


def event_row(row: Row) -> base.EventRecord:
    return base.EventRecord(internal_id=row[0], id=row[1], name=row[2], data=orjson.loads(row[3]),
                            ts=row[4], received_at=row[5], v=row[6], user=loads(row[7]), seq=row[8])


def step_row(row: Row) -> base.StepRecord:
    return base.StepRecord(run_id=row[0], hash=row[1], name=row[2], op=row[3],
                           status=base.StepStatus(row[4]), memo=loads(row[5]), started_at=row[6],
                           ended_at=row[7], attempts=row[8], input=loads(row[9]))


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


#: How far a run id's time may be ahead of the run's `created_at`. Ids are made with the creation time,
#: but stay increasing within a process (`ids.new_ulid`), so after the clock steps back they run ahead
#: of it until it catches up; steps back of more than this are not expected (NTP slews small offsets).
ID_AHEAD_MS = 5 * 60 * 1000


def run_conditions(*, function_slug: str | None = None, status: str | Sequence[str] | None = None,
                   app_id: str | None = None, created_from: int | None = None, created_to: int | None = None,
                   search: str | None = None, before: str | None = None, like: str = "LIKE",
                   common: bool = False) -> tuple[str, list[Any]]:
    """The WHERE clause (`?` placeholders) of a runs list or count, and its arguments; both backends use it
    (PostgreSQL numbers the placeholders, `numbered`). `search` matches a run id exactly or text in the
    data of the run's triggering events, ignoring case (`like` is the backend's case-blind LIKE).

    The text search collects the matching events first (a subquery the backend runs once: PostgreSQL
    through its pg_trgm index, SQLite by reading the events once), then looks up only their runs,
    rather than looking up every run's events. With `common` (many recent events match, see
    `common_search`) a page of runs is found faster the other way round: the newest runs first, each
    checked until the page is full."""
    conds: list[str] = []
    args: list[Any] = []
    if function_slug is not None:
        conds.append("function_slug = ?")
        args.append(function_slug)
    statuses = [status] if isinstance(status, str) else list(status or ())
    if statuses:
        conds.append(f"status IN ({', '.join('?' * len(statuses))})")
        args += statuses
    if app_id is not None:
        conds.append("app_id = ?")
        args.append(app_id)
    if created_from is not None:
        # Run ids are ULIDs made at creation (never earlier), so the id bound lets the index skip older runs.
        conds += ["created_at >= ?", "id >= ?"]
        args += [created_from, ulid_floor(created_from)]
    if created_to is not None:
        # The id bound lets an index on (…, id) stop at the end of the range (see ID_AHEAD_MS).
        conds += ["created_at < ?", "id < ?"]
        args += [created_to, ulid_floor(created_to + ID_AHEAD_MS)]
    if before is not None:
        conds.append("id < ?")
        args.append(before)
    if search and common:
        # Newest first, each run's events checked in turn: quick to fill a page when many runs match.
        # PostgreSQL (ILIKE) would rather hash every match first; OFFSET 0 keeps the check per run.
        fence = " OFFSET 0" if like == "ILIKE" else ""
        conds.append(f"(id = ? OR EXISTS (SELECT 1 FROM run_events re JOIN events e ON e.internal_id = re.event_id "
                     f"WHERE re.run_id = runs.id AND e.data {like} ? ESCAPE '\\'{fence}))")
        args += [search, _pattern(search)]
    elif search:
        events, event_args = matching_events(search, like=like)
        conds.append("(id = ? OR id IN (SELECT re.run_id FROM run_events re JOIN "
                     f"(SELECT e.internal_id {events}) m ON m.internal_id = re.event_id))")
        args += [search, *event_args]
    return (" WHERE " + " AND ".join(conds) if conds else ""), args


def _pattern(search: str) -> str:
    """`%search%` for LIKE ... ESCAPE '\\': the text's own `%`, `_` and `\\` match themselves."""
    return "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def data_has(search: str, *, like: str = "LIKE") -> tuple[str, str]:
    """The condition that an event's `data` has `search`, ignoring case, and its one argument."""
    return f"data {like} ? ESCAPE '\\'", _pattern(search)


def matching_events(search: str, *, like: str = "LIKE") -> tuple[str, list[Any]]:
    """`FROM ... WHERE ...` of the events (alias `e`) whose data has `search`, ignoring case, and its
    arguments (see `run_conditions`)."""
    return f"FROM events e WHERE e.data {like} ? ESCAPE '\\'", [_pattern(search)]


#: A runs list searches newest first (`common`) when the text is common: on SQLite when this many of
#: the newest RECENT_EVENTS events have it (a page then fills after a short walk), on PostgreSQL when
#: its trigram index finds INDEXED_COMMON events with it. Otherwise the list collects every match first,
#: which reads the events once (SQLite) or asks the trigram index (PostgreSQL), however rare the text.
COMMON_SEARCH = 50
RECENT_EVENTS = 20_000
INDEXED_COMMON = 1000


def common_search(search: str, *, like: str = "LIKE", indexed: bool = False) -> tuple[str, list[Any], int]:
    """A query counting matching events (see COMMON_SEARCH), its arguments, and the count from which the
    text is common: a store's runs list asks it first and passes `common=` to `run_conditions`. With
    `indexed` (PostgreSQL's trigram index) it counts matches anywhere; else among the newest events."""
    if indexed:
        return (f"SELECT count(*) FROM (SELECT 1 FROM events e WHERE e.data {like} ? ESCAPE '\\' LIMIT ?) c",
                [_pattern(search), INDEXED_COMMON], INDEXED_COMMON)
    return _recent_matches(search, like=like, sample=RECENT_EVENTS, enough=COMMON_SEARCH)


def _recent_matches(search: str, *, like: str, sample: int, enough: int) -> tuple[str, list[Any], int]:
    """A query counting (up to `enough`) the events among the newest `sample` whose data has `search`, its
    arguments, and `enough`."""
    sql = ("SELECT count(*) FROM (SELECT 1 FROM (SELECT data FROM events ORDER BY seq DESC LIMIT ?) r "
           f"WHERE r.data {like} ? ESCAPE '\\' LIMIT ?) c")
    return sql, [sample, _pattern(search), enough], enough


#: Events sampled to tell how dense a text's matches are among the newest runs (`dense_search`).
DENSITY_SAMPLE = 2000


def dense_search(search: str, *, like: str = "LIKE") -> tuple[str, list[Any], int]:
    """A query counting matching events among the newest `DENSITY_SAMPLE`, its arguments, and the count from
    which at least half of them match: then a capped count of runs finds its cap soonest by checking the
    newest runs one by one (each match is likely), and otherwise by collecting the matching events first."""
    return _recent_matches(search, like=like, sample=DENSITY_SAMPLE, enough=DENSITY_SAMPLE // 2)


def numbered(sql: str, start: int = 1) -> str:
    """`sql` with its `?` placeholders numbered `$start`, `$start+1`, ... (PostgreSQL's style)."""
    parts = sql.split("?")
    return "".join(p + (f"${start + i}" if i < len(parts) - 1 else "") for i, p in enumerate(parts))


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid_floor(ms: int) -> str:
    """The smallest ULID of millisecond `ms` (its 48-bit time in 10 Crockford base-32 digits, then zeros)."""
    ms = max(0, min(ms, 2**48 - 1))
    digits = "".join(_CROCKFORD[(ms >> (5 * i)) & 31] for i in range(9, -1, -1))
    return digits + "0" * 16
