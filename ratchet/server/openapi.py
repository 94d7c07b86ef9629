"""The OpenAPI 3.1 document of the HTTP API, served at `/openapi.json`.

Plain data, written by hand next to the handlers (`api/*.py`); `tests/integration/test_openapi.py` checks
that it is valid OpenAPI 3.1, that it documents exactly the routes `app.py` mounts (the dashboard's pages
and static files aside), and that real replies match the schemas it gives them.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ratchet import protocol
from ratchet.server import sessions
from ratchet.server.api import json_response

Schema = dict[str, Any]

RUN_STATUSES = [s.value for s in protocol.RunStatus]
ENDED_STATUSES = [s.value for s in protocol.RunStatus if s.is_terminal]
ACTIVE_STATUSES = [s.value for s in protocol.RunStatus if not s.is_terminal]
#: Pages of the list endpoints (`api.runs.MAX_LIMIT`).
MAX_LIMIT = 1000


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    if "$ref" in schema:
        return {"oneOf": [schema, {"type": "null"}]}
    return {**schema, "type": [schema["type"], "null"]}


def obj(properties: dict[str, Schema], required: list[str] | None = None, *, extra: bool | None = None,
        description: str | None = None) -> Schema:
    """An object schema; `required` defaults to every property (the replies always carry them all).
    `extra`: whether other properties are allowed, when the document says so (left open otherwise)."""
    out: Schema = {"type": "object", "properties": properties,
                   "required": list(properties) if required is None else required}
    if extra is not None:
        out["additionalProperties"] = extra
    if description:
        out["description"] = description
    return out


def data_of(schema: Schema) -> Schema:
    """The `{"data": ...}` envelope every `/v1` reply uses."""
    return obj({"data": schema})


def json_body(schema: Schema, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error_reply(description: str) -> dict[str, Any]:
    return json_body(ref("Error"), description)


def request_body(schema: Schema, *, required: bool = True, description: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"required": required, "content": {"application/json": {"schema": schema}}}
    if description:
        out["description"] = description
    return out


MS = {"type": "integer", "description": "milliseconds since the Unix epoch (UTC)"}
TIME_BOUND: Schema = {"oneOf": [{"type": "integer", "minimum": 0, "description": "milliseconds since the epoch"},
                                {"type": "string", "format": "date-time", "description": "an ISO-8601 time"}]}
ANY_JSON: Schema = {"description": "any JSON value"}

# --------------------------------------------------------------------------------------------- schemas

RUN_PROPERTIES: dict[str, Schema] = {
    "id": {"type": "string", "description": "a ULID: runs sort by creation time"},
    "function_id": {"type": "string", "description": "the function's composite id `{app}-{function}`"},
    "app_id": {"type": "string"},
    "status": ref("RunStatus"),
    "event_ids": {"type": "array", "items": {"type": "string"},
                  "description": "internal ids of the triggering events (several for a batch)"},
    "created_at": MS,
    "started_at": nullable(MS),
    "ended_at": nullable(MS),
    "output": {"description": "the function's return value, or its final error body; null until it ends"},
    "error": {"type": ["string", "null"], "description": "a short reason when failed or cancelled"},
    "rerun_of": {"type": ["string", "null"], "description": "the run this one reruns"},
    "rerun_from_step": {"type": ["string", "null"],
                        "description": "the hash of the step the rerun started from (null: from the start)"},
    "invoked_by": nullable(obj({"run_id": {"type": "string"}, "step": {"type": ["string", "null"]}},
                               description="the run whose `step.invoke` started this one, and that step")),
}

#: What a bulk cancel or replay selects: a function's runs created in [from, to) that match the filters of
#: `GET /v1/runs` (the dashboard sends the runs list's filters, so the action takes exactly the runs listed).
BULK_PROPERTIES: dict[str, Schema] = {
    "function_id": {"type": "string", "minLength": 1},
    "from": {**TIME_BOUND, "description": "runs created at or after (ms since the epoch or ISO-8601)"},
    "to": {**TIME_BOUND, "description": "runs created before; must be after `from`. Capped at the time of the "
                                        "request; pass back the `to` of a dry run's reply to act on exactly the "
                                        "runs it counted (not those created since)"},
    "app_id": {"type": ["string", "null"], "description": "runs of this app's functions (the app `id`)"},
    "q": {"type": ["string", "null"], "maxLength": 200,
          "description": "a run id (exact), or text found in the data of the run's triggering events "
                         "(ignoring case)"},
    "dry_run": {"type": "boolean", "default": False, "description": "only count the runs"},
}
#: The `to` a bulk reply gives back: the upper bound it used.
BULK_TO: Schema = {"type": "integer", "description": "the upper bound of creation times used (ms since the "
                                                     "epoch): `to`, or the time of the request if earlier"}


def bulk_status(allowed: list[str], default: str) -> Schema:
    return {"oneOf": [{"type": "string", "enum": allowed},
                      {"type": "array", "items": {"type": "string", "enum": allowed}, "minItems": 1}],
            "description": f"runs with this status or one of these (default {default}); case does not matter"}


SCHEMAS: dict[str, Schema] = {
    "Error": obj({"error": {"type": "string", "description": "what is wrong, in words"}}, extra=True,
                 description="A refused request. Some replies add fields that help (never fewer)."),
    "Health": obj({"status": {"type": "integer", "const": 200}, "message": {"type": "string"}}),
    "RunStatus": {"type": "string", "enum": RUN_STATUSES,
                  "description": "QUEUED: created, no call made yet; RUNNING: called at least once; COMPLETED: "
                                 "returned; FAILED: failed for good; CANCELLED: by an event, the API or a "
                                 "timeout; SKIPPED: never started (rate limit, singleton)."},
    "EventInput": obj({
        "name": {"type": "string", "minLength": 1, "description": "the event's name, e.g. `shop/order.created`"},
        "data": {"type": "object", "description": "the payload (default `{}`)"},
        "id": {"type": "string", "description": "your id for the event: a second send with the same id "
                                                "within 24 h starts no second run of a function"},
        "ts": {"type": "integer", "minimum": 0, "description": "when it happened, ms since the epoch "
                                                               "(default: when it is received)"},
        "v": {"type": "string", "description": "a version label of the payload's shape"},
        "user": {"type": "object", "description": "data about the user who caused it"},
    }, ["name"], description="One event of a send (at most 512 KiB of JSON)."),
    "SendResult": obj({
        "ids": {"type": "array", "items": {"type": "string"},
                "description": "internal ids of the events accepted, in order: on an error, those before "
                               "the first invalid event (they are stored)"},
        "status": {"type": "integer", "description": "the HTTP status again"},
        "error": {"type": "string", "description": "why the send stopped (not on success)"},
    }, ["ids", "status"]),
    "Event": obj({
        "internal_id": {"type": "string", "description": "the id the server gave it (a ULID): the one to use "
                                                         "in `/v1/events/{event_id}`"},
        "id": {"type": "string", "description": "the sender's id (the internal id when none was sent)"},
        "name": {"type": "string"},
        "data": {"type": "object"},
        "ts": MS,
        "received_at": MS,
        "v": {"type": ["string", "null"]},
        "user": {"type": ["object", "null"]},
        "cursor": {"type": "string", "pattern": "^[0-9]+$",
                   "description": "pass as `before` for the page after this event"},
    }),
    "WireEvent": obj({
        "name": {"type": "string"}, "data": {"type": "object"}, "id": {"type": "string"}, "ts": MS,
        "v": {"type": "string"}, "user": {"type": "object"},
    }, ["name", "data", "id", "ts"], description="An event as a function call carries it (the SDK's shape)."),
    "Run": obj(RUN_PROPERTIES),
    "RunListItem": obj({**RUN_PROPERTIES, "cursor": {
        "type": "string", "description": "pass as `before` for the page after this run (it is the run id)"}}),
    "Step": obj({
        "id": {"type": "string", "description": "the step id the function gave it"},
        "hash": {"type": "string", "description": "the protocol's step hash (id and repeat count)"},
        "op": {"type": "string", "description": "the SDK opcode, e.g. `StepRun`, `Sleep`, `WaitForEvent`, "
                                                "`InvokeFunction`"},
        "status": {"type": "string", "enum": ["completed", "failed", "sleeping", "waiting"],
                   "description": "a sleep whose time has passed reads `completed`"},
        "started_at": MS,
        "ended_at": nullable(MS),
        "attempts": {"type": "integer", "minimum": 1},
        "input": {"description": "what the step was given, or null: its opcode's options (a sleep's `until`, "
                                 "a wait's `event`, `if` and `timeout`, an invoke's `function_id`, `payload` "
                                 "and `timeout`)"},
        "output": {"description": "what the step returned (absent when it failed)"},
        "error": {"description": "the step's error as the SDK reported it: `{name, message, stack}` "
                                 "(only when it failed)"},
        "child_run_id": {"type": ["string", "null"],
                         "description": "invoke steps only: the run it started (null until created)"},
        "waiting_for": obj({
            "event": {"type": "string", "description": "the name of the event it waits for"},
            "if": {"type": ["string", "null"], "description": "the condition left for that event (`async.` "
                                                               "is the event awaited), or null: any"},
            "expires_at": nullable(MS),
        }, description="a `WaitForEvent` step still waiting: what for, and until when"),
    }, ["id", "hash", "op", "status", "started_at", "ended_at", "attempts", "input"]),
    "RunDetail": obj({
        **RUN_PROPERTIES,
        "reruns": {"type": "array", "items": {"type": "string"}, "description": "ids of the runs rerunning it"},
        "steps": {"type": "array", "items": ref("Step"), "description": "in the order they were recorded"},
    }),
    "App": obj({
        "id": {"type": "string"},
        "name": {"type": "string", "description": "the app id the SDK sent"},
        "url": {"type": "string", "format": "uri", "description": "where the app serves its endpoint"},
        "sdk": {"type": ["string", "null"], "description": "e.g. `py:v0.5.19`"},
        "framework": {"type": ["string", "null"]},
        "synced_at": MS,
        "error": {"type": ["string", "null"], "description": "why the last sync failed"},
        "function_count": {"type": "integer", "minimum": 0},
    }),
    "FunctionConfig": {
        "type": "object", "required": ["id"], "additionalProperties": True,
        "description": "A function's configuration as its app's sync declared it (the Inngest SDK's "
                       "shape; absent settings are left out).",
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "triggers": {"type": "array", "items": obj({
                "event": {"type": "string", "description": "an event name, `*` wildcards allowed"},
                "expression": {"type": "string", "description": "a CEL filter over `event`"},
                "cron": {"type": "string", "description": "a cron schedule, optionally after `TZ=...`"},
                "jitter": {"type": "string"},
            }, [])},
            "steps": {"type": "object", "additionalProperties": {"type": "object"}},
            "retries": {"oneOf": [{"type": "integer"}, {"type": "object"}]},
            "concurrency": {"oneOf": [{"type": "integer"}, {"type": "array", "items": {"type": "object"}}]},
            "throttle": {"type": "object"},
            "rateLimit": {"type": "object"},
            "debounce": {"type": "object"},
            "batchEvents": {"type": "object"},
            "cancel": {"type": "array", "items": {"type": "object"}},
            "priority": {"type": "object"},
            "idempotency": {"type": "string"},
            "singleton": {"type": "object"},
            "timeouts": {"type": "object"},
        },
    },
    "Function": obj({
        "id": {"type": "string", "description": "the composite id `{app}-{function}`: `function_id` elsewhere"},
        "app_id": {"type": "string"},
        "name": {"type": "string"},
        "url": {"type": "string", "description": "where the server calls it"},
        "config": ref("FunctionConfig"),
        "cron": {"type": "array", "items": obj({"cron": {"type": "string"}, "next_at": nullable(MS)}),
                 "description": "each cron trigger and when it fires next"},
    }),
    "SyncResult": obj({
        "url": {"type": "string"},
        "ok": {"type": "boolean"},
        "modified": {"type": ["boolean", "null"], "description": "did the sync change the app's functions"},
        "error": {"type": "string", "description": "why the sync failed"},
    }, ["url", "ok"]),
    "DeadLetter": obj({
        "id": {"type": "integer"},
        "item_id": {"type": "integer", "description": "the queue item it was"},
        "run_id": {"type": "string"},
        "kind": {"type": "string", "description": "the item's kind (`call`, `timer`, ...)"},
        "target": {"type": "string"},
        "attempt": {"type": "integer"},
        "payload": ANY_JSON,
        "failures": {"type": "integer", "description": "how many times handling it failed"},
        "reason": {"type": "string", "description": "the last failure"},
        "created_at": MS,
        "cursor": {"type": "string", "pattern": "^[0-9]+$", "description": "pass as `before` for the next page"},
    }),
    "BulkCancelRequest": obj({**BULK_PROPERTIES, "status": bulk_status(ACTIVE_STATUSES, "QUEUED and RUNNING")},
                             ["function_id"], extra=False),
    "ReplayRequest": obj({**BULK_PROPERTIES, "status": bulk_status(ENDED_STATUSES, "FAILED and CANCELLED")},
                         ["function_id"], extra=False),
    "RegisterRequest": {
        "type": "object", "required": ["url", "functions"], "additionalProperties": True,
        "description": "What an SDK sends to sync its app (the Inngest protocol; `appName` also spelled "
                       "`app_name`).",
        "properties": {
            "url": {"type": "string"}, "appName": {"type": "string"}, "app_name": {"type": "string"},
            "deployType": {"type": "string"}, "framework": {"type": "string"}, "sdk": {"type": "string"},
            "v": {"type": "string"}, "appVersion": {"type": "string"}, "capabilities": {"type": "object"},
            "functions": {"type": "array", "items": ref("FunctionConfig")},
        },
    },
    "RegisterResult": obj({
        "ok": {"type": "boolean"},
        "status": {"type": "integer", "description": "the HTTP status again (the TypeScript SDK reads it)"},
        "modified": {"type": "boolean"},
        "app_id": {"type": "string"},
        "sync_id": {"type": "string"},
        "error": {"type": "string"},
    }, ["ok", "status"]),
    "GraphQLRequest": obj({
        "query": {"type": "string", "minLength": 1},
        "variables": {"type": ["object", "null"]},
        "operationName": {"type": ["string", "null"]},
    }, ["query"]),
    "GraphQLResponse": obj({
        "data": {"type": ["object", "null"]},
        "errors": {"type": "array", "items": obj({"message": {"type": "string"}}, ["message"], extra=True),
                   "description": "GraphQL errors (`message`, and `locations`, `path` where known)"},
    }, [], description="GraphQL over HTTP: `data`, and `errors` when something failed (still a 200)."),
}

# ------------------------------------------------------------------------------------------- parameters

PARAMETERS: dict[str, Schema] = {
    "limit": {"name": "limit", "in": "query", "description": "page size",
              "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50}},
    "run_id": {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}},
    "event_id": {"name": "event_id", "in": "path", "required": True,
                 "description": "the event's `internal_id`", "schema": {"type": "string"}},
    "function_id": {"name": "function_id", "in": "query", "description": "runs of this function (its `id`)",
                    "schema": {"type": "string"}},
    "app_id": {"name": "app_id", "in": "query", "description": "runs of this app's functions (the app `id`)",
               "schema": {"type": "string"}},
    "status": {"name": "status", "in": "query", "style": "form", "explode": False,
               "description": "one status or several, comma-separated (`FAILED,CANCELLED`); case does not matter",
               "schema": {"type": "array", "items": ref("RunStatus")}},
    "from": {"name": "from", "in": "query",
             "description": "runs created at or after this time: ms since the epoch or ISO-8601",
             "schema": TIME_BOUND},
    "to": {"name": "to", "in": "query",
           "description": "runs created before this time: ms since the epoch or ISO-8601; after `from`",
           "schema": TIME_BOUND},
    "q": {"name": "q", "in": "query",
          "description": "a run id (exact), or text found in the data of the run's triggering events "
                         "(ignoring case)",
          "schema": {"type": "string", "maxLength": 200}},
}
RUN_FILTERS = [{"$ref": f"#/components/parameters/{p}"} for p in ("function_id", "app_id", "status", "from", "to", "q")]


def param(name: str) -> Schema:
    return {"$ref": f"#/components/parameters/{name}"}


# ------------------------------------------------------------------------------------------- security

API = [{"apiToken": []}, {"sessionCookie": []}]  # either; dev mode asks for neither
SDK = [{"signingKey": []}]
OPEN: list[dict[str, list[str]]] = []

SECURITY_SCHEMES = {
    "apiToken": {"type": "http", "scheme": "bearer",
                 "description": "Production mode: an API token (`ratchet keys new`, `ratchet start --api-token`) "
                                "as `Authorization: Bearer <token>`, for `/v1/*` and `/v0/gql`. A missing or "
                                "wrong one is a 401. Dev mode asks for nothing."},
    "sessionCookie": {"type": "apiKey", "in": "cookie", "name": sessions.COOKIE,
                      "description": "Production mode: the dashboard's login session (`POST /login` with an API "
                                     "token), accepted wherever an API token is. Requests that change something "
                                     f"must also send `{sessions.CSRF_HEADER}: 1`, or get a 403."},
    "signingKey": {"type": "http", "scheme": "bearer",
                   "description": "Production mode: SDK calls (`/fn/register`, `/v0/runs/*`) carry "
                                  "`Authorization: Bearer <hex SHA-256 of the hex-decoded signing key>`, with or "
                                  "without the `signkey-<env>-` prefix; the current key or the fallback. A "
                                  "missing or wrong one is a 401. Dev mode asks for nothing."},
}

UNAUTHORIZED = error_reply("production mode: no valid API token or session")
FORBIDDEN = error_reply(f"production mode: a session's write without the `{sessions.CSRF_HEADER}` header")


def op(summary: str, responses: dict[str, Any], *, security: list[dict[str, list[str]]] | None = None,
       tags: list[str], description: str | None = None, parameters: list[Schema] | None = None,
       body: dict[str, Any] | None = None, write: bool = False) -> dict[str, Any]:
    """One operation; those under the API token also answer 401 (and 403 for writes) in production mode."""
    security = API if security is None else security
    out: dict[str, Any] = {"summary": summary, "tags": tags, "security": security}
    if description:
        out["description"] = description
    if parameters:
        out["parameters"] = parameters
    if body:
        out["requestBody"] = body
    responses = dict(responses)
    if security is API:
        responses.setdefault("401", UNAUTHORIZED)
        if write:
            responses.setdefault("403", FORBIDDEN)
    out["responses"] = responses
    return out


BAD_REQUEST = error_reply("the request is invalid; the message names the field and what it must be")
NO_RUN = error_reply("no such run")
SEND_BODY = request_body({"oneOf": [ref("EventInput"), {"type": "array", "items": ref("EventInput"), "minItems": 1}]},
                         description="One event, or an array of them (at most 16 MiB in all). Events up to the "
                                     "first invalid one are accepted.")
SEND_REPLIES = {
    "200": json_body(ref("SendResult"), "every event accepted; the runs they trigger are committed"),
    "400": json_body(ref("SendResult"), "not JSON, an empty array, or an invalid event (`error` says which field)"),
    "413": json_body(ref("SendResult"), "the body or one event is over the size limit"),
}

PATHS: dict[str, Any] = {
    "/health": {"get": op("Is the server up", {"200": json_body(ref("Health"), "it is")}, security=OPEN,
                          tags=["server"])},
    "/openapi.json": {"get": op("This document", {"200": json_body({"type": "object"}, "the OpenAPI document")},
                                security=OPEN, tags=["server"])},
    "/e/{event_key}": {"post": op(
        "Send events", {**SEND_REPLIES, "401": json_body(ref("SendResult"), "production mode: unknown event key")},
        security=OPEN, tags=["events"], body=SEND_BODY,
        description="The Inngest event API. The event key in the path is the credential: in production mode it "
                    "must be one of the server's event keys (`ratchet start --event-key`); in dev mode any "
                    "value works. An `x-inngest-event-id-seed` header makes the ids deterministic, so a "
                    "retried send stores the same ids.",
        parameters=[{"name": "event_key", "in": "path", "required": True, "schema": {"type": "string"},
                     "description": "an event key (any value in dev mode)"}])},
    "/fn/register": {"post": op(
        "Sync an app (the SDK's call)", {
            "200": json_body(ref("RegisterResult"), "synced"),
            "400": json_body(ref("RegisterResult"), "the registration is invalid, or meant for another kind "
                                                    "of server (`x-inngest-expected-server-kind`)"),
            "401": json_body(ref("RegisterResult"), "production mode: no valid signing-key bearer token"),
        }, security=SDK, tags=["apps"], body=request_body(ref("RegisterRequest")),
        description="Apps call this when the server asks them to sync (a PUT to their URL) or on their own. "
                    "The reply repeats its status in the body.")},
    "/v1/apps": {"get": op("List apps", {"200": json_body(data_of({"type": "array", "items": ref("App")}),
                                                          "every synced app")}, tags=["apps"])},
    "/v1/apps/sync": {"post": op(
        "Re-sync apps", {
            "200": json_body(data_of({"type": "array", "items": ref("SyncResult")}), "every sync worked"),
            "400": BAD_REQUEST,
            "502": json_body(obj({"data": {"type": "array", "items": ref("SyncResult")},
                                  "error": {"type": "string", "description": "why each failed sync failed "
                                                                             "(`url: reason; ...` for several)"}}),
                             "at least one app could not be synced (each result says)"),
        }, tags=["apps"], write=True,
        body=request_body(obj({"url": {"type": "string", "minLength": 1}}), required=False,
                          description="`{\"url\"}` syncs the app serving at that URL; no body re-syncs every "
                                      "known app and those given with `-u` at start-up."))},
    "/v1/functions": {"get": op("List functions", {"200": json_body(
        data_of({"type": "array", "items": ref("Function")}), "every function of every synced app")},
        tags=["functions"])},
    "/v1/functions/{function_id}/invoke": {"post": op(
        "Invoke a function", {
            "201": json_body(data_of(obj({"run_id": {"type": "string"}})), "the run started"),
            "400": BAD_REQUEST,
            "404": error_reply("no such function, or its app no longer serves it"),
            "409": error_reply("the function did not start a run"),
            "413": error_reply("`data` is over the event size limit"),
        }, tags=["functions"], write=True,
        description="Starts a run with the given payload whatever the function's triggers, through an "
                    "`inngest/function.invoked` event (as `step.invoke` does).",
        parameters=[{"name": "function_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        body=request_body(obj({"data": {"type": "object", "default": {}}}, []), required=False))},
    "/v1/events": {
        "get": op("List events", {"200": json_body(data_of({"type": "array", "items": ref("Event")}),
                                                   "newest first"), "400": BAD_REQUEST},
                  tags=["events"], parameters=[
                      {"name": "name", "in": "query", "description": "events of this name",
                       "schema": {"type": "string"}},
                      {"name": "q", "in": "query", "description": "events whose data has this text, ignoring case "
                                                                  "(`%` and `_` match themselves)",
                       "schema": {"type": "string"}},
                      param("limit"),
                      {"name": "before", "in": "query", "description": "the `cursor` of the last event of the "
                                                                       "previous page",
                       "schema": {"type": "string", "pattern": "^[0-9]+$"}}]),
        "post": op("Send events (API token)", {**SEND_REPLIES}, tags=["events"], body=SEND_BODY, write=True,
                   description="As `POST /e/{event_key}`, for API clients and the dashboard: authorized by the "
                               "API token (or session) instead of an event key."),
    },
    "/v1/events/{event_id}": {"get": op("Get an event", {
        "200": json_body(data_of(ref("Event")), "the event"), "404": error_reply("no such event")},
        tags=["events"], parameters=[param("event_id")])},
    "/v1/events/{event_id}/runs": {"get": op("The runs an event started", {
        "200": json_body(data_of({"type": "array", "items": ref("Run")}), "its runs"),
        "404": error_reply("no such event")}, tags=["events", "runs"], parameters=[param("event_id")])},
    "/v1/runs": {"get": op(
        "List runs", {"200": json_body(data_of({"type": "array", "items": ref("RunListItem")}), "newest first"),
                      "400": BAD_REQUEST},
        tags=["runs"], parameters=[*RUN_FILTERS, param("limit"), {
            "name": "before", "in": "query", "schema": {"type": "string"},
            "description": "the `cursor` of the last run of the previous page"}],
        description="Filters combine (AND). Runs are ordered by id, which sorts by creation time.")},
    "/v1/runs/count": {"get": op(
        "Count runs", {"200": json_body(data_of(obj({
            "count": {"type": "integer", "minimum": 0},
            "capped": {"type": "boolean", "description": "counting stopped at `at_most`: there may be more"}})),
            "how many runs match"), "400": BAD_REQUEST},
        tags=["runs"], parameters=[*RUN_FILTERS, {
            "name": "at_most", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 10_000_000},
            "description": "stop counting here (a cheap count of a common search); `capped` is then true"}],
        description="With the filters of `GET /v1/runs`.")},
    "/v1/runs/cancel": {"post": op(
        "Cancel runs in bulk", {
            "200": json_body(data_of(obj({"matched": {"type": "integer"}, "cancelled": {"type": "integer"},
                                          "to": BULK_TO})),
                             "what was matched and cancelled (`cancelled` is 0 on a dry run)"),
            "400": BAD_REQUEST,
        }, tags=["runs"], write=True, body=request_body(ref("BulkCancelRequest")),
        description="Cancels (or, with `dry_run`, counts) the function's runs that have not ended, were "
                    "created in [`from`, `to`) and match `status`, `app_id` and `q` as `GET /v1/runs` does. "
                    "Unknown fields are refused (a misspelt filter must not widen the selection).")},
    "/v1/runs/replay": {"post": op(
        "Replay runs in bulk", {
            "200": json_body(data_of(obj({
                "matched": {"type": "integer"}, "replayed": {"type": "integer"},
                "not_replayed": {"type": "array", "items": obj({"run_id": {"type": "string"},
                                                                "error": {"type": "string"}})},
                "to": BULK_TO,
            }, ["matched", "replayed", "to"])), "what was matched and rerun (`replayed` is 0 on a dry run)"),
            "400": BAD_REQUEST,
            "409": error_reply("the function is no longer served by its app"),
        }, tags=["runs"], write=True,
        body=request_body(ref("ReplayRequest")),
        description="Reruns from the start (or, with `dry_run`, counts) each run of the function created in "
                    "[`from`, `to`) whose status is one of `status` and that matches `app_id` and `q` as "
                    "`GET /v1/runs` does. Runs created during the replay are not matched.")},
    "/v1/runs/{run_id}": {"get": op(
        "Get a run with its steps", {"200": json_body(data_of(ref("RunDetail")), "the run"), "404": NO_RUN},
        tags=["runs"], parameters=[param("run_id")])},
    "/v1/runs/{run_id}/cancel": {"post": op(
        "Cancel a run", {"200": json_body(data_of(ref("Run")), "the run, now CANCELLED"), "404": NO_RUN,
                         "409": error_reply("the run has already ended")},
        tags=["runs"], write=True, parameters=[param("run_id")])},
    "/v1/runs/{run_id}/rerun": {"post": op(
        "Rerun a run", {"201": json_body(data_of(ref("Run")), "the new run"), "400": BAD_REQUEST, "404": NO_RUN,
                        "409": error_reply("the run's function no longer exists")},
        tags=["runs"], write=True, parameters=[param("run_id")],
        body=request_body(obj({
            "from_step": {"type": "string", "minLength": 1,
                          "description": "a step id or hash: the finished steps recorded before it are kept "
                                         "as memo (default: rerun from the start)"},
            "data": {"type": "object", "description": "replaces the event's data, in a new event of the same name"},
        }, [], extra=False), required=False),
        description="A new run of the same function with the same events. A rerun keeps concurrency, "
                    "throttle and priority but skips rate limit, singleton, debounce, batching and "
                    "idempotency.")},
    "/v1/dead-letters": {"get": op(
        "List dead letters", {"200": json_body(data_of({"type": "array", "items": ref("DeadLetter")}),
                                               "newest first"), "400": BAD_REQUEST},
        tags=["runs"], parameters=[
            param("limit"),
            {"name": "before", "in": "query", "description": "the `cursor` of the last item of the previous page",
             "schema": {"type": "string", "pattern": "^[0-9]+$"}},
            {"name": "run_id", "in": "query", "description": "only this run's", "schema": {"type": "string"}}],
        description="Queue items taken out of the queue after failing 5 times (their runs failed).")},
    "/v1/stream": {"get": op(
        "Change notices (server-sent events)", {"200": {
            "description": "an endless `text/event-stream`: `event: hello` first, then `event: change` (at most "
                           "four a second) whenever the store was written, and a keep-alive comment every 15 s "
                           "of quiet",
            "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
        tags=["server"], description="What the dashboard listens to so open pages refresh as runs progress.")},
    "/v1/info": {"get": op("About this server", {"200": json_body(data_of(obj({
        "mode": {"type": "string", "enum": ["dev", "production"]},
        "backend": {"type": "string", "enum": ["sqlite", "postgres"]}})), "its mode and store")},
        tags=["server"])},
    "/v0/gql": {"post": op(
        "GraphQL", {"200": json_body(ref("GraphQLResponse"), "the result (GraphQL errors included)"),
                    "400": json_body(ref("GraphQLResponse"), "the body is not a GraphQL request")},
        tags=["graphql"], write=True, body=request_body(ref("GraphQLRequest")),
        description="The read-only subset of Inngest's dev-server GraphQL API that the SDKs' dev tools use: "
                    "run, runTrigger, runTraceSpanOutputByID, runs, event, events, functions, apps.")},
    "/v0/runs/{run_id}/batch": {"get": op(
        "A run's events (SDK)", {"200": json_body({"type": "array", "items": ref("WireEvent")}, "its events"),
                                 "401": error_reply("production mode: no valid signing-key bearer token"),
                                 "404": NO_RUN},
        security=SDK, tags=["sdk"], parameters=[param("run_id")],
        description="For calls whose payload was too large to carry the events (`use_api`).")},
    "/v0/runs/{run_id}/actions": {"get": op(
        "A run's memo (SDK)", {"200": json_body({"type": "object", "additionalProperties": ANY_JSON},
                                                "step hash → the step's result"),
                               "401": error_reply("production mode: no valid signing-key bearer token"),
                               "404": NO_RUN},
        security=SDK, tags=["sdk"], parameters=[param("run_id")],
        description="For calls whose payload was too large to carry the memo (`use_api`).")},
}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Ratchet",
        "version": "1",
        "description": (
            "The HTTP API of a Ratchet server: the Inngest event and SDK endpoints (`/e`, `/fn/register`, "
            "`/v0/runs`), the REST API the dashboard and CLI use (`/v1`) and a GraphQL subset (`/v0/gql`).\n\n"
            "Credentials apply in production mode (`ratchet start`) only; in dev mode (`ratchet dev`) every "
            "endpoint is open and the security requirements below are not checked. Times are integers of "
            "milliseconds since the Unix epoch; the `/v1` replies wrap their value in `{\"data\": ...}` and "
            "refusals are `{\"error\": \"...\"}` with a 4xx status."),
    },
    "servers": [{"url": "http://127.0.0.1:8288", "description": "`ratchet dev` on its default port"}],
    "tags": [{"name": n} for n in ("server", "events", "apps", "functions", "runs", "graphql", "sdk")],
    "security": API,
    "paths": PATHS,
    "components": {"schemas": SCHEMAS, "parameters": PARAMETERS, "securitySchemes": SECURITY_SCHEMES},
}


async def document(request: Request) -> Response:
    return json_response(SPEC)
