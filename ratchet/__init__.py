"""Ratchet: a self-hostable durable-execution engine that speaks the Inngest SDK protocol.

This top-level package re-exports the SDK (`ratchet.sdk`); it never imports the server (`ratchet.server`)
nor a web framework. Framework adapters: `ratchet.sdk.fastapi`, `ratchet.sdk.flask`.
"""

from __future__ import annotations

from ratchet.sdk import (
    SDK_VERSION,
    Batch,
    Cancel,
    Client,
    Concurrency,
    Context,
    Debounce,
    Event,
    EventKeyMissingError,
    Function,
    Group,
    GroupSync,
    NonRetriableError,
    ParallelMode,
    Priority,
    RatchetError,
    RateLimit,
    RegistrationError,
    RetryAfterError,
    SendEventsError,
    SigningKeyMissingError,
    Singleton,
    Step,
    StepError,
    StepSync,
    Throttle,
    Timeouts,
    TriggerCron,
    TriggerEvent,
    on_cron,
    on_event,
)

__version__ = "0.1.0"

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
    "__version__",
    "on_cron",
    "on_event",
]
