"""Server settings, gathered from the CLI (and later the environment) into one frozen value."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ratchet.server.engine import retry


@dataclasses.dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8288
    db_url: str = str(Path(".ratchet") / "ratchet.db")
    #: `dev` (open, no keys) or `cloud` (production: keys and signatures required)
    kind: str = "dev"
    app_urls: tuple[str, ...] = ()
    signing_keys: tuple[str, ...] = ()
    event_keys: tuple[str, ...] = ()
    #: Bearer tokens for the REST and GraphQL APIs in production mode (none: those APIs refuse everyone)
    api_tokens: tuple[str, ...] = ()
    retry: retry.RetryPolicy = dataclasses.field(default_factory=retry.RetryPolicy)
    #: Longest an app call may take before it counts as a failed attempt.
    call_timeout_s: float = 300.0
    #: A claimed queue item is ours for this long; the node renews its leases every third of it while
    #: the calls run, so a crashed node's items come back within one lease.
    lease_s: float = 30.0
    #: Runs that ended, and events nothing needs, are deleted after this long (None: kept for ever).
    retention_s: float | None = None
    #: First wait before a queue item whose handling failed (an engine error) is handled again; see
    #: `retry.item_retry_delay_ms` (after `retry.MAX_ITEM_FAILURES` failures it is dead-lettered).
    item_retry_base_ms: int = 1000
    #: Calls in flight at once on this node.
    max_in_flight: int = 256
    #: Largest event accepted by the event API (bytes of JSON).
    max_event_bytes: int = 512 * 1024
    #: Largest request body accepted by the event API.
    max_request_bytes: int = 16 * 1024 * 1024
    #: Default retries when a function does not say (attempts = retries + 1).
    default_retries: int = 4

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"
