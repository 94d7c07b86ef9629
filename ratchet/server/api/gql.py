"""The dev-server GraphQL subset at `POST /v0/gql` (reference §8).

The schema is SDL built once with graphql-core; resolvers are attached per `Type.field` and read the
store through the request's `Services`. Argument types follow Inngest's schema where clients depend
on them: the SDK's test helpers send `$run_id: String!`, `$output_id: String!` and `$event_id: ID!`.
Output ids are opaque: `<run_id>:<step hash>` is a step's output, a bare `<run_id>` the run's own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import graphql
import orjson
from starlette.requests import Request
from starlette.responses import Response

from ratchet import protocol
from ratchet.server import services as services_mod
from ratchet.server.api import json_response, services
from ratchet.server.store import base

SDL = """
scalar Time
enum FunctionRunStatus { QUEUED RUNNING COMPLETED FAILED CANCELLED SKIPPED }
enum RunTraceSpanStatus { QUEUED RUNNING WAITING COMPLETED FAILED CANCELLED }
enum FunctionTriggerType { EVENT CRON }

type Query {
  run(runID: String!): FunctionRun
  runTrigger(runID: String!): RunTraceTrigger
  runTraceSpanOutputByID(outputID: String!): RunTraceSpanOutput
  runs(first: Int = 20, after: String, filter: RunsFilter): RunsConnection!
  event(query: EventQuery!): Event
  events(first: Int = 50, after: String, name: String): [Event!]!
  functions: [Function!]!
  apps: [App!]!
}
input EventQuery { workspaceId: ID, eventId: ID! }
input RunsFilter { status: [FunctionRunStatus!], functionID: String }

type FunctionRun {
  id: ID!  status: FunctionRunStatus!
  "JSON of the function's return value or final error body; null until the run ends."
  output: String
  "A short reason when failed or cancelled."
  error: String
  functionID: String!  function: Function  appID: String!  eventID: ID  events: [Event!]!
  queuedAt: Time!  startedAt: Time  endedAt: Time
  trace: RunTraceSpan!
}
"The root span is the run; its children are the recorded steps, in order."
type RunTraceSpan {
  spanID: String!  name: String!  status: RunTraceSpanStatus!  isRoot: Boolean!
  stepOp: String  stepID: String  attempts: Int
  queuedAt: Time  startedAt: Time  endedAt: Time  duration: Int
  outputID: String
  childrenSpans: [RunTraceSpan!]!
}
type RunTraceSpanOutput { data: String  error: StepError }
type StepError { message: String!  name: String  stack: String }
type RunTraceTrigger { eventName: String  IDs: [ID!]!  payloads: [String!]!  timestamp: Time }
type RunsConnection { edges: [RunEdge!]!  pageInfo: PageInfo! }
type RunEdge { cursor: String!  node: FunctionRun! }
type PageInfo { hasNextPage: Boolean!  endCursor: String }

type Event {
  id: ID!  externalID: String  name: String!  payload: String!  createdAt: Time!  receivedAt: Time!
  "Pass as `after` to `events` for the next page."
  cursor: String!
  functionRuns: [FunctionRun!]!  totalRuns: Int!
}
type Function {
  id: ID!  slug: String!  name: String!  url: String!  appID: String!  app: App
  triggers: [FunctionTrigger!]!  config: String!
}
type FunctionTrigger { type: FunctionTriggerType!  value: String!  condition: String }
type App {
  id: ID!  name: String!  url: String!  sdk: String  framework: String  error: String  syncedAt: Time!
  functionCount: Int!  functions: [Function!]!
}
"""

MAX_PAGE = 1000

Resolver = Callable[..., Any]
_RESOLVERS: dict[str, Resolver] = {}


def resolves(path: str) -> Callable[[Resolver], Resolver]:
    """Register the resolver of `Type.field`."""

    def register(fn: Resolver) -> Resolver:
        _RESOLVERS[path] = fn
        return fn

    return register


def _svc(info: graphql.GraphQLResolveInfo) -> services_mod.Services:
    return info.context  # type: ignore[no-any-return]


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _page_size(first: int) -> int:
    if not 1 <= first <= MAX_PAGE:
        raise graphql.GraphQLError(f"first: must be between 1 and {MAX_PAGE}, got {first}")
    return first


def _split_memo(memo: Any) -> tuple[Any, dict[str, Any] | None]:
    """A memo as (data, error) per reference §2.2: `{"data": x}`, `{"error": {...}}`, or bare data."""
    if isinstance(memo, dict) and set(memo) == {"data"}:
        return memo["data"], None
    if isinstance(memo, dict) and set(memo) == {"error"}:
        return None, _error_body(memo["error"])
    return memo, None


def _error_body(err: Any) -> dict[str, Any]:
    """`StepError` fields from a stored error; a malformed one still yields a message."""
    err = err if isinstance(err, dict) else {"message": err}
    message, name, stack = err.get("message"), err.get("name"), err.get("stack")
    return {"message": message if isinstance(message, str) else _json(message),
            "name": name if isinstance(name, str) else None, "stack": stack if isinstance(stack, str) else None}


# ------------------------------------------------------------------------------------------ root fields


@resolves("Query.run")
async def _run(_: None, info: graphql.GraphQLResolveInfo, runID: str) -> base.RunRecord | None:
    return await _svc(info).store.get_run(runID)


@resolves("Query.runTrigger")
async def _run_trigger(_: None, info: graphql.GraphQLResolveInfo, runID: str) -> dict[str, Any] | None:
    run = await _svc(info).store.get_run(runID)
    if run is None:
        return None
    events = await _run_events(run, info)
    return {
        "eventName": events[0].name if events else None,
        "IDs": [ev.internal_id for ev in events],
        # Parsed strictly by `inngest.Event` in the SDK's helpers: exactly these keys, integer ts.
        "payloads": [_json({"name": ev.name, "data": ev.data, "id": ev.id, "ts": ev.ts}) for ev in events],
        "timestamp": events[0].ts if events else None,
    }


@resolves("Query.runTraceSpanOutputByID")
async def _span_output(_: None, info: graphql.GraphQLResolveInfo, outputID: str) -> dict[str, Any]:
    store = _svc(info).store
    run_id, _, step_hash = outputID.partition(":")
    run = await store.get_run(run_id)
    if run is not None and not step_hash:
        if not run.status.is_terminal:
            return {"data": None, "error": None}
        if run.status == protocol.RunStatus.FAILED and isinstance(run.output, dict):
            return {"data": None, "error": _error_body(run.output)}
        return {"data": _json(run.output), "error": None}
    if run is not None:
        for step in await store.get_steps(run_id):
            if step.hash == step_hash:
                data, error = _split_memo(step.memo)
                return {"data": None, "error": error} if error else {"data": _json(data), "error": None}
    raise graphql.GraphQLError(f"outputID: no output {outputID!r}")


@resolves("Query.runs")
async def _runs(_: None, info: graphql.GraphQLResolveInfo, first: int, after: str | None = None,
                filter: dict[str, Any] | None = None) -> dict[str, Any]:
    size = _page_size(first)
    flt = filter or {}
    statuses: list[str | None] = list(flt.get("status") or []) or [None]
    found: dict[str, base.RunRecord] = {}
    # One store query per status; each page is newest first, so merging and cutting stays exact.
    for status in statuses:
        for run in await _svc(info).store.list_runs(function_slug=flt.get("functionID"), status=status,
                                                    limit=size + 1, before=after):
            found[run.id] = run
    ordered = sorted(found.values(), key=lambda r: r.id, reverse=True)
    page = ordered[:size]
    return {"edges": [{"cursor": r.id, "node": r} for r in page],
            "pageInfo": {"hasNextPage": len(ordered) > size, "endCursor": page[-1].id if page else None}}


@resolves("Query.event")
async def _event(_: None, info: graphql.GraphQLResolveInfo, query: dict[str, Any]) -> base.EventRecord | None:
    return await _svc(info).store.get_event(query["eventId"])


@resolves("Query.events")
async def _events(_: None, info: graphql.GraphQLResolveInfo, first: int, after: str | None = None,
                  name: str | None = None) -> list[base.EventRecord]:
    if after is not None and not after.isdigit():
        raise graphql.GraphQLError(f"after: must be the cursor of an event from the previous page, got {after!r}")
    return await _svc(info).store.list_events(name=name, limit=_page_size(first),
                                              before=None if after is None else int(after))


@resolves("Query.functions")
async def _functions(_: None, info: graphql.GraphQLResolveInfo) -> list[base.FunctionRecord]:
    return await _svc(info).store.list_functions()


@resolves("Query.apps")
async def _apps(_: None, info: graphql.GraphQLResolveInfo) -> list[base.AppRecord]:
    return await _svc(info).store.list_apps()


# ------------------------------------------------------------------------------------------ runs and spans


@dataclasses.dataclass(frozen=True, slots=True)
class Span:
    """A trace span: the run itself (root, `step` None) or one recorded step, as seen at `now`."""

    run: base.RunRecord
    step: base.StepRecord | None
    now: int

    @property
    def output_id(self) -> str:
        return self.run.id if self.step is None else f"{self.run.id}:{self.step.hash}"

    @property
    def status(self) -> str:
        if self.step is None:
            return self.run.status.value
        if self.step.status == base.StepStatus.SLEEPING:
            over = self.step.ended_at is not None and self.step.ended_at <= self.now
            return "COMPLETED" if over else "WAITING"
        return "WAITING" if self.step.status == base.StepStatus.WAITING else self.step.status.value.upper()

    @property
    def started_at(self) -> int | None:
        return self.run.started_at if self.step is None else self.step.started_at

    @property
    def ended_at(self) -> int | None:
        if self.step is None:
            return self.run.ended_at
        return self.step.ended_at if self.status in ("COMPLETED", "FAILED") else None


@resolves("FunctionRun.function")
async def _run_function(run: base.RunRecord, info: graphql.GraphQLResolveInfo) -> base.FunctionRecord | None:
    return await _svc(info).store.get_function(run.function_slug)  # archived ones too


@resolves("FunctionRun.events")
async def _run_events(run: base.RunRecord, info: graphql.GraphQLResolveInfo) -> list[base.EventRecord]:
    store = _svc(info).store
    return [ev for eid in run.event_ids if (ev := await store.get_event(eid)) is not None]


@resolves("RunTraceSpan.childrenSpans")
async def _children(span: Span, info: graphql.GraphQLResolveInfo) -> list[Span]:
    if span.step is not None:
        return []
    return [Span(span.run, step, span.now) for step in await _svc(info).store.get_steps(span.run.id)]


# ------------------------------------------------------------------------------------------ events, functions, apps


@resolves("Event.functionRuns")
async def _event_runs(ev: base.EventRecord, info: graphql.GraphQLResolveInfo) -> list[base.RunRecord]:
    return await _svc(info).store.runs_for_event(ev.internal_id)


@resolves("Event.totalRuns")
async def _event_total_runs(ev: base.EventRecord, info: graphql.GraphQLResolveInfo) -> int:
    return len(await _svc(info).store.runs_for_event(ev.internal_id))


@resolves("Function.app")
async def _function_app(fn: base.FunctionRecord, info: graphql.GraphQLResolveInfo) -> base.AppRecord | None:
    return next((a for a in await _svc(info).store.list_apps() if a.id == fn.app_id), None)


@resolves("Function.triggers")
def _function_triggers(fn: base.FunctionRecord, _: graphql.GraphQLResolveInfo) -> list[dict[str, Any]]:
    return [{"type": "EVENT", "value": t.event, "condition": t.expression} if t.event is not None
            else {"type": "CRON", "value": t.cron, "condition": None}
            for t in fn.config.triggers if t.event is not None or t.cron is not None]


@resolves("App.functions")
async def _app_functions(app: base.AppRecord, info: graphql.GraphQLResolveInfo) -> list[base.FunctionRecord]:
    return [fn for fn in await _svc(info).store.list_functions() if fn.app_id == app.id]


# ------------------------------------------------------------------------------------------ plain fields

#: Fields computed from their source record alone (fields missing here and in `_RESOLVERS` read the
#: source's attribute or key of the same name).
_GETTERS: dict[str, Callable[[Any], Any]] = {
    "FunctionRun.functionID": lambda r: r.function_slug,
    "FunctionRun.appID": lambda r: r.app_id,
    "FunctionRun.eventID": lambda r: r.event_ids[0] if r.event_ids else None,
    "FunctionRun.output": lambda r: _json(r.output) if r.status.is_terminal else None,
    "FunctionRun.queuedAt": lambda r: r.created_at,
    "FunctionRun.startedAt": lambda r: r.started_at,
    "FunctionRun.endedAt": lambda r: r.ended_at,
    "FunctionRun.trace": lambda r: Span(r, None, protocol.now_ms()),
    "RunTraceSpan.spanID": lambda s: s.output_id,
    "RunTraceSpan.outputID": lambda s: s.output_id,
    "RunTraceSpan.name": lambda s: s.run.function_slug if s.step is None else s.step.name,
    "RunTraceSpan.status": lambda s: s.status,
    "RunTraceSpan.isRoot": lambda s: s.step is None,
    "RunTraceSpan.stepOp": lambda s: None if s.step is None else s.step.op,
    "RunTraceSpan.stepID": lambda s: None if s.step is None else s.step.hash,
    "RunTraceSpan.attempts": lambda s: None if s.step is None else s.step.attempts,
    "RunTraceSpan.queuedAt": lambda s: s.run.created_at if s.step is None else s.step.started_at,
    "RunTraceSpan.startedAt": lambda s: s.started_at,
    "RunTraceSpan.endedAt": lambda s: s.ended_at,
    "RunTraceSpan.duration": lambda s: None if s.ended_at is None or s.started_at is None
    else max(0, s.ended_at - s.started_at),
    "Event.id": lambda e: e.internal_id,
    "Event.externalID": lambda e: e.id,
    "Event.payload": lambda e: _json(e.wire()),
    "Event.createdAt": lambda e: e.ts,
    "Event.receivedAt": lambda e: e.received_at,
    "Event.cursor": lambda e: str(e.seq),
    "Function.id": lambda f: f.slug,
    "Function.appID": lambda f: f.app_id,
    "Function.config": lambda f: f.config.model_dump_json(by_alias=True, exclude_none=True),
    "App.syncedAt": lambda a: a.synced_at,
    "App.functionCount": lambda a: a.function_count,
}


def _getter(get: Callable[[Any], Any]) -> Resolver:
    return lambda source, _info: get(source)


# ------------------------------------------------------------------------------------------ schema and handler


def _serialize_time(ms: Any) -> str:
    if not isinstance(ms, int):
        raise graphql.GraphQLError(f"Time: expected integer milliseconds, got {ms!r}")
    return protocol.format_time(datetime.fromtimestamp(ms / 1000, UTC))


def build() -> graphql.GraphQLSchema:
    """Build the schema from SDL and attach the resolvers (fields without one read the source directly)."""
    schema = graphql.build_schema(SDL)
    time_type = schema.type_map["Time"]
    assert isinstance(time_type, graphql.GraphQLScalarType)
    # Output only (no argument takes a Time). graphql-core 3.3 reads `coerce_output_value`, 3.2 `serialize`.
    time_type.serialize = time_type.coerce_output_value = _serialize_time  # type: ignore[method-assign]
    resolvers = {**{path: _getter(get) for path, get in _GETTERS.items()}, **_RESOLVERS}
    for path, fn in resolvers.items():
        type_name, field = path.split(".")
        gql_type = schema.type_map[type_name]
        assert isinstance(gql_type, graphql.GraphQLObjectType), path
        gql_type.fields[field].resolve = fn
    graphql.assert_valid_schema(schema)
    return schema


SCHEMA = build()


def _bad_request(message: str) -> Response:
    return json_response({"errors": [{"message": message}]}, 400)


async def handle(request: Request) -> Response:
    """`POST /v0/gql` with `{"query", "variables"?, "operationName"?}`.

    A malformed body is a 400; anything GraphQL reports (syntax, validation, resolver errors) is a 200
    with the standard `errors` list, as GraphQL over HTTP asks for `application/json` replies.
    """
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        return _bad_request(f"body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return _bad_request("body must be a JSON object with a 'query'")
    query, variables, operation = body.get("query"), body.get("variables"), body.get("operationName")
    if not isinstance(query, str) or not query.strip():
        return _bad_request("query: a non-empty string is required")
    if variables is not None and not isinstance(variables, dict):
        return _bad_request("variables: must be a JSON object")
    if operation is not None and not isinstance(operation, str):
        return _bad_request("operationName: must be a string")
    result = await graphql.graphql(SCHEMA, query, context_value=services(request), variable_values=variables,
                                   operation_name=operation)
    if not result.errors:
        return json_response({"data": result.data})
    out: dict[str, Any] = {"errors": [err.formatted for err in result.errors]}
    if result.data is not None:  # errors in some fields: the others still answer
        out["data"] = result.data
    return json_response(out)
