"""The dashboard in production mode (`ratchet start`): it needs a login with an API token."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from ratchet import protocol
from ratchet.server import sessions
from tests import harness
from tests.ui.conftest import APP, EXPECT_TIMEOUT_MS, Browsing

pytestmark = pytest.mark.ui


KEY = "signkey-prod-" + "c3" * 32
EVENT_KEY = "ui-" + "5e" * 20
TOKEN = "rat_ui-login-token"


class Production:
    """`ratchet start` with keys and an API token, and the UI app synced to it, for one test."""

    def __init__(self, tmp_path: Path) -> None:
        app_dir = tmp_path / "app"
        app_dir.mkdir()
        self.server = harness.ServerProcess(
            tmp_path / "prod.db", tmp_path / "server.log", retry_interval=None, command="start",
            extra_args=["--signing-key", KEY, "--event-key", EVENT_KEY, "--api-token", TOKEN, "--host", "127.0.0.1"])
        env = {k: v for k, v in os.environ.items() if not k.startswith("INNGEST_")}
        env.update({"INNGEST_SIGNING_KEY": KEY, "INNGEST_EVENT_KEY": EVENT_KEY, "PYTHONUNBUFFERED": "1",
                    "INNGEST_API_BASE_URL": self.server.url, "INNGEST_EVENT_API_BASE_URL": self.server.url,
                    "UI_DIR": str(app_dir)})
        self.app = harness.AppProcess(APP, tmp_path / "app.log", env=env)
        self.api = harness.Api(self.server.url, token=TOKEN)

    def start(self) -> None:
        self.server.app_urls = [self.app.url]
        self.app.launch()  # side by side; the server syncs the app once it answers
        self.server.launch()
        self.app.wait_ready()
        self.server.wait_ready()
        harness.wait_synced(self.api, ["ui-hello"])

    def stop(self) -> None:
        self.server.stop()
        self.app.stop()


@contextlib.contextmanager
def production(browser: Any, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Production, Browsing]]:
    prod = Production(tmp_path)
    browsing: Browsing | None = None
    try:
        prod.start()
        browsing = Browsing(browser, prod.server.url, request.node.name)
        yield prod, browsing
        assert not browsing.page_errors, browsing.page_errors
    except BaseException:
        if browsing is not None:
            browsing.save_failure()
        raise
    finally:
        if browsing is not None:
            browsing.close()
        prod.stop()


def session_cookie(url: str, expires_in_ms: int) -> dict[str, Any]:
    """A login session (as `POST /login` issues) that ends `expires_in_ms` from now (negative: ended)."""
    issued = protocol.now_ms() - sessions.LIFETIME_MS + expires_in_ms
    return {"name": sessions.COOKIE, "value": sessions.issue(TOKEN, KEY, issued), "url": url, "httpOnly": True,
            "sameSite": "Strict"}


def test_production_mode_needs_a_login_with_an_api_token(browser: Any, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    with production(browser, tmp_path, request) as (prod, browsing):
        api = prod.api
        (event_id,) = api.send({"name": "ui/hello", "data": {"who": "prod"}}, key=EVENT_KEY)
        (run_id,) = harness.wait_runs_for_event(api, event_id)
        harness.wait_run(api, run_id)

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


#: How long the session of the expiry test lasts once set: time to load the page and see it live first.
SHORT_SESSION_MS = 8_000


def test_an_expired_session_sends_the_page_to_the_login(browser: Any, tmp_path: Path,
                                                        request: pytest.FixtureRequest) -> None:
    with production(browser, tmp_path, request) as (prod, browsing):
        page = browsing.page
        # A page left open while its session ends: the stream ends with it, its reconnection gets a 401,
        # and the page goes to the login instead of showing "reconnecting" for ever.
        browsing.context.add_cookies([session_cookie(prod.server.url, SHORT_SESSION_MS)])
        page.goto("/#/functions")
        expect(page.get_by_test_id("function-row").first).to_be_visible()
        expect(page.get_by_test_id("live")).to_have_text("live")
        assert page.url.endswith("/#/functions"), page.url  # logged in: the session has not ended yet
        browsing.shot()
        expect(page).to_have_url(re.compile(r"/login$"), timeout=SHORT_SESSION_MS + EXPECT_TIMEOUT_MS)
        browsing.shot()

        # A request the page makes with an ended session (401) also goes to the login.
        browsing.context.add_cookies([session_cookie(prod.server.url, 3_600_000)])
        page.goto("/#/runs")
        expect(page.get_by_test_id("live")).to_have_text("live")
        browsing.context.add_cookies([session_cookie(prod.server.url, -1_000)])  # replaces it: ended
        # To the functions page, which asks the API for them (a script, not a click: a live refresh may
        # already have taken the page to the login, and a click would wait for the link in vain).
        with contextlib.suppress(PlaywrightError):  # "context destroyed": it is on its way to the login already
            page.evaluate("location.hash = '#/functions'")
        expect(page).to_have_url(re.compile(r"/login$"))
        browsing.shot()
