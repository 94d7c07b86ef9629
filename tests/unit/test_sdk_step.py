from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import ratchet
from ratchet import protocol
from ratchet.sdk import _replay, _serve
from ratchet.sdk.step import Step, StepSync

CLIENT = ratchet.Client(app_id="app", is_production=False, environ={})


def steps(memo: dict[str, Any] | None = None, **frame: Any) -> tuple[Step, StepSync]:
    make = lambda: _replay.Replay(_replay.CallFrame(memo=memo or {}, **frame))
    return Step(make(), CLIENT), StepSync(make(), CLIENT)


@pytest.mark.parametrize(("method", "args", "error", "fragment"), [
    ("run", ("", print), ValueError, "step.run(step_id=...)"),
    ("run", ("a", "not callable"), TypeError, "run(handler=...)"),
    ("sleep", ("a", -5), ValueError, "must not be negative"),
    ("sleep", ("a", timedelta(seconds=-1)), ValueError, "must not be negative"),
    ("sleep", ("a", 1.5), TypeError, "int milliseconds"),
    ("sleep", ("a", "1h"), TypeError, "int milliseconds"),
    ("sleep_until", ("a", "tomorrow"), TypeError, "expected a datetime"),
    ("send_event", ("a", {"name": "x"}), TypeError, "ratchet.Event"),
])
async def test_bad_step_arguments(method: str, args: tuple[Any, ...], error: type[Exception],
                                  fragment: str) -> None:
    async_step, sync_step = steps()
    with pytest.raises(error) as info:
        await getattr(async_step, method)(*args)
    assert fragment in str(info.value)
    with pytest.raises(error) as info:
        getattr(sync_step, method)(*args)
    assert fragment in str(info.value)


async def test_wait_and_invoke_opcodes() -> None:
    async_step, sync_step = steps()
    with pytest.raises(_replay.StopAndReport) as info:
        await async_step.wait_for_event("w", event="shop/paid", timeout=timedelta(hours=1),
                                        if_exp="event.data.id == async.data.id")
    (op,) = info.value.report.opcodes
    assert (op["op"], op["name"], op["opts"]) == ("WaitForEvent", "shop/paid",
                                                  {"if": "event.data.id == async.data.id", "timeout": "1h"})
    with pytest.raises(_replay.StopAndReport) as info:
        sync_step.invoke("i", function_id="child", data={"k": 1}, timeout=120_000)
    (op,) = info.value.report.opcodes
    assert op["op"] == "InvokeFunction"
    assert op["opts"] == {"function_id": "app-child", "payload": {"data": {"k": 1}, "v": None}, "timeout": "2m"}


async def test_memoized_wait_and_invoke_values() -> None:
    w, i = protocol.step_hash("w"), protocol.step_hash("i")
    event = {"name": "shop/paid", "data": {"id": 1}, "id": "e1", "ts": 5}
    async_step, sync_step = steps({w: event, i: {"data": {"ok": True}}})
    got = await async_step.wait_for_event("w", event="shop/paid", timeout=1000)
    assert got == ratchet.Event(name="shop/paid", data={"id": 1}, id="e1", ts=5)
    assert await async_step.invoke("i", function_id="child") == {"ok": True}
    assert sync_step.wait_for_event("w", event="shop/paid", timeout=1000) == got

    timed_out, _ = steps({w: None})
    assert await timed_out.wait_for_event("w", event="shop/paid", timeout=1000) is None


async def test_sleep_until_naive_is_utc_and_memo_returns_none() -> None:
    async_step, _ = steps()
    with pytest.raises(_replay.StopAndReport) as info:
        await async_step.sleep_until("s", datetime(2030, 1, 1, 12))
    assert info.value.report.opcodes[0]["name"] == "2030-01-01T12:00:00.000Z"
    done, _ = steps({protocol.step_hash("s"): None})
    assert await done.sleep_until("s", datetime(2030, 1, 1, tzinfo=UTC)) is None


def test_sync_step_rejects_coroutine_handlers() -> None:
    async def handler() -> None: ...

    _, sync_step = steps()
    with pytest.raises(TypeError, match="async def"):
        sync_step.run("a", handler)


def test_serve_rejects_duplicate_or_foreign_functions() -> None:
    client = ratchet.Client(app_id="app", is_production=False, environ={})
    fn = client.function(id="f", trigger=ratchet.on_event("a/b"))(lambda ctx: None)
    with pytest.raises(ValueError, match="defined twice"):
        _serve.ServeHandler(client, [fn, fn], framework="test")
    with pytest.raises(TypeError, match=r"@client\.function"):
        _serve.ServeHandler(client, [lambda ctx: None], framework="test")  # type: ignore[list-item]
