"""Flow-control config: checked at sync time (`validate`, `spec`) and evaluated per event (`keys`).

`spec` turns the wire config of one function (`protocol.FunctionConfig`) into a `FlowSpec` with every
duration in integer milliseconds, or raises `FlowConfigInvalid` listing *all* problems, each with the
field path as the wire spells it (`concurrency[1].key`, `batchEvents.maxSize`) and what is wrong.

The rules (and why):

- **Numbers.** `throttle.limit`, `throttle.burst`, `rateLimit.limit` and `batchEvents.maxSize` must be at
  least 1: 0 would block every run for ever (or never start a batch), which is never what was meant.
  `burst` may be absent (1). A concurrency `limit` of **0 means "no limit"** and the entry is ignored,
  as the Inngest docs define it (SDKs send 0 for "unset"); a negative limit is an error.
  `batchEvents.maxSize` is at most `MAX_BATCH_SIZE` (1000): one run's input is held in memory by the
  app and by us. Inngest itself rejects sizes below 2; we accept 1 (a "batch" of one event), being
  more lenient never breaks an app that works against Inngest.
- **Concurrency.** At most 2 entries (Inngest's limit: each call takes a slot in every key). `scope` is
  `fn` (default), `env` or `account`; `env`/`account` limits need a `key` (Inngest's rule: the key is
  what names the shared limit across functions).
- **Durations** must parse (`protocol.parse_duration`) and be > 0. Upper bounds: `rateLimit.period`
  ≤ 24 h (Inngest's rule; the idempotency window), `debounce.period` between 1 s and 7 d (Inngest),
  other waits (`debounce.timeout`, `batchEvents.timeout`, `throttle.period`) ≤ 7 d so that no state
  is kept longer than that. `batchEvents.timeout` is optional (default 60 s, Inngest's default) and
  at least 1 s (Inngest).
- **Combinations Inngest rejects, and so do we:** `batchEvents` with `cancel` (a cancel matches one
  triggering event; a batch run has many), with `debounce` (two ways to merge events into one run),
  with `priority.run` (which event's priority would the batch run have?). We add `batchEvents` with
  `singleton` for the same reason (whose key is the batch run's?).
- `singleton.mode` is `skip` or `cancel`.
- **Expressions** (every `key`, `batchEvents.if`, `priority.run`, `idempotency`) must pass
  `expressions.validate(src, Kind.EVENT)`: they may read only `event` (and `vars`). An empty or blank
  key is taken as absent (some SDKs send `""`), like Go does for the debounce key.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from datetime import timedelta
from typing import Any

from ratchet import protocol
from ratchet.server.engine import expressions

#: Most concurrency entries per function.
MAX_CONCURRENCY_LIMITS = 2
#: Largest `batchEvents.maxSize`.
MAX_BATCH_SIZE = 1000
#: `batchEvents.timeout` when absent, and its minimum.
DEFAULT_BATCH_TIMEOUT_MS = 60_000
MIN_BATCH_TIMEOUT_MS = 1_000
#: Bounds of `debounce.period`.
MIN_DEBOUNCE_PERIOD_MS = 1_000
#: Longest wait or period we keep state for (debounce, batch timeout, throttle period).
MAX_WAIT_MS = 7 * 24 * 3600 * 1000
#: Longest `rateLimit.period`, and the window of `idempotency` (a rate limit of 1 per 24 h).
MAX_RATE_LIMIT_PERIOD_MS = 24 * 3600 * 1000
IDEMPOTENCY_PERIOD_MS = MAX_RATE_LIMIT_PERIOD_MS


class Scope(enum.StrEnum):
    """Who shares a concurrency limit: one function, every function of an env, or of an account."""

    FN = "fn"
    ENV = "env"
    ACCOUNT = "account"


class SingletonMode(enum.StrEnum):
    SKIP = "skip"  #: drop the new run while one is active for the key
    CANCEL = "cancel"  #: cancel the active run and start the new one


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    path: str  #: wire path of the field, e.g. `concurrency[1].key`
    message: str


class FlowConfigInvalid(ValueError):
    """A function's flow-control config cannot be used; `problems` lists every field at fault."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in self.problems))


@dataclasses.dataclass(frozen=True, slots=True)
class ConcurrencySpec:
    limit: int  #: calls (steps) in flight at once; >= 1
    scope: Scope = Scope.FN
    key: str | None = None  #: CEL over `event`; None = one shared limit for the scope


@dataclasses.dataclass(frozen=True, slots=True)
class ThrottleSpec:
    limit: int  #: runs started per period, evenly spaced
    period_ms: int
    burst: int = 1  #: runs that may start at once
    key: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class RateLimitSpec:
    limit: int  #: runs started per (sliding) period; the rest are dropped
    period_ms: int
    key: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class DebounceSpec:
    period_ms: int
    timeout_ms: int | None = None  #: cap on the total delay from the first event
    key: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class BatchSpec:
    max_size: int
    timeout_ms: int = DEFAULT_BATCH_TIMEOUT_MS
    key: str | None = None
    if_exp: str | None = None  #: only events for which this is true are batched


@dataclasses.dataclass(frozen=True, slots=True)
class SingletonSpec:
    mode: SingletonMode = SingletonMode.SKIP
    key: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class FlowSpec:
    """The validated, normalised flow-control config of one function."""

    function_id: str
    concurrency: tuple[ConcurrencySpec, ...] = ()
    throttle: ThrottleSpec | None = None
    rate_limit: RateLimitSpec | None = None
    debounce: DebounceSpec | None = None
    batch: BatchSpec | None = None
    priority_run: str | None = None
    singleton: SingletonSpec | None = None
    idempotency: str | None = None


# --------------------------------------------------------------------------------------------- checking

_SCOPES = frozenset(s.value for s in Scope)
_MODES = frozenset(m.value for m in SingletonMode)


class _Checker:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def expression(self, path: str, source: str | None) -> str | None:
        if source is None or not source.strip():
            return None
        try:
            expressions.validate(source, expressions.Kind.EVENT)
        except expressions.ExpressionError as exc:
            self.fail(path, str(exc))
        return source

    def at_least(self, path: str, value: int, minimum: int, maximum: int | None = None) -> int:
        if value < minimum:
            self.fail(path, f"must be at least {minimum}, got {value}")
        elif maximum is not None and value > maximum:
            self.fail(path, f"must be at most {maximum}, got {value}")
        return value

    def duration(self, path: str, text: str | None, *, minimum_ms: int = 1,
                 maximum_ms: int = MAX_WAIT_MS) -> int:
        if text is None or (isinstance(text, str) and not text.strip()):
            self.fail(path, "a duration is required")
            return 0
        try:
            ms = protocol.parse_duration(text) // timedelta(milliseconds=1)
        except ValueError as exc:
            self.fail(path, str(exc))
            return 0
        if ms < minimum_ms:
            self.fail(path, f"{text!r} is shorter than the minimum of {_show(minimum_ms)}")
        elif ms > maximum_ms:
            self.fail(path, f"{text!r} is longer than the maximum of {_show(maximum_ms)}")
        return ms


def _show(ms: int) -> str:
    return protocol.format_duration(timedelta(milliseconds=ms))


def spec(config: protocol.FunctionConfig) -> FlowSpec:
    """The normalised flow-control config of `config`.

    Raises:
        FlowConfigInvalid: listing every problem (see the module doc for the rules).
    """
    c = _Checker()
    concurrency = _concurrency(c, config.concurrency)

    throttle = None
    if (t := config.throttle) is not None:
        throttle = ThrottleSpec(
            limit=c.at_least("throttle.limit", t.limit, 1),
            period_ms=c.duration("throttle.period", t.period),
            burst=c.at_least("throttle.burst", 1 if t.burst is None else t.burst, 1),
            key=c.expression("throttle.key", t.key),
        )

    rate_limit = None
    if (r := config.rate_limit) is not None:
        rate_limit = RateLimitSpec(
            limit=c.at_least("rateLimit.limit", r.limit, 1),
            period_ms=c.duration("rateLimit.period", r.period, maximum_ms=MAX_RATE_LIMIT_PERIOD_MS),
            key=c.expression("rateLimit.key", r.key),
        )

    debounce = None
    if (d := config.debounce) is not None:
        debounce = DebounceSpec(
            period_ms=c.duration("debounce.period", d.period, minimum_ms=MIN_DEBOUNCE_PERIOD_MS),
            timeout_ms=None if d.timeout is None or not d.timeout.strip()
            else c.duration("debounce.timeout", d.timeout),
            key=c.expression("debounce.key", d.key),
        )

    batch = None
    if (b := config.batch_events) is not None:
        batch = BatchSpec(
            max_size=c.at_least("batchEvents.maxSize", b.max_size, 1, MAX_BATCH_SIZE),
            timeout_ms=DEFAULT_BATCH_TIMEOUT_MS if b.timeout is None or not b.timeout.strip()
            else c.duration("batchEvents.timeout", b.timeout, minimum_ms=MIN_BATCH_TIMEOUT_MS),
            key=c.expression("batchEvents.key", b.key),
            if_exp=c.expression("batchEvents.if", b.if_exp),
        )

    priority_run = None
    if config.priority is not None:
        priority_run = c.expression("priority.run", config.priority.run)

    singleton = None
    if (s := config.singleton) is not None:
        mode = SingletonMode.SKIP
        if s.mode in _MODES:
            mode = SingletonMode(s.mode)
        else:
            c.fail("singleton.mode", f"must be 'skip' or 'cancel', got {s.mode!r}")
        singleton = SingletonSpec(mode=mode, key=c.expression("singleton.key", s.key))

    idempotency = c.expression("idempotency", config.idempotency)

    if batch is not None:
        if config.cancel:
            c.fail("batchEvents", "cannot be combined with cancel: a cancel matches one triggering event, "
                                  "a batch run has many")
        if debounce is not None:
            c.fail("batchEvents", "cannot be combined with debounce: both merge events into one run")
        if priority_run is not None:
            c.fail("batchEvents", "cannot be combined with priority.run: a batch run has no single event "
                                  "to take its priority from")
        if singleton is not None:
            c.fail("batchEvents", "cannot be combined with singleton: a batch run has no single event to "
                                  "take its singleton key from")

    if c.problems:
        raise FlowConfigInvalid(c.problems)
    return FlowSpec(function_id=config.id, concurrency=concurrency, throttle=throttle,
                    rate_limit=rate_limit, debounce=debounce, batch=batch, priority_run=priority_run,
                    singleton=singleton, idempotency=idempotency)


def _concurrency(c: _Checker, value: list[protocol.ConcurrencyConfig] | int | None,
                 ) -> tuple[ConcurrencySpec, ...]:
    if value is None:
        return ()
    if isinstance(value, int):  # JS sends `concurrency: 5`
        if value < 0:
            c.fail("concurrency", f"must not be negative (0 means no limit), got {value}")
        return (ConcurrencySpec(limit=value),) if value > 0 else ()
    if len(value) > MAX_CONCURRENCY_LIMITS:
        c.fail("concurrency", f"at most {MAX_CONCURRENCY_LIMITS} limits are allowed, got {len(value)}")
    out = []
    for i, entry in enumerate(value):
        path = f"concurrency[{i}]"
        if entry.limit < 0:
            c.fail(f"{path}.limit", f"must not be negative (0 means no limit), got {entry.limit}")
        key = c.expression(f"{path}.key", entry.key)
        scope = Scope.FN
        if entry.scope is not None:
            if entry.scope in _SCOPES:
                scope = Scope(entry.scope)
            else:
                c.fail(f"{path}.scope", f"must be 'fn', 'env' or 'account', got {entry.scope!r}")
        if scope is not Scope.FN and key is None:
            c.fail(f"{path}.key", f"is required for scope {scope.value!r}: the key names the limit shared "
                                  "across functions")
        if entry.limit > 0:  # 0 = no limit
            out.append(ConcurrencySpec(limit=entry.limit, scope=scope, key=key))
    return tuple(out)


def validate(config: protocol.FunctionConfig) -> None:
    """Sync-time check of `config`'s flow control.

    Raises:
        FlowConfigInvalid: listing every problem, each as `<field path>: <what is wrong>`.
    """
    spec(config)


# --------------------------------------------------------------------------------------------- keys


@dataclasses.dataclass(frozen=True, slots=True)
class ConcurrencyKey:
    key: str  #: hashed; shared by every run (of every function, for env/account scope) with the same value
    limit: int
    scope: Scope
    keyed: bool  #: the limit has a `key` expression (per tenant) rather than one per function


@dataclasses.dataclass(frozen=True, slots=True)
class FlowKeys:
    """The keys of one triggering event. Every key is a 32-hex-digit hash (see `keys`); None when the
    function has no such config (or, for `batch`, when the event is not batched)."""

    concurrency: tuple[ConcurrencyKey, ...] = ()
    throttle: str | None = None
    rate_limit: str | None = None
    debounce: str | None = None
    batch: str | None = None
    batched: bool = False  #: the function batches and this event passed `batchEvents.if`
    singleton: str | None = None
    idempotency: str | None = None
    priority_s: int = 0  #: `priority.run`, whole seconds in [-600, 600]

    @property
    def limits(self) -> list[tuple[str, int]]:
        """`(key, limit)` of every concurrency limit, for `concurrency.admit_call`."""
        return [(k.key, k.limit) for k in self.concurrency]

    @property
    def fair_key(self) -> str | None:
        """The key to share capacity fairly over (`Candidate.fair_key`): the first keyed (per-tenant)
        concurrency key, else the first concurrency key, else None."""
        for k in self.concurrency:
            if k.keyed:
                return k.key
        return self.concurrency[0].key if self.concurrency else None


def hash_key(*parts: str | None) -> str:
    """A short, store-safe key: the first 128 bits of sha256 over the JSON of `parts`, in hex."""
    raw = json.dumps(list(parts), separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def keys(config: protocol.FunctionConfig | FlowSpec, event: dict[str, Any], now_ms: int, *,
         env: str = "", account: str = "") -> FlowKeys:
    """Evaluate every flow-control key of `config` for one triggering `event`.

    Each key hashes `(kind, scope, account, env, function id, value)`, where value is the key
    expression's `Expression.key` (a string as is, anything else as canonical JSON, so `1`, `1.0` and
    `"1"` agree, as in Go; a missing field gives "null") or None without an expression:

    - concurrency `fn` scope: per function (of this env and account), per key value;
      `env` scope: function id left out, so every function of the env whose key expression gives the
      same value shares the limit; `account` scope: env left out too.
    - throttle, rateLimit, debounce, batchEvents, singleton, idempotency: per function.

    Raises:
        FlowConfigInvalid: when given a `FunctionConfig` that does not validate.
    """
    s = config if isinstance(config, FlowSpec) else spec(config)
    fn = s.function_id
    bindings = expressions.Bindings(event=event, now_ms=now_ms)

    def value(src: str | None) -> str | None:
        return None if src is None else expressions.compile(src).key(bindings)

    scope_ids = {Scope.FN: (account, env, fn), Scope.ENV: (account, env, None),
                 Scope.ACCOUNT: (account, None, None)}

    def per_fn(kind: str, src: str | None) -> str:
        return hash_key(kind, Scope.FN.value, *scope_ids[Scope.FN], value(src))

    concurrency = tuple(
        ConcurrencyKey(hash_key("concurrency", c.scope.value, *scope_ids[c.scope], value(c.key)),
                       c.limit, c.scope, c.key is not None)
        for c in s.concurrency)
    batched = s.batch is not None and (
        s.batch.if_exp is None or expressions.compile(s.batch.if_exp).matches(bindings))
    return FlowKeys(
        concurrency=concurrency,
        throttle=per_fn("throttle", s.throttle.key) if s.throttle else None,
        rate_limit=per_fn("rateLimit", s.rate_limit.key) if s.rate_limit else None,
        debounce=per_fn("debounce", s.debounce.key) if s.debounce else None,
        batch=per_fn("batchEvents", s.batch.key) if s.batch and batched else None,
        batched=batched,
        singleton=per_fn("singleton", s.singleton.key) if s.singleton else None,
        idempotency=per_fn("idempotency", s.idempotency) if s.idempotency else None,
        priority_s=expressions.compile(s.priority_run).priority_seconds(bindings) if s.priority_run else 0,
    )
