from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

import ratchet
from ratchet import protocol

URL = "http://app.test/api/inngest"


def client() -> ratchet.Client:
    return ratchet.Client(app_id="probe-app", is_production=False, environ={})


def configs(fn: ratchet.Function[Any]) -> list[dict[str, Any]]:
    return fn.configs("probe-app", URL)


def test_full_config_matches_the_wire_shape() -> None:
    async def on_fail(ctx: ratchet.Context) -> None: ...

    @client().function(
        id="two-steps", name="Two Steps", retries=2,
        trigger=ratchet.on_event("app/two", if_exp="event.data.x > 1"),
        cancel=[ratchet.Cancel(event="app/cancel", if_exp="event.data.id == async.data.id",
                               timeout=timedelta(days=1))],
        concurrency=[ratchet.Concurrency(limit=2, key="event.data.user", scope="fn")],
        debounce=ratchet.Debounce(period=timedelta(seconds=5), key="event.data.user", timeout=timedelta(minutes=1)),
        idempotency="event.data.id",
        priority=ratchet.Priority(run="event.data.prio"),
        rate_limit=ratchet.RateLimit(limit=10, period=timedelta(hours=1), key="event.data.user"),
        throttle=ratchet.Throttle(limit=5, period=timedelta(minutes=1), key="event.data.user", burst=2),
        timeouts=ratchet.Timeouts(start=timedelta(seconds=30), finish="5m"),
        on_failure=on_fail,
    )
    async def two_steps(ctx: ratchet.Context) -> None: ...

    main, failure = configs(two_steps)
    assert main == {
        "id": "probe-app-two-steps",
        "name": "Two Steps",
        "triggers": [{"event": "app/two", "expression": "event.data.x > 1"}],
        "steps": {"step": {"id": "step", "name": "step", "retries": {"attempts": 2},
                           "runtime": {"type": "http", "url": f"{URL}?fnId=probe-app-two-steps&stepId=step"}}},
        "cancel": [{"event": "app/cancel", "if": "event.data.id == async.data.id", "timeout": "1d"}],
        "concurrency": [{"key": "event.data.user", "limit": 2, "scope": "fn"}],
        "debounce": {"key": "event.data.user", "period": "5s", "timeout": "1m"},
        "idempotency": "event.data.id",
        "priority": {"run": "event.data.prio"},
        "rateLimit": {"key": "event.data.user", "limit": 10, "period": "1h"},
        "throttle": {"key": "event.data.user", "limit": 5, "period": "1m", "burst": 2},
        "timeouts": {"start": "30s", "finish": "5m"},
    }
    assert failure == {
        "id": "probe-app-two-steps-failure",
        "name": "Two Steps (failure)",
        "triggers": [{"event": "inngest/function.failed",
                      "expression": "event.data.function_id == 'probe-app-two-steps'"}],
        "steps": {"step": {"id": "step", "name": "step", "retries": {"attempts": 0},
                           "runtime": {"type": "http",
                                       "url": f"{URL}?fnId=probe-app-two-steps-failure&stepId=step"}}},
    }
    # The server's model reads both back, with the same retries.
    assert protocol.FunctionConfig.model_validate(main).max_attempts() == 3
    assert protocol.FunctionConfig.model_validate(failure).max_attempts() == 1


def test_cron_batch_singleton_and_defaults() -> None:
    @client().function(
        id="batch-cron",
        trigger=[ratchet.on_cron("*/5 * * * *"), ratchet.on_event("app/batch")],
        batch_events=ratchet.Batch(max_size=10, timeout=timedelta(seconds=5), key="event.data.user"),
        singleton=ratchet.Singleton(key="event.data.user", mode="skip"),
    )
    def batch_cron(ctx: ratchet.Context) -> None: ...

    (cfg,) = configs(batch_cron)
    assert cfg["name"] == "batch-cron"
    assert cfg["triggers"] == [{"cron": "*/5 * * * *"}, {"event": "app/batch"}]
    assert cfg["batchEvents"] == {"maxSize": 10, "timeout": "5s", "key": "event.data.user"}
    assert cfg["singleton"] == {"key": "event.data.user", "mode": "skip"}
    assert "retries" not in cfg["steps"]["step"]
    assert protocol.FunctionConfig.model_validate(cfg).max_attempts() == 5  # server default: 4 retries
    assert not batch_cron.is_async


def noop(ctx: ratchet.Context) -> None: ...


@pytest.mark.parametrize(("kwargs", "error", "fragment"), [
    ({"id": "", "trigger": ratchet.on_event("a")}, ValueError, "function(id=...)"),
    ({"id": "has space", "trigger": ratchet.on_event("a")}, ValueError, "without spaces"),
    ({"id": "f", "trigger": "app/event"}, TypeError, "function(trigger=...)"),
    ({"id": "f", "trigger": []}, ValueError, "at least one trigger"),
    ({"id": "f", "trigger": ratchet.on_event("a"), "retries": 21}, ValueError, "retries"),
    ({"id": "f", "trigger": ratchet.on_event("a"), "retries": -1}, ValueError, "retries"),
    ({"id": "f", "trigger": ratchet.on_event("a"), "concurrency": [ratchet.Concurrency(limit=1)] * 3},
     ValueError, "at most 2"),
    ({"id": "f", "trigger": ratchet.on_event("a"), "concurrency": ratchet.Concurrency(limit=0)},
     ValueError, "concurrency.limit"),
    ({"id": "f", "trigger": ratchet.on_event("a"), "concurrency": ratchet.Concurrency(limit=1, scope="x")},  # type: ignore[arg-type]
     ValueError, "concurrency.scope"),
    ({"id": "f", "trigger": ratchet.on_event("a"), "throttle": ratchet.Throttle(limit=1, period=timedelta(0))},
     ValueError, "throttle.period: must be positive"),
    ({"id": "f", "trigger": ratchet.on_event("a"), "debounce": ratchet.Debounce(period="soon")},
     ValueError, "debounce.period"),
    ({"id": "f", "trigger": ratchet.on_event("a"), "singleton": ratchet.Singleton(mode="drop")},  # type: ignore[arg-type]
     ValueError, "singleton.mode"),
    ({"id": "f", "trigger": ratchet.on_event("a"), "throttle": ratchet.RateLimit(limit=1, period="1m")},
     TypeError, "function(throttle=...)"),
    ({"id": "f", "trigger": ratchet.on_event("a"), "on_failure": "nope"}, TypeError, "on_failure"),
])
def test_bad_function_arguments(kwargs: dict[str, Any], error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=None) as info:
        client().function(**kwargs)(noop)
    assert fragment in str(info.value)


def test_on_failure_must_match_async_ness() -> None:
    async def handler(ctx: ratchet.Context) -> None: ...

    with pytest.raises(TypeError, match="on_failure must be async"):
        client().function(id="f", trigger=ratchet.on_event("a"), on_failure=noop)(handler)


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda: ratchet.on_event(""), "on_event(event=...)"),
    (lambda: ratchet.on_event("a", if_exp=""), "on_event(if_exp=...)"),
    (lambda: ratchet.on_cron("every day"), "on_cron(cron=...)"),
    (lambda: ratchet.on_cron("* * * *"), "on_cron(cron=...)"),
    (lambda: ratchet.Event(name=""), "Event.name"),
    (lambda: ratchet.Event(name="a", data=[1]), "Event.data"),  # type: ignore[arg-type]
    (lambda: ratchet.Event(name="a", ts=-1), "Event.ts"),
    (lambda: ratchet.Client(app_id=""), "Client(app_id=...)"),
    (lambda: ratchet.Client(app_id="a", api_base_url="ftp://x"), "api_base_url"),
    (lambda: ratchet.Client(app_id="a", signing_key="signkey-prod-zz"), "signing_key"),
    (lambda: ratchet.RetryAfterError("x", timedelta(seconds=-1)), "retry_after"),
    (lambda: ratchet.RetryAfterError("x", "soon"), "retry_after"),  # type: ignore[arg-type]
])
def test_bad_public_arguments(make: Any, fragment: str) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        make()
    assert fragment in str(info.value)


def test_good_triggers() -> None:
    assert ratchet.on_cron("TZ=Europe/Paris 0 9 * * 1").to_wire() == {"cron": "TZ=Europe/Paris 0 9 * * 1"}
    assert ratchet.on_cron("0 * * * *", jitter=timedelta(seconds=30)).to_wire() == {"cron": "0 * * * *",
                                                                                     "jitter": "30s"}
    assert ratchet.on_event("shop/*").to_wire() == {"event": "shop/*"}


@pytest.mark.parametrize("variant", ["full", "minimal"])
def test_config_matches_the_official_sdk(variant: str) -> None:
    """The same function declared with the official SDK (inngest 0.5.19) syncs the same config."""
    inngest = pytest.importorskip("inngest")
    from inngest._internal import transforms

    official = inngest.Inngest(app_id="probe-app", is_production=False)
    ours = client()
    kw_theirs: dict[str, Any] = {}
    kw_ours: dict[str, Any] = {}
    if variant == "full":
        kw_theirs = {
            "name": "Full", "retries": 3,
            "trigger": [inngest.TriggerCron(cron="TZ=Europe/Paris 0 9 * * 1", jitter="30s"),
                     inngest.TriggerEvent(event="app/go", expression="event.data.x > 1")],
            "cancel": [inngest.Cancel(event="app/cancel", if_exp="event.data.id == async.data.id",
                                   timeout=timedelta(days=1)),
                    inngest.Cancel(event="app/stop")],
            "timeouts": inngest.Timeouts(start=timedelta(seconds=90), finish=timedelta(hours=2)),
            "batch_events": inngest.Batch(max_size=5, timeout=timedelta(seconds=5), key="event.data.k",
                                       if_exp="event.data.ok"),
            "debounce": inngest.Debounce(period=timedelta(minutes=1), key="event.data.k"),
            "throttle": inngest.Throttle(limit=2, period=timedelta(weeks=1)),
            "concurrency": [inngest.Concurrency(limit=1, key="event.data.k", scope="env")],
            "singleton": inngest.Singleton(mode="cancel"),
        }
        kw_ours = {
            "name": "Full", "retries": 3,
            "trigger": [ratchet.on_cron("TZ=Europe/Paris 0 9 * * 1", jitter="30s"),
                     ratchet.on_event("app/go", if_exp="event.data.x > 1")],
            "cancel": [ratchet.Cancel(event="app/cancel", if_exp="event.data.id == async.data.id",
                                   timeout=timedelta(days=1)),
                    ratchet.Cancel(event="app/stop")],
            "timeouts": ratchet.Timeouts(start=timedelta(seconds=90), finish="2h"),
            "batch_events": ratchet.Batch(max_size=5, timeout=timedelta(seconds=5), key="event.data.k",
                                       if_exp="event.data.ok"),
            "debounce": ratchet.Debounce(period=timedelta(minutes=1), key="event.data.k"),
            "throttle": ratchet.Throttle(limit=2, period=timedelta(weeks=1)),
            "concurrency": [ratchet.Concurrency(limit=1, key="event.data.k", scope="env")],
            "singleton": ratchet.Singleton(mode="cancel"),
        }
    else:
        kw_theirs = {"trigger": inngest.TriggerCron(cron="*/5 * * * *"),
                         "timeouts": inngest.Timeouts(finish=timedelta(minutes=5))}
        kw_ours = {"trigger": ratchet.on_cron("*/5 * * * *"), "timeouts": ratchet.Timeouts(finish=timedelta(minutes=5))}

    def handler(ctx: Any) -> None: ...

    theirs = official.create_function(fn_id="fn", **kw_theirs)(handler).get_config(URL).main
    expected = transforms.deep_strip_none(theirs.to_dict())
    (got,) = configs(ours.function(id="fn", **kw_ours)(handler))
    # The official SDK always sends `cancel` and `concurrency`, even empty; Ratchet leaves empty lists out.
    for key in ("cancel", "concurrency"):
        if expected.get(key) == []:
            del expected[key]
    assert got == expected
