"""`POST /v0/gql`: the queries the official SDK's test helpers and the dashboard send (reference §8)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from ratchet import protocol
from ratchet.server.store import base
from tests.integration.conftest import Seeder, SeedStep, failed, ok, sleep

FAILURE = {"name": "ValueError", "message": "boom", "stack": "Traceback ..."}

# The official SDK helpers' queries, verbatim in shape (variables typed String! / ID!).
GET_RUN = """
query GetRun($run_id: String!) {
    run(runID: $run_id) { output status }
    runTrigger(runID: $run_id) { payloads }
}"""
GET_HISTORY = """
query GetHistory($run_id: String!) {
    run(runID: $run_id) { trace { childrenSpans { name outputID } } }
}"""
GET_OUTPUT = """
query GetHistory($output_id: String!) {
    runTraceSpanOutputByID(outputID: $output_id) { data error { message name stack } }
}"""
GET_EVENT_RUNS = """
query GetRunFromEventID($event_id: ID!) {
    event(query: {eventId: $event_id}) { id name functionRuns { id status } }
}"""


async def gql(api: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    """Run a query that must succeed; return its `data`."""
    resp = await api.post("/v0/gql", json={"query": query, "variables": variables})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert "errors" not in body, body
    return body["data"]  # type: ignore[no-any-return]


async def gql_errors(api: httpx.AsyncClient, query: str, **variables: Any) -> list[dict[str, Any]]:
    resp = await api.post("/v0/gql", json={"query": query, "variables": variables})
    assert resp.status_code == 200, resp.text
    return resp.json()["errors"]  # type: ignore[no-any-return]


async def output_of(api: httpx.AsyncClient, output_id: str) -> dict[str, Any]:
    return (await gql(api, GET_OUTPUT, output_id=output_id))["runTraceSpanOutputByID"]


@pytest.fixture
async def completed(seed: Seeder) -> base.RunRecord:
    """A finished run with a success, a repeated step id, a failed step and a sleep that is over."""
    await seed.app()
    ev = await seed.event(data={"order": 7}, event_id="order-7")
    return await seed.run(event=ev, finish=protocol.RunStatus.COMPLETED, output={"total": 42}, steps=[
        ok("fetch", [{"empty": None, "n": 1}]),
        ok("fetch", "second", index=1),
        failed("charge", "card declined", err_name="StepError"),
        sleep("cool-down", wake_at=protocol.now_ms() - 1),
    ])


async def test_run_and_trigger_as_the_sdk_helper_reads_them(api: httpx.AsyncClient,
                                                            completed: base.RunRecord) -> None:
    data = await gql(api, GET_RUN, run_id=completed.id)
    assert data["run"]["status"] == "COMPLETED"
    assert json.loads(data["run"]["output"]) == {"total": 42}
    (payload,) = data["runTrigger"]["payloads"]
    event = json.loads(payload)
    assert event == {"name": "shop/order.created", "data": {"order": 7}, "id": "order-7", "ts": event["ts"]}
    assert isinstance(event["ts"], int)


async def test_queued_run_is_an_object_with_null_output(api: httpx.AsyncClient, seed: Seeder) -> None:
    await seed.app()
    run = await seed.run()
    data = await gql(api, "query($id: String!) { run(runID: $id) { id status output startedAt endedAt "
                          "functionID queuedAt } }", id=run.id)
    assert data["run"] == {"id": run.id, "status": "QUEUED", "output": None, "startedAt": None, "endedAt": None,
                           "functionID": "shop-on-order", "queuedAt": data["run"]["queuedAt"]}
    assert data["run"]["queuedAt"].endswith("Z")


async def test_running_run_has_no_output_and_a_waiting_sleep(api: httpx.AsyncClient, seed: Seeder) -> None:
    await seed.app()
    run = await seed.run(steps=[sleep("nap", wake_at=protocol.now_ms() + 3_600_000)])
    data = await gql(api, "query($id: String!) { run(runID: $id) { status output startedAt "
                          "trace { status childrenSpans { name status stepOp endedAt } } } }", id=run.id)
    assert data["run"]["status"] == "RUNNING"
    assert data["run"]["output"] is None
    assert data["run"]["startedAt"] is not None
    assert data["run"]["trace"]["status"] == "RUNNING"
    assert data["run"]["trace"]["childrenSpans"] == [{"name": "nap", "status": "WAITING", "stepOp": "Sleep",
                                                      "endedAt": None}]


async def test_failed_run_output_is_the_error_body(api: httpx.AsyncClient, seed: Seeder) -> None:
    await seed.app()
    run = await seed.run(finish=protocol.RunStatus.FAILED, output=FAILURE, error="boom")
    data = await gql(api, "query($id: String!) { run(runID: $id) { status output error endedAt "
                          "trace { outputID } } }", id=run.id)
    assert data["run"]["status"] == "FAILED"
    assert json.loads(data["run"]["output"]) == FAILURE
    assert data["run"]["error"] == "boom"
    assert data["run"]["endedAt"] is not None
    assert await output_of(api, data["run"]["trace"]["outputID"]) == {"data": None, "error": FAILURE}


async def test_trace_lists_one_span_per_step_in_order(api: httpx.AsyncClient, completed: base.RunRecord) -> None:
    data = await gql(api, GET_HISTORY, run_id=completed.id)
    spans = data["run"]["trace"]["childrenSpans"]
    assert [s["name"] for s in spans] == ["fetch", "fetch", "charge", "cool-down"]
    assert len({s["outputID"] for s in spans}) == 4
    full = await gql(api, "query($id: String!) { run(runID: $id) { trace { isRoot name "
                          "childrenSpans { status isRoot stepID attempts } } } }", id=completed.id)
    trace = full["run"]["trace"]
    assert trace["isRoot"] is True
    assert trace["name"] == "shop-on-order"
    assert [s["status"] for s in trace["childrenSpans"]] == ["COMPLETED", "COMPLETED", "FAILED", "COMPLETED"]
    assert trace["childrenSpans"][1]["stepID"] == protocol.step_hash("fetch", 1)
    assert not any(s["isRoot"] for s in trace["childrenSpans"])


async def test_span_outputs_resolve_data_error_and_sleep(api: httpx.AsyncClient,
                                                         completed: base.RunRecord) -> None:
    spans = (await gql(api, GET_HISTORY, run_id=completed.id))["run"]["trace"]["childrenSpans"]
    outputs = [await output_of(api, s["outputID"]) for s in spans]
    assert json.loads(outputs[0]["data"]) == [{"empty": None, "n": 1}]
    assert outputs[0]["error"] is None
    assert json.loads(outputs[1]["data"]) == "second"
    assert outputs[2] == {"data": None, "error": {"name": "StepError", "message": "card declined",
                                                  "stack": "Traceback ..."}}
    assert outputs[3] == {"data": "null", "error": None}


async def test_root_span_output_is_the_run_output(api: httpx.AsyncClient, completed: base.RunRecord) -> None:
    data = await gql(api, "query($id: String!) { run(runID: $id) { trace { outputID } } }", id=completed.id)
    assert json.loads((await output_of(api, data["run"]["trace"]["outputID"]))["data"]) == {"total": 42}


async def test_wait_for_event_memo_is_the_bare_event(api: httpx.AsyncClient, seed: Seeder) -> None:
    await seed.app()
    matched = {"name": "shop/paid", "data": {"ok": True}, "id": "e1", "ts": 5}
    run = await seed.run(steps=[SeedStep("wait", matched, op=protocol.Opcode.WAIT_FOR_EVENT.value)],
                         finish=protocol.RunStatus.COMPLETED)
    spans = (await gql(api, GET_HISTORY, run_id=run.id))["run"]["trace"]["childrenSpans"]
    assert json.loads((await output_of(api, spans[0]["outputID"]))["data"]) == matched


async def test_event_function_runs(api: httpx.AsyncClient, seed: Seeder) -> None:
    await seed.app()
    ev = await seed.event()
    first = await seed.run(event=ev)
    second = await seed.run(event=ev, finish=protocol.RunStatus.COMPLETED)
    data = await gql(api, GET_EVENT_RUNS, event_id=ev.internal_id)
    assert data["event"]["id"] == ev.internal_id
    assert data["event"]["name"] == "shop/order.created"
    # Ordered by run id; two ULIDs minted in the same millisecond have no set order.
    assert data["event"]["functionRuns"] == sorted([{"id": first.id, "status": "QUEUED"},
                                                    {"id": second.id, "status": "COMPLETED"}], key=lambda r: r["id"])
    assert (await gql(api, GET_EVENT_RUNS, event_id="01NOPE"))["event"] is None


async def test_event_fields_and_event_listing(api: httpx.AsyncClient, seed: Seeder) -> None:
    a = await seed.event("shop/a", {"x": 1}, event_id="user-id", ts=1_700_000_000_000)
    b = await seed.event("shop/b")
    c = await seed.event("shop/a")
    data = await gql(api, "{ events(first: 10, name: \"shop/a\") { id externalID name payload createdAt "
                          "totalRuns } }")
    assert [e["id"] for e in data["events"]] == [c.internal_id, a.internal_id]
    older = data["events"][1]
    assert older["externalID"] == "user-id"
    assert older["createdAt"] == "2023-11-14T22:13:20.000Z"
    assert json.loads(older["payload"]) == {"name": "shop/a", "data": {"x": 1}, "id": "user-id",
                                            "ts": 1_700_000_000_000}
    assert older["totalRuns"] == 0
    top = await gql(api, "{ events(first: 1) { id cursor } }")
    page = await gql(api, "query($after: String) { events(first: 1, after: $after) { id } }",
                     after=top["events"][0]["cursor"])
    assert page["events"] == [{"id": b.internal_id}]


async def test_runs_connection_filters_and_pages(api: httpx.AsyncClient, seed: Seeder) -> None:
    await seed.app(functions={"on-order": "shop/order.created", "on-refund": "shop/refund"})
    queued = await seed.run()
    done = await seed.run(finish=protocol.RunStatus.COMPLETED)
    failed_run = await seed.run("shop-on-refund", finish=protocol.RunStatus.FAILED, output=FAILURE)
    query = """query($first: Int, $after: String, $filter: RunsFilter) {
        runs(first: $first, after: $after, filter: $filter) {
            edges { cursor node { id status functionID } } pageInfo { hasNextPage endCursor } } }"""
    # Newest first by id (runs minted in the same millisecond come in id order, not creation order).
    newest_first = sorted([queued.id, done.id, failed_run.id], reverse=True)
    everything = (await gql(api, query, first=10))["runs"]
    assert [e["node"]["id"] for e in everything["edges"]] == newest_first
    assert everything["pageInfo"] == {"hasNextPage": False, "endCursor": newest_first[-1]}

    first = (await gql(api, query, first=2))["runs"]
    assert [e["cursor"] for e in first["edges"]] == newest_first[:2]
    assert first["pageInfo"] == {"hasNextPage": True, "endCursor": newest_first[1]}
    rest = (await gql(api, query, first=2, after=first["pageInfo"]["endCursor"]))["runs"]
    assert [e["node"]["id"] for e in rest["edges"]] == newest_first[2:]
    assert rest["pageInfo"]["hasNextPage"] is False

    by_status = (await gql(api, query, first=10, filter={"status": ["QUEUED", "FAILED"]}))["runs"]
    assert [e["node"]["id"] for e in by_status["edges"]] == sorted([failed_run.id, queued.id], reverse=True)
    by_fn = (await gql(api, query, first=10, filter={"functionID": "shop-on-order", "status": "COMPLETED"}))
    assert [e["node"]["id"] for e in by_fn["runs"]["edges"]] == [done.id]


async def test_functions_and_apps(api: httpx.AsyncClient, seed: Seeder) -> None:
    app = await seed.app("shop", {"on-order": "shop/order.created", "on-refund": "shop/refund"})
    data = await gql(api, "{ functions { id name slug app { name url } triggers { type value } } "
                          "apps { id name url error functionCount sdk functions { id } } }")
    assert data["functions"] == [
        {"id": "shop-on-order", "name": "on-order", "slug": "shop-on-order",
         "app": {"name": "shop", "url": app.url}, "triggers": [{"type": "EVENT", "value": "shop/order.created"}]},
        {"id": "shop-on-refund", "name": "on-refund", "slug": "shop-on-refund",
         "app": {"name": "shop", "url": app.url}, "triggers": [{"type": "EVENT", "value": "shop/refund"}]},
    ]
    assert data["apps"] == [{"id": app.id, "name": "shop", "url": app.url, "error": None, "functionCount": 2,
                             "sdk": "py:v0.5.19", "functions": [{"id": "shop-on-order"}, {"id": "shop-on-refund"}]}]


async def test_run_function_and_events(api: httpx.AsyncClient, completed: base.RunRecord) -> None:
    data = await gql(api, "query($id: String!) { run(runID: $id) { appID eventID function { name } "
                          "events { externalID } } }", id=completed.id)
    assert data["run"]["function"] == {"name": "on-order"}
    assert data["run"]["eventID"] == completed.event_ids[0]
    assert data["run"]["events"] == [{"externalID": "order-7"}]
    assert data["run"]["appID"] == completed.app_id


async def test_operation_name_selects_the_operation(api: httpx.AsyncClient) -> None:
    resp = await api.post("/v0/gql", json={"query": "query A { apps { id } } query B { functions { id } }",
                                           "operationName": "B"})
    assert resp.json() == {"data": {"functions": []}}


# ---------------------------------------------------------------------------------------------- bad inputs


async def test_unknown_run_is_null(api: httpx.AsyncClient) -> None:
    data = await gql(api, GET_RUN, run_id="01UNKNOWN")
    assert data == {"run": None, "runTrigger": None}


async def test_unknown_output_id_is_an_error_naming_it(api: httpx.AsyncClient, completed: base.RunRecord) -> None:
    for output_id in ("nope", f"{completed.id}:deadbeef"):
        (err,) = await gql_errors(api, GET_OUTPUT, output_id=output_id)
        assert output_id in err["message"]
        assert err["path"] == ["runTraceSpanOutputByID"]


async def test_unknown_field_is_a_graphql_error(api: httpx.AsyncClient) -> None:
    resp = await api.post("/v0/gql", json={"query": "{ run(runID: \"x\") { nope } }"})
    assert resp.status_code == 200
    body = resp.json()
    assert "data" not in body
    assert "nope" in body["errors"][0]["message"]
    assert body["errors"][0]["locations"]


@pytest.mark.parametrize("query", ["{ run(runID: ", "{ run { id } }", "query($id: Int!) { run(runID: $id) { id } }"])
async def test_syntax_and_validation_errors(api: httpx.AsyncClient, query: str) -> None:
    errors = await gql_errors(api, query, id=1)
    assert errors and all(e["message"] for e in errors)


async def test_variable_of_the_wrong_type(api: httpx.AsyncClient) -> None:
    (err,) = await gql_errors(api, GET_RUN, run_id=12)
    assert "run_id" in err["message"]


async def test_first_out_of_range(api: httpx.AsyncClient) -> None:
    (err,) = await gql_errors(api, "{ runs(first: 0) { edges { cursor } } }")
    assert "first" in err["message"]


@pytest.mark.parametrize(("content", "needle"), [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b"{}", "query"),
    (b'{"query": ""}', "query"),
    (b'{"query": 5}', "query"),
    (b'{"query": "{ apps { id } }", "variables": [1]}', "variables"),
    (b'{"query": "{ apps { id } }", "operationName": 3}', "operationName"),
])
async def test_bad_request_body_is_400(api: httpx.AsyncClient, content: bytes, needle: str) -> None:
    resp = await api.post("/v0/gql", content=content, headers={"content-type": "application/json"})
    assert resp.status_code == 400
    (err,) = resp.json()["errors"]
    assert needle in err["message"]
