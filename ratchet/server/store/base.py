"""The `Store` interface: every piece of durable state the engine keeps, behind intent-named methods.

Backends (`sqlite/`, `postgres/`) implement `Store`; the contract suite in
`tests/contract/` runs against each. Every public method is one transaction. Times are integer
milliseconds since the epoch (UTC); JSON values are plain Python values.

Record types are frozen dataclasses; the engine reads them and never writes a backend directly.
"""

from __future__ import annotations

import contextvars
import dataclasses
import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ratchet import protocol

#: True while a client waits on the store calls made (the event API's sends). A store whose connections
#: the engine's calls can all keep busy (PostgreSQL's pool) gives these calls connections of their own, so
#: a send does not queue behind hundreds of step applies; SQLite has one connection and ignores it.
FOREGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar("ratchet_store_foreground", default=False)


class StoreError(Exception):
    """Root of the errors a store raises; driver errors are translated to these at the boundary."""


class NotFound(StoreError):
    """The record asked for does not exist."""


class StepStatus(enum.StrEnum):
    COMPLETED = "completed"  #: ran and returned a value (memo `{"data": ...}`)
    FAILED = "failed"  #: failed for good (memo `{"error": ...}`)
    SLEEPING = "sleeping"  #: a sleep; its memo is `null` and it ends at `ended_at`
    WAITING = "waiting"  #: waiting for an event or an invoked run


@dataclasses.dataclass(frozen=True, slots=True)
class AppRecord:
    id: str
    name: str
    url: str
    sdk: str | None
    framework: str | None
    checksum: str
    synced_at: int
    error: str | None = None
    function_count: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class FunctionRecord:
    slug: str  #: the composite id `{app}-{fn}`
    app_id: str
    name: str
    config: protocol.FunctionConfig
    url: str  #: where to call it (runtime url, `stepId` rewritten per call)


@dataclasses.dataclass(frozen=True, slots=True)
class EventRecord:
    internal_id: str  #: ULID assigned by the server
    id: str  #: user-facing id (defaults to the internal id); the idempotency key
    name: str
    data: dict[str, Any]
    ts: int
    received_at: int
    v: str | None = None
    user: dict[str, Any] | None = None
    #: arrival order, unique per stored row; the paging cursor of event lists (0 before storing)
    seq: int = dataclasses.field(default=0, compare=False)

    def wire(self) -> dict[str, Any]:
        """The event as the call request's `event` object."""
        out: dict[str, Any] = {"name": self.name, "data": self.data, "id": self.id, "ts": self.ts}
        if self.v is not None:
            out["v"] = self.v
        if self.user is not None:
            out["user"] = self.user
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class RunRecord:
    id: str
    function_slug: str
    app_id: str
    status: protocol.RunStatus
    event_ids: tuple[str, ...]  #: internal ids of the triggering events, in order
    created_at: int
    started_at: int | None = None
    ended_at: int | None = None
    output: Any = None  #: the function's return value, or its final error body
    stack: tuple[str, ...] = ()  #: step hashes in the order they were recorded
    force_step_plan: bool = False
    error: str | None = None  #: a short reason when failed or cancelled
    rerun_of: str | None = None  #: the run this one reruns (`start_rerun`)
    rerun_from: str | None = None  #: the hash of the step the rerun started from (None: from the start)
    invoked_by: str | None = None  #: the run whose `step.invoke` started this one
    invoked_step: str | None = None  #: the hash of that invoke step


@dataclasses.dataclass(frozen=True, slots=True)
class StepRecord:
    run_id: str
    hash: str
    name: str  #: the user-facing step id
    op: str
    status: StepStatus
    memo: Any  #: what the SDK is sent under `steps[hash]`
    started_at: int
    ended_at: int | None
    attempts: int = 1
    input: Any = None  #: what the step was given (its opcode's options: a wait's event and `if`, an invoke's
    #: function and payload, a sleep's wake time), or None


@dataclasses.dataclass(frozen=True, slots=True)
class QueueItem:
    id: int
    run_id: str  #: the run; for a cron tick `cron:<function slug>`
    target: str  #: `step` for discovery, or the hash of the step to run
    attempt: int
    due_at: int
    lease_owner: str | None = None
    lease_until: int | None = None
    kind: str = "call"  #: one of ItemKind
    payload: Any = None
    #: times handling it failed (an engine error, or a lease that ran out) and the last such failure
    failures: int = 0
    failure: str | None = None


#: Runs (then events) `Store.purge` deletes per transaction.
PURGE_BATCH = 1000

#: Why an item whose lease ran out is handled again (the node holding it died or hung).
LEASE_EXPIRED = "its lease ran out before it was handled (the node holding it stopped or hung)"


@dataclasses.dataclass(frozen=True, slots=True)
class GiveUp:
    """Why a poison item is dead-lettered, and after how many failures (see `Store.apply`)."""

    reason: str
    failures: int


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """A poison queue item, taken out of the queue after failing `failures` times; `reason` says why."""

    id: int
    item_id: int
    run_id: str
    kind: str
    target: str
    attempt: int
    payload: Any
    failures: int
    reason: str
    created_at: int


class ItemKind(enum.StrEnum):
    CALL = "call"  #: call the app (discovery or a targeted step)
    TIMEOUT = "timeout"  #: a pause expires (payload: pause id)
    EMIT = "emit"  #: internal events to ingest (payload: list of events): the outbox
    CRON = "cron"  #: a schedule's tick (payload: function slug and cron spec)
    RUN_TIMEOUT = "run_timeout"  #: `timeouts.start`/`finish` (payload: which)
    DEBOUNCE = "debounce"  #: an open debounce's quiet period ends (run_id `debounce:<key>`)
    BATCH = "batch"  #: an open batch's timeout ends (run_id `batch:<key>`)


class PauseKind(enum.StrEnum):
    WAIT = "wait"  #: `step.wait_for_event`
    INVOKE = "invoke"  #: `step.invoke`, resolved by the child's `inngest/function.finished`
    CANCEL = "cancel"  #: a function's `cancel` config: a matching event cancels the run


@dataclasses.dataclass(frozen=True, slots=True)
class PauseRecord:
    id: str
    run_id: str
    kind: PauseKind
    event_name: str
    expression: str | None  #: residual `if` with only `async` left, or None (any event of the name)
    created_at: int
    expires_at: int | None
    step_hash: str | None = None
    step_name: str | None = None
    index_path: str | None = None
    index_value: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class RunLinks:
    """The runs that point at a run: its reruns, and the children its `step.invoke` steps started."""

    reruns: tuple[str, ...] = ()  #: ids of the runs that rerun it, oldest first
    children: Mapping[str, str] = dataclasses.field(default_factory=dict)  #: invoke step hash -> child run id


@dataclasses.dataclass(frozen=True, slots=True)
class RunState:
    """All a call to the app needs, loaded in one transaction."""

    run: RunRecord
    function: FunctionRecord | None  #: None when its app's last sync removed the function
    events: tuple[EventRecord, ...]
    memo: dict[str, Any]  #: step hash -> memo, only finished steps


# ------------------------------------------------------------------------------------- writes the engine asks for


@dataclasses.dataclass(frozen=True, slots=True)
class NewRun:
    """A run to create together with its first (discovery) queue item, its cancel-on pauses and timers."""

    id: str
    function_slug: str
    app_id: str
    event_ids: tuple[str, ...]
    idempotency_key: str | None
    due_at: int
    pauses: tuple[PauseRecord, ...] = ()
    timers: tuple[NewItem, ...] = ()
    flow: RunFlow | None = None
    rerun_of: str | None = None  #: see `RunRecord`
    rerun_from: str | None = None
    invoked_by: str | None = None
    invoked_step: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class RunFlow:
    """Flow control the store applies when it creates a run, each against its key's stored state."""

    priority_ms: int = 0  #: the run's calls sort this much earlier among due calls
    rate_limit: tuple[str, int, int] | None = None  #: (key, limit, period ms): excess runs are SKIPPED
    throttle: tuple[str, int, int, int] | None = None  #: (key, limit, period ms, burst): excess runs wait
    singleton: tuple[str, str] | None = None  #: (key, mode `skip` | `cancel`)
    #: (key, limit) of each concurrency limit: the run's calls in flight count against each key
    concurrency: tuple[tuple[str, int], ...] = ()
    #: (key, period ms, timeout ms | None): no run now; the key's debounce takes this event as its last
    debounce: tuple[str, int, int | None] | None = None
    #: (key, max size, timeout ms): the event joins the key's batch; the run starts when it is full
    batch: tuple[str, int, int] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Pending:
    """An open debounce or batch: the function, and the events its run will start with."""

    kind: str  #: ItemKind.DEBOUNCE or ItemKind.BATCH
    key: str
    function_slug: str
    event_ids: tuple[str, ...]
    fire_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class NewItem:
    """A queue item that is not the run's first call: timers, cron ticks, the outbox."""

    kind: str
    run_id: str
    due_at: int
    payload: Any = None
    target: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class SaveStep:
    hash: str
    name: str
    op: str
    status: StepStatus
    memo: Any
    started_at: int
    ended_at: int | None
    attempts: int = 1
    input: Any = None  #: see `StepRecord.input`


@dataclasses.dataclass(frozen=True, slots=True)
class Enqueue:
    """Queue a call, unless the same call is already queued (for discovery: queued and not started yet),
    or the targeted step has already been recorded.

    `when_idle`: only if the run has no other calls or pauses in progress (parallel steps in the default
    WAIT mode); queuing it then also ends the run's parallel mode (`force_step_plan` back to false),
    unless `end_parallel` is false (a pause's resume or timeout keeps it, as Inngest's executor does).
    Targeted calls are not queued twice either (a race-mode discovery re-plans steps in flight).
    """

    target: str
    due_at: int
    attempt: int = 0
    when_idle: bool = False
    race: bool = False  #: the planned step belongs to a race-mode group
    end_parallel: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class CreatePause:
    """Pause the run until an event (or the expiry, which queues a TIMEOUT item)."""

    pause: PauseRecord


@dataclasses.dataclass(frozen=True, slots=True)
class ConsumePause:
    """Delete the pause; when it is already gone (another event or its timeout won), the commands after
    this one are skipped."""

    pause_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class Emit:
    """Internal events (e.g. `inngest/function.finished`) to ingest after this commit (the outbox)."""

    events: tuple[dict[str, Any], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class RetryItem:
    """Put the claimed item back for another attempt."""

    due_at: int
    error: Any = None


@dataclasses.dataclass(frozen=True, slots=True)
class FinishRun:
    status: protocol.RunStatus
    output: Any
    error: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class SetForceStepPlan:
    value: bool


Command = SaveStep | Enqueue | RetryItem | FinishRun | SetForceStepPlan | CreatePause | Emit | ConsumePause


@dataclasses.dataclass(frozen=True, slots=True)
class Resume:
    """Commands an incoming event applies to a run (resolving a pause starts with `ConsumePause`, so the
    first event wins); nothing is applied to a run that has ended."""

    run_id: str
    commands: tuple[Command, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Applied:
    """What `apply` did: the queue items it created that are due now (already leased to the caller)."""

    accepted: bool  #: False when the item was no longer ours (lease lost, run ended): nothing written
    ready: tuple[QueueItem, ...] = ()
    #: something is queued that the scheduler must look at (a later call, a call waiting for a
    #: concurrency slot, the outbox, or calls a freed slot unblocked)
    enqueued_future: bool = False


class Store(Protocol):
    """Durable state of the engine. Each method is one transaction."""

    #: True when one process owns the store (SQLite): leases left at start-up are a dead predecessor's.
    single_owner: bool

    async def close(self) -> None: ...

    # -- apps and functions
    async def sync_app(self, app: AppRecord, functions: list[FunctionRecord], crons: Sequence[NewItem] = ()
                       ) -> tuple[AppRecord, bool]:
        """Upsert the app by name with exactly these functions (others of the app are archived).

        When anything changed, the app's cron ticks are replaced by `crons` (one CRON item per schedule).
        Returns the stored app and whether anything changed (False when the checksum is the same).
        """
        ...

    async def set_app_error(self, url: str, error: str | None) -> None: ...
    async def list_apps(self) -> list[AppRecord]: ...
    async def list_functions(self) -> list[FunctionRecord]: ...
    async def get_function(self, slug: str) -> FunctionRecord | None: ...

    # -- events and runs
    async def ingest(self, events: list[EventRecord], runs: list[NewRun], now: int, *,
                     resumes: Sequence[Resume] = (), items: Sequence[NewItem] = (),
                     done: tuple[QueueItem, str] | None = None) -> list[str]:
        """Store the events, start the runs (skipping runs whose idempotency key is taken), apply the
        resumes, queue `items`, and delete `done` (an item held by its owner) if given, all at once.

        Returns the ids of the runs created.
        """
        ...

    async def get_event(self, internal_id: str) -> EventRecord | None: ...
    async def get_events(self, internal_ids: Sequence[str]) -> list[EventRecord]:
        """The events with these internal ids, in the order given (missing ones left out)."""
        ...
    async def list_events(self, *, name: str | None, limit: int, before: int | None = None,
                          search: str | None = None) -> list[EventRecord]:
        """Events newest first; `before` is the `seq` of the last event of the previous page; `search`, text
        their data has, ignoring case (`%` and `_` match themselves)."""
        ...
    async def runs_for_event(self, internal_id: str) -> list[RunRecord]: ...
    async def get_run(self, run_id: str) -> RunRecord | None: ...
    async def list_runs(self, *, function_slug: str | None = None, status: str | Sequence[str] | None = None,
                        limit: int = 50, before: str | None = None, app_id: str | None = None,
                        created_from: int | None = None, created_to: int | None = None,
                        search: str | None = None) -> list[RunRecord]:
        """Runs newest first (`before`: ids below it, for paging). Every filter is optional: `status` one
        or several, created in [`created_from`, `created_to`), `search` a run id or text in the data of
        the run's triggering events (ignoring case)."""
        ...

    async def count_runs(self, *, function_slug: str | None = None, status: str | Sequence[str] | None = None,
                         app_id: str | None = None, created_from: int | None = None, created_to: int | None = None,
                         search: str | None = None, at_most: int | None = None) -> int:
        """How many runs `list_runs` would list with the same filters and no limit; with `at_most`, counting
        stops there (a count of every match of a common search text need not read them all)."""
        ...

    async def change_marker(self) -> object:
        """A cheap value that differs after anything was written to the store (for live views: they
        refresh when it moves). On a shared database it moves with every node's writes."""
        ...
    async def get_steps(self, run_id: str) -> list[StepRecord]: ...
    async def get_run_links(self, run_id: str) -> RunLinks:
        """The reruns of the run and the child runs its invoke steps started (the first child per step)."""
        ...

    async def start_rerun(self, run: NewRun, now: int, *, events: Sequence[EventRecord] = (),
                          steps: Sequence[StepRecord] = ()) -> None:
        """Start a rerun (`run.rerun_of` set), at once: store `events` (its edited event, if any; they
        start nothing else and resolve no pause), create `run` as `ingest` does but without an
        idempotency key (`run.idempotency_key` is ignored), and record `steps` (finished steps copied
        from the original run) as its memo, in the order given, each exactly as stored."""
        ...

    async def run_ids_by_status(self, function_slug: str, statuses: Sequence[str], *,
                                created_from: int | None = None, created_to: int | None = None,
                                after: str | None = None, limit: int = 1000) -> list[str]:
        """Ids of the function's runs whose status is one of `statuses`, created in [from, to), with ids
        greater than `after` (paging), oldest first."""
        ...

    async def load_run_state(self, run_id: str, now: int) -> RunState | None:
        """The run, its function, its events and the memo of the steps finished by `now`."""
        ...

    # -- the queue
    async def claim_due(self, now: int, limit: int, owner: str, lease_ms: int, *,
                        due_by: int | None = None) -> list[QueueItem]:
        """Lease up to `limit` items due by `due_by` (default `now`) that nobody holds (or whose lease ran
        out at `now`: that counts as a failure, `LEASE_EXPIRED`); a run starts, and leases count, from `now`.

        Runs of the claimed items that were QUEUED become RUNNING, started at `now`.
        """
        ...

    async def next_due_at(self) -> int | None:
        """The earliest due time of an unleased item, or the earliest lease expiry, or None."""
        ...

    async def apply(self, item: QueueItem, owner: str, commands: list[Command], now: int,
                    lease_ms: int, *, dead_letter: GiveUp | None = None) -> Applied:
        """Apply the engine's decision for a claimed item and release it, in one transaction.

        Items enqueued due at or before `now` come back leased to `owner` so the caller can run them
        at once without a round through the scheduler. With `dead_letter`, the item is also recorded
        as a dead letter with that reason and count (it is removed from the queue either way).
        """
        ...

    async def fail_item(self, item: QueueItem, owner: str, reason: str, now: int, retry_at: int) -> bool:
        """Handling a claimed item failed: count the failure, keep `reason`, and release the item to be
        handled again at `retry_at` (its concurrency slots are freed meanwhile). False when the item is
        no longer held by `owner` (nothing written)."""
        ...

    async def list_dead_letters(self, *, limit: int = 100, before: int | None = None,
                                run_id: str | None = None) -> list[DeadLetter]:
        """Dead letters, newest first (`before`: ids below it, for paging)."""
        ...

    async def pause_index(self, event_name: str) -> tuple[list[str], list[PauseRecord]]:
        """What an event of this name may resolve, in one read: the distinct `index_path`s of the pauses
        waiting for it, and the pauses waiting for it that are not indexed (oldest first)."""
        ...

    async def find_pauses(self, event_name: str, keys: list[tuple[str, str]]) -> list[PauseRecord]:
        """Pauses for `event_name` that are not indexed, or whose (index_path, index_value) is in `keys`."""
        ...

    async def get_pause(self, pause_id: str) -> PauseRecord | None: ...
    async def pauses_for_run(self, run_id: str) -> list[PauseRecord]: ...

    async def cancel_runs(self, run_ids: Sequence[str], reason: str, now: int, emits: Mapping[str, Emit]) -> list[str]:
        """Cancel the runs that have not ended: status CANCELLED, their items and pauses removed, and
        `emits[run_id]` queued for each run cancelled. Returns the ids cancelled."""
        ...

    async def active_run_ids(self, function_slug: str, *, created_from: int | None = None,
                             created_to: int | None = None, limit: int = 1000) -> list[str]:
        """Ids of runs of the function that have not ended, created in [from, to), oldest first."""
        ...

    async def get_pending(self, kind: str, key: str) -> Pending | None:
        """The open debounce or batch of `key`."""
        ...

    async def fire_pending(self, item: QueueItem, owner: str, pending: Pending, run: NewRun, now: int) -> bool:
        """Start the run of an open debounce or batch, if it is still as `pending` says and due; close it
        and delete its timer `item`, at once. Otherwise re-arm the timer for the current `fire_at`."""
        ...

    async def subscribe(self, on_work: Callable[[], None], on_sync: Callable[[], None]) -> None:
        """Call `on_work` when another process queues work and `on_sync` when it syncs an app (a shared
        store's nodes wake each other; a single-owner store has no one else to hear from)."""
        ...

    async def purge(self, before: int, now: int) -> int:
        """Retention: delete runs that ended before `before` (with their steps), events received before
        it that no live run, debounce or batch still needs, and expired keys and flow state. Returns
        how many runs and events went.

        Unlike the other methods, not one transaction: runs, then events, go in batches of
        `PURGE_BATCH`, each committed on its own, so a large backlog never holds the writer (SQLite) or
        its locks (PostgreSQL) for long. Each batch is whole (a run goes with its steps), and a purge
        stopped half-way leaves nothing the next one cannot finish."""
        ...

    async def applied_migrations(self) -> list[str]:
        """Names of the schema migrations applied to this store, in order."""
        ...

    async def extend_leases(self, owner: str, until: int) -> int:
        """Keep `owner`'s leases (its calls in flight) until `until`: the node's heartbeat."""
        ...

    async def release_leases(self, owner: str | None = None) -> int:
        """Drop leases (all, or those of `owner`); used when a single-node server restarts. Dropping all
        leases (a predecessor died holding them) counts a failure of each item, as in `claim_due`."""
        ...

    async def mark_running(self, run_id: str, now: int) -> None: ...
