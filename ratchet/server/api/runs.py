"""The read API over events and runs (`/v1/events...`, `/v1/runs...`)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ratchet import protocol
from ratchet.server import auth, cancellation, rerun
from ratchet.server.api import error, json_response, services
from ratchet.server.store import base

MAX_LIMIT = 1000
#: Most runs a bulk-cancel dry run counts, and a bulk replay replays.
BULK_COUNT_LIMIT = 1_000_000
#: What a bulk replay reruns unless `status` says otherwise: the runs that ended unsuccessfully.
REPLAY_STATUSES = (protocol.RunStatus.FAILED.value, protocol.RunStatus.CANCELLED.value)
#: The statuses a replay may select.
ENDED_STATUSES = tuple(s.value for s in protocol.RunStatus if s.is_terminal)


def _limit(request: Request) -> int | Response:
    raw = request.query_params.get("limit", "50")
    try:
        limit = int(raw)
    except ValueError:
        return error(400, f"limit: must be an integer, got {raw!r}")
    if not 1 <= limit <= MAX_LIMIT:
        return error(400, f"limit: must be between 1 and {MAX_LIMIT}, got {limit}")
    return limit


def event_json(ev: base.EventRecord) -> dict[str, Any]:
    return {"internal_id": ev.internal_id, "id": ev.id, "name": ev.name, "data": ev.data, "ts": ev.ts,
            "received_at": ev.received_at, "v": ev.v, "user": ev.user, "cursor": str(ev.seq)}


def run_json(run: base.RunRecord) -> dict[str, Any]:
    return {"id": run.id, "function_id": run.function_slug, "app_id": run.app_id, "status": run.status.value,
            "event_ids": list(run.event_ids), "created_at": run.created_at, "started_at": run.started_at,
            "ended_at": run.ended_at, "output": run.output, "error": run.error,
            "rerun_of": run.rerun_of, "rerun_from_step": run.rerun_from,
            "invoked_by": None if run.invoked_by is None else {"run_id": run.invoked_by, "step": run.invoked_step}}


def step_json(step: base.StepRecord, now: int) -> dict[str, Any]:
    status = step.status.value
    if step.status == base.StepStatus.SLEEPING and step.ended_at is not None and step.ended_at <= now:
        status = base.StepStatus.COMPLETED.value  # the sleep is over
    out: dict[str, Any] = {"id": step.name, "hash": step.hash, "op": step.op, "status": status,
                           "started_at": step.started_at, "ended_at": step.ended_at, "attempts": step.attempts,
                           "input": step.input}
    memo = step.memo
    if isinstance(memo, dict) and set(memo) == {"error"}:
        out["error"] = memo["error"]
    elif isinstance(memo, dict) and set(memo) == {"data"}:
        out["output"] = memo["data"]
    else:
        out["output"] = memo
    return out


async def list_events(request: Request) -> Response:
    limit = _limit(request)
    if isinstance(limit, Response):
        return limit
    raw_before = request.query_params.get("before")
    if raw_before is not None and not raw_before.isdigit():
        return error(400, f"before: must be the `cursor` of an event from the previous page, got {raw_before!r}")
    events = await services(request).store.list_events(
        name=request.query_params.get("name"), limit=limit, before=None if raw_before is None else int(raw_before),
        search=request.query_params.get("q") or None)
    return json_response({"data": [event_json(e) for e in events]})


async def get_event(request: Request) -> Response:
    event_id = request.path_params["event_id"]
    ev = await services(request).store.get_event(event_id)
    if ev is None:
        return error(404, f"event {event_id!r} not found")
    return json_response({"data": event_json(ev)})


async def event_runs(request: Request) -> Response:
    event_id = request.path_params["event_id"]
    store = services(request).store
    if await store.get_event(event_id) is None:
        return error(404, f"event {event_id!r} not found")
    return json_response({"data": [run_json(r) for r in await store.runs_for_event(event_id)]})


def _status(request: Request) -> list[str] | Response | None:
    """`status=`: one status or several, comma-separated (`FAILED,CANCELLED`)."""
    raw = request.query_params.get("status")
    if raw is None or not raw.strip():
        return None
    known = {s.value for s in protocol.RunStatus}
    out = [part.strip().upper() for part in raw.split(",") if part.strip()]
    for status in out:
        if status not in known:
            return error(400, f"status: must be one of {', '.join(s.value for s in protocol.RunStatus)} "
                              f"(or several, comma-separated), got {status.lower()!r}")
    return out


def _run_filters(request: Request) -> dict[str, Any] | Response:
    """The filters `GET /v1/runs` and `/v1/runs/count` share: function_id, app_id, status, from, to, q."""
    status = _status(request)
    if isinstance(status, Response):
        return status
    params = request.query_params
    try:
        start = _time_ms(_int_or_text(params.get("from")), "from")
        end = _time_ms(_int_or_text(params.get("to")), "to")
    except ValueError as exc:
        return error(400, str(exc))
    if start is not None and end is not None and end <= start:
        return error(400, f"to: must be after from ({start}), got {end}")
    search = params.get("q")
    if search is not None and len(search) > 200:
        return error(400, f"q: at most 200 characters, got {len(search)}")
    return {"function_slug": params.get("function_id") or None, "status": status,
            "app_id": params.get("app_id") or None, "created_from": start, "created_to": end,
            "search": search.strip() if search and search.strip() else None}


def _int_or_text(value: str | None) -> int | str | None:
    """A query parameter that may be milliseconds since the epoch or an ISO-8601 time."""
    return int(value) if value is not None and value.isdigit() else value


async def count_runs(request: Request) -> Response:
    """`GET /v1/runs/count?` with the filters of `GET /v1/runs` → `{"data": {"count": n, "capped": bool}}`;
    `at_most=N` stops counting at N (`capped` says the true count may be larger)."""
    filters = _run_filters(request)
    if isinstance(filters, Response):
        return filters
    raw = request.query_params.get("at_most")
    at_most = None
    if raw is not None:
        if not raw.isdigit() or not 1 <= int(raw) <= 10_000_000:
            return error(400, f"at_most: must be an integer between 1 and 10000000, got {raw!r}")
        at_most = int(raw)
    count = await services(request).store.count_runs(**filters, at_most=at_most)
    return json_response({"data": {"count": count, "capped": at_most is not None and count >= at_most}})


async def list_runs(request: Request) -> Response:
    """`GET /v1/runs?function_id=&app_id=&status=&from=&to=&q=&limit=&before=`: newest first; `before` is
    the `cursor` of the last run of the previous page; `q` is a run id or text in the event data."""
    limit = _limit(request)
    if isinstance(limit, Response):
        return limit
    filters = _run_filters(request)
    if isinstance(filters, Response):
        return filters
    runs = await services(request).store.list_runs(**filters, limit=limit, before=request.query_params.get("before"))
    return json_response({"data": [run_json(r) | {"cursor": r.id} for r in runs]})


async def get_run(request: Request) -> Response:
    run_id = request.path_params["run_id"]
    store = services(request).store
    run = await store.get_run(run_id)
    if run is None:
        return error(404, f"run {run_id!r} not found")
    out = run_json(run)
    now = protocol.now_ms()
    links = await store.get_run_links(run_id)
    out["reruns"] = list(links.reruns)
    out["steps"] = [step_json(s, now) for s in await store.get_steps(run_id)]
    for step in out["steps"]:
        if step["op"] == protocol.Opcode.INVOKE_FUNCTION.value:
            step["child_run_id"] = links.children.get(step["hash"])  # None until the child run is created
    if any(s["status"] == base.StepStatus.WAITING.value and s["op"] == protocol.Opcode.WAIT_FOR_EVENT.value
           for s in out["steps"]):
        pauses = {p.step_hash: p for p in await store.pauses_for_run(run_id)}
        for step in out["steps"]:
            pause = pauses.get(step["hash"]) if step["status"] == base.StepStatus.WAITING.value else None
            if pause is not None and step["op"] == protocol.Opcode.WAIT_FOR_EVENT.value:
                step["waiting_for"] = {"event": pause.event_name, "if": pause.expression,
                                       "expires_at": pause.expires_at}
    return json_response({"data": out})


async def cancel_run(request: Request) -> Response:
    """`POST /v1/runs/{id}/cancel`: 404 for an unknown run, 409 for one that has already ended."""
    svc = services(request)
    run_id = request.path_params["run_id"]
    run = await svc.store.get_run(run_id)
    if run is None:
        return error(404, f"run {run_id!r} not found")
    if run.status.is_terminal:
        return error(409, f"run {run_id!r} has already ended ({run.status.value})")
    await cancellation.cancel(svc.store, [run_id], "cancelled through the API", now=protocol.now_ms(),
                              notify=svc.scheduler.notify)
    updated = await svc.store.get_run(run_id)
    assert updated is not None
    return json_response({"data": run_json(updated)})


def _time_ms(value: Any, field: str) -> int | None:
    """A bound of a time range: integer ms since the epoch or an ISO-8601 timestamp; None when absent."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(protocol.parse_time(value).timestamp() * 1000)
        except ValueError:
            pass
    raise ValueError(f"{field}: must be milliseconds since the epoch or an ISO-8601 time, got {value!r}")


async def _json_object(request: Request, fields: tuple[str, ...] | None = None) -> dict[str, Any] | Response:
    """The request body as a JSON object (an empty body is `{}`), or a 400 that says what is wrong; with
    `fields`, a field not among them is an error too."""
    try:
        body = orjson.loads(await request.body() or b"{}")
    except orjson.JSONDecodeError as exc:
        return error(400, f"body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return error(400, f"body must be a JSON object, got {type(body).__name__}")
    unknown = [k for k in body if fields is not None and k not in fields]
    if unknown:
        return error(400, f"unknown field {unknown[0]!r}; the fields are {', '.join(fields or ())}")
    return body


#: The fields of a bulk request (cancel, replay): the runs list's filters, and `dry_run`.
BULK_FIELDS = ("function_id", "from", "to", "status", "app_id", "q", "dry_run")
#: What a bulk cancel cancels unless `status` narrows it: every run that has not ended.
ACTIVE_STATUSES = tuple(s.value for s in protocol.RunStatus if not s.is_terminal)
#: Runs a bulk action reads per page of `Store.list_runs`.
BULK_PAGE = 500


@dataclasses.dataclass(frozen=True, slots=True)
class BulkSelection:
    """The runs a bulk request acts on: the runs list's filters (`GET /v1/runs`), with a function required."""

    function_slug: str
    statuses: tuple[str, ...]
    created_from: int | None
    created_to: int | None
    app_id: str | None
    search: str | None
    dry_run: bool

    def filters(self) -> dict[str, Any]:
        """Keyword arguments of `Store.list_runs` and `Store.count_runs`."""
        return {"function_slug": self.function_slug, "status": list(self.statuses), "app_id": self.app_id,
                "created_from": self.created_from, "created_to": self.created_to, "search": self.search}


def _bulk_statuses(value: Any, allowed: tuple[str, ...], default: tuple[str, ...], why: str
                   ) -> list[str] | Response:
    """`status` of a bulk request: one status or a non-empty list of them, each among `allowed`."""
    if value is None:
        return list(default)
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        return error(400, f"status: must be a run status or a non-empty list of them ({', '.join(allowed)}), "
                          f"got {value!r}")
    out = []
    for v in values:
        if v.upper() not in allowed:
            return error(400, f"status: {why}, so one of {', '.join(allowed)}; got {v!r}")
        out.append(v.upper())
    return out


def _bulk_selection(body: dict[str, Any], now: int, *, allowed: tuple[str, ...], default: tuple[str, ...],
                    why: str) -> BulkSelection | Response:
    """The selection of a bulk request (cancel, replay), or a 400 naming the field. `to` is capped at
    `now`: runs created after the request (or, when the caller passes back the `to` of its dry run, after
    the count it showed) are never touched."""
    fn = body.get("function_id")
    if not isinstance(fn, str) or not fn:
        return error(400, "function_id: a non-empty string is required")
    try:
        start, end = _time_ms(body.get("from"), "from"), _time_ms(body.get("to"), "to")
    except ValueError as exc:
        return error(400, str(exc))
    if start is not None and end is not None and end <= start:
        return error(400, f"to: must be after from ({start}), got {end}")
    statuses = _bulk_statuses(body.get("status"), allowed, default, why)
    if isinstance(statuses, Response):
        return statuses
    app_id = body.get("app_id")
    if app_id is not None and not isinstance(app_id, str):
        return error(400, f"app_id: must be an app's id (a string), got {app_id!r}")
    search = body.get("q")
    if search is not None:
        if not isinstance(search, str):
            return error(400, f"q: must be a run id or text in the event data (a string), got {search!r}")
        if len(search) > 200:
            return error(400, f"q: at most 200 characters, got {len(search)}")
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        return error(400, f"dry_run: must be true or false, got {dry_run!r}")
    return BulkSelection(function_slug=fn, statuses=tuple(statuses), created_from=start,
                         created_to=now if end is None else min(end, now), app_id=app_id or None,
                         search=search.strip() if search and search.strip() else None, dry_run=dry_run)


async def _bulk_count(store: base.Store, selection: BulkSelection) -> int:
    return await store.count_runs(**selection.filters(), at_most=BULK_COUNT_LIMIT)


async def _bulk_pages(store: base.Store, selection: BulkSelection) -> AsyncIterator[list[str]]:
    """The ids of the selected runs, a page at a time, newest first (at most BULK_COUNT_LIMIT)."""
    before: str | None = None
    seen = 0
    while seen < BULK_COUNT_LIMIT:
        page = await store.list_runs(**selection.filters(), limit=min(BULK_PAGE, BULK_COUNT_LIMIT - seen),
                                     before=before)
        if not page:
            return
        seen += len(page)
        before = page[-1].id
        yield [r.id for r in page]


async def bulk_cancel(request: Request) -> Response:
    """`POST /v1/runs/cancel` with `{"function_id", "from"?, "to"?, "status"?, "app_id"?, "q"?, "dry_run"?}`:
    cancel (or, with `dry_run`, count) the function's runs that have not ended and match the filters of
    `GET /v1/runs`, created in [from, to) (`to` at most the request's time, given back in the reply)."""
    svc = services(request)
    body = await _json_object(request, BULK_FIELDS)
    if isinstance(body, Response):
        return body
    selection = _bulk_selection(body, protocol.now_ms(), allowed=ACTIVE_STATUSES, default=ACTIVE_STATUSES,
                                why="cancel stops runs that have not ended")
    if isinstance(selection, Response):
        return selection
    if selection.dry_run:
        matched = await _bulk_count(svc.store, selection)
        return json_response({"data": {"matched": matched, "cancelled": 0, "to": selection.created_to}})
    matched = cancelled = 0
    async for ids in _bulk_pages(svc.store, selection):
        matched += len(ids)
        done = await cancellation.cancel(svc.store, ids, "cancelled in bulk through the API",
                                         now=protocol.now_ms(), notify=svc.scheduler.notify)
        cancelled += len(done)
    return json_response({"data": {"matched": matched, "cancelled": cancelled, "to": selection.created_to}})


async def rerun_run(request: Request) -> Response:
    """`POST /v1/runs/{id}/rerun` with `{"from_step"?, "data"?}` (or no body): start a new run of the run's
    function with the same events (or, with `data`, a new event of the same name with that data),
    keeping the finished steps recorded before `from_step` (a step id or hash) as its memo. 201 with the
    new run; 404 for an unknown run, 409 when its function no longer exists."""
    svc = services(request)
    body = await _json_object(request, ("from_step", "data"))
    if isinstance(body, Response):
        return body
    from_step, data = body.get("from_step"), body.get("data")
    if from_step is not None and (not isinstance(from_step, str) or not from_step):
        return error(400, f"from_step: must be the id or hash of one of the run's steps (a string), got {from_step!r}")
    if data is not None:
        if not isinstance(data, dict):
            return error(400, f"data: must be a JSON object (the event's edited data), got {type(data).__name__}")
        size = len(orjson.dumps(data))
        if size > svc.cfg.max_event_bytes:
            return error(400, f"data: is {size} bytes, over the event size limit of {svc.cfg.max_event_bytes} bytes")
    run_id = request.path_params["run_id"]
    run = await svc.store.get_run(run_id)
    if run is None:
        return error(404, f"run {run_id!r} not found")
    try:
        new_id = await rerun.rerun(svc.store, svc.functions, svc.ingestor, run, now=protocol.now_ms(),
                                   notify=svc.scheduler.notify, from_step=from_step, data=data)
    except rerun.RerunRefused as exc:
        return error(exc.status, str(exc))
    new = await svc.store.get_run(new_id)
    assert new is not None
    return json_response({"data": run_json(new)}, 201)


async def replay_runs(request: Request) -> Response:
    """`POST /v1/runs/replay` with `{"function_id", "from"?, "to"?, "status"?, "app_id"?, "q"?, "dry_run"?}`:
    rerun from the start (or, with `dry_run`, count) each run of the function that matches the filters of
    `GET /v1/runs`, created in [from, to) (`to` at most the request's time, given back in the reply), whose
    status is one of `status` (default FAILED and CANCELLED). Replies `{"matched", "replayed",
    "not_replayed", "to"}`."""
    svc = services(request)
    body = await _json_object(request, BULK_FIELDS)
    if isinstance(body, Response):
        return body
    # Runs created from now on are not matched: they include the reruns this replay starts.
    selection = _bulk_selection(body, protocol.now_ms(), allowed=ENDED_STATUSES, default=REPLAY_STATUSES,
                                why="replay reruns runs that have ended")
    if isinstance(selection, Response):
        return selection
    fn = selection.function_slug
    if await svc.store.get_function(fn) is None:
        return error(400, f"function_id: there is no function {fn!r} (GET /v1/functions lists them)")
    if svc.functions.get(fn) is None:
        return error(409, f"function {fn!r} no longer exists: its app's last sync removed it; sync an app that "
                          "serves it to replay its runs")
    if selection.dry_run:
        matched = await _bulk_count(svc.store, selection)
        return json_response({"data": {"matched": matched, "replayed": 0, "to": selection.created_to}})
    matched_ids = [run_id async for ids in _bulk_pages(svc.store, selection) for run_id in ids]
    replayed = 0
    not_replayed = []
    for run_id in reversed(matched_ids):  # oldest first
        run = await svc.store.get_run(run_id)
        if run is None:
            continue  # deleted by retention meanwhile
        try:
            await rerun.rerun(svc.store, svc.functions, svc.ingestor, run, now=protocol.now_ms(),
                              notify=svc.scheduler.notify)
            replayed += 1
        except rerun.RerunRefused as exc:
            not_replayed.append({"run_id": run_id, "error": str(exc)})
    return json_response({"data": {"matched": len(matched_ids), "replayed": replayed,
                                   "not_replayed": not_replayed, "to": selection.created_to}})


async def _run_state(request: Request) -> base.RunState | Response:
    keys = services(request).cfg.signing_keys
    if keys and not auth.bearer_ok(request.headers, keys):
        return error(401, "unauthorized: a valid signing-key bearer token is required")
    run_id = request.path_params["run_id"]
    state = await services(request).store.load_run_state(run_id, protocol.now_ms())
    return error(404, f"run {run_id!r} not found") if state is None else state


async def run_batch(request: Request) -> Response:
    """`GET /v0/runs/{id}/batch`: the run's events, for SDKs called with `use_api` (large payloads)."""
    state = await _run_state(request)
    return state if isinstance(state, Response) else json_response([e.wire() for e in state.events])


async def run_actions(request: Request) -> Response:
    """`GET /v0/runs/{id}/actions`: the run's memo (step hash → result), for `use_api` calls."""
    state = await _run_state(request)
    return state if isinstance(state, Response) else json_response(state.memo)


def dead_letter_json(d: base.DeadLetter) -> dict[str, Any]:
    return {"id": d.id, "item_id": d.item_id, "run_id": d.run_id, "kind": d.kind, "target": d.target,
            "attempt": d.attempt, "payload": d.payload, "failures": d.failures, "reason": d.reason,
            "created_at": d.created_at, "cursor": str(d.id)}


async def list_dead_letters(request: Request) -> Response:
    """`GET /v1/dead-letters?limit=&before=&run_id=`: poison queue items taken out of the queue, newest first."""
    limit = _limit(request)
    if isinstance(limit, Response):
        return limit
    raw_before = request.query_params.get("before")
    if raw_before is not None and not raw_before.isdigit():
        return error(400, f"before: must be the `cursor` of a dead letter from the previous page, got {raw_before!r}")
    letters = await services(request).store.list_dead_letters(
        limit=limit, before=None if raw_before is None else int(raw_before),
        run_id=request.query_params.get("run_id"))
    return json_response({"data": [dead_letter_json(d) for d in letters]})
