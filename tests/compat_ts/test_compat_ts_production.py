"""The official TypeScript SDK (`inngest` on npm, served by `inngest/node`), unmodified, in production mode
against `ratchet start`: the server signs its calls and verifies the SDK's signed replies, the SDK's sync
carries the signing key's bearer token, and events need the event key.

The app is tests/compat_ts/app.js with INNGEST_DEV=0, INNGEST_SIGNING_KEY and INNGEST_EVENT_KEY (see
`TsProdStack` in conftest.py). `ratchet start` has no `--retry-interval`, so the retries shown here are the
one the SDK asks for with a `RetryAfterError` (1 s) thrown by the function; plain retries, and the TS SDK's
step errors (it sends no `retry-after` for a `RetryAfterError` inside `step.run`), back off 15 s and more.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from pathlib import Path

import httpx
import pytest

from ratchet import protocol
from tests import harness
from tests.compat_ts import conftest
from tests.harness import wait_run, wait_runs_for_event, wait_until

pytestmark = pytest.mark.compat

SDK_VERSION = json.loads((Path(__file__).parent / "package.json").read_text())["dependencies"]["inngest"]
#: A key the server never had, and one it still accepts from SDKs (`--signing-key-fallback`) but no
#: longer signs with: an app left on a retired key.
WRONG_KEY = "signkey-prod-" + "ba" * 32
RETIRED_KEY = "signkey-prod-" + "01" * 32


def _uid() -> str:
    return uuid.uuid4().hex


def _send(api: harness.Api, name: str, data: dict | None = None) -> str:
    (event_id,) = api.send({"name": name, "data": data or {}}, key=conftest.EVENT_KEY)
    (run_id,) = wait_runs_for_event(api, event_id)
    return run_id


def _steps(run: dict) -> dict[str, dict]:
    return {s["id"]: s for s in run["steps"]}


def _bearer(key: str) -> dict[str, str]:
    """The bearer the TS SDK sends: `signkey-prod-` + sha256 of the hex-decoded key."""
    return {"authorization": f"Bearer signkey-prod-{protocol.hashed_signing_key(key)}"}


def test_sync_needs_the_bearer_and_the_sdk_checks_our_signatures(ts_prod) -> None:
    api, app_url = ts_prod.api, ts_prod.app.url
    apps = {a["name"]: a for a in api.http.get("/v1/apps").json()["data"]}
    for name in ("compat-ts", "compat-ts-stream"):
        assert apps[name]["sdk"] == f"js:v{SDK_VERSION}" and apps[name]["error"] is None, apps[name]
    # The sync at start-up went through, so the SDK's POST /fn/register carried the signing key's bearer:
    # without one, or with another key's, the server refuses it.
    server = ts_prod.server.url
    assert httpx.post(f"{server}/fn/register", content=b"{}").status_code == 401
    assert httpx.post(f"{server}/fn/register", content=b"{}", headers=_bearer(WRONG_KEY)).status_code == 401
    # A re-sync through the API: the server's PUT is signed, the SDK registers again (unchanged).
    resync = api.http.post("/v1/apps/sync", json={"url": app_url})
    assert resync.status_code == 200 and resync.json()["data"] == [{"url": app_url, "ok": True, "modified": False}]

    # The SDK in production mode refuses unsigned calls and ones signed with another key ...
    assert httpx.get(app_url).status_code == 401
    assert httpx.get(app_url, headers={protocol.Header.SIGNATURE: protocol.sign(b"", WRONG_KEY)}).status_code == 401
    call = httpx.post(f"{app_url}?fnId=compat-ts-two-steps&stepId=step", content=b"{}")
    assert call.status_code == 401
    # ... accepts ours, and signs its reply with the same key.
    signed = httpx.get(app_url, headers={protocol.Header.SIGNATURE: protocol.sign(b"", conftest.SIGNING_KEY)})
    assert signed.status_code == 200, signed.text
    assert protocol.verify_signature(signed.content, signed.headers.get(protocol.Header.SIGNATURE),
                                     [conftest.SIGNING_KEY])
    info = signed.json()
    assert info["mode"] == "cloud" and info["authentication_succeeded"] is True, info
    assert info["signing_key_hash"] == protocol.hashed_signing_key(conftest.SIGNING_KEY)[:12], info
    assert info["event_key_hash"] == hashlib.sha256(conftest.EVENT_KEY.encode()).hexdigest(), info
    assert info["api_origin"].rstrip("/") == server and info["event_api_origin"].rstrip("/") == server, info
    # The trust probe (a signed POST), as the server would send it.
    body = protocol.canonical_json({})
    probe = httpx.post(f"{app_url}?probe=trust", content=body,
                       headers={protocol.Header.SIGNATURE: protocol.sign(body, conftest.SIGNING_KEY),
                                "content-type": "application/json"})
    assert probe.status_code == 200, probe.text
    assert protocol.verify_signature(probe.content, probe.headers.get(protocol.Header.SIGNATURE),
                                     [conftest.SIGNING_KEY])


def test_events_need_the_event_key(ts_prod) -> None:
    refused = httpx.post(f"{ts_prod.server.url}/e/not-the-key", json={"name": "ts/two-steps", "data": {}})
    assert refused.status_code == 401, refused.text
    refused = httpx.post(f"{ts_prod.server.url}/e/{conftest.EVENT_KEY[:-1]}", json={"name": "ts/two-steps"})
    assert refused.status_code == 401, refused.text


def test_every_primitive_runs_signed(ts_prod) -> None:
    api = ts_prod.api
    waiter_id, sent_id = _uid(), _uid()
    # Start them all at once; each checks out below.
    two = _send(api, "ts/two-steps", {"x": "p"})
    sleep = _send(api, "ts/sleep")
    wait = _send(api, "ts/wait-start", {"id": waiter_id})
    invoke = _send(api, "ts/invoke-parent", {"n": 4})
    sender = _send(api, "ts/sender", {"id": sent_id})
    retry_fn = _send(api, "ts/retry-after")
    parallel = _send(api, "ts/parallel")
    stream = _send(api, "ts-stream/two-steps", {"x": "s"})
    checkpointed = _send(api, "ts/checkpointed")

    def waiting() -> bool:
        step = _steps(api.run(wait)).get("wait")
        return step is not None and step["status"] == "waiting"

    wait_until(waiting, 10, f"run {wait} to wait for its event")
    api.send({"name": "ts/wait-done", "data": {"id": waiter_id, "n": 1}}, key=conftest.EVENT_KEY)

    assert wait_run(api, two, "COMPLETED")["output"] == {"a": "p-a", "b": {"prev": "p-a", "b": 2}}
    run = wait_run(api, sleep, "COMPLETED")
    assert run["output"] == "after" and [s["id"] for s in run["steps"]] == ["before", "nap", "after"]
    nap = _steps(run)["nap"]
    assert nap["ended_at"] - nap["started_at"] >= 900, nap
    assert wait_run(api, wait, "COMPLETED")["output"] == {"id": waiter_id, "n": 1}
    assert wait_run(api, invoke, "COMPLETED")["output"] == {"child": {"doubled": 8, "name": "inngest/function.invoked"}}
    # step.sendEvent: the SDK itself posts the event with its event key, and it starts a run.
    (new_event,) = wait_run(api, sender, "COMPLETED")["output"]["ids"]
    (on_sent,) = wait_runs_for_event(api, new_event)
    assert wait_run(api, on_sent, "COMPLETED")["output"] == {"got": sent_id}
    # A retry: the signed 500 with `retry-after: 1` counts as the app's answer, and attempt 2 succeeds.
    run = wait_run(api, retry_fn, "COMPLETED")
    assert run["output"] == "done" and ts_prod.count(retry_fn, "body") == 2
    assert run["ended_at"] - run["started_at"] >= 900, run
    assert wait_run(api, parallel, "COMPLETED")["output"] == {"a": "A", "b": "B", "c": "AB"}
    # Streaming (201 + keep-alive, then the signed reply inside) and checkpointing (its API refused in
    # production, so the SDK falls back to a 206 with the steps and RunComplete).
    assert wait_run(api, stream, "COMPLETED")["output"] == {"a": "s-a", "b": "s-a-b"}
    assert wait_run(api, checkpointed, "COMPLETED", timeout=20)["output"] == {"b": "AB"}


def test_an_app_with_a_wrong_signing_key_is_refused(tmp_path: Path) -> None:
    conftest.require_node()
    counts = tmp_path / "counts"
    counts.mkdir()
    server = harness.ServerProcess(tmp_path / "ratchet.db", tmp_path / "server.log", retry_interval=None,
                                   command="start",
                                   extra_args=conftest.prod_server_args(conftest.SIGNING_KEY, "--signing-key-fallback",
                                                                        RETIRED_KEY))
    wrong = harness.NodeAppProcess(conftest.APP, tmp_path / "wrong.log",
                                   env=conftest.prod_app_env(server.url, counts, signing_key=WRONG_KEY))
    retired = harness.NodeAppProcess(conftest.APP, tmp_path / "retired.log",
                                     env=conftest.prod_app_env(server.url, counts, signing_key=RETIRED_KEY))
    api = harness.Api(server.url, token=conftest.API_TOKEN)
    try:
        for proc in (server, wrong, retired):
            proc.launch()
        for proc in (server, wrong, retired):
            proc.wait_ready()
        # Sync: the app answers our PUT by registering with its own key's bearer; the server refuses that
        # with 401 and the app passes the status on, so the sync fails naming it.
        resp = api.http.post("/v1/apps/sync", json={"url": wrong.url})
        assert resp.status_code == 502, resp.text
        (result,) = resp.json()["data"]
        assert result["ok"] is False and "status 401" in result["error"] and "bearer" in result["error"], result
        assert api.functions() == []

        # An app on the retired key syncs (the server still accepts that key's bearer), but it cannot
        # verify the calls the server signs with its current key: it answers 401 unsigned, and the server
        # takes that reply as a failed call, not as the app's answer.
        resp = api.http.post("/v1/apps/sync", json={"url": retired.url})
        assert resp.status_code == 200, resp.text
        run_id = _send(api, "ts/failing-child-direct")  # retries: 0, so the first failed call ends the run
        run = wait_run(api, run_id, "FAILED")
        assert run["output"]["name"] == "CallError", run
        assert "(status 401) has no valid signature" in run["output"]["message"], run
        assert "Signature validation failed" in retired.log_path.read_text()
    finally:
        with contextlib.suppress(Exception):
            api.close()
        for proc in (server, wrong, retired):
            proc.stop()
