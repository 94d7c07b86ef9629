"""The event API: `POST /e/{event_key}` (one event object or an array of them)."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ratchet import protocol
from ratchet.server import auth, ids, ingest
from ratchet.server.api import json_response, services


async def send_events(request: Request) -> Response:
    cfg = services(request).cfg
    key = request.path_params["event_key"]
    if cfg.event_keys and not auth.secret_matches(key, cfg.event_keys):
        return json_response({"ids": [], "status": 401, "error": "event key not found"}, 401)
    return await accept(request)


async def send_events_v1(request: Request) -> Response:
    """`POST /v1/events`: the same send for API clients and the dashboard (an API token instead of an
    event key in production mode)."""
    return await accept(request)


async def accept(request: Request) -> Response:
    """Read, validate and store the events of a send; the reply names the ids of those accepted."""
    svc = services(request)
    cfg = svc.cfg
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cfg.max_request_bytes:
            return json_response({"ids": [], "status": 413,
                                  "error": f"request body is over the limit of {cfg.max_request_bytes} bytes"}, 413)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return json_response({"ids": [], "status": 400, "error": f"body is not valid JSON: {exc}"}, 400)
    raw_events = value if isinstance(value, list) else [value]
    if not raw_events:
        return json_response({"ids": [], "status": 400, "error": "no events: the body is an empty array"}, 400)
    seed_header = request.headers.get(protocol.Header.EVENT_ID_SEED)
    seed = ids.parse_seed(seed_header) if seed_header else None
    try:
        result = await svc.ingestor.ingest(raw_events, seed=seed, now=protocol.now_ms())
    except ingest.EventTooLargeResult as exc:
        return json_response({"ids": exc.result.ids, "status": 413, "error": exc.result.error}, 413)
    if result.error is not None:
        return json_response({"ids": result.ids, "status": 400, "error": result.error}, 400)
    return json_response({"ids": result.ids, "status": 200})
