"""Bulk cancel and replay (`POST /v1/runs/cancel`, `/v1/runs/replay`) act on exactly the runs the runs
list's filters select (function, status, app, search text, time range), never on runs created after the
count a caller showed (the `to` a dry run gives back), and refuse bad input with a 400 naming the field.
Runs are seeded through the store (see conftest.Seeder), so nothing executes them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from ratchet import protocol
from tests.integration.conftest import Seeder

FN = "shop-on-order"


async def statuses(api: httpx.AsyncClient, *run_ids: str) -> list[str]:
    return [(await api.get(f"/v1/runs/{r}")).json()["data"]["status"] for r in run_ids]


async def bulk(api: httpx.AsyncClient, action: str, **body: Any) -> dict[str, Any]:
    resp = await api.post(f"/v1/runs/{action}", json={"function_id": FN, **body})
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]  # type: ignore[no-any-return]


async def test_bulk_cancel_takes_only_the_runs_the_filters_select(api: httpx.AsyncClient, seed: Seeder) -> None:
    await seed.app()
    other_app = await seed.app("mail", {"welcome": "mail/signed-up"})
    ada = (await seed.run(event=await seed.event(data={"who": "ada lovelace"}))).id  # QUEUED
    grace = (await seed.run(event=await seed.event(data={"who": "grace hopper"}))).id  # QUEUED
    running = (await seed.run(running=True)).id
    done = (await seed.run(finish=protocol.RunStatus.COMPLETED, output=1)).id
    welcome = (await seed.run("mail-welcome")).id  # another function: never selected
    assert await statuses(api, ada, grace, running, done, welcome) == [
        "QUEUED", "QUEUED", "RUNNING", "COMPLETED", "QUEUED"]

    before = protocol.now_ms()
    dry = await bulk(api, "cancel", status="QUEUED", dry_run=True)
    assert dry["matched"] == 2 and dry["cancelled"] == 0
    assert before <= dry["to"] <= protocol.now_ms()  # no `to` given: capped at the request's time
    assert (await bulk(api, "cancel", dry_run=True))["matched"] == 3  # default: every run that has not ended
    assert (await bulk(api, "cancel", status=["running"], dry_run=True))["matched"] == 1  # case does not matter
    assert (await bulk(api, "cancel", app_id=other_app.id, dry_run=True))["matched"] == 0
    assert (await bulk(api, "cancel", q="LOVELACE", dry_run=True))["matched"] == 1
    assert (await bulk(api, "cancel", q=running, dry_run=True))["matched"] == 1  # a run id
    assert await statuses(api, ada, grace, running) == ["QUEUED", "QUEUED", "RUNNING"]  # dry runs change nothing

    one = await bulk(api, "cancel", status="QUEUED", q="ada")
    assert (one["matched"], one["cancelled"]) == (1, 1)
    assert await statuses(api, ada, grace, running) == ["CANCELLED", "QUEUED", "RUNNING"]
    queued = await bulk(api, "cancel", status="QUEUED")
    assert (queued["matched"], queued["cancelled"]) == (1, 1)
    # The list filtered to QUEUED: its RUNNING run, the ended run and the other function's run are untouched.
    assert await statuses(api, ada, grace, running, done, welcome) == [
        "CANCELLED", "CANCELLED", "RUNNING", "COMPLETED", "QUEUED"]


async def test_bulk_cancel_with_the_to_of_its_count_leaves_newer_runs_alone(api: httpx.AsyncClient,
                                                                            seed: Seeder) -> None:
    await seed.app()
    counted = [(await seed.run()).id for _ in range(2)]
    dry = await bulk(api, "cancel", dry_run=True)
    assert dry["matched"] == 2
    newer = (await seed.run()).id  # created while the count is on screen
    done = await bulk(api, "cancel", to=dry["to"])
    assert (done["matched"], done["cancelled"], done["to"]) == (2, 2, dry["to"])
    assert await statuses(api, *counted, newer) == ["CANCELLED", "CANCELLED", "QUEUED"]
    # A `to` in the future is capped at the request's time too.
    later = await bulk(api, "cancel", to=protocol.now_ms() + 3_600_000, dry_run=True)
    assert later["matched"] == 1 and later["to"] <= protocol.now_ms()


async def test_bulk_replay_takes_only_the_runs_the_filters_select(api: httpx.AsyncClient, seed: Seeder) -> None:
    await seed.app()
    failed_ada = (await seed.run(event=await seed.event(data={"who": "ada"}), finish=protocol.RunStatus.FAILED,
                                 output={"name": "Error", "message": "boom"}, error="boom")).id
    failed_bob = (await seed.run(event=await seed.event(data={"who": "bob"}), finish=protocol.RunStatus.FAILED,
                                 output={"name": "Error", "message": "boom"}, error="boom")).id
    cancelled = (await seed.run(finish=protocol.RunStatus.CANCELLED, error="cancelled")).id
    await seed.run(finish=protocol.RunStatus.COMPLETED, output=1)

    assert (await bulk(api, "replay", dry_run=True))["matched"] == 3  # default: FAILED and CANCELLED
    assert (await bulk(api, "replay", status="FAILED", dry_run=True))["matched"] == 2
    assert (await bulk(api, "replay", status="completed", dry_run=True))["matched"] == 1
    dry = await bulk(api, "replay", status="FAILED", q="ada", dry_run=True)
    assert dry["matched"] == 1
    newer = (await seed.run(event=await seed.event(data={"who": "ada again"}), finish=protocol.RunStatus.FAILED,
                            output={"name": "Error", "message": "boom"}, error="boom")).id

    done = await bulk(api, "replay", status="FAILED", q="ada", to=dry["to"])
    assert (done["matched"], done["replayed"], done["not_replayed"]) == (1, 1, [])
    reruns = {r: (await api.get(f"/v1/runs/{r}")).json()["data"]["reruns"]
              for r in (failed_ada, failed_bob, cancelled, newer)}
    assert len(reruns.pop(failed_ada)) == 1
    assert reruns == {failed_bob: [], cancelled: [], newer: []}  # not selected, or created after the count


@pytest.mark.parametrize("action", ["cancel", "replay"])
@pytest.mark.parametrize(("body", "needle"), [
    ({}, "function_id: a non-empty string is required"),
    ({"function_id": 5}, "function_id"),
    ({"from": "yesterday"}, "from: must be"),
    ({"to": [1]}, "to: must be"),
    ({"from": 10, "to": 5}, "to: must be after from"),
    ({"status": "NOPE"}, "status: "),
    ({"status": []}, "status: must be a run status or a non-empty list"),
    ({"status": [1]}, "status: must be a run status"),
    ({"status": 3}, "status: must be a run status"),
    ({"app_id": 5}, "app_id: must be"),
    ({"q": 5}, "q: must be"),
    ({"q": "x" * 201}, "q: at most 200 characters"),
    ({"dry_run": "yes"}, "dry_run: must be true or false"),
    ({"statuses": ["FAILED"]}, "unknown field 'statuses'"),  # a misspelt filter must not widen the selection
])
async def test_bulk_bad_input_is_a_400_naming_the_field(api: httpx.AsyncClient, seed: Seeder, action: str,
                                                        body: dict[str, Any], needle: str) -> None:
    await seed.app()
    queued = (await seed.run()).id
    full = body if "function_id" in body or not body else {"function_id": FN, **body}
    resp = await api.post(f"/v1/runs/{action}", json=full)
    assert resp.status_code == 400 and needle in resp.json()["error"], (full, resp.text)
    assert await statuses(api, queued) == ["QUEUED"]


@pytest.mark.parametrize(("action", "status", "needle"), [
    ("cancel", "COMPLETED", "cancel stops runs that have not ended, so one of QUEUED, RUNNING"),
    ("cancel", ["QUEUED", "FAILED"], "got 'FAILED'"),
    ("replay", "RUNNING", "replay reruns runs that have ended"),
    ("replay", "queued", "got 'queued'"),
])
async def test_bulk_status_must_suit_the_action(api: httpx.AsyncClient, seed: Seeder, action: str,
                                                status: Any, needle: str) -> None:
    await seed.app()
    resp = await api.post(f"/v1/runs/{action}", json={"function_id": FN, "status": status, "dry_run": True})
    assert resp.status_code == 400 and resp.json()["error"].startswith("status: "), resp.text
    assert needle in resp.json()["error"], resp.text
