"""The REST read API (`/v1/events...`, `/v1/runs...`) and the event API's handling of bad sends."""

from __future__ import annotations

import base64
import datetime
from typing import Any

import httpx
import pytest

from ratchet import protocol
from ratchet.server import ids
from ratchet.server import services as services_mod
from tests.integration.conftest import Seeder, failed, ok, sleep, wait_until

FAILURE = {"name": "ValueError", "message": "boom", "stack": "Traceback ..."}


async def get_data(api: httpx.AsyncClient, url: str, **params: Any) -> Any:
    resp = await api.get(url, params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


async def send(api: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    if isinstance(body, bytes):
        return await api.post("/e/test-key", content=body, headers=headers)
    return await api.post("/e/test-key", json=body, headers=headers)


# ---------------------------------------------------------------------------------------------- events


async def test_list_events_by_name_newest_first(api: httpx.AsyncClient, seed: Seeder) -> None:
    a = await seed.event("shop/a", {"n": 1}, event_id="mine", ts=1_700_000_000_000)
    await seed.event("shop/b")
    c = await seed.event("shop/a", {"n": 2})
    data = await get_data(api, "/v1/events", name="shop/a")
    assert [e["internal_id"] for e in data] == [c.internal_id, a.internal_id]
    assert data[1] == {"internal_id": a.internal_id, "id": "mine", "name": "shop/a", "data": {"n": 1},
                       "ts": 1_700_000_000_000, "received_at": a.received_at, "v": None, "user": None,
                       "cursor": data[1]["cursor"]}
    assert int(data[0]["cursor"]) > int(data[1]["cursor"])
    assert len(await get_data(api, "/v1/events")) == 3
    assert await get_data(api, "/v1/events", name="shop/none") == []


async def test_list_events_by_text_in_their_data(api: httpx.AsyncClient, seed: Seeder) -> None:
    a = await seed.event("shop/a", {"customer": "Ada"})
    await seed.event("shop/a", {"customer": "Grace"})
    b = await seed.event("shop/b", {"note": "for ada"})
    assert [e["internal_id"] for e in await get_data(api, "/v1/events", q="ADA")] == [b.internal_id, a.internal_id]
    assert [e["internal_id"] for e in await get_data(api, "/v1/events", q="ada", name="shop/a")] == [a.internal_id]
    assert len(await get_data(api, "/v1/events", q="")) == 3  # an empty search is no search


async def test_list_events_pages_with_limit_and_before(api: httpx.AsyncClient, seed: Seeder) -> None:
    evs = [await seed.event("shop/a", {"i": i}) for i in range(5)]
    first = await get_data(api, "/v1/events", name="shop/a", limit=2)
    assert [e["data"]["i"] for e in first] == [4, 3]
    second = await get_data(api, "/v1/events", name="shop/a", limit=2, before=first[-1]["cursor"])
    assert [e["data"]["i"] for e in second] == [2, 1]
    last = await get_data(api, "/v1/events", name="shop/a", limit=2, before=second[-1]["cursor"])
    assert [e["internal_id"] for e in last] == [evs[0].internal_id]


async def test_get_event_and_its_runs(api: httpx.AsyncClient, seed: Seeder) -> None:
    await seed.app()
    ev = await seed.event(data={"order": 1})
    runs = [await seed.run(event=ev), await seed.run(event=ev, finish=protocol.RunStatus.COMPLETED, output=3)]
    assert (await get_data(api, f"/v1/events/{ev.internal_id}"))["data"] == {"order": 1}
    listed = await get_data(api, f"/v1/events/{ev.internal_id}/runs")
    assert sorted(r["id"] for r in listed) == sorted(r.id for r in runs)
    by_id = {r["id"]: r for r in listed}
    assert by_id[runs[0].id]["status"] == "QUEUED"
    assert by_id[runs[1].id]["status"] == "COMPLETED"
    assert by_id[runs[1].id]["output"] == 3
    assert by_id[runs[1].id]["event_ids"] == [ev.internal_id]
    lonely = await seed.event()
    assert await get_data(api, f"/v1/events/{lonely.internal_id}/runs") == []


# ---------------------------------------------------------------------------------------------- runs


async def test_get_run_with_steps(api: httpx.AsyncClient, seed: Seeder) -> None:
    await seed.app()
    now = protocol.now_ms()
    run = await seed.run(finish=protocol.RunStatus.COMPLETED, output={"ok": True}, steps=[
        ok("fetch", [1, 2]), ok("fetch", "again", index=1), failed("charge", "declined"),
        sleep("over", wake_at=now - 1), sleep("pending", wake_at=now + 3_600_000)])
    data = await get_data(api, f"/v1/runs/{run.id}")
    assert data["id"] == run.id
    assert data["status"] == "COMPLETED"
    assert data["output"] == {"ok": True}
    assert data["function_id"] == "shop-on-order"
    assert data["ended_at"] is not None
    steps = data["steps"]
    assert [s["id"] for s in steps] == ["fetch", "fetch", "charge", "over", "pending"]
    assert [s["hash"] for s in steps[:2]] == [protocol.step_hash("fetch"), protocol.step_hash("fetch", 1)]
    assert [s["status"] for s in steps] == ["completed", "completed", "failed", "completed", "sleeping"]
    assert steps[0]["output"] == [1, 2]
    assert steps[1]["output"] == "again"
    assert steps[2]["error"] == {"name": "Error", "message": "declined", "stack": "Traceback ..."}
    assert "output" not in steps[2]
    assert steps[3]["output"] is None
    assert steps[4]["op"] == "Sleep"


async def test_get_failed_run(api: httpx.AsyncClient, seed: Seeder) -> None:
    await seed.app()
    run = await seed.run(finish=protocol.RunStatus.FAILED, output=FAILURE, error="boom")
    data = await get_data(api, f"/v1/runs/{run.id}")
    assert (data["status"], data["output"], data["error"], data["steps"]) == ("FAILED", FAILURE, "boom", [])


async def test_list_runs_filters_by_status_and_function(api: httpx.AsyncClient, seed: Seeder) -> None:
    await seed.app(functions={"on-order": "shop/order.created", "on-refund": "shop/refund"})
    queued = await seed.run()
    done = await seed.run(finish=protocol.RunStatus.COMPLETED)
    refund_failed = await seed.run("shop-on-refund", finish=protocol.RunStatus.FAILED, output=FAILURE)
    running = await seed.run(running=True)
    everything = await get_data(api, "/v1/runs")
    # Newest first by run id (ids minted in the same millisecond sort by id, not by creation).
    assert [r["id"] for r in everything] == sorted([queued.id, done.id, refund_failed.id, running.id],
                                                   reverse=True)
    for status, run in [("QUEUED", queued), ("completed", done), ("FAILED", refund_failed), ("RUNNING", running)]:
        assert [r["id"] for r in await get_data(api, "/v1/runs", status=status)] == [run.id]
    assert await get_data(api, "/v1/runs", status="CANCELLED") == []
    assert [r["id"] for r in await get_data(api, "/v1/runs", function_id="shop-on-refund")] == [refund_failed.id]
    both = await get_data(api, "/v1/runs", function_id="shop-on-order", status="COMPLETED")
    assert [r["id"] for r in both] == [done.id]


async def test_list_runs_pages_with_limit_and_before(api: httpx.AsyncClient, seed: Seeder) -> None:
    await seed.app()
    expected = sorted([(await seed.run()).id for _ in range(5)], reverse=True)
    seen: list[str] = []
    before: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"before": before} if before else {})
        page = await get_data(api, "/v1/runs", **params)
        if not page:
            break
        assert len(page) <= 2
        seen += [r["id"] for r in page]
        before = page[-1]["id"]
    assert seen == expected


async def test_list_runs_filters_by_app_time_several_statuses_and_search(api: httpx.AsyncClient,
                                                                         seed: Seeder) -> None:
    await seed.app()
    await seed.app("billing", {"on-invoice": "billing/invoice"})
    ada = await seed.run(event=await seed.event(data={"customer": "Ada Lovelace"}), finish=protocol.RunStatus.FAILED)
    alan = await seed.run(event=await seed.event(data={"customer": "Alan"}), finish=protocol.RunStatus.CANCELLED)
    bill = await seed.run("billing-on-invoice", finish=protocol.RunStatus.COMPLETED)

    async def ids_of(**params: Any) -> list[str]:
        return [r["id"] for r in await get_data(api, "/v1/runs", **params)]

    billing_app = next(a["id"] for a in await get_data(api, "/v1/apps") if a["name"] == "billing")
    assert await ids_of(app_id=billing_app) == [bill.id]
    assert await ids_of(status="failed,CANCELLED") == [alan.id, ada.id]
    assert await ids_of(q="ada love") == [ada.id]
    assert await ids_of(q=bill.id) == [bill.id]
    assert (await get_data(api, "/v1/runs/count", q="LA"))["count"] == 2  # "Alan" and "Ada Lovelace"
    start = ada.created_at
    assert set(await ids_of(**{"from": start})) >= {ada.id, alan.id, bill.id}
    assert await ids_of(to=start) == []
    iso = datetime.datetime.fromtimestamp(start / 1000, datetime.UTC).isoformat()
    assert ada.id in await ids_of(**{"from": iso})
    page = await get_data(api, "/v1/runs", limit=1)
    assert page[0]["cursor"] == page[0]["id"]


async def test_count_runs_at_most_says_when_it_stopped(api: httpx.AsyncClient, seed: Seeder) -> None:
    await seed.app()
    for _ in range(3):
        await seed.run()
    assert await get_data(api, "/v1/runs/count", at_most=2) == {"count": 2, "capped": True}
    assert await get_data(api, "/v1/runs/count", at_most=3) == {"count": 3, "capped": True}
    assert await get_data(api, "/v1/runs/count", at_most=4) == {"count": 3, "capped": False}
    assert await get_data(api, "/v1/runs/count") == {"count": 3, "capped": False}
    for bad in ("0", "x", "-1", "99999999999"):
        resp = await api.get("/v1/runs/count", params={"at_most": bad})
        assert resp.status_code == 400 and resp.json()["error"].startswith("at_most: "), resp.text


@pytest.mark.parametrize(("params", "needle"), [
    ({"status": "FAILED,nope"}, "status: must be one of"),
    ({"from": "yesterday"}, "from: must be milliseconds since the epoch or an ISO-8601 time"),
    ({"to": "soon"}, "to: must be"),
    ({"from": "2000", "to": "1000"}, "to: must be after from"),
    ({"q": "x" * 201}, "q: at most 200 characters"),
])
@pytest.mark.parametrize("url", ["/v1/runs", "/v1/runs/count"])
async def test_bad_run_filters_are_400s_saying_what_is_wrong(api: httpx.AsyncClient, url: str,
                                                             params: dict[str, str], needle: str) -> None:
    resp = await api.get(url, params=params)
    assert resp.status_code == 400 and needle in resp.json()["error"], resp.text


# ---------------------------------------------------------------------------------------------- read API bad inputs


@pytest.mark.parametrize("url", ["/v1/events", "/v1/runs"])
@pytest.mark.parametrize(("limit", "needle"), [("0", "between 1 and"), ("1001", "between 1 and"),
                                               ("abc", "integer"), ("-3", "between 1 and"), ("", "integer")])
async def test_bad_limit(api: httpx.AsyncClient, url: str, limit: str, needle: str) -> None:
    resp = await api.get(url, params={"limit": limit})
    assert resp.status_code == 400
    assert resp.json()["error"].startswith("limit: ")
    assert needle in resp.json()["error"]


@pytest.mark.parametrize("before", ["abc", "01M886CK7GVFR1P5S1PBDC1XFB", "-1"])
async def test_bad_event_cursor(api: httpx.AsyncClient, before: str) -> None:
    resp = await api.get("/v1/events", params={"before": before})
    assert resp.status_code == 400
    assert resp.json()["error"].startswith("before: ") and before in resp.json()["error"]


async def test_bad_status(api: httpx.AsyncClient) -> None:
    resp = await api.get("/v1/runs", params={"status": "bogus"})
    assert resp.status_code == 400
    assert "status" in resp.json()["error"]
    assert "bogus" in resp.json()["error"].lower()


@pytest.mark.parametrize("url", ["/v1/events/{id}", "/v1/events/{id}/runs", "/v1/runs/{id}"])
async def test_unknown_ids_are_404_naming_the_id(api: httpx.AsyncClient, url: str) -> None:
    resp = await api.get(url.format(id="01HNOPE0000000000000000000"))
    assert resp.status_code == 404
    assert "01HNOPE0000000000000000000" in resp.json()["error"]


# ---------------------------------------------------------------------------------------------- event API


@pytest.mark.parametrize(("body", "needle"), [
    (b"{nope", "not valid JSON"),
    (b"", "not valid JSON"),
    ([], "empty array"),
    ([{"data": {}}], "event 0: name"),
    ([{"name": ""}], "event 0: name"),
    ([{"name": "   "}], "event 0: name"),
    ([{"name": 5}], "event 0: name"),
    ([{"name": "a", "data": [1]}], "event 0: data"),
    ([{"name": "a", "data": "x"}], "event 0: data"),
    ([{"name": "a", "ts": 1.5}], "event 0: ts"),
    ([{"name": "a", "ts": "1700000000000"}], "event 0: ts"),
    ([{"name": "a", "ts": -1}], "event 0: ts"),
    ([{"name": "a", "ts": True}], "event 0: ts"),
    ([{"name": "a", "id": 7}], "event 0: id"),
    ([{"name": "a", "user": "u"}], "event 0: user"),
    ([7], "event 0: must be a JSON object"),
    ("just a string", "event 0: must be a JSON object"),
])
async def test_send_rejects_bad_events(api: httpx.AsyncClient, body: Any, needle: str) -> None:
    resp = await send(api, body)
    assert resp.status_code == 400
    reply = resp.json()
    assert reply["ids"] == []
    assert reply["status"] == 400
    assert needle in reply["error"]


async def test_send_accepts_one_object_and_fills_defaults(api: httpx.AsyncClient) -> None:
    before = protocol.now_ms()
    resp = await send(api, {"name": "shop/one", "ts": 0})
    assert resp.status_code == 200
    (event_id,) = resp.json()["ids"]
    assert resp.json() == {"ids": [event_id], "status": 200}
    ev = await get_data(api, f"/v1/events/{event_id}")
    assert (ev["id"], ev["data"]) == (event_id, {})
    assert ev["ts"] >= before


async def test_partial_send_keeps_the_events_before_the_bad_one(api: httpx.AsyncClient) -> None:
    resp = await send(api, [{"name": "shop/ok", "data": {"a": 1}}, {"name": ""}, {"name": "shop/never"}])
    assert resp.status_code == 400
    reply = resp.json()
    assert len(reply["ids"]) == 1
    assert "event 1: name" in reply["error"]
    assert (await get_data(api, f"/v1/events/{reply['ids'][0]}"))["name"] == "shop/ok"
    assert await get_data(api, "/v1/events", name="shop/never") == []


async def test_oversized_event_is_413_naming_the_limit(api: httpx.AsyncClient) -> None:
    big = {"name": "shop/big", "data": {"blob": "x" * (512 * 1024)}}
    resp = await send(api, [{"name": "shop/small"}, big])
    assert resp.status_code == 413
    reply = resp.json()
    assert reply["status"] == 413
    assert len(reply["ids"]) == 1
    assert "event 1" in reply["error"]
    assert str(512 * 1024) in reply["error"]
    assert await get_data(api, "/v1/events", name="shop/big") == []
    just_under = {"name": "shop/big", "data": {"blob": "x" * (512 * 1024 - 100)}}
    assert (await send(api, [just_under])).status_code == 200


async def test_same_event_id_twice_starts_one_run(api: httpx.AsyncClient, seed: Seeder,
                                                  services: services_mod.Services) -> None:
    await seed.app()
    first = await send(api, [{"name": "shop/order.created", "id": "order-1", "data": {"n": 1}}])
    second = await send(api, [{"name": "shop/order.created", "id": "order-1", "data": {"n": 1}}])
    assert first.status_code == second.status_code == 200
    (first_id,), (second_id,) = first.json()["ids"], second.json()["ids"]
    assert first_id != second_id  # both events are stored; only the run is deduplicated
    assert len(await get_data(api, f"/v1/events/{first_id}/runs")) == 1
    assert await get_data(api, f"/v1/events/{second_id}/runs") == []
    assert len(await get_data(api, "/v1/runs", function_id="shop-on-order")) == 1
    other = await send(api, [{"name": "shop/order.created", "id": "order-2"}])
    (other_id,) = other.json()["ids"]
    await wait_until(lambda: services.store.runs_for_event(other_id), message="a run for order-2")


async def test_id_seed_gives_deterministic_ids(api: httpx.AsyncClient) -> None:
    ms, entropy = 1_795_549_199_558, bytes(range(10))
    header = f"{ms},{base64.b64encode(entropy).decode()}"
    events = [{"name": "shop/seeded", "data": {"i": i}} for i in range(2)]
    first = await send(api, events, **{"x-inngest-event-id-seed": header})
    again = await send(api, events, **{"x-inngest-event-id-seed": header})
    assert first.status_code == again.status_code == 200
    assert first.json()["ids"] == again.json()["ids"] == [ids.seeded_ulid((ms, entropy), i) for i in (1, 2)]
    stored = await get_data(api, "/v1/events", name="shop/seeded")
    assert len(stored) == 4
    assert {e["internal_id"] for e in stored} == set(first.json()["ids"])


async def test_malformed_id_seed_falls_back_to_fresh_ids(api: httpx.AsyncClient) -> None:
    body = [{"name": "shop/x"}]
    a = await send(api, body, **{"x-inngest-event-id-seed": "not-a-seed"})
    b = await send(api, body, **{"x-inngest-event-id-seed": "not-a-seed"})
    assert a.status_code == b.status_code == 200
    assert a.json()["ids"] != b.json()["ids"]


async def test_paging_through_retried_seeded_sends_loses_no_event(api: httpx.AsyncClient) -> None:
    header = f"1795549199558,{base64.b64encode(bytes(range(10))).decode()}"
    for _ in range(2):  # the SDK retrying a send: same seed, so the same internal ids stored twice
        await send(api, [{"name": "shop/retried", "data": {"i": i}} for i in range(2)],
                   **{"x-inngest-event-id-seed": header})
    seen: list[str] = []
    before: str | None = None
    for _ in range(10):
        params: dict[str, Any] = {"name": "shop/retried", "limit": 2} | ({"before": before} if before else {})
        page = await get_data(api, "/v1/events", **params)
        if not page:
            break
        seen += [e["internal_id"] for e in page]
        before = page[-1]["cursor"]
    assert len(seen) == 4
    assert sorted(set(seen)) == sorted(ids.seeded_ulid((1795549199558, bytes(range(10))), i) for i in (1, 2))
