"""Fixtures for the browser tier: the dashboard driven in real headless Chromium (Debian's `chromium`
package, never a downloaded browser) with Playwright, against real processes: `ratchet dev` (or `ratchet
start`) and an app on Ratchet's SDK (`apps/ui_app.py`) whose behaviour a test changes through files.

Each test gets a fresh server and app and its own browser (see `browser` for why it is not shared). Every page a test visits is saved as a full-page screenshot to
`build/ui-screenshots/<test>-<n>.png`. Waits are Playwright's auto-waiting `expect` (or the harness's
`wait_until` for API state), each with a deadline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect, sync_playwright

from tests import harness

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
APP = Path(__file__).parent / "apps" / "ui_app.py"
FUNCTIONS = ("ui-hello", "ui-fail", "ui-sleeper", "ui-pipeline", "ui-checkout", "ui-gate", "ui-approval",
             "ui-parent", "ui-snooze")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "ui-screenshots"
#: How long an `expect` or action waits (ms): a run's progress reaches the page within a second or so on
#: an idle machine; the margin is for a loaded one (`make test` runs everything two at a time).
EXPECT_TIMEOUT_MS = 15_000


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the test item, so a fixture can tell that its test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _no_loop_left_running() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    pytest.fail("Playwright left an asyncio loop marked running: later tests in this worker would fail")


def require_chromium() -> None:
    """Without /usr/bin/chromium the tier is skipped, except on CI (CI=true), where that is a failure:
    `make test` installs it."""
    if not (CHROMIUM.exists() and os.access(CHROMIUM, os.X_OK)):
        reason = f"{CHROMIUM} is missing (apt-get install chromium; `make test` installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium for one test.

    Not shared between tests: while Playwright's sync API is started, it marks its asyncio loop as
    running in this thread between calls, so every later test in the same xdist worker that runs an
    event loop (`asyncio.run`, pytest-asyncio) would fail. Started and stopped around each test, it
    costs about a second."""
    require_chromium()
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        pw.stop()
    _no_loop_left_running()


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


class Screens:
    """Numbered full-page screenshots of one test: `<test>-1.png`, `<test>-2.png`, ..."""

    def __init__(self, test_name: str) -> None:
        self.prefix = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        self.n = 0
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for old in SCREENSHOTS.glob(f"{self.prefix}-*.png"):  # from an earlier session
            old.unlink(missing_ok=True)

    def shot(self, page: Any) -> Path:
        self.n += 1
        path = SCREENSHOTS / f"{self.prefix}-{self.n}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


class Browsing:
    """A browser context and page on one server, with screenshots and a record of the page's errors."""

    def __init__(self, browser: Any, base_url: str, test_name: str) -> None:
        self.context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 800})
        self.context.set_default_timeout(EXPECT_TIMEOUT_MS)
        self.page = self.context.new_page()
        self.screens = Screens(test_name)
        self.page_errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))

    def shot(self) -> Path:
        return self.screens.shot(self.page)

    def save_failure(self) -> None:
        """Keep the page as it was when the test failed: `<test>-failed.png`."""
        with contextlib.suppress(Exception):
            self.page.screenshot(path=str(SCREENSHOTS / f"{self.screens.prefix}-failed.png"), full_page=True)

    def failed(self, request: pytest.FixtureRequest) -> None:
        """After the test: `save_failure()` if it failed."""
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            self.save_failure()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.context.close()


class UI:
    """A test's world: a fresh `ratchet dev` with the UI app synced, its API, and a browser page on it."""

    def __init__(self, stack: harness.Stack, browsing: Browsing, app_dir: Path) -> None:
        self.stack = stack
        self.api = stack.api
        self.server = stack.server
        self.browsing = browsing
        self.page = browsing.page
        self.dir = app_dir

    def shot(self) -> Path:
        return self.browsing.shot()

    def executions(self, label: str, run_id: str | None = None) -> int:
        """How many times the app ran step `label` (for `run_id`, or for any run)."""
        path = self.dir / f"{label}.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return sum(1 for line in lines if run_id is None or line == run_id)


@pytest.fixture
def ui(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[UI]:
    require_chromium()
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    with (harness.Stack(tmp_path, APP, env={"UI_DIR": str(app_dir)}) as stack,
          concurrent.futures.ThreadPoolExecutor(1) as pool):
        started = pool.submit(stack.start, FUNCTIONS)  # the server and the app boot while the browser starts
        with chromium() as browser:
            started.result()
            browsing = Browsing(browser, stack.server.url, request.node.name)
            try:
                yield UI(stack, browsing, app_dir)
                browsing.failed(request)
                assert not browsing.page_errors, f"uncaught errors in the page: {browsing.page_errors}"
            finally:
                browsing.close()  # before the server stops: the page holds the live stream open
