"""Ratchet's Python SDK: define durable functions and serve them to a Ratchet (or Inngest) server.

    import ratchet, ratchet.sdk.fastapi
    client = ratchet.Client(app_id="shop")

    @client.function(id="process-order", trigger=ratchet.on_event("shop/order.created"))
    async def process_order(ctx: ratchet.Context) -> dict:
        charge = await ctx.step.run("charge", charge_card, ctx.event.data["id"])
        await ctx.step.sleep("cool-off", timedelta(days=3))
        return {"charge": charge}

    ratchet.sdk.fastapi.serve(app, client, [process_order])

The framework adapters (`ratchet.sdk.fastapi`, `ratchet.sdk.flask`) are imported on demand.
This package never imports `ratchet.server`.
"""

from __future__ import annotations

from ratchet.sdk.client import SDK_VERSION, Client
from ratchet.sdk.errors import (
    EventKeyMissingError,
    NonRetriableError,
    RatchetError,
    RegistrationError,
    RetryAfterError,
    SendEventsError,
    SigningKeyMissingError,
    StepError,
)
from ratchet.sdk.event import Event, FunctionFailure
from ratchet.sdk.function import (
    Batch,
    Cancel,
    Concurrency,
    Context,
    Debounce,
    Function,
    Priority,
    RateLimit,
    Singleton,
    Throttle,
    Timeouts,
    TriggerCron,
    TriggerEvent,
    on_cron,
    on_event,
)
from ratchet.sdk.group import Group, GroupSync, ParallelMode
from ratchet.sdk.step import Step, StepSync

__all__ = [
    "SDK_VERSION",
    "Batch",
    "Cancel",
    "Client",
    "Concurrency",
    "Context",
    "Debounce",
    "Event",
    "EventKeyMissingError",
    "Function",
    "FunctionFailure",
    "Group",
    "GroupSync",
    "NonRetriableError",
    "ParallelMode",
    "Priority",
    "RatchetError",
    "RateLimit",
    "RegistrationError",
    "RetryAfterError",
    "SendEventsError",
    "SigningKeyMissingError",
    "Singleton",
    "Step",
    "StepError",
    "StepSync",
    "Throttle",
    "Timeouts",
    "TriggerCron",
    "TriggerEvent",
    "on_cron",
    "on_event",
]
