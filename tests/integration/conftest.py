"""In-process server fixtures for the HTTP API tests.

- `server_app`: the Starlette app with its lifespan entered (store, scheduler, executor running),
  on a fresh SQLite file under `tmp_path`.
- `api`: an `httpx.AsyncClient` talking to `server_app` through `ASGITransport` (no ports).
- `seed`: a `Seeder` that writes apps, events and runs straight through the store, so read-side
  tests need no real app. Seeded runs never reach the scheduler (see `Seeder.run`).
- `wait_until(predicate, timeout=...)`: poll a sync or async condition until it holds or a deadline.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from ratchet import protocol
from ratchet.server import config as config_mod
from ratchet.server import ids
from ratchet.server import services as services_mod
from ratchet.server.app import create_app
from ratchet.server.store import base
from tests.contract.conftest import pg_template  # noqa: F401 - the template database, for `stack`
from tests.integration import inprocess

#: Where seeded apps "live": a port nothing listens on.
DEAD_URL = "http://127.0.0.1:9/api/inngest"


async def wait_until(predicate: Callable[[], Any | Awaitable[Any]], timeout: float = 5.0, *,
                     interval: float = 0.01, message: str = "condition") -> Any:
    """Poll `predicate` (sync or async) until it returns something truthy, and return that.

    Raises AssertionError naming `message` when `timeout` seconds pass first.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message} (last value {result!r})")
        await asyncio.sleep(interval)


@dataclasses.dataclass(frozen=True, slots=True)
class SeedStep:
    """A step to record on a seeded run; `memo` is what the store keeps (reference §2.2)."""

    name: str
    memo: Any
    status: base.StepStatus = base.StepStatus.COMPLETED
    op: str = protocol.Opcode.STEP_RUN.value
    index: int = 0  #: the n-th repeat of `name`
    ended_at: int | None = None  #: defaults to the start time (sleeps: when they wake)


def ok(name: str, data: Any, index: int = 0) -> SeedStep:
    return SeedStep(name, {"data": data}, index=index)


def failed(name: str, message: str, err_name: str = "Error", stack: str | None = "Traceback ...") -> SeedStep:
    return SeedStep(name, {"error": {"name": err_name, "message": message, "stack": stack}},
                    status=base.StepStatus.FAILED, op=protocol.Opcode.STEP_ERROR.value)


def sleep(name: str, wake_at: int) -> SeedStep:
    return SeedStep(name, None, status=base.StepStatus.SLEEPING, op=protocol.Opcode.SLEEP.value, ended_at=wake_at)


class Seeder:
    """Writes test data through the store, as the engine would."""

    #: Seeded runs' first queue items are due this far ahead, so the scheduler leaves them alone.
    FAR_MS = 10 * 365 * 24 * 3600 * 1000

    def __init__(self, svc: services_mod.Services) -> None:
        self.svc = svc
        self.store = svc.store
        self._counter = itertools.count(1)
        self._far = protocol.now_ms() + self.FAR_MS  # fixed, so each later seeded run is due strictly earlier

    async def app(self, name: str = "shop", functions: dict[str, str] | None = None, *,
                  url: str = DEAD_URL) -> base.AppRecord:
        """Sync an app whose functions (`{fn_id: event trigger}`) are then live for triggering."""
        fns = functions if functions is not None else {"on-order": "shop/order.created"}
        now = protocol.now_ms()
        records = []
        for fn_id, trigger in fns.items():
            slug = f"{name}-{fn_id}"
            fn_url = f"{url}?fnId={slug}&stepId=step"
            config = protocol.FunctionConfig(
                id=slug, name=fn_id, triggers=[protocol.TriggerConfig(event=trigger)],
                steps={"step": protocol.StepConfig(runtime=protocol.RuntimeConfig(url=fn_url))})
            records.append(base.FunctionRecord(slug=slug, app_id="", name=fn_id, config=config, url=fn_url))
        app = base.AppRecord(id=str(uuid.uuid4()), name=name, url=url, sdk="py:v0.5.19", framework="fast_api",
                             checksum=uuid.uuid4().hex, synced_at=now)
        stored, _ = await self.store.sync_app(app, [dataclasses.replace(r, app_id=app.id) for r in records])
        await self.svc.functions.reload()
        return stored

    async def event(self, name: str = "shop/order.created", data: dict[str, Any] | None = None, *,
                    event_id: str | None = None, ts: int | None = None) -> base.EventRecord:
        """Store an event without starting runs."""
        now = protocol.now_ms()
        internal = ids.new_ulid(now)
        ev = base.EventRecord(internal_id=internal, id=event_id or internal, name=name, data=data or {},
                              ts=ts if ts is not None else now, received_at=now)
        await self.store.ingest([ev], [], now)
        return ev

    async def run(self, function_slug: str = "shop-on-order", *, event: base.EventRecord | None = None,
                  steps: Iterable[SeedStep] = (), finish: protocol.RunStatus | None = None, output: Any = None,
                  error: str | None = None, running: bool = False) -> base.RunRecord:
        """Create a run triggered by `event` (a fresh one by default), then record `steps` and `finish` it.

        With no steps, no finish and `running=False` the run stays QUEUED. The run's queue item is due
        far in the future (each seeded run a little earlier than the last), so the scheduler never
        claims it; when there is something to record we claim it ourselves and apply the commands.
        """
        ev = event or await self.event()
        now = protocol.now_ms()
        run_id = ids.new_ulid(now)
        due_at = self._far - next(self._counter)
        app_id = fn.app_id if (fn := await self.store.get_function(function_slug)) else "no-app"
        new = base.NewRun(id=run_id, function_slug=function_slug, app_id=app_id, event_ids=(ev.internal_id,),
                          idempotency_key=None, due_at=due_at)
        assert await self.store.ingest([], [new], now) == [run_id]
        steps = list(steps)
        if not (steps or finish or running):
            return await self._get(run_id)
        await self.store.mark_running(run_id, now)
        commands: list[base.Command] = [
            base.SaveStep(hash=protocol.step_hash(s.name, s.index), name=s.name, op=s.op, status=s.status,
                          memo=s.memo, started_at=now, ended_at=s.ended_at if s.ended_at is not None else now)
            for s in steps]
        if finish is not None:
            commands.append(base.FinishRun(finish, output, error))
        owner = f"seeder-{run_id}"
        # This run's item is due before every other seeded item, so claiming one item at its due time
        # takes exactly it (claiming marks a run RUNNING, so touching others would change them).
        (item,) = await self.store.claim_due(due_at, 1, owner, 60_000)
        assert item.run_id == run_id
        applied = await self.store.apply(item, owner, commands, now, 60_000)
        assert applied.accepted
        return await self._get(run_id)

    async def _get(self, run_id: str) -> base.RunRecord:
        run = await self.store.get_run(run_id)
        assert run is not None
        return run


@pytest.fixture
def server_config(tmp_path: Any) -> config_mod.ServerConfig:
    return config_mod.ServerConfig(db_url=str(tmp_path / "r.db"))


@pytest.fixture
async def server_app(server_config: config_mod.ServerConfig) -> AsyncIterator[Starlette]:
    app = create_app(server_config)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
def services(server_app: Starlette) -> services_mod.Services:
    return server_app.state.services  # type: ignore[no-any-return]


@pytest.fixture
async def api(server_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=server_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ratchet.test") as client:
        yield client


@pytest.fixture
def seed(services: services_mod.Services) -> Seeder:
    return Seeder(services)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module that sets `STORES = ("sqlite", "postgres")` runs its `stack` tests on both backends; a test
    marked `stores(...)` on those it names (a white-box test of one backend)."""
    if "stack" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("stores")
        stores = marker.args if marker else getattr(metafunc.module, "STORES", ("sqlite",))
        metafunc.parametrize("stack", stores, indirect=True)


@pytest.fixture
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[inprocess.Stack]:
    """The server and an app on Ratchet's SDK, in this process (see inprocess.py); on PostgreSQL (a
    database of its own, from the contract suite's template) when the module asks for it (`STORES`)."""
    if request.param == "postgres":
        from tests.contract.conftest import pg_database

        async with pg_database(request.getfixturevalue("pg_template")) as url, \
                inprocess.start_stack(tmp_path, db_url=url) as s:
            yield s
        return
    async with inprocess.start_stack(tmp_path) as s:
        yield s
