"""The dashboard in production mode (`ratchet start`): it needs a login with an API token."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests import harness
from tests.ui.conftest import APP, Browsing

pytestmark = pytest.mark.ui


KEY = "signkey-prod-" + "c3" * 32
EVENT_KEY = "ui-" + "5e" * 20
TOKEN = "rat_ui-login-token"


def test_production_mode_needs_a_login_with_an_api_token(browser: Any, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    server = harness.ServerProcess(tmp_path / "prod.db", tmp_path / "server.log", retry_interval=None,
                                   command="start", extra_args=["--signing-key", KEY, "--event-key", EVENT_KEY,
                                                                "--api-token", TOKEN, "--host", "127.0.0.1"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("INNGEST_")}
    env.update({"INNGEST_SIGNING_KEY": KEY, "INNGEST_EVENT_KEY": EVENT_KEY, "PYTHONUNBUFFERED": "1",
                "INNGEST_API_BASE_URL": server.url, "INNGEST_EVENT_API_BASE_URL": server.url,
                "UI_DIR": str(app_dir)})
    app = harness.AppProcess(APP, tmp_path / "app.log", env=env)
    browsing: Browsing | None = None
    try:
        server.app_urls = [app.url]
        app.launch()  # side by side; the server syncs the app once it answers
        server.launch()
        app.wait_ready()
        server.wait_ready()
        api = harness.Api(server.url, token=TOKEN)
        harness.wait_synced(api, ["ui-hello"])
        (event_id,) = api.send({"name": "ui/hello", "data": {"who": "prod"}}, key=EVENT_KEY)
        (run_id,) = harness.wait_runs_for_event(api, event_id)
        harness.wait_run(api, run_id)

        browsing = Browsing(browser, server.url, request.node.name)
        page = browsing.page
        page.goto("/")
        expect(page).to_have_url(re.compile(r"/login$"))  # no session: the dashboard sends you to log in
        expect(page.get_by_role("button", name="Log in")).to_be_visible()
        browsing.shot()

        page.get_by_label("API token").fill("rat_not-the-token")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_contain_text("not one this server accepts")
        expect(page).to_have_url(re.compile(r"/login$"))
        browsing.shot()
        assert not [c for c in browsing.context.cookies() if c["name"] == "ratchet_session"]

        page.get_by_label("API token").fill(TOKEN)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(re.compile(r"/(#/runs)?$"))
        run_row = page.locator(f'[data-testid="run-row"][data-run-id="{run_id}"]')
        expect(run_row.get_by_test_id("status")).to_have_text("COMPLETED")
        expect(page.get_by_test_id("live")).to_have_text("live")  # the live stream is allowed with the session
        (cookie,) = [c for c in browsing.context.cookies() if c["name"] == "ratchet_session"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
        browsing.shot()

        # A write from the page works with the session (the dashboard sends the CSRF header).
        page.goto("/#/events")
        page.get_by_test_id("send-name").fill("ui/hello")
        page.get_by_test_id("send-data").fill('{"who": "logged in"}')
        page.get_by_test_id("send-submit").click()
        expect(page.get_by_test_id("send-result")).to_contain_text("Sent: event")
        browsing.shot()

        page.get_by_test_id("logout").click()
        expect(page).to_have_url(re.compile(r"/login$"))
        assert not [c for c in browsing.context.cookies() if c["name"] == "ratchet_session"]
        page.goto("/")
        expect(page).to_have_url(re.compile(r"/login$"))  # logged out for good
        browsing.shot()
        assert not browsing.page_errors, browsing.page_errors
    except BaseException:
        if browsing is not None:
            browsing.save_failure()
        raise
    finally:
        if browsing is not None:
            browsing.close()
        server.stop()
        app.stop()
