"""`GET /v1/stream` on a real server: the dashboard's live updates (server-sent events)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests import harness

pytestmark = pytest.mark.e2e


def test_the_stream_says_hello_then_announces_each_change(tmp_path: Path) -> None:
    server = harness.ServerProcess(tmp_path / "r.db", tmp_path / "server.log").start()
    try:
        lines: list[str] = []
        with httpx.Client(base_url=server.url, timeout=10) as http, http.stream("GET", "/v1/stream") as resp:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
            it = resp.iter_lines()
            deadline = time.monotonic() + 10
            while "event: hello" not in lines:
                assert time.monotonic() < deadline, lines
                lines.append(next(it))
            sender = threading.Thread(target=lambda: httpx.post(f"{server.url}/v1/events", json={"name": "s/x"}))
            sender.start()
            while "event: change" not in lines:
                assert time.monotonic() < deadline, lines
                lines.append(next(it))
            sender.join()
    finally:
        server.stop()
