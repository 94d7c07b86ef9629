"""The dashboard in real headless Chromium (Playwright) against `ratchet dev` and an app on Ratchet's SDK:
what a user sees and does, page by page. Each test saves a full-page screenshot of every page it visits
to build/ui-screenshots/."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from tests import harness
from tests.ui.conftest import UI

pytestmark = pytest.mark.ui


def run_status(page: Page) -> Locator:
    """The status badge in the run page's title."""
    return page.get_by_test_id("run-page").locator("h1").get_by_test_id("status")


def row(page: Page, run_id: str) -> Locator:
    return page.locator(f'[data-testid="run-row"][data-run-id="{run_id}"]')


def step(page: Page, step_id: str) -> Locator:
    return page.locator(f'[data-testid="step"][data-step-id="{step_id}"]')


def wait_sleeping(ui: UI, run_id: str, step_id: str) -> None:
    harness.wait_until(lambda: any(s["id"] == step_id and s["status"] == "sleeping" for s in ui.api.run(run_id)["steps"]),
                       15, f"run {run_id} to sleep in {step_id}")


def test_runs_list_shows_statuses_and_filters_by_status_function_and_event_data(ui: UI) -> None:
    ada = harness.send_and_get_run(ui.api, "ui/hello", {"who": "ada lovelace"})
    grace = harness.send_and_get_run(ui.api, "ui/hello", {"who": "grace hopper"})
    failed = harness.send_and_get_run(ui.api, "ui/fail", {"who": "nobody"})
    sleeping = harness.send_and_get_run(ui.api, "ui/sleep")
    harness.wait_run(ui.api, ada)
    harness.wait_run(ui.api, grace)
    harness.wait_run(ui.api, failed, "FAILED")
    wait_sleeping(ui, sleeping, "nap")

    page = ui.page
    page.goto("/#/runs")
    expect(page.get_by_test_id("run-row")).to_have_count(4)
    expect(page.get_by_test_id("run-count")).to_have_text("4 runs")
    for run_id, status in ((ada, "COMPLETED"), (grace, "COMPLETED"), (failed, "FAILED"), (sleeping, "RUNNING")):
        expect(row(page, run_id).get_by_test_id("status")).to_have_text(status)
    expect(row(page, failed)).to_contain_text("Always fails")  # the function's name, not its id
    ui.shot()

    page.get_by_test_id("filter-status").select_option("FAILED")
    expect(page.get_by_test_id("run-row")).to_have_count(1)
    expect(row(page, failed)).to_be_visible()
    ui.shot()

    page.get_by_test_id("filter-status").select_option("")
    page.get_by_test_id("filter-function").select_option("ui-hello")
    expect(page.get_by_test_id("run-row")).to_have_count(2)
    expect(row(page, ada)).to_be_visible()
    expect(row(page, grace)).to_be_visible()
    expect(page.get_by_test_id("run-count")).to_have_text("2 runs")
    ui.shot()

    page.get_by_test_id("filter-function").select_option("")
    page.get_by_test_id("search").fill("GRACE")  # text in the event data, case-blind
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_test_id("run-row")).to_have_count(1)
    expect(row(page, grace)).to_be_visible()
    ui.shot()

    page.get_by_test_id("search").fill("nobody matches this")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_test_id("run-row")).to_have_count(0)
    expect(page.get_by_text("No runs match.")).to_be_visible()

    page.get_by_test_id("search").fill("")
    page.get_by_role("button", name="Search").click()
    row(page, ada).click()  # a row opens its run
    expect(page).to_have_url(re.compile(f"#/runs/{ada}$"))
    expect(run_status(page)).to_have_text("COMPLETED")
    expect(page.get_by_test_id("run-output")).to_contain_text("Hello, ada lovelace!")
    ui.shot()


def test_a_run_page_follows_the_run_live_until_it_completes(ui: UI) -> None:
    run_id = harness.send_and_get_run(ui.api, "ui/pipeline", {"order": 7})
    page = ui.page
    page.goto(f"/#/runs/{run_id}")
    # The app holds step "wait-for-release" open until the test creates the release file.
    expect(run_status(page)).to_have_text("RUNNING")
    expect(step(page, "fetch")).to_have_attribute("data-step-status", "completed")
    expect(step(page, "pause")).to_be_visible()
    expect(step(page, "summarize")).to_have_count(0)
    expect(page.get_by_test_id("cancel-run")).to_be_visible()
    ui.shot()
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads

    (ui.dir / "release").touch()
    expect(step(page, "wait-for-release")).to_have_attribute("data-step-status", "completed")
    expect(step(page, "summarize")).to_have_attribute("data-step-status", "completed")
    expect(run_status(page)).to_have_text("COMPLETED")
    expect(page.get_by_test_id("run-output")).to_contain_text('"total": 6')
    expect(page.get_by_test_id("cancel-run")).to_have_count(0)
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded instead of updating live"
    expect(page.get_by_test_id("step")).to_have_count(4)
    assert [s.get_attribute("data-step-id") for s in page.get_by_test_id("step").all()] == [
        "fetch", "pause", "wait-for-release", "summarize"]

    step(page, "fetch").locator(".head").click()  # a step opens to show its output
    expect(step(page, "fetch").get_by_test_id("step-output")).to_contain_text('"items": 3')
    ui.shot()
    assert harness.wait_run(ui.api, run_id)["output"] == {"released": "released", "total": 6}


def test_send_an_event_from_the_events_page_and_see_it_and_its_run(ui: UI) -> None:
    page = ui.page
    page.goto("/#/events")
    expect(page.get_by_test_id("send-form")).to_be_visible()
    ui.shot()
    page.get_by_test_id("send-name").fill("ui/hello")
    page.get_by_test_id("send-data").fill('{"who": "the events page"}')
    page.get_by_test_id("send-submit").click()
    expect(page.get_by_test_id("send-result")).to_contain_text("Sent: event")
    event_id = page.get_by_test_id("send-result").inner_text().split()[-1]

    (event,) = ui.api._data("/v1/events")
    assert event["name"] == "ui/hello" and event["data"] == {"who": "the events page"}
    event_row = page.locator('[data-testid="event-row"][data-event-name="ui/hello"]')
    expect(event_row).to_have_count(1)
    expect(event_row).to_contain_text(event["id"])
    (run_id,) = harness.wait_runs_for_event(ui.api, event_id)

    event_row.click()  # opens to show the data and the runs it started
    run_link = page.get_by_role("link", name=run_id)
    expect(run_link).to_be_visible()
    ui.shot()
    run_link.click()
    expect(page.get_by_test_id("run-page")).to_have_attribute("data-run-id", run_id)
    expect(run_status(page)).to_have_text("COMPLETED")
    expect(page.get_by_test_id("run-output")).to_contain_text("Hello, the events page!")
    expect(page.get_by_test_id("event-payload")).to_contain_text('"who": "the events page"')
    ui.shot()


def test_bad_json_in_the_send_form_is_shown_inline_and_nothing_is_sent(ui: UI) -> None:
    page = ui.page
    posts: list[str] = []
    page.on("request", lambda r: r.method == "POST" and "/v1/events" in r.url and posts.append(r.post_data or ""))
    page.goto("/#/events")
    page.get_by_test_id("send-name").fill("ui/hello")
    data = page.get_by_test_id("send-data")
    data.fill('{"who": "nobody",}')
    expect(page.get_by_test_id("send-data-error")).to_contain_text("Invalid JSON")
    expect(data).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_test_id("send-submit")).to_be_disabled()
    ui.shot()
    # Neither pressing Enter nor submitting the form by script sends anything.
    page.get_by_test_id("send-name").press("Enter")
    page.get_by_test_id("send-form").evaluate("form => form.requestSubmit()")
    expect(page.get_by_test_id("send-result")).to_have_count(0)
    expect(page.get_by_text("No events yet.")).to_be_visible()

    data.fill("[1, 2]")  # valid JSON, but event data is an object
    expect(page.get_by_test_id("send-data-error")).to_contain_text("must be a JSON object")
    expect(page.get_by_test_id("send-submit")).to_be_disabled()
    assert ui.api._data("/v1/events") == [] and posts == []

    data.fill('{"who": "somebody"}')  # fixed: the error goes and the one event that is sent is this one
    expect(page.get_by_test_id("send-data-error")).to_have_count(0)
    expect(page.get_by_test_id("send-submit")).to_be_enabled()
    page.get_by_test_id("send-submit").click()
    expect(page.get_by_test_id("send-result")).to_contain_text("Sent: event")
    ui.shot()
    events = ui.api._data("/v1/events")
    assert [e["data"] for e in events] == [{"who": "somebody"}]
    assert [json.loads(p) for p in posts] == [{"name": "ui/hello", "data": {"who": "somebody"}}]


def test_cancel_a_sleeping_run_from_its_page(ui: UI) -> None:
    run_id = harness.send_and_get_run(ui.api, "ui/sleep")
    wait_sleeping(ui, run_id, "nap")
    page = ui.page
    page.goto(f"/#/runs/{run_id}")
    expect(run_status(page)).to_have_text("RUNNING")
    expect(step(page, "nap")).to_have_attribute("data-step-status", "sleeping")
    ui.shot()
    page.get_by_test_id("cancel-run").click()  # asks first
    dialog = page.get_by_role("dialog", name="Cancel run")
    expect(dialog).to_contain_text(run_id)
    ui.shot()
    dialog.get_by_role("button", name="Back").click()  # changed my mind: nothing happens
    expect(dialog).to_have_count(0)
    assert ui.api.run(run_id)["status"] == "RUNNING"
    page.get_by_test_id("cancel-run").click()
    page.get_by_test_id("cancel-run-confirm").click()
    expect(run_status(page)).to_have_text("CANCELLED")
    expect(dialog).to_have_count(0)
    expect(page.get_by_test_id("cancel-run")).to_have_count(0)
    expect(page.get_by_test_id("run-error")).to_have_text("FunctionCancelled: cancelled through the API")
    # The sleep will never end now: shown as interrupted, not as sleeping for another hour.
    expect(step(page, "nap")).to_have_attribute("data-step-status", "interrupted")
    ui.shot()
    assert harness.wait_run(ui.api, run_id, "CANCELLED")["status"] == "CANCELLED"


def test_rerun_a_failed_run_from_its_failing_step_after_fixing_the_app(ui: UI) -> None:
    (ui.dir / "broken").touch()
    failed = harness.send_and_get_run(ui.api, "ui/checkout", {"order": "o-1"})
    run = harness.wait_run(ui.api, failed, "FAILED")
    assert [(s["id"], s["status"]) for s in run["steps"]] == [("reserve", "completed"), ("charge", "failed")]
    assert (ui.executions("reserve"), ui.executions("charge")) == (1, 1)

    (ui.dir / "broken").unlink()  # fix the app
    page = ui.page
    page.goto(f"/#/runs/{failed}")
    expect(run_status(page)).to_have_text("FAILED")
    expect(page.get_by_test_id("run-error")).to_have_text("RuntimeError: payment provider is down")
    expect(page.get_by_test_id("run-stack")).to_contain_text('raise RuntimeError("payment provider is down")')
    charge = step(page, "charge")
    expect(charge).to_have_attribute("data-step-status", "failed")
    charge.locator(".head").click()
    expect(charge.get_by_test_id("step-detail")).to_contain_text("payment provider is down")
    ui.shot()
    charge.get_by_test_id("rerun-from-step").click()
    dialog = page.get_by_role("dialog", name="Rerun")
    expect(dialog).to_be_visible()
    charge_hash = next(s["hash"] for s in run["steps"] if s["id"] == "charge")
    expect(dialog.get_by_test_id("rerun-step")).to_have_value(charge_hash)
    ui.shot()
    dialog.get_by_test_id("rerun-confirm").click()

    expect(page).not_to_have_url(re.compile(f"#/runs/{failed}$"))
    rerun = page.url.rsplit("/", 1)[-1]
    expect(page.get_by_test_id("run-page")).to_have_attribute("data-run-id", rerun)
    expect(run_status(page)).to_have_text("COMPLETED")
    expect(step(page, "reserve")).to_have_attribute("data-step-status", "completed")
    expect(step(page, "reserve")).to_have_attribute("data-kept", "true")  # its result came from the failed run
    expect(step(page, "charge")).to_have_attribute("data-step-status", "completed")
    expect(step(page, "charge")).to_have_attribute("data-kept", "false")
    expect(page.get_by_test_id("run-output")).to_contain_text("charged-reserved-o-1")
    expect(page.get_by_role("link", name=failed)).to_be_visible()  # "rerun of"
    ui.shot()

    done = harness.wait_run(ui.api, rerun)
    assert done["rerun_of"] == failed and done["output"] == {"receipt": "charged-reserved-o-1"}
    # Step "reserve" kept its result from the failed run: the app never ran it again.
    assert ui.executions("reserve") == 1 and ui.executions("reserve", rerun) == 0
    assert ui.executions("charge", rerun) == 1


def test_functions_page_invokes_a_function_and_apps_page_resyncs(ui: UI) -> None:
    page = ui.page
    page.goto("/#/functions")
    fn_row = page.locator('[data-testid="function-row"][data-function-id="ui-hello"]')
    expect(fn_row).to_contain_text("ui/hello")  # its trigger
    expect(page.get_by_test_id("function-row")).to_have_count(len(ui.api.functions()))
    ui.shot()
    fn_row.get_by_test_id("invoke").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_test_id("invoke-data").fill('{"who": "the invoker"}')
    dialog.get_by_test_id("invoke-confirm").click()
    expect(page.get_by_test_id("run-page")).to_be_visible()
    expect(run_status(page)).to_have_text("COMPLETED")
    expect(page.get_by_test_id("run-output")).to_contain_text("Hello, the invoker!")
    ui.shot()
    run_id = page.get_by_test_id("run-page").get_attribute("data-run-id")
    assert run_id and harness.wait_run(ui.api, run_id)["function_id"] == "ui-hello"

    page.get_by_role("link", name="Apps").click()
    app_row = page.get_by_test_id("app-row")
    expect(app_row).to_have_count(1)
    expect(app_row).to_contain_text(ui.stack.app.url)
    app_row.get_by_test_id("resync").click()
    expect(page.get_by_test_id("sync-result")).to_have_text("Synced ui.")
    ui.shot()
    page.get_by_role("link", name="Dead letters").click()
    expect(page.get_by_role("cell", name="None.")).to_be_visible()
    ui.shot()


def test_bulk_cancel_shows_how_many_runs_before_it_cancels(ui: UI) -> None:
    sleepers = [harness.send_and_get_run(ui.api, "ui/sleep", {"n": n}) for n in range(2)]
    done = harness.send_and_get_run(ui.api, "ui/hello", {"who": "bystander"})
    for run_id in sleepers:
        wait_sleeping(ui, run_id, "nap")
    harness.wait_run(ui.api, done)
    page = ui.page
    page.goto("/#/runs")
    page.get_by_test_id("filter-function").select_option("ui-sleeper")
    expect(page.get_by_test_id("run-row")).to_have_count(2)
    page.get_by_test_id("bulk-cancel").click()
    expect(page.get_by_test_id("bulk-count")).to_have_text("2 running or queued runs will be cancelled.")
    ui.shot()
    assert [ui.api.run(r)["status"] for r in sleepers] == ["RUNNING", "RUNNING"]  # nothing happened yet
    page.get_by_test_id("bulk-confirm").click()
    expect(page.get_by_test_id("notice")).to_have_text("Cancelled 2 runs.")
    for run_id in sleepers:
        expect(row(page, run_id).get_by_test_id("status")).to_have_text("CANCELLED")
    ui.shot()
    assert [harness.wait_run(ui.api, r, "CANCELLED")["status"] for r in sleepers] == ["CANCELLED"] * 2
    assert ui.api.run(done)["status"] == "COMPLETED"


def wait_status(ui: UI, run_id: str, status: str) -> None:
    harness.wait_until(lambda: ui.api.run(run_id)["status"] == status, 15, f"run {run_id} to be {status}")


def test_bulk_cancel_of_a_status_filtered_list_leaves_the_other_runs_alone(ui: UI) -> None:
    # ui-gate runs one step at a time: while the first run holds the gate, the others stay QUEUED.
    holder = harness.send_and_get_run(ui.api, "ui/gate", {"n": 0})
    wait_status(ui, holder, "RUNNING")
    queued = [harness.send_and_get_run(ui.api, "ui/gate", {"n": n}) for n in (1, 2)]
    page = ui.page
    page.goto("/#/runs")
    page.get_by_test_id("filter-function").select_option("ui-gate")
    expect(page.get_by_test_id("run-row")).to_have_count(3)
    page.get_by_test_id("filter-status").select_option("QUEUED")
    expect(page.get_by_test_id("run-row")).to_have_count(2)
    expect(page.get_by_test_id("bulk-replay")).to_have_count(0)  # queued runs cannot be replayed
    expect(page.get_by_test_id("bulk-cancel")).to_have_text("Cancel queued…")
    page.get_by_test_id("bulk-cancel").click()
    expect(page.get_by_test_id("bulk-count")).to_have_text("2 queued runs will be cancelled.")
    ui.shot()
    late = harness.send_and_get_run(ui.api, "ui/gate", {"n": 3})  # created after the count was shown

    # The confirming request is held back, to see the button stay disabled while it is in flight.
    held: list[Any] = []
    bodies: list[dict[str, Any]] = []

    def hold(route: Any) -> None:
        body = route.request.post_data_json
        bodies.append(body)
        if body.get("dry_run"):
            route.continue_()
        else:
            held.append(route)

    page.route("**/v1/runs/cancel", hold)
    confirm = page.get_by_test_id("bulk-confirm")
    confirm.click()
    expect(confirm).to_be_disabled()
    expect(confirm).to_have_text("Working…")
    confirm.dispatch_event("click")  # a second click while it runs sends nothing
    harness.wait_until(lambda: (page.wait_for_timeout(20), held)[1], 15, "the cancel request")
    assert len(held) == 1 and len(bodies) == 1
    assert bodies[0]["status"] == "QUEUED" and bodies[0]["function_id"] == "ui-gate" and bodies[0]["to"]
    held[0].continue_()
    expect(page.get_by_test_id("notice")).to_have_text("Cancelled 2 runs.")
    ui.shot()
    assert len(bodies) == 1
    assert [ui.api.run(r)["status"] for r in queued] == ["CANCELLED", "CANCELLED"]
    assert ui.api.run(holder)["status"] == "RUNNING"  # filtered out by status
    assert ui.api.run(late)["status"] == "QUEUED"  # created after the count

    (ui.dir / "gate-open").touch()
    assert harness.wait_run(ui.api, holder)["output"] == "released"
    assert harness.wait_run(ui.api, late)["output"] == "released"


def test_a_failed_resync_says_why(ui: UI) -> None:
    page = ui.page
    page.goto("/#/apps")
    app_row = page.get_by_test_id("app-row")
    expect(app_row).to_contain_text(ui.stack.app.url)
    ui.stack.app.stop()  # the app is down: the server cannot reach it
    app_row.get_by_test_id("resync").click()
    result = page.get_by_test_id("sync-result")
    expect(result).to_contain_text(f"could not sync the app at {ui.stack.app.url}")
    expect(result).not_to_contain_text("HTTP 502")
    expect(result).to_have_class(re.compile(r"\bbad\b"))
    expect(app_row.locator("td.error")).to_contain_text("could not sync the app")  # its last error, reloaded
    ui.shot()


def test_apps_page_syncs_an_app_by_its_url(ui: UI) -> None:
    page = ui.page
    page.goto("/#/apps")
    expect(page.get_by_test_id("app-row")).to_have_count(1)
    url, button = page.get_by_test_id("sync-url"), page.get_by_test_id("sync-new")
    expect(button).to_be_disabled()  # nothing typed
    url.fill("localhost:3000")
    expect(page.get_by_test_id("sync-url-error")).to_contain_text("http://")
    expect(button).to_be_disabled()
    url.fill("http://127.0.0.1:9/api/inngest")  # nothing listens there
    button.click()
    result = page.get_by_test_id("sync-result")
    expect(result).to_contain_text("could not sync the app at http://127.0.0.1:9/api/inngest")
    expect(result).to_have_class(re.compile(r"\bbad\b"))
    ui.shot()
    url.fill(ui.stack.app.url)
    button.click()
    expect(result).to_have_text(f"Synced {ui.stack.app.url}.")
    expect(result).not_to_have_class(re.compile(r"\bbad\b"))
    expect(page.get_by_test_id("app-row")).to_have_count(1)  # the same app: synced again, not added twice


def test_runs_filters_live_in_the_url_for_back_reload_and_sharing(ui: UI) -> None:
    ada = harness.send_and_get_run(ui.api, "ui/hello", {"who": "ada"})
    grace = harness.send_and_get_run(ui.api, "ui/hello", {"who": "grace"})
    failed = harness.send_and_get_run(ui.api, "ui/fail", {"who": "grace"})
    for run_id in (ada, grace):
        harness.wait_run(ui.api, run_id)
    harness.wait_run(ui.api, failed, "FAILED")
    page = ui.page
    page.goto("/#/runs")
    expect(page.get_by_test_id("run-row")).to_have_count(3)
    page.get_by_test_id("filter-status").select_option("COMPLETED")
    page.get_by_test_id("filter-function").select_option("ui-hello")
    page.get_by_test_id("search").fill("grace")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_test_id("run-row")).to_have_count(1)
    expect(row(page, grace)).to_be_visible()
    expect(page).to_have_url(re.compile(r"#/runs\?.*status=COMPLETED"))
    url = page.url
    assert "function_id=ui-hello" in url and "q=grace" in url, url

    def filtered_list(p: Page) -> None:
        expect(p.get_by_test_id("run-row")).to_have_count(1)
        expect(row(p, grace)).to_be_visible()
        expect(p.get_by_test_id("filter-status")).to_have_value("COMPLETED")
        expect(p.get_by_test_id("filter-function")).to_have_value("ui-hello")
        expect(p.get_by_test_id("search")).to_have_value("grace")

    page.reload()
    filtered_list(page)
    row(page, grace).click()
    expect(run_status(page)).to_have_text("COMPLETED")
    page.go_back()  # Back to the list as it was filtered
    filtered_list(page)
    ui.shot()
    page.go_back()  # and each filter change is a step back
    expect(page.get_by_test_id("search")).to_have_value("")
    expect(page.get_by_test_id("run-row")).to_have_count(2)
    shared = ui.browsing.context.new_page()  # a link someone shared
    try:
        shared.goto(url)
        filtered_list(shared)
    finally:
        shared.close()


def test_each_function_links_to_its_runs(ui: UI) -> None:
    failed = harness.send_and_get_run(ui.api, "ui/fail", {})
    hello = harness.send_and_get_run(ui.api, "ui/hello", {})
    harness.wait_run(ui.api, failed, "FAILED")
    harness.wait_run(ui.api, hello)
    page = ui.page
    page.goto("/#/functions")
    page.locator('[data-testid="function-row"][data-function-id="ui-fail"]').get_by_test_id("function-runs").click()
    expect(page).to_have_url(re.compile(r"#/runs\?function_id=ui-fail$"))
    expect(page.get_by_test_id("filter-function")).to_have_value("ui-fail")
    expect(page.get_by_test_id("run-row")).to_have_count(1)
    expect(row(page, failed)).to_be_visible()
    ui.shot()
    row(page, failed).click()
    page.get_by_test_id("run-page").get_by_test_id("function-runs").click()  # and so does a run's page
    expect(page.get_by_test_id("filter-function")).to_have_value("ui-fail")
    expect(page.get_by_test_id("run-row")).to_have_count(1)


def test_a_long_sleep_runs_to_the_timelines_edge_and_says_the_day_it_wakes(ui: UI) -> None:
    run_id = harness.send_and_get_run(ui.api, "ui/snooze")
    wait_sleeping(ui, run_id, "hibernate")
    wake = next(s["ended_at"] for s in ui.api.run(run_id)["steps"] if s["id"] == "hibernate")
    page = ui.page
    page.goto(f"/#/runs/{run_id}")
    hibernate = step(page, "hibernate")
    expect(hibernate).to_have_attribute("data-step-status", "sleeping")
    # The label names the wake time with its date (three days on is never today).
    expected = page.evaluate("(ms) => `until ${new Date(ms).toLocaleString()}`", wake)
    assert page.evaluate("(ms) => new Date(ms).toLocaleDateString()", wake) in expected
    expect(hibernate.get_by_test_id("step-label")).to_have_text(expected)
    ui.shot()
    track = step(page, "work").locator(".track").bounding_box()
    work = step(page, "work").locator(".bar").bounding_box()
    sleep = hibernate.locator(".bar").bounding_box()
    assert track and work and sleep
    # The scale ends now, not in three days: the one-second step keeps a visible share of it ...
    assert work["width"] > 0.03 * track["width"], (work, track)
    # ... and the sleep runs from its start to the right edge.
    assert abs(sleep["x"] + sleep["width"] - (track["x"] + track["width"])) <= 2, (sleep, track)
    assert sleep["x"] >= work["x"] + work["width"] - 2, (sleep, work)


def test_the_runs_list_shows_a_new_run_and_its_progress_without_a_reload(ui: UI) -> None:
    page = ui.page
    page.goto("/#/runs")
    expect(page.get_by_test_id("run-count")).to_have_text("0 runs")
    expect(page.get_by_test_id("live")).to_have_text("live")
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    run_id = harness.send_and_get_run(ui.api, "ui/pipeline", {"order": 1})  # holds until released
    expect(row(page, run_id).get_by_test_id("status")).to_have_text("RUNNING")
    expect(page.get_by_test_id("run-count")).to_have_text("1 run")
    ui.shot()
    (ui.dir / "release").touch()
    expect(row(page, run_id).get_by_test_id("status")).to_have_text("COMPLETED")
    ui.shot()
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded instead of updating live"


def test_a_run_waiting_for_an_event_shows_the_wait_then_the_matched_event(ui: UI) -> None:
    run_id = harness.send_and_get_run(ui.api, "ui/order", {"order": "o-7"})
    harness.wait_until(lambda: any(s["status"] == "waiting" for s in ui.api.run(run_id)["steps"]), 15,
                       f"run {run_id} to wait")
    page = ui.page
    page.goto(f"/#/runs/{run_id}")
    wait = step(page, "await-approval")
    expect(wait).to_have_attribute("data-step-status", "waiting")
    expect(wait.get_by_test_id("step-label")).to_have_text("waiting for ui/approved")
    wait.locator(".head").click()
    expect(wait.get_by_test_id("waiting-for")).to_contain_text("ui/approved")
    expect(wait.get_by_test_id("waiting-for")).to_contain_text("o-7")  # the condition, with this run's order
    ui.shot()
    (event_id,) = ui.api.send({"name": "ui/approved", "data": {"order": "o-7", "by": "grace"}})
    expect(run_status(page)).to_have_text("COMPLETED")
    expect(wait).to_have_attribute("data-step-status", "completed")
    expect(wait.get_by_test_id("matched-event")).to_contain_text("matched event ui/approved")
    expect(wait.get_by_test_id("matched-event")).to_contain_text(event_id)
    expect(wait.get_by_test_id("step-output")).to_contain_text('"by": "grace"')
    expect(page.get_by_test_id("run-output")).to_contain_text('"approved_by": "grace"')
    ui.shot()


def test_an_events_runs_follow_them_live_and_a_failed_load_can_be_retried(ui: UI) -> None:
    (event_id,) = ui.api.send({"name": "ui/order", "data": {"order": "o-9"}})
    (run_id,) = harness.wait_runs_for_event(ui.api, event_id)
    wait_status(ui, run_id, "RUNNING")
    page = ui.page
    failures = [1]

    def fail_once(route: Any) -> None:
        if failures:
            failures.pop()
            route.fulfill(status=500, json={"error": "the store is unavailable"})
        else:
            route.continue_()

    page.route("**/v1/events/*/runs", fail_once)
    page.goto("/#/events")
    page.locator('[data-testid="event-row"][data-event-name="ui/order"]').click()
    expect(page.get_by_test_id("event-runs-error")).to_contain_text("the store is unavailable")
    ui.shot()
    page.get_by_test_id("event-runs-retry").click()
    run = page.locator(f'[data-testid="event-run"][data-run-id="{run_id}"]')
    expect(run.get_by_test_id("status")).to_have_text("RUNNING")
    expect(page.get_by_test_id("event-runs-error")).to_have_count(0)
    ui.api.send({"name": "ui/approved", "data": {"order": "o-9", "by": "ada"}})
    expect(run.get_by_test_id("status")).to_have_text("COMPLETED")  # the open row follows its run
    ui.shot()


def test_an_invoke_step_links_to_its_child_run(ui: UI) -> None:
    parent = harness.send_and_get_run(ui.api, "ui/parent")
    done = harness.wait_run(ui.api, parent)
    child = next(s["child_run_id"] for s in done["steps"] if s["id"] == "call-hello")
    assert child
    page = ui.page
    page.goto(f"/#/runs/{parent}")
    expect(run_status(page)).to_have_text("COMPLETED")
    invoke = step(page, "call-hello")
    invoke.locator(".head").click()
    link = invoke.get_by_test_id("child-run")
    expect(link).to_have_text(child)
    ui.shot()
    link.click()
    expect(page.get_by_test_id("run-page")).to_have_attribute("data-run-id", child)
    expect(run_status(page)).to_have_text("COMPLETED")
    expect(page.get_by_test_id("run-output")).to_contain_text("Hello, the parent!")
    expect(page.get_by_test_id("parent-run")).to_have_text(parent)  # and back
    ui.shot()


def test_rerun_from_the_start_with_an_edited_payload(ui: UI) -> None:
    original = harness.send_and_get_run(ui.api, "ui/hello", {"who": "ada"})
    harness.wait_run(ui.api, original)
    page = ui.page
    page.goto(f"/#/runs/{original}")
    expect(page.get_by_test_id("run-output")).to_contain_text("Hello, ada!")
    page.get_by_test_id("rerun").click()
    dialog = page.get_by_role("dialog", name="Rerun")
    expect(dialog.get_by_test_id("rerun-step")).to_have_value("")  # from the beginning
    dialog.get_by_test_id("rerun-edit").check()
    editor = dialog.get_by_test_id("rerun-data")
    expect(editor).to_have_value(re.compile(r'"who": "ada"'))  # starts from the event's data
    editor.fill('{"who": "ada, edited"}')
    ui.shot()
    dialog.get_by_test_id("rerun-confirm").click()
    expect(page).not_to_have_url(re.compile(f"#/runs/{original}$"))
    rerun = page.url.rsplit("/", 1)[-1]
    expect(page.get_by_test_id("run-page")).to_have_attribute("data-run-id", rerun)
    expect(run_status(page)).to_have_text("COMPLETED")
    expect(page.get_by_test_id("run-output")).to_contain_text("Hello, ada, edited!")
    expect(page.get_by_test_id("event-payload")).to_contain_text('"who": "ada, edited"')
    expect(step(page, "greet")).to_have_attribute("data-kept", "false")  # run again, not kept
    ui.shot()
    done = harness.wait_run(ui.api, rerun)
    assert done["rerun_of"] == original and done["rerun_from_step"] is None
    assert ui.api.run(original)["output"] == "Hello, ada!"  # the original is untouched


def test_the_events_name_filter_lives_in_the_url(ui: UI) -> None:
    ui.api.send([{"name": "ui/hello", "data": {"who": "a"}}, {"name": "ui/fail", "data": {}}])
    page = ui.page
    hello = page.locator('[data-testid="event-row"][data-event-name="ui/hello"]')
    failed = page.locator('[data-testid="event-row"][data-event-name="ui/fail"]')
    page.goto("/#/events")
    expect(hello).to_have_count(1)
    expect(failed).to_have_count(1)
    page.get_by_test_id("filter-event-name").fill("ui/fail")
    page.get_by_test_id("filter-event-name").press("Enter")
    expect(page).to_have_url(re.compile(r"#/events\?name=ui%2Ffail$"))
    expect(hello).to_have_count(0)
    expect(page.get_by_test_id("event-row")).to_have_count(1)
    page.reload()
    expect(page.get_by_test_id("filter-event-name")).to_have_value("ui/fail")
    expect(failed).to_have_count(1)
    expect(page.get_by_test_id("event-row")).to_have_count(1)
    page.go_back()
    expect(page.get_by_test_id("filter-event-name")).to_have_value("")
    expect(hello).to_have_count(1)


def test_events_are_searched_by_text_in_their_data(ui: UI) -> None:
    ui.api.send([{"name": "ui/hello", "data": {"who": "Ada Lovelace"}},
                 {"name": "ui/hello", "data": {"who": "Grace Hopper"}}])
    page = ui.page
    page.goto("/#/events")
    expect(page.get_by_test_id("event-row")).to_have_count(2)
    page.get_by_test_id("filter-event-q").fill("lovelace")  # case-blind
    page.get_by_test_id("filter-event-q").press("Enter")
    expect(page).to_have_url(re.compile(r"#/events\?q=lovelace$"))
    expect(page.get_by_test_id("event-row")).to_have_count(1)
    expect(page.get_by_test_id("event-row")).to_contain_text("ui/hello")
    page.get_by_test_id("filter-event-q").fill("nobody")
    page.get_by_test_id("filter-event-q").press("Enter")
    expect(page.get_by_role("cell", name="No events match.")).to_be_visible()


def test_send_and_invoke_stay_disabled_while_their_request_runs(ui: UI) -> None:
    page = ui.page
    held: list[Any] = []
    page.route("**/v1/events", lambda route: held.append(route) if route.request.method == "POST" else route.continue_())
    page.route("**/v1/functions/*/invoke", lambda route: held.append(route))

    def wait_held(n: int) -> None:
        harness.wait_until(lambda: (page.wait_for_timeout(20), len(held) >= n)[1], 15, f"{n} held requests")

    page.goto("/#/events")
    page.get_by_test_id("send-name").fill("ui/hello")
    send = page.get_by_test_id("send-submit")
    send.click()
    expect(send).to_be_disabled()
    page.get_by_test_id("send-form").evaluate("form => form.requestSubmit()")  # Enter, or a second click
    wait_held(1)
    held[0].continue_()
    expect(page.get_by_test_id("send-result")).to_contain_text("Sent: event")
    expect(send).to_be_enabled()
    assert len(held) == 1 and [e["name"] for e in ui.api._data("/v1/events")] == ["ui/hello"]

    page.goto("/#/functions")
    page.locator('[data-testid="function-row"][data-function-id="ui-hello"]').get_by_test_id("invoke").click()
    invoke = page.get_by_role("dialog").get_by_test_id("invoke-confirm")
    invoke.click()
    expect(invoke).to_be_disabled()
    invoke.dispatch_event("click")
    wait_held(2)
    held[1].continue_()
    expect(page.get_by_test_id("run-page")).to_be_visible()
    assert len(held) == 2
    assert len([r for r in ui.api.runs() if r["function_id"] == "ui-hello"]) == 2  # the event's run and one invoke
