"""bench/lists.py times the requests the dashboard makes, as it makes them, and fails only on those."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench import lists

APP_JS = Path(__file__).resolve().parents[2] / "ratchet" / "server" / "dashboard" / "static" / "app.js"
SEEDED = lists.Seeded(run_ids=[f"run-{i:03d}" for i in range(100)], start_ms=0, end_ms=30 * lists.DAY_MS,
                      rare_order="ord-0000033", detail_run="run-050", statuses={}, deep_event_cursor="50")


def row(p95: float, *, informational: bool = False) -> dict[str, Any]:
    return {"p50": p95, "p95": p95, "max": p95, "ok": p95 < lists.TARGET_MS, "rows": "1",
            "informational": informational}


def test_the_run_fails_only_on_a_request_the_dashboard_makes() -> None:
    fast = {"runs page: all": row(10.0), "count uncapped (informational)": row(900.0, informational=True)}
    assert lists.passed({"results": fast})
    assert not lists.passed({"results": {**fast, "runs page: q=text": row(250.0)}})


def test_a_runs_page_asks_for_its_page_and_its_capped_count_together() -> None:
    pages = [t for t in lists.requests_of(SEEDED) if t.label.startswith("runs page: ") and len(t.stages) == 1
             and len(t.stages[0]) == 2]
    assert len(pages) >= 12
    for timed in pages:
        (listing, count), = timed.stages
        assert listing.path == "/v1/runs" and listing.params["limit"] == lists.PAGE
        assert count.path == "/v1/runs/count" and count.params["at_most"] == lists.COUNT_CAP
        assert {k: v for k, v in listing.params.items() if k not in ("limit", "before")} == {
            k: v for k, v in count.params.items() if k != "at_most"}, timed.label
        assert not timed.informational


def test_every_uncapped_count_is_informational_and_the_cap_is_the_dashboards() -> None:
    for timed in lists.requests_of(SEEDED):
        for stage in timed.stages:
            for call in stage:
                if call.path == "/v1/runs/count" and "at_most" not in call.params:
                    assert timed.informational, timed.label
    assert [t.label for t in lists.requests_of(SEEDED) if t.informational] == [
        "count q=text, every run, uncapped (informational)"]
    caps = re.findall(r"/v1/runs/count\$\{qs\(\{ \.\.\.params, at_most: (\d+) \}\)", APP_JS.read_text())
    assert caps == [str(lists.COUNT_CAP)]
