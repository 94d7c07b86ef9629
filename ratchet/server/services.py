"""The running server's parts, wired together once and shared by the HTTP handlers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid

from ratchet import protocol
from ratchet.server import config as config_mod
from ratchet.server import executor as executor_mod
from ratchet.server import ingest, login_limit, registry, scheduler, sync
from ratchet.server import transport as transport_mod
from ratchet.server.store import base, open_store_async

log = logging.getLogger("ratchet.server")

#: How often the retention job looks for old runs and events.
RETENTION_EVERY_S = 3600.0


@dataclasses.dataclass
class Services:
    cfg: config_mod.ServerConfig
    store: base.Store
    functions: registry.Registry
    executor: executor_mod.Executor
    scheduler: scheduler.Scheduler
    ingestor: ingest.Ingestor
    syncer: sync.Syncer
    transport: transport_mod.Transport
    background: set[asyncio.Task[None]] = dataclasses.field(default_factory=set)
    #: failed dashboard logins per client (`POST /login` answers 429 past the limit)
    logins: login_limit.FailedLogins = dataclasses.field(default_factory=login_limit.FailedLogins)

    @classmethod
    async def start(cls, cfg: config_mod.ServerConfig, *, store: base.Store | None = None,
                    transport: transport_mod.Transport | None = None) -> Services:
        """Open the store, recover, start the queue loop and sync the configured apps in the background."""
        store = store or await open_store_async(cfg.db_url)
        owner = f"node-{uuid.uuid4().hex[:12]}"
        # The id this node writes as `lease_owner` on the queue rows it claims (to tell nodes apart there).
        log.info("node id %s, leases of %g s", owner, cfg.lease_s)
        if store.single_owner:
            # One process owns a SQLite file, so leases left by a crashed predecessor are void now. (On a
            # shared database other nodes' leases are live; a dead node's expire and are claimed again.)
            released = await store.release_leases()
            if released:
                log.info("recovered %d queue items leased before a restart", released)
        functions = registry.Registry(store)
        await functions.reload()
        holder: list[scheduler.Scheduler] = []

        def notify() -> None:
            holder[0].notify()

        transport = transport or transport_mod.HttpTransport()
        executor = executor_mod.Executor(store, cfg, transport, owner=owner, notify=notify)
        sched = scheduler.Scheduler(store, executor, max_in_flight=cfg.max_in_flight,
                                    lease_ms=int(cfg.lease_s * 1000))
        holder.append(sched)
        services = cls(
            cfg=cfg, store=store, functions=functions, executor=executor, scheduler=sched,
            ingestor=ingest.Ingestor(store, functions, notify, max_event_bytes=cfg.max_event_bytes),
            syncer=sync.Syncer(store, functions, transport, server_kind=cfg.kind,
                               signing_key=cfg.signing_keys[0] if cfg.signing_keys else None),
            transport=transport,
        )
        executor.ingestor = services.ingestor
        services.spawn(services._heartbeat())
        if cfg.retention_s is not None:
            services.spawn(services._retention())
        # Other nodes on a shared store: their new work wakes our scheduler, their syncs our registry.
        await store.subscribe(sched.notify, lambda: services.spawn(functions.reload()))
        sched.start()
        return services

    async def _heartbeat(self) -> None:
        """Renew this node's leases every third of a lease, so long calls keep theirs."""
        lease_ms = int(self.cfg.lease_s * 1000)
        while True:
            await asyncio.sleep(self.cfg.lease_s / 3)
            try:
                await self.store.extend_leases(self.executor.owner, protocol.now_ms() + lease_ms)
            except Exception:  # a store hiccup: the next beat tries again, well within the lease
                log.exception("lease heartbeat failed")

    async def _retention(self) -> None:
        """Delete what is older than the retention period, now and then every RETENTION_EVERY_S."""
        assert self.cfg.retention_s is not None
        while True:
            now = protocol.now_ms()
            try:
                removed = await self.store.purge(now - int(self.cfg.retention_s * 1000), now)
                if removed:
                    log.info("retention: deleted %d runs and events", removed)
            except Exception:
                log.exception("retention failed; trying again later")
            await asyncio.sleep(min(RETENTION_EVERY_S, self.cfg.retention_s))

    def sync_in_background(self) -> None:
        for url in self.cfg.app_urls:
            self.spawn(self.syncer.sync_until_done(url))

    def spawn(self, coro: object) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def stop(self) -> None:
        for task in list(self.background):
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await self.scheduler.stop()
        # Hand this node's items back at once (a clean stop is not a failure of theirs, and other nodes
        # need not wait for the leases to run out).
        with contextlib.suppress(Exception):
            await self.store.release_leases(self.executor.owner)
        await self.transport.close()
        await self.store.close()
