"""One Store suite over every backend. PostgreSQL joins the parameter list with its backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ratchet.server.store import base, open_store

BACKENDS = ["sqlite"]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[base.Store]:
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'ratchet.db'}")
    else:  # pragma: no cover - filled in with the backend
        raise AssertionError(request.param)
    yield s
    await s.close()
