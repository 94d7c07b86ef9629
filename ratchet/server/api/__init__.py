"""HTTP handlers, one module per resource. Each reads the shared `Services` from `request.app.state`."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ratchet.server import services as services_mod


def services(request: Request) -> services_mod.Services:
    return request.app.state.services  # type: ignore[no-any-return]


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON reply serialized with orjson (fast, and strict about what is JSON)."""
    return Response(orjson.dumps(value), status_code=status, media_type="application/json", headers=headers)


def error(status: int, message: str, **extra: Any) -> Response:
    return json_response({"error": message, **extra}, status)
