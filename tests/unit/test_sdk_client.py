from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

import ratchet
import ratchet.sdk
from ratchet import protocol


@pytest.mark.parametrize(("kwargs", "environ", "production", "api", "events"), [
    ({}, {}, True, "https://api.inngest.com/", "https://inn.gs/"),
    ({}, {"INNGEST_DEV": "1"}, False, "http://127.0.0.1:8288/", "http://127.0.0.1:8288/"),
    ({}, {"INNGEST_DEV": "false"}, True, "https://api.inngest.com/", "https://inn.gs/"),
    ({}, {"INNGEST_DEV": "0"}, True, "https://api.inngest.com/", "https://inn.gs/"),
    ({}, {"INNGEST_DEV": "http://ratchet:9000"}, False, "http://ratchet:9000/", "http://ratchet:9000/"),
    ({}, {"INNGEST_DEV": "localhost:9000"}, False, "http://localhost:9000/", "http://localhost:9000/"),
    ({"is_production": False}, {"INNGEST_DEV": "0"}, False, "http://127.0.0.1:8288/", "http://127.0.0.1:8288/"),
    ({"is_production": True}, {"INNGEST_DEV": "1"}, True, "https://api.inngest.com/", "https://inn.gs/"),
    # precedence: argument > specific variable > INNGEST_BASE_URL > INNGEST_DEV URL > default
    ({}, {"INNGEST_DEV": "http://dev:1", "INNGEST_BASE_URL": "http://base:2"}, False, "http://base:2/",
     "http://base:2/"),
    ({}, {"INNGEST_BASE_URL": "http://base:2", "INNGEST_API_BASE_URL": "http://api:3",
          "INNGEST_EVENT_API_BASE_URL": "http://ev:4"}, True, "http://api:3/", "http://ev:4/"),
    ({"api_base_url": "http://arg:5"}, {"INNGEST_API_BASE_URL": "http://api:3"}, True, "http://arg:5/",
     "https://inn.gs/"),
])
def test_mode_and_urls(kwargs: dict[str, Any], environ: dict[str, str], production: bool, api: str,
                       events: str) -> None:
    client = ratchet.Client(app_id="a", environ=environ, **kwargs)
    assert client.is_production is production
    assert client.mode == ("cloud" if production else "dev")
    assert (client.api_origin, client.event_api_origin) == (api, events)


def test_keys_env_and_serve_settings_from_environment() -> None:
    client = ratchet.Client(app_id="a", environ={
        "INNGEST_SIGNING_KEY": "signkey-prod-aa", "INNGEST_SIGNING_KEY_FALLBACK": "signkey-prod-bb",
        "INNGEST_EVENT_KEY": "ek", "RENDER_GIT_BRANCH": "feature", "INNGEST_SERVE_ORIGIN": "example.com",
        "INNGEST_SERVE_PATH": "/hooks/ratchet"})
    assert (client.signing_key, client.signing_key_fallback, client.event_key) == (
        "signkey-prod-aa", "signkey-prod-bb", "ek")
    assert client.env == "feature"
    assert client.serve_origin == "https://example.com"
    assert client.serve_path == "/hooks/ratchet"


def fake_event_api(status: int = 200, body: bytes | None = None) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        n = len(orjson.loads(request.content))
        content = body if body is not None else orjson.dumps({"ids": [f"id{i}" for i in range(n)], "status": 200})
        return httpx.Response(status, content=content)

    return httpx.MockTransport(handle), seen


async def test_send_posts_an_array_and_returns_ids() -> None:
    transport, seen = fake_event_api()
    client = ratchet.Client(app_id="a", is_production=True, event_key="ek", env="staging", transport=transport,
                            environ={})
    ids = await client.send([ratchet.Event(name="a/b", data={"x": 1}), ratchet.Event(name="a/c", id="i", ts=5)])
    assert ids == ["id0", "id1"]
    (req,) = seen
    assert str(req.url) == "https://inn.gs/e/ek"
    body = orjson.loads(req.content)
    assert body[0]["name"] == "a/b" and body[0]["data"] == {"x": 1} and "id" not in body[0]
    assert isinstance(body[0]["ts"], int) and body[0]["ts"] > 0
    assert body[1] == {"name": "a/c", "data": {}, "id": "i", "ts": 5}
    assert req.headers["x-inngest-sdk"] == "ratchet-py:v0.1.0"
    assert req.headers["x-inngest-env"] == "staging"
    ms, seed = req.headers["x-inngest-event-id-seed"].split(",")
    assert int(ms) > 0 and len(seed) == 16  # base64 of 10 bytes

    assert client.send_sync(ratchet.Event(name="a/b")) == ["id0"]
    assert str(seen[1].url) == "https://inn.gs/e/ek"


async def test_send_in_dev_uses_the_dev_key() -> None:
    transport, seen = fake_event_api()
    client = ratchet.Client(app_id="a", is_production=False, transport=transport, environ={})
    await client.send(ratchet.Event(name="a/b"))
    assert seen[0].url.path == "/e/NO_EVENT_KEY_SET"


async def test_send_errors() -> None:
    transport, _ = fake_event_api(400, orjson.dumps({"ids": ["ok1"], "status": 400, "error": "bad name"}))
    client = ratchet.Client(app_id="a", is_production=False, transport=transport, environ={})
    with pytest.raises(ratchet.SendEventsError) as info:
        await client.send(ratchet.Event(name="a/b"))
    assert info.value.ids == ["ok1"] and "bad name" in str(info.value)

    transport, seen = fake_event_api(400, b"<html>")
    client = ratchet.Client(app_id="a", is_production=False, transport=transport, environ={})
    with pytest.raises(ratchet.SendEventsError, match="non-JSON"):
        client.send_sync(ratchet.Event(name="a/b"))
    assert len(seen) == 1  # 4xx is never retried

    with pytest.raises(ratchet.EventKeyMissingError):
        await ratchet.Client(app_id="a", is_production=True, environ={}).send(ratchet.Event(name="a/b"))
    with pytest.raises(ValueError, match="at least one event"):
        await client.send([])
    with pytest.raises(TypeError, match=r"ratchet\.Event"):
        await client.send({"name": "a/b"})  # type: ignore[arg-type]


def test_retry_after_forms() -> None:
    at = datetime(2030, 1, 1, tzinfo=UTC)
    assert ratchet.RetryAfterError("x", at).retry_at == at
    assert ratchet.RetryAfterError("x", datetime(2030, 1, 1)).retry_at == at  # naive = UTC
    soon = ratchet.RetryAfterError("x", 1500).retry_at - datetime.now(UTC)
    assert timedelta(seconds=1) < soon <= timedelta(seconds=1.5)


def test_public_surface_is_pinned() -> None:
    assert sorted(ratchet.sdk.__all__) == sorted([
        "SDK_VERSION", "Batch", "Cancel", "Client", "Concurrency", "Context", "Debounce", "Event",
        "EventKeyMissingError", "Function", "FunctionFailure", "Group", "GroupSync", "NonRetriableError",
        "ParallelMode", "Priority", "RateLimit", "RatchetError",
        "RegistrationError", "RetryAfterError", "SendEventsError", "SigningKeyMissingError", "Singleton", "Step",
        "StepError", "StepSync", "Throttle", "Timeouts", "TriggerCron", "TriggerEvent", "on_cron", "on_event",
    ])
    for name in ratchet.sdk.__all__:
        assert getattr(ratchet, name) is getattr(ratchet.sdk, name)
    assert set(ratchet.__all__) == {*ratchet.sdk.__all__, "__version__"}
    assert ratchet.__version__ == ratchet.SDK_VERSION == "0.1.0"
    assert protocol.DEV_EVENT_KEY == "NO_EVENT_KEY_SET"


def test_sdk_imports_neither_server_nor_frameworks() -> None:
    code = (
        "import sys, ratchet, ratchet.sdk\n"
        "bad = [m for m in sys.modules if m.startswith('ratchet.server') or m.split('.')[0] in ('fastapi', 'flask')]\n"
        "import ratchet.sdk.fastapi, ratchet.sdk.flask\n"
        "bad += [m for m in sys.modules if m.startswith('ratchet.server')]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
