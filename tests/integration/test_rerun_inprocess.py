"""Rerun, bulk replay and the links between runs, in one process with Ratchet's SDK (see inprocess.py)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import ratchet
from tests.integration.conftest import wait_until
from tests.integration.inprocess import Stack

#: Every scenario here runs on both store backends (`stack` in conftest.py).
STORES = ("sqlite", "postgres")

ENDED = ("COMPLETED", "FAILED", "CANCELLED", "SKIPPED")


async def get_run(stack: Stack, run_id: str) -> dict[str, Any]:
    resp = await stack.api.get(f"/v1/runs/{run_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]  # type: ignore[no-any-return]


async def wait_ended(stack: Stack, run_id: str, status: str = "COMPLETED", timeout: float = 10.0) -> dict[str, Any]:
    async def ended() -> dict[str, Any] | None:
        run = await get_run(stack, run_id)
        return run if run["status"] in ENDED else None

    run = await wait_until(ended, timeout, message=f"run {run_id} to end")
    assert run["status"] == status, run
    return run


async def rerun(stack: Stack, run_id: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    resp = await stack.api.post(f"/v1/runs/{run_id}/rerun", json=body) if body is not None else \
        await stack.api.post(f"/v1/runs/{run_id}/rerun")
    assert resp.status_code == 201, resp.text
    return resp.json()["data"]  # type: ignore[no-any-return]


async def test_a_rerun_from_the_start_runs_every_step_again(stack: Stack) -> None:
    runs = {"a": 0, "b": 0}

    def count(name: str) -> str:
        runs[name] += 1
        return f"{name}{runs[name]}"

    @stack.client.function(id="twice", trigger=ratchet.on_event("t/twice"))
    async def fn(ctx: ratchet.Context) -> list[str]:
        return [await ctx.step.run("a", count, "a"), await ctx.step.run("b", count, "b")]

    await stack.sync([fn])
    original = await stack.wait_run(await stack.send("t/twice", {"k": 1}))
    assert original["output"] == ["a1", "b1"]
    new = await rerun(stack, original["id"])
    assert new["id"] != original["id"] and new["rerun_of"] == original["id"] and new["rerun_from_step"] is None
    assert new["function_id"] == "inproc-twice" and new["event_ids"] == original["event_ids"]
    done = await wait_ended(stack, new["id"])
    assert done["output"] == ["a2", "b2"] and runs == {"a": 2, "b": 2}
    assert [s["id"] for s in done["steps"]] == ["a", "b"]
    again = await get_run(stack, original["id"])
    assert again["reruns"] == [new["id"]] and again["output"] == ["a1", "b1"]  # the original is untouched
    assert done["reruns"] == [] and done["invoked_by"] is None


async def test_a_rerun_from_a_step_keeps_the_steps_before_it_after_the_app_is_fixed(stack: Stack) -> None:
    executions = {"one": 0, "two": 0, "three": 0}
    app = {"broken": True}

    def one() -> str:
        executions["one"] += 1
        return uuid.uuid4().hex  # a new value each time it runs

    def two(token: str) -> str:
        executions["two"] += 1
        if app["broken"]:
            raise ValueError("step two is broken")
        return token[:4]

    def three() -> str:
        executions["three"] += 1
        return "three"

    @stack.client.function(id="fixable", trigger=ratchet.on_event("t/fixable"), retries=0)
    async def fn(ctx: ratchet.Context) -> dict[str, str]:
        token = await ctx.step.run("one", one)
        short = await ctx.step.run("two", two, token)
        return {"token": token, "short": short, "last": await ctx.step.run("three", three)}

    await stack.sync([fn])
    failed = await stack.wait_run(await stack.send("t/fixable"), status="FAILED")
    assert executions == {"one": 1, "two": 1, "three": 0}
    token = failed["steps"][0]["output"]
    two_hash = next(s["hash"] for s in failed["steps"] if s["id"] == "two")

    app["broken"] = False  # the fix is deployed
    new = await rerun(stack, failed["id"], {"from_step": "two"})
    assert new["rerun_of"] == failed["id"] and new["rerun_from_step"] == two_hash
    done = await wait_ended(stack, new["id"])
    assert done["output"] == {"token": token, "short": token[:4], "last": "three"}
    # Step one's body did not run again: its memoized output was copied; two and three ran.
    assert executions == {"one": 1, "two": 2, "three": 1}
    steps = {s["id"]: s for s in done["steps"]}
    assert steps["one"] == next(s for s in failed["steps"] if s["id"] == "one")  # exactly as stored
    assert steps["two"]["status"] == "completed" and steps["two"]["output"] == token[:4]
    # By hash, from the first step: everything runs again.
    fresh = await wait_ended(stack, (await rerun(stack, failed["id"], {"from_step": failed["steps"][0]["hash"]}))["id"])
    assert fresh["output"]["token"] != token and executions["one"] == 2
    assert (await get_run(stack, failed["id"]))["reruns"] == [new["id"], fresh["id"]]


async def test_a_rerun_with_edited_data_stores_a_new_event(stack: Stack) -> None:
    @stack.client.function(id="echo", trigger=ratchet.on_event("t/echo"))
    async def fn(ctx: ratchet.Context) -> dict[str, Any]:
        return dict(ctx.event.data)

    await stack.sync([fn])
    event_id = await stack.send("t/echo", {"amount": 10})
    original = await stack.wait_run(event_id)
    new = await rerun(stack, original["id"], {"data": {"amount": 12, "note": "fixed"}})
    (new_event,) = new["event_ids"]
    assert new_event != event_id
    done = await wait_ended(stack, new["id"])
    assert done["output"] == {"amount": 12, "note": "fixed"}
    edited = (await stack.api.get(f"/v1/events/{new_event}")).json()["data"]
    assert (edited["name"], edited["data"], edited["id"]) == ("t/echo", {"amount": 12, "note": "fixed"}, new_event)
    assert (await stack.api.get(f"/v1/events/{event_id}")).json()["data"]["data"] == {"amount": 10}
    assert [r["id"] for r in await stack.runs_of(new_event)] == [new["id"]]  # it started nothing else


async def test_a_rerun_skips_the_idempotency_key_and_the_rate_limit(stack: Stack) -> None:
    @stack.client.function(id="once", trigger=ratchet.on_event("t/once"), idempotency="event.data.k",
                           rate_limit=ratchet.RateLimit(limit=1, period=timedelta(minutes=1)))
    async def fn(ctx: ratchet.Context) -> int:
        return int(ctx.event.data["k"])

    await stack.sync([fn])
    original = await stack.wait_run(await stack.send("t/once", {"k": 1}))
    assert await stack.runs_of(await stack.send("t/once", {"k": 1})) == []  # the key is taken
    done = await wait_ended(stack, (await rerun(stack, original["id"]))["id"])
    assert done["output"] == 1


async def test_bulk_replay_reruns_the_failed_runs_of_a_function(stack: Stack) -> None:
    app = {"broken": True}

    @stack.client.function(id="fragile", trigger=ratchet.on_event("t/fragile"), retries=0)
    async def fn(ctx: ratchet.Context) -> int:
        if app["broken"] and ctx.event.data["n"] % 2 == 0:
            raise ratchet.NonRetriableError("even numbers are broken")
        return int(ctx.event.data["n"])

    await stack.sync([fn])
    runs = {}
    for n in range(4):
        status = "FAILED" if n % 2 == 0 else "COMPLETED"
        runs[n] = await stack.wait_run(await stack.send("t/fragile", {"n": n}), status=status)
    body = {"function_id": "inproc-fragile"}
    dry = await stack.api.post("/v1/runs/replay", json=body | {"dry_run": True})
    assert dry.status_code == 200 and dry.json()["data"] | {"to": 0} == {"matched": 2, "replayed": 0, "to": 0}
    completed = await stack.api.post("/v1/runs/replay", json=body | {"dry_run": True, "status": ["completed"]})
    assert completed.json()["data"]["matched"] == 2
    early = await stack.api.post("/v1/runs/replay", json=body | {"dry_run": True, "to": runs[0]["created_at"]})
    assert early.json()["data"]["matched"] == 0  # `to` is exclusive
    assert (await get_run(stack, runs[0]["id"]))["reruns"] == []  # a dry run starts nothing

    app["broken"] = False
    resp = await stack.api.post("/v1/runs/replay", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"] | {"to": 0} == {"matched": 2, "replayed": 2, "not_replayed": [], "to": 0}
    for n in (0, 2):
        (rerun_id,) = (await get_run(stack, runs[n]["id"]))["reruns"]
        done = await wait_ended(stack, rerun_id)
        assert done["output"] == n and done["rerun_of"] == runs[n]["id"]
    for n in (1, 3):
        assert (await get_run(stack, runs[n]["id"]))["reruns"] == []


async def test_an_invoked_child_and_its_parent_link_to_each_other(stack: Stack) -> None:
    @stack.client.function(id="kid", trigger=ratchet.on_event("t/kid-unused"))
    async def kid(ctx: ratchet.Context) -> int:
        return int(ctx.event.data["x"]) + 1

    @stack.client.function(id="mum", trigger=ratchet.on_event("t/mum"))
    async def mum(ctx: ratchet.Context) -> int:
        first = await ctx.step.run("prep", lambda: 1)
        return await ctx.step.invoke("call-kid", function=kid, data={"x": first})  # type: ignore[no-any-return]

    await stack.sync([kid, mum])
    parent = await stack.wait_run(await stack.send("t/mum"))
    assert parent["output"] == 2
    steps = {s["id"]: s for s in parent["steps"]}
    assert "child_run_id" not in steps["prep"]
    child_id = steps["call-kid"]["child_run_id"]
    child = await wait_ended(stack, child_id)
    assert child["function_id"] == "inproc-kid" and child["output"] == 2
    assert child["invoked_by"] == {"run_id": parent["id"], "step": steps["call-kid"]["hash"]}
    assert parent["invoked_by"] is None
    # A rerun of the child is not started by the parent: it links to the child it reruns instead.
    again = await wait_ended(stack, (await rerun(stack, child_id))["id"])
    assert again["invoked_by"] is None and again["rerun_of"] == child_id
    assert (await get_run(stack, parent["id"]))["steps"][1]["child_run_id"] == child_id


async def test_rerun_and_replay_say_what_is_wrong_with_a_request(stack: Stack) -> None:
    @stack.client.function(id="plain", trigger=ratchet.on_event("t/plain"))
    async def fn(ctx: ratchet.Context) -> str:
        return await ctx.step.run("only", lambda: "x")  # type: ignore[no-any-return]

    @stack.client.function(id="batched", trigger=ratchet.on_event("t/batched"),
                           batch_events=ratchet.Batch(max_size=2, timeout=timedelta(seconds=60)))
    async def batched(ctx: ratchet.Context) -> int:
        return len(ctx.events)

    await stack.sync([fn, batched])
    run_id = (await stack.wait_run(await stack.send("t/plain")))["id"]
    url = f"/v1/runs/{run_id}/rerun"
    for content, needle in [(b"{nope", "not valid JSON"), (b"[1]", "JSON object")]:
        resp = await stack.api.post(url, content=content)
        assert resp.status_code == 400 and needle in resp.json()["error"], resp.text
    for body, needle in [({"from_step": 5}, "from_step"), ({"from_step": ""}, "from_step"),
                         ({"data": [1]}, "data: must be a JSON object"), ({"data": "x"}, "data"),
                         ({"from": "one"}, "unknown field 'from'"),
                         ({"from_step": "missing"}, "its step ids are 'only'")]:
        resp = await stack.api.post(url, json=body)
        assert resp.status_code == 400 and needle in resp.json()["error"], (body, resp.text)
    missing = await stack.api.post("/v1/runs/nope/rerun")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]

    # A batch of two events cannot take one edited `data`.
    first = await stack.send("t/batched", {"i": 1})
    await stack.send("t/batched", {"i": 2})
    batch_run = await stack.wait_run(first)
    resp = await stack.api.post(f"/v1/runs/{batch_run['id']}/rerun", json={"data": {"i": 3}})
    assert resp.status_code == 400 and "batch of 2 events" in resp.json()["error"], resp.text

    replay = "/v1/runs/replay"
    for body, needle in [({}, "function_id"), ({"function_id": 5}, "function_id"),
                         ({"function_id": "inproc-plain", "from": "yesterday"}, "from"),
                         ({"function_id": "inproc-plain", "to": [1]}, "to"),
                         ({"function_id": "inproc-plain", "from": 10, "to": 5}, "to: must be after from"),
                         ({"function_id": "inproc-plain", "dry_run": "yes"}, "dry_run"),
                         ({"function_id": "inproc-plain", "status": "QUEUED"}, "have ended"),
                         ({"function_id": "inproc-plain", "status": "BROKEN"}, "status"),
                         ({"function_id": "inproc-plain", "status": []}, "status"),
                         ({"function_id": "inproc-plain", "status": [1]}, "status"),
                         ({"function_id": "inproc-plain", "statuses": ["FAILED"]}, "unknown field 'statuses'"),
                         ({"function_id": "inproc-nope"}, "no function 'inproc-nope'")]:
        resp = await stack.api.post(replay, json=body)
        assert resp.status_code == 400 and needle in resp.json()["error"], (body, resp.text)
    resp = await stack.api.post(replay, content=b"not json")
    assert resp.status_code == 400 and "not valid JSON" in resp.json()["error"]

    # Once the app's last sync removed the function, its runs cannot be rerun: 409.
    @stack.client.function(id="other", trigger=ratchet.on_event("t/other"))
    async def other(ctx: ratchet.Context) -> None:
        return None

    await stack.sync([other])
    gone = await stack.api.post(url)
    assert gone.status_code == 409 and "no longer exists" in gone.json()["error"], gone.text
    gone = await stack.api.post(replay, json={"function_id": "inproc-plain", "dry_run": True})
    assert gone.status_code == 409 and "no longer exists" in gone.json()["error"], gone.text
