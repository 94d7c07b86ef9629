"""Wire facts shared by the server (`ratchet.server`) and the SDK (`ratchet.sdk`).

This is the only module both halves import. It holds the protocol's names (opcodes, headers, query
parameters), its small algorithms (step-id hashing, durations, signatures) and the pydantic models of the
bodies that cross the wire. It imports nothing from either half.

The protocol is the public Inngest SDK protocol; see docs/protocol.md for the summary we work from.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jcs
import pydantic

#: The protocol's request version that we speak (body shape v2: memo by step hash, `ctx.stack`).
REQUEST_VERSION = 2
#: Default serve path of an app.
DEFAULT_SERVE_PATH = "/api/inngest"
#: Event key the SDKs use in dev mode when none is configured.
DEV_EVENT_KEY = "NO_EVENT_KEY_SET"
#: The query value of `stepId` for a discovery call (no step targeted).
DISCOVERY_STEP_ID = "step"


class Header(enum.StrEnum):
    """HTTP header names of the protocol (lower case; HTTP headers are case-insensitive)."""

    SDK = "x-inngest-sdk"  #: `<sdk-name>:v<version>` on every SDK reply; marks a reply as coming from an SDK
    REQ_VERSION = "x-inngest-req-version"
    FRAMEWORK = "x-inngest-framework"
    SIGNATURE = "x-inngest-signature"
    SERVER_KIND = "x-inngest-server-kind"  #: `dev` or `cloud`, sent by the server
    EXPECTED_SERVER_KIND = "x-inngest-expected-server-kind"  #: the SDK's own mode
    SYNC_KIND = "x-inngest-sync-kind"  #: `in_band` or `out_of_band`
    NO_RETRY = "x-inngest-no-retry"  #: `true` on a 500 (or 206 StepError) that must not be retried
    RETRY_AFTER = "retry-after"  #: ISO-8601 timestamp or integer seconds
    EVENT_ID_SEED = "x-inngest-event-id-seed"  #: `<unix ms>,<base64 of 10 random bytes>`
    ENV = "x-inngest-env"
    SDK_HANDLED = "x-inngest-sdk-handled"
    RUN_ID = "x-run-id"
    REQUEST_ID = "x-request-id"
    JOB_ID = "x-inngest-job-id"
    STEP_ID = "x-inngest-step-id"
    AUTHORIZATION = "authorization"


class Opcode(enum.StrEnum):
    """Operations an SDK reports in a 206 reply."""

    STEP_RUN = "StepRun"  #: a `step.run` that ran in this call; `data` is its output
    STEP_PLANNED = "StepPlanned"  #: a step found but not run; the server calls back targeting it
    STEP_ERROR = "StepError"  #: a step raised and may be retried
    STEP_FAILED = "StepFailed"  #: a step raised on its last attempt
    SLEEP = "Sleep"  #: sleep until the ISO timestamp in `name`
    WAIT_FOR_EVENT = "WaitForEvent"  #: wait for the event named in `name`
    INVOKE_FUNCTION = "InvokeFunction"  #: start another function and wait for its result
    AI_GATEWAY = "AIGateway"  #: the server makes an HTTP call on the step's behalf
    STEP = "Step"  #: older SDKs' name for StepRun
    STEP_NOT_FOUND = "StepNotFound"
    RUN_COMPLETE = "RunComplete"
    NONE = "None"


class RunStatus(enum.StrEnum):
    """Run statuses as the read API and GraphQL report them."""

    QUEUED = "QUEUED"  #: created, no call made yet
    RUNNING = "RUNNING"  #: at least one call made, not finished
    COMPLETED = "COMPLETED"  #: the function returned
    FAILED = "FAILED"  #: the function failed for good
    CANCELLED = "CANCELLED"  #: cancelled by an event, the API or a timeout
    SKIPPED = "SKIPPED"  #: never started: dropped by a rate limit or a singleton

    @property
    def is_terminal(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.SKIPPED)


class ErrorCode(enum.StrEnum):
    """Codes carried by SDK error bodies (`{"code", "message", "name", "stack"}`)."""

    UNKNOWN = "unknown"
    BODY_INVALID = "body_invalid"
    FUNCTION_NOT_FOUND = "function_not_found"
    NON_RETRIABLE_ERROR = "non_retriable_error"
    RETRY_AFTER_ERROR = "retry_after_error"
    OUTPUT_UNSERIALIZABLE = "output_unserializable"
    QUERY_PARAM_MISSING = "query_param_missing"
    REGISTRATION_FAILED = "registration_failed"
    SERVER_KIND_MISMATCH = "server_kind_mismatch"
    SIG_VERIFICATION_FAILED = "sig_verification_failed"
    STEP_ERRORED = "step_errored"
    STEP_NESTED = "step_nested"
    STEP_UNEXPECTED = "step_unexpected"
    SEND_EVENT_FAILED = "send_event_failed"


# --------------------------------------------------------------------------------------------- step ids


def step_hash(step_id: str, index: int = 0) -> str:
    """The wire id of a step: sha1 of the user id; the n-th repeat (n >= 1) hashes `"{id}:{n}"`."""
    key = step_id if index == 0 else f"{step_id}:{index}"
    return hashlib.sha1(key.encode()).hexdigest()


# --------------------------------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|w|d|h|m|s)")
_UNIT_SECONDS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3,
                 "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text: str | float) -> timedelta:
    """Parse a protocol duration: `"5s"`, `"1m"`, `"2h45m"`, `"300ms"`, `"1d"`, `"1w"`.

    Integers and floats are taken as seconds. Raises ValueError with the offending text otherwise.
    """
    if isinstance(text, bool):
        raise ValueError(f"invalid duration {text!r}")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"invalid duration {text!r}: negative")
        return timedelta(seconds=text)
    s = text.strip()
    if not s:
        raise ValueError("invalid duration '': empty")
    pos = 0
    total = 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(s):
        raise ValueError(f"invalid duration {text!r}: expected a number followed by w, d, h, m, s or ms")
    return timedelta(seconds=total)


def format_duration(d: timedelta) -> str:
    """The shortest protocol string for a duration: the largest unit that divides it, at least `1s`."""
    ms = round(d.total_seconds() * 1000)
    if ms <= 0:
        return "1s"
    if ms % 1000:
        return f"{ms}ms"
    secs = ms // 1000
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if secs % size == 0:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def parse_time(text: str) -> datetime:
    """Parse an ISO-8601 timestamp (`2030-01-01T00:00:00.000Z`) into an aware UTC datetime."""
    s = text.strip()
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def format_time(dt: datetime) -> str:
    """Format as the ISO UTC timestamp with milliseconds the protocol uses (`...T19:40:29.871Z`)."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------------------------- signing

_KEY_PREFIX = re.compile(r"^signkey-\w+-")


def signing_key_raw(key: str) -> str:
    """The signing key without its `signkey-<env>-` prefix (the hex string)."""
    return _KEY_PREFIX.sub("", key)


def hashed_signing_key(key: str) -> str:
    """The bearer token for SDK-to-server calls: sha256 of the hex-decoded key, as hex."""
    return hashlib.sha256(bytes.fromhex(signing_key_raw(key))).hexdigest()


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) bytes of a JSON value; request signatures cover this form."""
    return jcs.canonicalize(value)  # type: ignore[no-any-return]


def sign(body: bytes, key: str, *, unix_s: int | None = None) -> str:
    """The `X-Inngest-Signature` value `t=<unix s>&s=<hex hmac>` for `body` under `key`."""
    t = int(time.time()) if unix_s is None else unix_s
    mac = hmac.new(signing_key_raw(key).encode(), body + str(t).encode(), hashlib.sha256).hexdigest()
    return f"t={t}&s={mac}"


def verify_signature(body: bytes, header: str | None, keys: list[str], *, max_age_s: int | None = 300) -> bool:
    """True when `header` is a valid signature of `body` under one of `keys` (and not older than max_age_s)."""
    if not header:
        return False
    parts = dict(p.split("=", 1) for p in header.split("&") if "=" in p)
    try:
        t = int(parts["t"])
        s = parts["s"]
    except (KeyError, ValueError):
        return False
    if max_age_s is not None and abs(time.time() - t) > max_age_s:
        return False
    for key in keys:
        expected = hmac.new(signing_key_raw(key).encode(), body + str(t).encode(), hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected, s):
            return True
    return False


# --------------------------------------------------------------------------------------------- models


class WireModel(pydantic.BaseModel):
    """Base of wire models: lenient about unknown keys, populated by field name or alias."""

    model_config = pydantic.ConfigDict(extra="ignore", populate_by_name=True)


class Event(WireModel):
    """An event as it travels between the event API, the server and the SDK."""

    name: str
    data: dict[str, Any] = pydantic.Field(default_factory=dict)
    id: str = ""
    ts: int = 0
    v: str | None = None
    user: dict[str, Any] | None = None


class StepErrorBody(WireModel):
    """A serialized error: of a step (memo `{"error": ...}`) or of a function (a 500 body)."""

    name: str = "Error"
    message: str = ""
    stack: str | None = None
    code: str | None = None


class Userland(WireModel):
    id: str
    index: int | None = None


class GeneratorOpcode(WireModel):
    """One opcode object of a 206 reply."""

    op: str
    id: str = ""
    name: str = ""
    display_name: str | None = pydantic.Field(default=None, alias="displayName")
    opts: dict[str, Any] | None = None
    data: Any = None
    error: StepErrorBody | None = None
    userland: Userland | None = None
    timing: dict[str, Any] | None = None


class CallStack(WireModel):
    stack: list[str] | None = None
    current: int = 0


class CallContext(WireModel):
    """The `ctx` object of a call request."""

    run_id: str
    attempt: int = 0
    max_attempts: int | None = None
    disable_immediate_execution: bool = False
    use_api: bool = False
    stack: CallStack = pydantic.Field(default_factory=CallStack)
    fn_id: str = ""
    step_id: str = DISCOVERY_STEP_ID
    env: str = ""


class CallRequest(WireModel):
    """The body the server POSTs to an app to run (part of) a function."""

    event: dict[str, Any]
    events: list[dict[str, Any]] | None = None
    steps: dict[str, Any] = pydantic.Field(default_factory=dict)
    ctx: CallContext
    use_api: bool = False
    version: int = REQUEST_VERSION


# -- function configuration (the `functions` list of a sync) -----------------------------------------------


class TriggerConfig(WireModel):
    event: str | None = None
    expression: str | None = None
    cron: str | None = None
    jitter: str | None = None


class RetriesConfig(WireModel):
    attempts: int | None = None


class RuntimeConfig(WireModel):
    type: str = "http"
    url: str


class StepConfig(WireModel):
    id: str = "step"
    name: str = "step"
    retries: RetriesConfig | None = None
    runtime: RuntimeConfig


class ConcurrencyConfig(WireModel):
    limit: int
    key: str | None = None
    scope: str | None = None


class ThrottleConfig(WireModel):
    limit: int
    period: str
    burst: int | None = None
    key: str | None = None


class RateLimitConfig(WireModel):
    limit: int
    period: str
    key: str | None = None


class DebounceConfig(WireModel):
    period: str
    key: str | None = None
    timeout: str | None = None


class BatchConfig(WireModel):
    max_size: int = pydantic.Field(alias="maxSize")
    timeout: str | None = None
    key: str | None = None
    if_exp: str | None = pydantic.Field(default=None, alias="if")


class CancelConfig(WireModel):
    event: str
    if_exp: str | None = pydantic.Field(default=None, alias="if")
    timeout: str | None = None


class PriorityConfig(WireModel):
    run: str | None = None


class SingletonConfig(WireModel):
    key: str | None = None
    mode: str = "skip"


class TimeoutsConfig(WireModel):
    start: str | None = None
    finish: str | None = None


class FunctionConfig(WireModel):
    """One function of a sync. `id` is the composite `{app_id}-{fn_id}`."""

    id: str
    name: str = ""
    triggers: list[TriggerConfig] = pydantic.Field(default_factory=list)
    steps: dict[str, StepConfig] = pydantic.Field(default_factory=dict)
    retries: RetriesConfig | int | None = None  # other SDKs put retries here
    concurrency: list[ConcurrencyConfig] | int | None = None
    throttle: ThrottleConfig | None = None
    rate_limit: RateLimitConfig | None = pydantic.Field(default=None, alias="rateLimit")
    debounce: DebounceConfig | None = None
    batch_events: BatchConfig | None = pydantic.Field(default=None, alias="batchEvents")
    cancel: list[CancelConfig] | None = None
    priority: PriorityConfig | None = None
    idempotency: str | None = None
    singleton: SingletonConfig | None = None
    timeouts: TimeoutsConfig | None = None

    def max_attempts(self, default_retries: int = 4, cap: int = 20) -> int:
        """Attempts per queue item: retries + 1, where retries come from `steps.step.retries.attempts`."""
        retries: int | None = None
        for step in self.steps.values():
            if step.retries is not None and step.retries.attempts is not None:
                retries = step.retries.attempts
                break
        if retries is None:
            if isinstance(self.retries, int):
                retries = self.retries
            elif isinstance(self.retries, RetriesConfig):
                retries = self.retries.attempts
        if retries is None:
            retries = default_retries
        return max(0, min(retries, cap)) + 1

    def url(self) -> str | None:
        for step in self.steps.values():
            return step.runtime.url
        return None


class RegisterRequest(WireModel):
    """The body of `POST /fn/register` (out-of-band sync). Accepts the spellings different SDKs use."""

    url: str
    app_name: str = pydantic.Field(validation_alias=pydantic.AliasChoices("appName", "appname", "app_name"))
    deploy_type: str | None = pydantic.Field(
        default=None, validation_alias=pydantic.AliasChoices("deployType", "deploy_type")
    )
    framework: str | None = None
    sdk: str | None = None
    v: str | None = None
    app_version: str | None = pydantic.Field(
        default=None, validation_alias=pydantic.AliasChoices("appVersion", "app_version")
    )
    capabilities: dict[str, Any] | None = None
    functions: list[FunctionConfig] = pydantic.Field(default_factory=list)
