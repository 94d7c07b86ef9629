"""The OpenAPI document of the HTTP API, served at `/openapi.json`."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ratchet.server.api import json_response

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Ratchet", "version": "1"},
    "paths": {},
}


async def document(request: Request) -> Response:
    return json_response(SPEC)
