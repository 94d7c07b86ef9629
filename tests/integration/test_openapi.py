"""The OpenAPI document at /openapi.json: valid OpenAPI 3.1, documenting exactly the routes the app mounts
(so the two cannot drift apart), with schemas that real replies match: every field a reply has is
documented (the checks close every documented object) and every required one is there."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openapi_spec_validator
import pytest
from starlette.routing import Mount, Route

import ratchet
from ratchet.server import config as config_mod
from ratchet.server import dashboard, openapi
from ratchet.server.app import create_app
from tests.integration import inprocess
from tests.integration.inprocess import Stack

METHODS = {"get", "post", "put", "patch", "delete"}
KEY = "signkey-prod-" + "cd" * 32
TOKEN = "rat_openapi-token"


def documented_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in doc["paths"].items() for method in item if method in METHODS}


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        *_, kind, name = node["$ref"].split("/")
        node = doc["components"][kind][name]
    return node


def strict(doc: dict[str, Any]) -> dict[str, Any]:
    """A copy of the components in which every object schema that lists its properties, and does not
    say otherwise, allows no others: a reply with an undocumented field then fails validation."""
    components = copy.deepcopy(doc["components"])

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(components["schemas"])
    return components


class Checker:
    """Validates replies against the schema the document gives their path, method, status and media type."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.components = strict(doc)
        self.seen: set[tuple[str, str]] = set()

    def __call__(self, resp: httpx.Response, template: str, status: int | None = None) -> Any:
        method = resp.request.method.lower()
        if status is not None:
            assert resp.status_code == status, resp.text
        operation = self.doc["paths"][template][method]
        reply = operation["responses"].get(str(resp.status_code))
        assert reply is not None, f"{method.upper()} {template} answered {resp.status_code}, which is not documented"
        media = resp.headers["content-type"].split(";")[0].strip()
        assert media in reply["content"], f"{method.upper()} {template}: {media} is not documented"
        schema = reply["content"][media]["schema"]
        body = resp.json()
        validator = jsonschema.Draft202012Validator({**copy.deepcopy(schema), "components": self.components},
                                                    format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        assert not errors, (f"{method.upper()} {template} {resp.status_code}: "
                            + "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]))
        self.seen.add((template, method))
        return body


@pytest.fixture
async def doc(api: httpx.AsyncClient) -> dict[str, Any]:
    resp = await api.get("/openapi.json")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    return resp.json()  # type: ignore[no-any-return]


async def test_the_document_is_served_and_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.1")
    openapi_spec_validator.validate(doc)
    for name in ("Run", "Step", "Event", "App", "Function", "DeadLetter", "Error"):
        assert name in doc["components"]["schemas"]
    assert set(doc["components"]["securitySchemes"]) == {"apiToken", "sessionCookie", "signingKey"}
    assert "dev mode" in doc["info"]["description"]


def test_every_route_is_documented_and_every_documented_path_exists(tmp_path: Path) -> None:
    app = create_app(config_mod.ServerConfig(db_url=str(tmp_path / "r.db")))  # routes only, no lifespan
    dashboard_paths = {r.path for r in dashboard.routes()}
    mounted: set[tuple[str, str]] = set()
    params: dict[str, set[str]] = {}
    for route in app.routes:
        if isinstance(route, Mount) or route.path in dashboard_paths:  # type: ignore[attr-defined]
            continue
        assert isinstance(route, Route), route
        mounted |= {(route.path, m.lower()) for m in route.methods or () if m != "HEAD"}
        params[route.path] = set(route.param_convertors)
    doc = openapi.SPEC
    assert documented_operations(doc) == mounted
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            in_path = {p["name"] for p in (resolve(doc, q) for q in operation.get("parameters", []))
                       if p["in"] == "path"}
            assert in_path == params[path], f"{method.upper()} {path}: path parameters {in_path} != {params[path]}"
            assert operation["responses"] and operation.get("summary"), (method, path)


async def test_real_replies_match_their_schemas(stack: Stack) -> None:
    api = stack.api

    @stack.client.function(id="order", trigger=ratchet.on_event("t/order"))
    async def order(ctx: ratchet.Context) -> dict[str, Any]:
        charged = await ctx.step.run("charge", lambda: {"charged": ctx.event.data["n"]})
        return {"charge": charged}

    @stack.client.function(id="boom", trigger=ratchet.on_event("t/boom"), retries=0)
    async def boom(ctx: ratchet.Context) -> None:
        raise ratchet.NonRetriableError("no luck")

    check = Checker((await api.get("/openapi.json")).json())
    check(await api.get("/openapi.json"), "/openapi.json", 200)
    check(await api.get("/health"), "/health", 200)
    stack.serve([order, boom])
    stack.transport.down = True
    check(await api.post("/v1/apps/sync", json={"url": inprocess.APP_URL}), "/v1/apps/sync", 502)
    stack.transport.down = False
    check(await api.post("/v1/apps/sync", json={"url": inprocess.APP_URL}), "/v1/apps/sync", 200)
    check(await api.post("/v1/apps/sync", content=b"[1]"), "/v1/apps/sync", 400)

    sent = check(await api.post("/e/any-key", json={"name": "t/order", "data": {"n": 1, "ref": "Order-XYZ"}, "id": "o-1"}),
                 "/e/{event_key}", 200)
    check(await api.post("/e/any-key", content=b"[]"), "/e/{event_key}", 400)
    check(await api.post("/v1/events", json=[{"name": "t/boom"}, {"name": "t/other", "ts": 5}]), "/v1/events", 200)
    check(await api.post("/v1/events", json={"data": {}}), "/v1/events", 400)
    done = await stack.wait_run(sent["ids"][0])
    boom_event = (await api.get("/v1/events", params={"name": "t/boom"})).json()["data"][0]
    await stack.wait_run(boom_event["internal_id"], status="FAILED")

    check(await api.get("/v1/apps"), "/v1/apps", 200)
    check(await api.get("/v1/functions"), "/v1/functions", 200)
    check(await api.get("/v1/info"), "/v1/info", 200)
    events = check(await api.get("/v1/events", params={"limit": 2}), "/v1/events", 200)["data"]
    check(await api.get("/v1/events", params={"before": events[-1]["cursor"]}), "/v1/events", 200)
    check(await api.get("/v1/events", params={"limit": 0}), "/v1/events", 400)
    check(await api.get(f"/v1/events/{sent['ids'][0]}"), "/v1/events/{event_id}", 200)
    check(await api.get("/v1/events/nope"), "/v1/events/{event_id}", 404)
    check(await api.get(f"/v1/events/{sent['ids'][0]}/runs"), "/v1/events/{event_id}/runs", 200)
    check(await api.get("/v1/events/nope/runs"), "/v1/events/{event_id}/runs", 404)

    runs = check(await api.get("/v1/runs", params={"status": "completed,FAILED", "q": "order-xyz", "from": 0}),
                 "/v1/runs", 200)["data"]
    assert [r["id"] for r in runs] == [done["id"]]
    check(await api.get("/v1/runs", params={"function_id": "inproc-boom", "to": "2100-01-01T00:00:00Z"}),
          "/v1/runs", 200)
    check(await api.get("/v1/runs", params={"status": "nope"}), "/v1/runs", 400)
    count = check(await api.get("/v1/runs/count", params={"status": "FAILED"}), "/v1/runs/count", 200)["data"]
    assert count["count"] == 1
    check(await api.get("/v1/runs/count", params={"from": "yesterday"}), "/v1/runs/count", 400)
    detail = check(await api.get(f"/v1/runs/{done['id']}"), "/v1/runs/{run_id}", 200)["data"]
    assert [s["id"] for s in detail["steps"]] == ["charge"]
    failed = (await api.get("/v1/runs", params={"status": "FAILED"})).json()["data"][0]
    check(await api.get(f"/v1/runs/{failed['id']}"), "/v1/runs/{run_id}", 200)
    check(await api.get("/v1/runs/nope"), "/v1/runs/{run_id}", 404)
    check(await api.post(f"/v1/runs/{done['id']}/cancel"), "/v1/runs/{run_id}/cancel", 409)
    check(await api.post("/v1/runs/nope/cancel"), "/v1/runs/{run_id}/cancel", 404)
    rerun = check(await api.post(f"/v1/runs/{done['id']}/rerun", json={"from_step": "charge"}),
                  "/v1/runs/{run_id}/rerun", 201)["data"]
    await stack.wait_run(sent["ids"][0])
    check(await api.post(f"/v1/runs/{done['id']}/rerun", json={"nope": 1}), "/v1/runs/{run_id}/rerun", 400)
    check(await api.post("/v1/runs/nope/rerun"), "/v1/runs/{run_id}/rerun", 404)
    check(await api.post("/v1/runs/cancel", json={"function_id": "inproc-order", "dry_run": True}),
          "/v1/runs/cancel", 200)
    check(await api.post("/v1/runs/cancel", json={"function_id": "inproc-order", "from": 0, "to": 1}),
          "/v1/runs/cancel", 200)
    check(await api.post("/v1/runs/cancel", json={}), "/v1/runs/cancel", 400)
    check(await api.post("/v1/runs/replay", json={"function_id": "inproc-boom", "dry_run": True}),
          "/v1/runs/replay", 200)
    check(await api.post("/v1/runs/replay", json={"function_id": "inproc-boom", "status": ["FAILED"]}),
          "/v1/runs/replay", 200)
    check(await api.post("/v1/runs/replay", json={"function_id": "inproc-boom", "status": "RUNNING"}),
          "/v1/runs/replay", 400)
    invoked = check(await api.post("/v1/functions/inproc-order/invoke", json={"data": {"n": 2}}),
                    "/v1/functions/{function_id}/invoke", 201)["data"]
    check(await api.post("/v1/functions/nope/invoke"), "/v1/functions/{function_id}/invoke", 404)
    check(await api.get("/v1/dead-letters", params={"run_id": rerun["id"]}), "/v1/dead-letters", 200)
    check(await api.get("/v1/dead-letters", params={"before": "x"}), "/v1/dead-letters", 400)

    check(await api.get(f"/v0/runs/{invoked['run_id']}/batch"), "/v0/runs/{run_id}/batch", 200)
    check(await api.get(f"/v0/runs/{done['id']}/actions"), "/v0/runs/{run_id}/actions", 200)
    check(await api.get("/v0/runs/nope/actions"), "/v0/runs/{run_id}/actions", 404)
    check(await api.get("/v0/runs/nope/batch"), "/v0/runs/{run_id}/batch", 404)
    gql = check(await api.post("/v0/gql", json={"query": "{ apps { id name } }"}), "/v0/gql", 200)
    assert gql["data"]["apps"]
    check(await api.post("/v0/gql", json={"query": "{ nope }"}), "/v0/gql", 200)
    check(await api.post("/v0/gql", json={"variables": {}}), "/v0/gql", 400)
    check(await api.post("/fn/register", content=b"{}"), "/fn/register", 400)

    # Every operation was exercised, but the stream (it never ends; see test_dashboard.py).
    assert documented_operations(check.doc) - check.seen == {("/v1/stream", "get")}


@pytest.fixture
async def prod(tmp_path: Path) -> AsyncIterator[Stack]:
    async with inprocess.start_stack(tmp_path, signing_key=KEY, event_key="ek", api_token=TOKEN) as s:
        yield s


async def test_production_mode_asks_for_the_credentials_documented(prod: Stack) -> None:
    """Without credentials, every operation under the API token or the signing key is refused with the
    documented 401; the open ones are not. (Dev mode asks for nothing: the test above sends none.)"""
    check = Checker(openapi.SPEC)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=prod.server), base_url=inprocess.SERVER) as anon:
        for path, method in sorted(documented_operations(openapi.SPEC)):
            operation = openapi.SPEC["paths"][path][method]
            schemes = {name for requirement in operation["security"] for name in requirement}
            url = path.replace("{event_key}", "wrong").replace("{run_id}", "r").replace(
                "{event_id}", "e").replace("{function_id}", "f")
            resp = await anon.request(method.upper(), url, content=b"{}")
            if schemes:
                check(resp, path, 401)
            else:
                assert resp.status_code != 401 or path == "/e/{event_key}", (method, path, resp.text)
                if resp.status_code == 401:
                    check(resp, path)
        # With the API token they pass the middleware.
        resp = await anon.get("/v1/info", headers={"authorization": f"Bearer {TOKEN}"})
        assert check(resp, "/v1/info", 200)["data"]["mode"] == "production"
