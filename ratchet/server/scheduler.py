"""The queue loop: claim due items and hand them to the executor, sleeping until the next due time.

There is no polling tick. The loop sleeps until the earliest due time (or lease expiry) in the store,
and anything that enqueues work calls `notify()` to wake it early. Sleeps of a year are one timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ratchet.server import executor as executor_mod
from ratchet.server.store import base

log = logging.getLogger("ratchet.scheduler")

#: Longest the loop sleeps without looking at the store again (guards against a missed notify,
#: e.g. from another process writing the same database).
MAX_IDLE_S = 5.0
#: Items claimed per store round trip.
CLAIM_BATCH = 64
#: Items due this soon are claimed with the ones due now (they wait in the executor until due).
LOOKAHEAD_MS = 25


class Scheduler:
    def __init__(self, store: base.Store, executor: executor_mod.Executor, *, max_in_flight: int,
                 lease_ms: int) -> None:
        self._store = store
        self._executor = executor
        self._max_in_flight = max_in_flight
        self._lease_ms = lease_ms
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False

    def notify(self) -> None:
        """Something was enqueued: look at the store again now."""
        self._wake.set()

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._loop(), name="ratchet-scheduler")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler tick failed; retrying in 1 s")
                await asyncio.sleep(1.0)

    async def _tick(self) -> None:
        self._wake.clear()
        free = self._max_in_flight - len(self._tasks)
        claimed: list[base.QueueItem] = []
        if free > 0:
            now = time.time_ns() // 1_000_000
            # Items due within the lookahead are claimed now and wait for their moment in the executor:
            # under a stream of timers one store round trip serves many, and none starts early.
            claimed = await self._store.claim_due(now, min(free, CLAIM_BATCH), self._executor.owner, self._lease_ms,
                                                  due_by=now + LOOKAHEAD_MS)
            for item in claimed:
                task = asyncio.get_running_loop().create_task(self._executor.run(item))
                self._tasks.add(task)
                task.add_done_callback(self._done)
        if claimed and len(claimed) == min(free, CLAIM_BATCH):
            await asyncio.sleep(0)  # more may be due: claim again after letting the calls start
            return
        timeout = MAX_IDLE_S
        if free > 0:
            next_due = await self._store.next_due_at()
            if next_due is not None:
                # Wake when the next item enters the lookahead window.
                wait_ms = next_due - LOOKAHEAD_MS - time.time_ns() // 1_000_000
                timeout = max(0.0, min(MAX_IDLE_S, wait_ms / 1000))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if len(self._tasks) == self._max_in_flight - 1:
            self._wake.set()  # a slot opened after we were full
