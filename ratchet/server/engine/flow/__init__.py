"""Flow control as pure decisions: which runs start, when, and which are dropped.

Every function here is a pure function of stored state and `now` (integer epoch milliseconds); the
store keeps the state and applies the decisions. The pieces:

- `config`: `validate` / `spec` check a function's flow-control config at sync time and normalise it
  (durations in ms); `keys` evaluates the key expressions for one event into short hashed strings.
- `rate`: `throttle`, a GCRA over a `GcraState` per key (excess runs are delayed: `DelayUntil`), and
  `rate_limit`, a sliding-window log over a `RateLimitState` per key (excess runs are dropped: `Drop`;
  `idempotency` is a rate limit of 1 per 24 h).
- `concurrency`: `admit_call` (may one call start?) and `select` (which queued calls start, fairly across
  keys), with `order_key` folding `priority.run` into queue order.
- `pending`: `debounce` and `batch_add` (runs that wait to collect events) and `singleton`.

See reference/inngest-protocol.md §1.2 for the wire shapes and §10 for the semantics we follow.
"""

from __future__ import annotations

from ratchet.server.engine.flow.concurrency import Candidate, admit_call, order_key, select
from ratchet.server.engine.flow.config import (
    BatchSpec,
    ConcurrencyKey,
    ConcurrencySpec,
    DebounceSpec,
    FlowConfigInvalid,
    FlowKeys,
    FlowSpec,
    Problem,
    RateLimitSpec,
    Scope,
    SingletonMode,
    SingletonSpec,
    ThrottleSpec,
    keys,
    spec,
    validate,
)
from ratchet.server.engine.flow.pending import (
    BatchState,
    CancelThenStart,
    DebounceState,
    Skip,
    Start,
    batch_add,
    batch_due,
    debounce,
    singleton,
)
from ratchet.server.engine.flow.rate import (
    Admit,
    DelayUntil,
    Drop,
    GcraState,
    RateLimitState,
    rate_limit,
    throttle,
)

__all__ = [
    "Admit",
    "BatchSpec",
    "BatchState",
    "CancelThenStart",
    "Candidate",
    "ConcurrencyKey",
    "ConcurrencySpec",
    "DebounceSpec",
    "DebounceState",
    "DelayUntil",
    "Drop",
    "FlowConfigInvalid",
    "FlowKeys",
    "FlowSpec",
    "GcraState",
    "Problem",
    "RateLimitSpec",
    "RateLimitState",
    "Scope",
    "SingletonMode",
    "SingletonSpec",
    "Skip",
    "Start",
    "ThrottleSpec",
    "admit_call",
    "batch_add",
    "batch_due",
    "debounce",
    "keys",
    "order_key",
    "rate_limit",
    "select",
    "singleton",
    "spec",
    "throttle",
    "validate",
]
