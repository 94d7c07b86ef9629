"""`ratchet start` (production mode) with an official-SDK app in production mode: the SDK accepts the
server's signed calls, the server accepts the SDK's signed replies and bearer-authenticated sync, and
events need the event key."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests import harness

pytestmark = pytest.mark.e2e

APP = Path(__file__).parent / "apps" / "prod_app.py"
KEY = "signkey-prod-" + "0f" * 32
EVENT_KEY = "e2e-" + "a1" * 20
TOKEN = "rat_e2e-token"


def test_production_mode_end_to_end(tmp_path: Path) -> None:
    server = harness.ServerProcess(tmp_path / "prod.db", tmp_path / "server.log", retry_interval=None,
                                   command="start", extra_args=["--signing-key", KEY, "--event-key", EVENT_KEY,
                                                                "--api-token", TOKEN, "--host", "127.0.0.1"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("INNGEST_")}
    env.update({"INNGEST_SIGNING_KEY": KEY, "INNGEST_EVENT_KEY": EVENT_KEY, "PYTHONUNBUFFERED": "1",
                "INNGEST_API_BASE_URL": server.url, "INNGEST_EVENT_API_BASE_URL": server.url})
    app = harness.AppProcess(APP, tmp_path / "app.log", env=env)
    try:
        app.start(timeout=30)  # (an unsigned GET gets 401 from a production SDK: still "up")
        server.app_urls = [app.url]
        server.start()
        api = harness.Api(server.url, token=TOKEN)
        harness.wait_synced(api, ["prod-signed"])
        assert httpx.get(f"{server.url}/v1/functions").status_code == 401  # no token
        sync = harness.ratchet("sync", "--server", server.url, "--api-token", TOKEN)
        assert sync.returncode == 0 and "synced" in sync.stdout, (sync.stdout, sync.stderr)
        denied = harness.ratchet("sync", "--server", server.url)
        assert denied.returncode == 1 and "API token" in denied.stderr, (denied.stdout, denied.stderr)
        refused = httpx.post(f"{server.url}/e/not-the-key", json={"name": "prod/go", "data": {"n": 1}})
        assert refused.status_code == 401
        (event_id,) = api.send({"name": "prod/go", "data": {"n": 7}}, key=EVENT_KEY)
        (run_id,) = harness.wait_runs_for_event(api, event_id)
        run = harness.wait_run(api, run_id, "COMPLETED", timeout=20)
        assert run["output"] == {"a": "A", "n": 7}
        assert [s["id"] for s in run["steps"]] == ["a", "nap"]
    finally:
        server.stop()
        app.stop()
