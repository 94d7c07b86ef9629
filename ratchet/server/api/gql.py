"""The dev-server GraphQL subset at `POST /v0/gql` (placeholder until implemented)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ratchet.server.api import json_response


async def handle(request: Request) -> Response:
    return json_response({"errors": [{"message": "GraphQL is not implemented yet"}]}, 501)
