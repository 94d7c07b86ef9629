"""The Store contract: every backend must pass this suite (parametrized over backends in conftest)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from ratchet import protocol
from ratchet.server import ids
from ratchet.server.store import base, open_store

NOW = 1_700_000_000_000
OWNER = "node-a"
LEASE = 30_000


def fn_record(slug: str = "app-f", app_id: str = "app-1", event: str = "e/x") -> base.FunctionRecord:
    cfg = protocol.FunctionConfig.model_validate({
        "id": slug, "name": slug, "triggers": [{"event": event}],
        "steps": {"step": {"id": "step", "name": "step", "runtime": {"url": "http://127.0.0.1:1/api"}}},
    })
    return base.FunctionRecord(slug=slug, app_id=app_id, name=slug, config=cfg, url="http://127.0.0.1:1/api")


def app_record(name: str = "app", checksum: str = "c1", app_id: str = "app-1") -> base.AppRecord:
    return base.AppRecord(id=app_id, name=name, url="http://127.0.0.1:1/api", sdk="py", framework="fastapi",
                          checksum=checksum, synced_at=NOW)


def event(internal_id: str = "ev1", user_id: str | None = None) -> base.EventRecord:
    return base.EventRecord(internal_id=internal_id, id=user_id or internal_id, name="e/x", data={"k": 1},
                            ts=NOW, received_at=NOW)


def new_run(run_id: str = "run1", event_id: str = "ev1", key: str | None = None, due: int = NOW) -> base.NewRun:
    return base.NewRun(id=run_id, function_slug="app-f", app_id="app-1", event_ids=(event_id,),
                       idempotency_key=key, due_at=due)


async def started(store: base.Store, run_id: str = "run1") -> base.QueueItem:
    """Sync a function, ingest one event with one run, and claim its first item."""
    await store.sync_app(app_record(), [fn_record()])
    await store.ingest([event()], [new_run(run_id)], NOW)
    items = await store.claim_due(NOW, 10, OWNER, LEASE)
    assert len(items) == 1
    return items[0]


async def test_sync_app_upserts_by_name_and_archives_removed_functions(store: base.Store) -> None:
    app, changed = await store.sync_app(app_record(), [fn_record("app-f"), fn_record("app-g")])
    assert changed
    assert {f.slug for f in await store.list_functions()} == {"app-f", "app-g"}
    again, changed = await store.sync_app(app_record(app_id="other-id"), [fn_record("app-f")])
    assert not changed and again.id == app.id  # same checksum: nothing to change; id kept
    _, changed = await store.sync_app(app_record(checksum="c2", app_id="other-id"), [fn_record("app-f")])
    assert changed
    assert [f.slug for f in await store.list_functions()] == ["app-f"]
    assert (await store.get_function("app-g")) is not None  # archived, still readable for old runs
    apps = await store.list_apps()
    assert [(a.name, a.id, a.function_count) for a in apps] == [("app", app.id, 1)]


async def test_set_app_error_is_cleared_by_the_next_sync(store: base.Store) -> None:
    await store.sync_app(app_record(), [fn_record()])
    await store.set_app_error("http://127.0.0.1:1/api", "unreachable")
    assert (await store.list_apps())[0].error == "unreachable"
    await store.sync_app(app_record(checksum="c2"), [fn_record()])
    assert (await store.list_apps())[0].error is None


async def test_ingest_stores_events_and_runs_with_a_due_discovery_item(store: base.Store) -> None:
    created = await store.ingest([event()], [new_run()], NOW)
    assert created == ["run1"]
    assert (await store.get_event("ev1")) == event()
    run = await store.get_run("run1")
    assert run is not None and run.status == protocol.RunStatus.QUEUED and run.event_ids == ("ev1",)
    assert [r.id for r in await store.runs_for_event("ev1")] == ["run1"]
    items = await store.claim_due(NOW, 10, OWNER, LEASE)
    assert [(i.run_id, i.target, i.attempt) for i in items] == [("run1", "step", 0)]


async def test_idempotency_key_starts_one_run_until_it_expires(store: base.Store) -> None:
    assert await store.ingest([event("ev1", "same")], [new_run("r1", "ev1", key="f:same")], NOW) == ["r1"]
    assert await store.ingest([event("ev2", "same")], [new_run("r2", "ev2", key="f:same")], NOW + 1) == []
    assert await store.get_run("r2") is None
    assert (await store.get_event("ev2")) is not None  # the event is still stored
    day = 24 * 3600 * 1000
    assert await store.ingest([event("ev3", "same")], [new_run("r3", "ev3", key="f:same")], NOW + day) == ["r3"]


async def test_idempotency_keys_may_hold_nul_separators(store: base.Store) -> None:
    # The engine's keys join their parts with NUL (`<slug>\x00<event id>`).
    assert await store.ingest([event("ev1")], [new_run("r1", "ev1", key="app-f\x00ev1")], NOW) == ["r1"]
    assert await store.ingest([event("ev2")], [new_run("r2", "ev2", key="app-f\x00ev1")], NOW) == []
    assert await store.ingest([event("ev3")], [new_run("r3", "ev3", key="app-f\x00ev3")], NOW) == ["r3"]


async def test_same_internal_id_twice_stores_two_events(store: base.Store) -> None:
    await store.ingest([event("ev1")], [], NOW)
    await store.ingest([event("ev1")], [], NOW)
    listed = await store.list_events(name="e/x", limit=10)
    assert [e.internal_id for e in listed] == ["ev1", "ev1"]


async def test_list_events_newest_first_with_paging(store: base.Store) -> None:
    await store.ingest([event(f"ev{i}") for i in range(5)], [], NOW)
    page = await store.list_events(name="e/x", limit=2)
    assert [e.internal_id for e in page] == ["ev4", "ev3"]
    page2 = await store.list_events(name="e/x", limit=2, before=page[-1].seq)
    assert [e.internal_id for e in page2] == ["ev2", "ev1"]
    assert await store.list_events(name="other", limit=10) == []


async def test_claim_due_never_returns_a_leased_item(store: base.Store) -> None:
    await started(store)
    assert await store.claim_due(NOW, 10, "node-b", LEASE) == []
    # ...until its lease runs out
    later = await store.claim_due(NOW + LEASE, 10, "node-b", LEASE)
    assert [i.lease_owner for i in later] == ["node-b"]


async def test_claim_due_skips_items_not_yet_due(store: base.Store) -> None:
    await store.ingest([event()], [new_run(due=NOW + 5000)], NOW)
    assert await store.claim_due(NOW, 10, OWNER, LEASE) == []
    assert await store.next_due_at() == NOW + 5000
    assert len(await store.claim_due(NOW + 5000, 10, OWNER, LEASE)) == 1


async def test_claim_due_respects_the_limit(store: base.Store) -> None:
    await store.ingest([event()], [new_run(f"r{i}") for i in range(5)], NOW)
    assert len(await store.claim_due(NOW, 3, OWNER, LEASE)) == 3
    assert len(await store.claim_due(NOW, 3, OWNER, LEASE)) == 2


async def test_release_leases_makes_items_claimable_again(store: base.Store) -> None:
    await started(store)
    assert await store.release_leases() == 1
    assert len(await store.claim_due(NOW, 10, "node-b", LEASE)) == 1


def save(hash_: str, data: object, status: base.StepStatus = base.StepStatus.COMPLETED,
         ended: int | None = NOW) -> base.SaveStep:
    memo = {"data": data} if status == base.StepStatus.COMPLETED else data
    return base.SaveStep(hash_, f"name-{hash_}", "StepRun", status, memo, NOW, ended)


async def test_apply_saves_the_step_releases_the_item_and_returns_the_ready_discovery(store: base.Store) -> None:
    item = await started(store)
    applied = await store.apply(item, OWNER, [save("h1", "A"), base.Enqueue("step", NOW)], NOW, LEASE)
    assert applied.accepted
    assert [(i.target, i.lease_owner) for i in applied.ready] == [("step", OWNER)]
    state = await store.load_run_state("run1", NOW)
    assert state is not None
    assert state.memo == {"h1": {"data": "A"}} and state.run.stack == ("h1",)
    assert state.function is not None and state.function.slug == "app-f"
    assert [e.internal_id for e in state.events] == ["ev1"]
    # the old item is gone; the ready one is leased to us, so nobody else can claim anything
    assert await store.claim_due(NOW, 10, "node-b", LEASE) == []


async def test_save_step_is_idempotent_first_result_wins(store: base.Store) -> None:
    item = await started(store)
    applied = await store.apply(item, OWNER, [save("h1", "first"), base.Enqueue("step", NOW)], NOW, LEASE)
    nxt = applied.ready[0]
    await store.apply(nxt, OWNER, [save("h1", "second"), base.Enqueue("step", NOW)], NOW, LEASE)
    steps = await store.get_steps("run1")
    assert [(s.hash, s.memo) for s in steps] == [("h1", {"data": "first"})]
    run = await store.get_run("run1")
    assert run is not None and run.stack == ("h1",)


async def test_steps_keep_their_input_and_a_resolved_wait_keeps_the_one_it_began_with(store: base.Store) -> None:
    item = await started(store)
    given = {"event": "app/done", "if": "event.data.id == async.data.id", "timeout": "1h"}
    wait = base.SaveStep("w1", "wait", "WaitForEvent", base.StepStatus.WAITING, None, NOW, None, input=given)
    applied = await store.apply(item, OWNER, [save("h1", "A"), wait, base.Enqueue("step", NOW)], NOW, LEASE)
    resolved = base.SaveStep("w1", "wait", "WaitForEvent", base.StepStatus.COMPLETED, {"data": None}, NOW, NOW + 1)
    await store.apply(applied.ready[0], OWNER, [resolved, base.Enqueue("step", NOW)], NOW, LEASE)
    steps = {s.hash: s for s in await store.get_steps("run1")}
    assert steps["h1"].input is None
    assert steps["w1"].input == given and steps["w1"].status == base.StepStatus.COMPLETED


async def test_outcomes_applied_at_once_are_each_applied_as_alone(store: base.Store) -> None:
    """Many applies at the same moment (PostgreSQL writes them in batches, one commit each): every run gets
    its step and a leased follow-up call, and outcomes of one run in one batch see each other (the
    second of two parallel steps is the one that queues discovery)."""
    await store.sync_app(app_record(), [fn_record()])
    runs = [f"run{n:02d}" for n in range(40)]
    await store.ingest([event(f"ev{n}") for n in range(40)],
                       [new_run(r, f"ev{n}") for n, r in enumerate(runs)], NOW)
    items = await store.claim_due(NOW, 100, OWNER, LEASE)
    assert len(items) == 40
    outcomes = await asyncio.gather(*(
        store.apply(i, OWNER, [save("h1", i.run_id), base.Enqueue("a", NOW), base.Enqueue("b", NOW)], NOW, LEASE)
        for i in items))
    assert all(o.accepted and [r.target for r in o.ready] == ["a", "b"] for o in outcomes)
    if getattr(store, "one_statement", False):  # PostgreSQL: the 40 outcomes went out in a few statements
        assert store._batcher.statements <= 4, store._batcher.statements  # type: ignore[attr-defined]
    # the two parallel calls of every run end at once; only the later of each pair queues discovery
    done = await asyncio.gather(*(
        store.apply(item, OWNER, [save(h, h), base.Enqueue("step", NOW, when_idle=True)], NOW, LEASE)
        for o in outcomes for item, h in ((o.ready[0], "ha"), (o.ready[1], "hb"))))
    assert all(d.accepted for d in done)
    for n, run_id in enumerate(runs):
        assert sorted(len(d.ready) for d in done[2 * n:2 * n + 2]) == [0, 1], run_id
        steps = await store.get_steps(run_id)
        assert sorted((s.hash, s.memo["data"]) for s in steps) == [("h1", run_id), ("ha", "ha"), ("hb", "hb")]
        state = await store.load_run_state(run_id, NOW)
        assert state is not None and set(state.run.stack) == {"h1", "ha", "hb"}


async def test_apply_by_someone_else_writes_nothing(store: base.Store) -> None:
    item = await started(store)
    applied = await store.apply(item, "node-b", [save("h1", "A")], NOW, LEASE)
    assert not applied.accepted
    assert await store.get_steps("run1") == []


async def test_apply_after_the_lease_was_taken_over_writes_nothing(store: base.Store) -> None:
    item = await started(store)
    taken = await store.claim_due(NOW + LEASE, 10, "node-b", LEASE)
    assert len(taken) == 1
    applied = await store.apply(item, OWNER, [save("h1", "A")], NOW + LEASE, LEASE)
    assert not applied.accepted
    assert await store.get_steps("run1") == []


async def test_retry_item_bumps_the_attempt_and_frees_it_until_due(store: base.Store) -> None:
    item = await started(store)
    applied = await store.apply(item, OWNER, [base.RetryItem(NOW + 1000, {"message": "boom"})], NOW, LEASE)
    assert applied.accepted and applied.enqueued_future
    assert await store.claim_due(NOW + 999, 10, OWNER, LEASE) == []
    again = await store.claim_due(NOW + 1000, 10, OWNER, LEASE)
    assert [(i.id, i.attempt) for i in again] == [(item.id, 1)]


async def test_future_enqueue_is_not_ready_and_waits_for_its_time(store: base.Store) -> None:
    item = await started(store)
    sleep = base.SaveStep("hs", "nap", "Sleep", base.StepStatus.SLEEPING, None, NOW, NOW + 5000)
    applied = await store.apply(item, OWNER, [sleep, base.Enqueue("step", NOW + 5000)], NOW, LEASE)
    assert applied.ready == () and applied.enqueued_future
    assert await store.next_due_at() == NOW + 5000
    # the sleep is not in the memo before it ends, and is (as null) after
    before = await store.load_run_state("run1", NOW + 4999)
    after = await store.load_run_state("run1", NOW + 5000)
    assert before is not None and after is not None
    assert "hs" not in before.memo and after.memo == {"hs": None}


async def test_finish_run_sets_status_output_and_drops_other_items(store: base.Store) -> None:
    item = await started(store)
    applied = await store.apply(item, OWNER, [base.Enqueue("other", NOW + 10_000),
                                              base.FinishRun(protocol.RunStatus.COMPLETED, {"ok": 1})], NOW, LEASE)
    assert applied.accepted
    run = await store.get_run("run1")
    assert run is not None and run.status == protocol.RunStatus.COMPLETED and run.output == {"ok": 1}
    assert run.ended_at == NOW
    assert await store.claim_due(NOW + 20_000, 10, OWNER, LEASE) == []
    assert await store.next_due_at() is None


async def test_apply_on_a_finished_run_drops_the_item(store: base.Store) -> None:
    item = await started(store)
    await store.apply(item, OWNER, [base.Enqueue("step", NOW), base.FinishRun(protocol.RunStatus.FAILED, None)],
                      NOW, LEASE)
    # a stray item for a finished run (e.g. from before a crash) is dropped, not applied
    await store.ingest([], [], NOW)
    assert await store.claim_due(NOW, 10, OWNER, LEASE) == []


async def test_claiming_a_queued_run_marks_it_running(store: base.Store) -> None:
    await store.ingest([event()], [new_run("run1")], NOW)
    assert (run := await store.get_run("run1")) is not None and run.status == protocol.RunStatus.QUEUED
    await store.claim_due(NOW + 7, 10, OWNER, LEASE)
    run = await store.get_run("run1")
    assert run is not None and run.status == protocol.RunStatus.RUNNING and run.started_at == NOW + 7


async def test_mark_running_only_moves_queued_runs(store: base.Store) -> None:
    await store.ingest([event()], [new_run("run1")], NOW)
    await store.mark_running("run1", NOW + 1)
    run = await store.get_run("run1")
    assert run is not None and run.status == protocol.RunStatus.RUNNING and run.started_at == NOW + 1
    item = (await store.claim_due(NOW + 2, 10, OWNER, LEASE))[0]
    await store.apply(item, OWNER, [base.FinishRun(protocol.RunStatus.COMPLETED, 1)], NOW + 2, LEASE)
    await store.mark_running("run1", NOW + 3)
    run = await store.get_run("run1")
    assert run is not None and run.status == protocol.RunStatus.COMPLETED


async def test_list_runs_filters_and_pages(store: base.Store) -> None:
    await store.sync_app(app_record(), [fn_record()])
    await store.ingest([event()], [new_run(f"r{i}") for i in range(4)], NOW)
    assert [r.id for r in await store.list_runs(limit=2)] == ["r3", "r2"]
    assert [r.id for r in await store.list_runs(limit=10, before="r2")] == ["r1", "r0"]
    assert len(await store.list_runs(status="QUEUED", limit=10)) == 4
    assert await store.list_runs(status="COMPLETED", limit=10) == []
    assert len(await store.list_runs(function_slug="app-f", limit=10)) == 4
    assert await store.list_runs(function_slug="nope", limit=10) == []


async def test_count_runs_by_status_and_function(store: base.Store) -> None:
    await store.ingest([event()], [new_run(f"r{i}") for i in range(3)], NOW)
    assert await store.count_runs() == 3
    assert await store.count_runs(status="QUEUED") == 3
    assert await store.count_runs(status="COMPLETED") == 0
    assert await store.count_runs(function_slug="app-f", status="QUEUED") == 3
    assert await store.count_runs(function_slug="nope") == 0


# ------------------------------------------------------------------------------ pauses, timers, the outbox

WAIT_EVENT = "e/wait"


def pause(pid: str = "p1", run_id: str = "run1", *, kind: base.PauseKind = base.PauseKind.WAIT,
          event_name: str = WAIT_EVENT, expires_at: int | None = None, index: tuple[str, str] | None = None,
          created_at: int = NOW) -> base.PauseRecord:
    path, value = index if index is not None else (None, None)
    step = None if kind == base.PauseKind.CANCEL else f"h-{pid}"
    return base.PauseRecord(id=pid, run_id=run_id, kind=kind, event_name=event_name,
                            expression=None if index is None else f"async.{path} == {value}", created_at=created_at,
                            expires_at=expires_at, step_hash=step, step_name=step, index_path=path, index_value=value)


def waiting(p: base.PauseRecord) -> list[base.Command]:
    """What the engine applies for a `wait_for_event` step: a WAITING step row and the pause."""
    assert p.step_hash is not None
    return [base.SaveStep(p.step_hash, p.step_hash, "WaitForEvent", base.StepStatus.WAITING, None, NOW, None),
            base.CreatePause(p)]


def resolved(p: base.PauseRecord, data: object, *, extra: tuple[base.Command, ...] = ()) -> base.Resume:
    """What an event resolving `p` applies: consume it, complete its step, queue discovery (when idle)."""
    assert p.step_hash is not None
    return base.Resume(p.run_id, (base.ConsumePause(p.id),
                                  base.SaveStep(p.step_hash, p.step_hash, "WaitForEvent", base.StepStatus.COMPLETED,
                                                {"data": data}, NOW, NOW + 1),
                                  base.Enqueue("step", NOW + 1, when_idle=True), *extra))


async def test_create_pause_stores_it_and_queues_a_timeout_at_its_expiry(store: base.Store) -> None:
    item = await started(store)
    p = pause(expires_at=NOW + 5000)
    applied = await store.apply(item, OWNER, waiting(p), NOW, LEASE)
    assert applied.accepted and applied.ready == () and applied.enqueued_future
    assert await store.get_pause("p1") == p
    assert await store.get_pause("nope") is None
    assert await store.pauses_for_run("run1") == [p]
    assert [s.status for s in await store.get_steps("run1")] == [base.StepStatus.WAITING]
    assert await store.next_due_at() == NOW + 5000
    assert await store.claim_due(NOW + 4999, 10, OWNER, LEASE) == []
    timeouts = await store.claim_due(NOW + 5000, 10, OWNER, LEASE)
    assert [(i.kind, i.run_id, i.payload) for i in timeouts] == [(base.ItemKind.TIMEOUT, "run1", "p1")]


async def test_a_pause_without_expiry_queues_nothing(store: base.Store) -> None:
    item = await started(store)
    applied = await store.apply(item, OWNER, waiting(pause()), NOW, LEASE)
    assert applied.accepted and applied.ready == ()
    assert await store.next_due_at() is None


async def test_consume_pause_first_event_wins_and_skips_the_rest(store: base.Store) -> None:
    item = await started(store)
    p = pause(expires_at=NOW + 5000)
    await store.apply(item, OWNER, waiting(p), NOW, LEASE)
    await store.ingest([], [], NOW + 1, resumes=[resolved(p, "first")])
    # A second event (or the timeout) comes too late: none of its commands apply, not even ones about
    # other steps.
    late = resolved(p, "second", extra=(save("hx", "X"), base.Enqueue("hy", NOW + 1)))
    await store.ingest([], [], NOW + 2, resumes=[late])
    assert await store.get_pause("p1") is None
    steps = await store.get_steps("run1")
    assert [(s.hash, s.status, s.memo) for s in steps] == [("h-p1", base.StepStatus.COMPLETED, {"data": "first"})]
    # one discovery call, and the pause's timeout item went with the pause
    items = await store.claim_due(NOW + 10_000, 10, OWNER, LEASE)
    assert [(i.kind, i.target) for i in items] == [(base.ItemKind.CALL, "step")]


async def test_a_resume_on_a_finished_run_applies_nothing(store: base.Store) -> None:
    item = await started(store)
    await store.apply(item, OWNER, [base.FinishRun(protocol.RunStatus.COMPLETED, 1)], NOW, LEASE)
    await store.ingest([], [], NOW + 1, resumes=[base.Resume("run1", (save("h1", "A"), base.Enqueue("step", NOW)))])
    assert await store.get_steps("run1") == []
    assert await store.claim_due(NOW + 1, 10, OWNER, LEASE) == []
    run = await store.get_run("run1")
    assert run is not None and run.status == protocol.RunStatus.COMPLETED and run.stack == ()


async def waits_for(store: base.Store, pauses: list[base.PauseRecord]) -> None:
    """Start run1 with `pauses` (as a new run's cancel-on pauses are stored)."""
    await store.sync_app(app_record(), [fn_record()])
    run = dataclasses.replace(new_run(), pauses=tuple(pauses))
    await store.ingest([event()], [run], NOW)


async def test_find_pauses_returns_unindexed_ones_and_only_the_keys_asked(store: base.Store) -> None:
    anyone = pause("p-any", created_at=NOW)
    a = pause("p-a", index=("data.id", '"a"'), created_at=NOW + 1)
    b = pause("p-b", index=("data.id", '"b"'), created_at=NOW + 2)
    other_path = pause("p-x", index=("data.x", '"a"'), created_at=NOW + 3)
    other_event = pause("p-other", event_name="e/other", created_at=NOW + 4)
    await waits_for(store, [b, other_event, a, other_path, anyone])
    assert await store.find_pauses(WAIT_EVENT, []) == [anyone]
    assert await store.find_pauses(WAIT_EVENT, [("data.id", '"a"')]) == [anyone, a]
    assert await store.find_pauses(WAIT_EVENT, [("data.id", '"b"'), ("data.x", '"a"')]) == [anyone, b, other_path]
    assert await store.find_pauses(WAIT_EVENT, [("data.id", '"zzz"')]) == [anyone]
    assert await store.find_pauses("e/other", [("data.id", '"a"')]) == [other_event]
    assert await store.find_pauses("e/none", []) == []
    paths, unindexed = await store.pause_index(WAIT_EVENT)
    assert sorted(paths) == ["data.id", "data.x"] and unindexed == [anyone]
    assert await store.pause_index("e/other") == ([], [other_event])
    assert await store.pause_index("e/none") == ([], [])


async def test_pause_index_gives_the_distinct_paths_and_the_unindexed_pauses_of_the_event_name(
        store: base.Store) -> None:
    p4, p6 = pause("p4"), pause("p6", event_name="e/plain")
    await waits_for(store, [pause("p1", index=("data.id", '"a"')), pause("p2", index=("data.id", '"b"')),
                            pause("p3", index=("data.x", "1")), p4,
                            pause("p5", event_name="e/other", index=("data.y", "2")), p6])
    paths, unindexed = await store.pause_index(WAIT_EVENT)
    assert sorted(paths) == ["data.id", "data.x"] and unindexed == [p4]
    assert await store.pause_index("e/other") == (["data.y"], [])
    assert await store.pause_index("e/plain") == ([], [p6])  # unindexed pauses have no path


# ------------------------------------------------------------------------------ enqueue rules


async def test_enqueue_does_not_queue_a_targeted_call_twice_while_queued_or_leased(store: base.Store) -> None:
    item = await started(store)
    applied = await store.apply(item, OWNER, [base.Enqueue("h1", NOW + 1000), base.Enqueue("h1", NOW + 1000)],
                                NOW, LEASE)
    assert applied.accepted and applied.ready == ()
    await store.ingest([], [], NOW, resumes=[base.Resume("run1", (base.Enqueue("h1", NOW + 1000),))])
    claimed = await store.claim_due(NOW + 1000, 10, OWNER, LEASE)
    assert [i.target for i in claimed] == ["h1"]  # one, however often it was asked for
    # while it is running (leased), asking again queues nothing either
    await store.ingest([], [], NOW + 1000, resumes=[base.Resume("run1", (base.Enqueue("h1", NOW + 1000),))])
    assert await store.claim_due(NOW + 1000, 10, "node-b", LEASE) == []


async def test_enqueue_never_queues_a_step_already_recorded(store: base.Store) -> None:
    item = await started(store)
    applied = await store.apply(item, OWNER, [save("h1", "A"), base.Enqueue("h1", NOW), base.Enqueue("step", NOW)],
                                NOW, LEASE)
    assert [i.target for i in applied.ready] == ["step"]
    await store.ingest([], [], NOW, resumes=[base.Resume("run1", (base.Enqueue("h1", NOW),))])
    assert await store.claim_due(NOW + LEASE - 1, 10, "node-b", LEASE) == []


async def test_discovery_is_not_queued_twice_while_one_waits_unleased(store: base.Store) -> None:
    await store.ingest([event()], [new_run()], NOW)
    await store.ingest([], [], NOW, resumes=[base.Resume("run1", (base.Enqueue("step", NOW),))])
    claimed = await store.claim_due(NOW, 10, OWNER, LEASE)
    assert [i.target for i in claimed] == ["step"]


async def test_discovery_is_queued_again_while_one_is_running(store: base.Store) -> None:
    item = await started(store)  # discovery leased: it may have loaded the run before this change
    await store.ingest([], [], NOW, resumes=[base.Resume("run1", (base.Enqueue("step", NOW),))])
    claimed = await store.claim_due(NOW, 10, "node-b", LEASE)
    assert [(i.target, i.lease_owner) for i in claimed] == [("step", "node-b")]
    assert claimed[0].id != item.id


async def parallel(store: base.Store, targets: list[str], extra: list[base.Command] | None = None
                   ) -> list[base.QueueItem]:
    """Discovery plans parallel steps (force_step_plan on); returns their calls, leased to OWNER."""
    item = await started(store)
    commands: list[base.Command] = [base.SetForceStepPlan(True), *(base.Enqueue(t, NOW) for t in targets),
                                    *(extra or [])]
    applied = await store.apply(item, OWNER, commands, NOW, LEASE)
    assert [i.target for i in applied.ready] == targets
    run = await store.get_run("run1")
    assert run is not None and run.force_step_plan
    return list(applied.ready)


async def test_when_idle_skips_while_another_call_is_in_progress_then_clears_force_step_plan(
        store: base.Store) -> None:
    h1, h2 = await parallel(store, ["h1", "h2"])
    first = await store.apply(h1, OWNER, [save("h1", 1), base.Enqueue("step", NOW, when_idle=True)], NOW, LEASE)
    assert first.accepted and first.ready == ()  # h2 still running
    run = await store.get_run("run1")
    assert run is not None and run.force_step_plan
    last = await store.apply(h2, OWNER, [save("h2", 2), base.Enqueue("step", NOW, when_idle=True)], NOW, LEASE)
    assert [i.target for i in last.ready] == ["step"]
    run = await store.get_run("run1")
    assert run is not None and not run.force_step_plan


@pytest.mark.parametrize("kind", [base.PauseKind.WAIT, base.PauseKind.INVOKE])
async def test_when_idle_skips_while_a_wait_or_invoke_pause_exists(store: base.Store, kind: base.PauseKind) -> None:
    p = pause(kind=kind)
    (h1,) = await parallel(store, ["h1"], waiting(p))
    applied = await store.apply(h1, OWNER, [save("h1", 1), base.Enqueue("step", NOW, when_idle=True)], NOW, LEASE)
    assert applied.accepted and applied.ready == ()
    assert await store.claim_due(NOW, 10, OWNER, LEASE) == []
    # the pause resolving is the last thing in progress: now discovery is queued
    await store.ingest([], [], NOW + 1, resumes=[resolved(p, "ev")])
    claimed = await store.claim_due(NOW + 1, 10, OWNER, LEASE)
    assert [i.target for i in claimed] == ["step"]
    run = await store.get_run("run1")
    assert run is not None and not run.force_step_plan


async def test_when_idle_is_not_held_up_by_a_cancel_pause(store: base.Store) -> None:
    await waits_for(store, [pause("c1", kind=base.PauseKind.CANCEL, event_name="e/cancel")])
    (item,) = await store.claim_due(NOW, 10, OWNER, LEASE)
    applied = await store.apply(item, OWNER, [save("h1", 1), base.Enqueue("step", NOW, when_idle=True)], NOW, LEASE)
    assert [i.target for i in applied.ready] == ["step"]


# ------------------------------------------------------------------------------ ending runs


async def test_emit_queues_an_emit_item_that_survives_finish_run(store: base.Store) -> None:
    item = await started(store)
    finished = {"name": "inngest/function.finished", "data": {"run_id": "run1"}}
    applied = await store.apply(item, OWNER, [base.Emit((finished,)),
                                              base.FinishRun(protocol.RunStatus.COMPLETED, 1)], NOW, LEASE)
    assert applied.accepted and applied.enqueued_future
    claimed = await store.claim_due(NOW, 10, OWNER, LEASE)
    assert [(i.kind, i.run_id, i.payload) for i in claimed] == [(base.ItemKind.EMIT, "run1", [finished])]


async def test_finish_run_removes_the_runs_pauses_and_pending_items(store: base.Store) -> None:
    await store.sync_app(app_record(), [fn_record()])
    run = dataclasses.replace(new_run(), pauses=(pause("c1", kind=base.PauseKind.CANCEL, expires_at=NOW + 9000),),
                              timers=(base.NewItem(base.ItemKind.RUN_TIMEOUT, "run1", NOW + 8000, {"which": "finish"}),))
    other = dataclasses.replace(new_run("run2"), pauses=(pause("c2", "run2", kind=base.PauseKind.CANCEL),))
    await store.ingest([event()], [run, other], NOW)
    items = {i.run_id: i for i in await store.claim_due(NOW, 10, OWNER, LEASE)}
    applied = await store.apply(items["run1"], OWNER, [*waiting(pause("w1", expires_at=NOW + 7000)),
                                                       base.Enqueue("h1", NOW + 6000)], NOW, LEASE)
    assert applied.accepted
    assert len(await store.pauses_for_run("run1")) == 2
    await store.ingest([], [], NOW + 1, resumes=[base.Resume("run1", (base.FinishRun(protocol.RunStatus.FAILED,
                                                                                     None),))])
    assert await store.pauses_for_run("run1") == []
    # only run2's call is left (its lease ran out); run1's timers, timeouts and calls are gone
    claimed = await store.claim_due(NOW + 60_000, 10, "node-b", LEASE)
    assert [(i.run_id, i.kind, i.target) for i in claimed] == [("run2", base.ItemKind.CALL, "step")]
    # the other run keeps its pause
    assert [p.id for p in await store.pauses_for_run("run2")] == ["c2"]


async def test_ingest_with_done_deletes_the_item_in_the_same_transaction(store: base.Store) -> None:
    item = await started(store)
    tick = base.NewItem(base.ItemKind.RUN_TIMEOUT, "run1", NOW + 100, {"which": "finish"})
    assert await store.ingest([event("ev2")], [new_run("run2", "ev2")], NOW, items=[tick],
                              done=(item, OWNER)) == ["run2"]
    assert await store.get_event("ev2") is not None
    claimed = await store.claim_due(NOW + LEASE, 10, "node-b", LEASE)  # long after run1's call lease ran out
    assert sorted((i.run_id, i.kind) for i in claimed) == [("run1", base.ItemKind.RUN_TIMEOUT),
                                                            ("run2", base.ItemKind.CALL)]


async def test_ingest_with_done_no_longer_held_by_the_owner_does_nothing(store: base.Store) -> None:
    item = await started(store)
    tick = base.NewItem(base.ItemKind.RUN_TIMEOUT, "run1", NOW + 100, {"which": "finish"})
    assert await store.ingest([event("ev2")], [new_run("run2", "ev2")], NOW, items=[tick],
                              resumes=[base.Resume("run1", (save("h1", "A"),))], done=(item, "node-b")) == []
    assert await store.get_event("ev2") is None
    assert await store.get_run("run2") is None
    assert await store.get_steps("run1") == []
    claimed = await store.claim_due(NOW + LEASE, 10, "node-b", LEASE)
    assert [(i.id, i.kind) for i in claimed] == [(item.id, base.ItemKind.CALL)]  # still there, nothing added


async def test_cancel_runs_cancels_only_runs_not_ended_and_queues_their_emits(store: base.Store) -> None:
    await store.ingest([event()], [new_run(r) for r in ("r1", "r2", "r3")], NOW)
    items = {i.run_id: i for i in await store.claim_due(NOW, 10, OWNER, LEASE)}
    await store.apply(items["r3"], OWNER, [base.FinishRun(protocol.RunStatus.COMPLETED, 3)], NOW, LEASE)
    e1 = {"name": "inngest/function.cancelled", "data": {"run_id": "r1"}}
    e3 = {"name": "inngest/function.cancelled", "data": {"run_id": "r3"}}
    cancelled = await store.cancel_runs(["r1", "r3", "missing"], "stopped", NOW + 5,
                                        {"r1": base.Emit((e1,)), "r3": base.Emit((e3,))})
    assert cancelled == ["r1"]
    r1, r2, r3 = [await store.get_run(r) for r in ("r1", "r2", "r3")]
    assert r1 is not None and (r1.status, r1.error, r1.ended_at) == (protocol.RunStatus.CANCELLED, "stopped", NOW + 5)
    assert r2 is not None and r2.status == protocol.RunStatus.RUNNING
    assert r3 is not None and r3.status == protocol.RunStatus.COMPLETED and r3.output == 3
    # r1's call is gone and its emit is queued; nothing for r3; r2's call is still leased
    claimed = await store.claim_due(NOW + 5, 10, OWNER, LEASE)
    assert [(i.run_id, i.kind, i.payload) for i in claimed] == [("r1", base.ItemKind.EMIT, [e1])]
    assert await store.apply(items["r1"], OWNER, [save("h1", "A")], NOW + 6, LEASE) == base.Applied(accepted=False)


async def test_active_run_ids_filters_by_function_status_and_created_range(store: base.Store) -> None:
    g = dataclasses.replace(new_run("r0-g"), function_slug="app-g")
    await store.ingest([event()], [new_run("r1"), g], NOW)
    await store.ingest([], [new_run("r2")], NOW + 10)
    await store.ingest([], [new_run("r3")], NOW + 20)
    await store.ingest([], [new_run("r4")], NOW + 30)
    items = {i.run_id: i for i in await store.claim_due(NOW + 30, 10, OWNER, LEASE)}
    await store.apply(items["r2"], OWNER, [base.FinishRun(protocol.RunStatus.COMPLETED, None)], NOW + 30, LEASE)
    await store.cancel_runs(["r4"], "stop", NOW + 30, {})
    assert await store.active_run_ids("app-f") == ["r1", "r3"]
    assert await store.active_run_ids("app-g") == ["r0-g"]
    assert await store.active_run_ids("app-f", created_from=NOW + 10) == ["r3"]
    assert await store.active_run_ids("app-f", created_to=NOW + 20) == ["r1"]  # the end is exclusive
    assert await store.active_run_ids("app-f", created_from=NOW + 1, created_to=NOW + 19) == []
    assert await store.active_run_ids("app-f", limit=1) == ["r1"]
    assert await store.active_run_ids("nope") == []


async def test_run_ids_by_status_filters_by_function_statuses_range_and_pages(store: base.Store) -> None:
    g = dataclasses.replace(new_run("r0-g"), function_slug="app-g")
    await store.ingest([event()], [new_run("r1"), g], NOW)
    await store.ingest([], [new_run("r2")], NOW + 10)
    await store.ingest([], [new_run("r3")], NOW + 20)
    await store.ingest([], [new_run("r4")], NOW + 30)
    items = {i.run_id: i for i in await store.claim_due(NOW + 30, 10, OWNER, LEASE)}
    for run_id, status in (("r1", "FAILED"), ("r0-g", "FAILED"), ("r2", "COMPLETED"), ("r3", "FAILED")):
        await store.apply(items[run_id], OWNER, [base.FinishRun(protocol.RunStatus(status), None)], NOW + 30, LEASE)
    await store.cancel_runs(["r4"], "stop", NOW + 30, {})
    assert await store.run_ids_by_status("app-f", ["FAILED", "CANCELLED"]) == ["r1", "r3", "r4"]
    assert await store.run_ids_by_status("app-f", ["COMPLETED"]) == ["r2"]
    assert await store.run_ids_by_status("app-g", ["FAILED"]) == ["r0-g"]
    assert await store.run_ids_by_status("app-f", ["FAILED"], created_from=NOW + 10) == ["r3"]
    assert await store.run_ids_by_status("app-f", ["FAILED", "CANCELLED"], created_to=NOW + 30) == ["r1", "r3"]
    assert await store.run_ids_by_status("app-f", ["FAILED", "CANCELLED"], limit=2) == ["r1", "r3"]
    assert await store.run_ids_by_status("app-f", ["FAILED", "CANCELLED"], after="r3") == ["r4"]
    assert await store.run_ids_by_status("app-f", []) == []
    assert await store.run_ids_by_status("nope", ["FAILED"]) == []


async def test_start_rerun_copies_steps_as_its_memo_and_links_the_original(store: base.Store) -> None:
    item = await started(store)
    sleep = base.SaveStep("h3", "nap", "Sleep", base.StepStatus.SLEEPING, None, NOW, NOW + 1)
    failed = base.SaveStep("h2", "b", "StepRun", base.StepStatus.FAILED, {"error": {"name": "E"}}, NOW, NOW, 3)
    await store.apply(item, OWNER, [save("h1", "A"), failed, sleep,
                                    base.FinishRun(protocol.RunStatus.FAILED, {"name": "E"})], NOW, LEASE)
    original = await store.get_steps("run1")
    # The original's idempotency key is still taken: a rerun does not need it.
    rerun = dataclasses.replace(new_run("rerun1", key="app-f\x00ev1", due=NOW + 5), rerun_of="run1", rerun_from="h4")
    await store.start_rerun(rerun, NOW + 5, steps=[original[2], original[0], original[1]])
    run = await store.get_run("rerun1")
    assert run is not None and run.status == protocol.RunStatus.QUEUED and run.event_ids == ("ev1",)
    assert (run.rerun_of, run.rerun_from, run.invoked_by) == ("run1", "h4", None)
    assert run.stack == ("h3", "h1", "h2")  # in the order given
    copied = await store.get_steps("rerun1")
    assert copied == [dataclasses.replace(s, run_id="rerun1") for s in (original[2], original[0], original[1])]
    state = await store.load_run_state("rerun1", NOW + 5)
    assert state is not None and state.memo == {"h1": {"data": "A"}, "h2": {"error": {"name": "E"}}, "h3": None}
    assert [(i.run_id, i.target) for i in await store.claim_due(NOW + 5, 10, OWNER, LEASE)] == [("rerun1", "step")]
    assert (await store.get_run_links("run1")).reruns == ("rerun1",)
    assert [r.id for r in await store.runs_for_event("ev1")] == ["rerun1", "run1"]
    before = await store.get_run("run1")
    assert before is not None and before.status == protocol.RunStatus.FAILED and before.rerun_of is None
    assert await store.get_steps("run1") == original


async def test_start_rerun_stores_its_edited_event_and_keeps_concurrency_keys(store: base.Store) -> None:
    await store.sync_app(app_record(), [fn_record()])
    keyed = base.RunFlow(concurrency=(("k", 1),))
    await store.ingest([event()], [dataclasses.replace(new_run("run1"), flow=keyed)], NOW)
    (item,) = await store.claim_due(NOW, 10, OWNER, LEASE)
    edited = base.EventRecord(internal_id="ev2", id="ev2", name="e/x", data={"k": 2}, ts=NOW + 1, received_at=NOW + 1)
    rerun = base.NewRun(id="rerun1", function_slug="app-f", app_id="app-1", event_ids=("ev2",), idempotency_key=None,
                        due_at=NOW + 1, flow=keyed, rerun_of="run1")
    await store.start_rerun(rerun, NOW + 1, events=[edited])
    assert await store.get_event("ev2") == dataclasses.replace(edited, seq=0)
    assert (await store.get_event("ev1")) == event()  # the original is left as it was
    assert [r.id for r in await store.runs_for_event("ev2")] == ["rerun1"]
    assert [r.id for r in await store.runs_for_event("ev1")] == ["run1"]
    # The concurrency key still holds: the rerun waits for run1's call to end.
    assert await store.claim_due(NOW + 1, 10, OWNER, LEASE) == []
    await store.apply(item, OWNER, [base.FinishRun(protocol.RunStatus.COMPLETED, 1)], NOW + 2, LEASE)
    assert [i.run_id for i in await store.claim_due(NOW + 2, 10, OWNER, LEASE)] == ["rerun1"]


async def test_run_links_list_reruns_and_the_child_run_of_each_invoke_step(store: base.Store) -> None:
    def child(run_id: str, step: str) -> base.NewRun:
        return dataclasses.replace(new_run(run_id), invoked_by="parent", invoked_step=step)

    await store.ingest([event()], [new_run("parent"), child("c1", "hA"), child("c2", "hA"), child("c3", "hB")], NOW)
    links = await store.get_run_links("parent")
    assert links.reruns == () and dict(links.children) == {"hA": "c1", "hB": "c3"}  # the first child per step
    c1 = await store.get_run("c1")
    assert c1 is not None and (c1.invoked_by, c1.invoked_step, c1.rerun_of) == ("parent", "hA", None)
    nothing = await store.get_run_links("c1")
    assert nothing.reruns == () and dict(nothing.children) == {}


def cron_item(due: int, slug: str = "app-f", spec: str = "* * * * *") -> base.NewItem:
    return base.NewItem(base.ItemKind.CRON, f"cron:{slug}", due, {"function": slug, "cron": spec})


async def test_sync_app_replaces_the_apps_cron_items_only_when_the_app_changed(store: base.Store) -> None:
    await store.sync_app(app_record(), [fn_record()], crons=[cron_item(NOW + 60_000)])
    assert await store.next_due_at() == NOW + 60_000
    _, changed = await store.sync_app(app_record(), [fn_record()], crons=[cron_item(NOW + 120_000, spec="*/2 * * * *")])
    assert not changed and await store.next_due_at() == NOW + 60_000  # same checksum: the tick stays
    _, changed = await store.sync_app(app_record(checksum="c2"), [fn_record()],
                                      crons=[cron_item(NOW + 120_000, spec="*/2 * * * *")])
    assert changed
    claimed = await store.claim_due(NOW + 120_000, 10, OWNER, LEASE)
    assert [(i.kind, i.run_id, i.due_at, i.payload) for i in claimed] == [
        (base.ItemKind.CRON, "cron:app-f", NOW + 120_000, {"function": "app-f", "cron": "*/2 * * * *"})]
    _, changed = await store.sync_app(app_record(checksum="c3"), [fn_record()], crons=[])
    assert changed and await store.next_due_at() is None  # schedule removed: its leased tick goes too


async def test_sync_app_leaves_other_apps_cron_items_alone(store: base.Store) -> None:
    await store.sync_app(app_record(), [fn_record()], crons=[cron_item(NOW + 60_000)])
    await store.sync_app(app_record("other", app_id="app-2"), [fn_record("other-f", app_id="app-2")],
                         crons=[cron_item(NOW + 30_000, slug="other-f")])
    await store.sync_app(app_record(checksum="c2"), [fn_record()], crons=[])
    claimed = await store.claim_due(NOW + 60_000, 10, OWNER, LEASE)
    assert [i.run_id for i in claimed] == ["cron:other-f"]


async def test_one_cron_tick_per_function_and_due_time(store: base.Store) -> None:
    await store.ingest([], [], NOW, items=[cron_item(NOW + 1000), cron_item(NOW + 1000), cron_item(NOW + 2000),
                                           cron_item(NOW + 1000, slug="app-g")])
    await store.ingest([], [], NOW, items=[cron_item(NOW + 1000)])  # a retried tick queues the next one again
    claimed = await store.claim_due(NOW + 2000, 10, OWNER, LEASE)
    assert sorted((i.run_id, i.due_at) for i in claimed) == [
        ("cron:app-f", NOW + 1000), ("cron:app-f", NOW + 2000), ("cron:app-g", NOW + 1000)]


async def test_get_events_keeps_the_order_asked_and_leaves_out_missing_ones(store: base.Store) -> None:
    await store.ingest([event(f"ev{i}") for i in range(3)], [], NOW)
    got = await store.get_events(["ev2", "missing", "ev0", "ev1"])
    assert [e.internal_id for e in got] == ["ev2", "ev0", "ev1"]


async def test_among_due_calls_higher_priority_is_claimed_first(store: base.Store) -> None:
    runs = [base.NewRun(id=f"r{i}", function_slug="app-f", app_id="app-1", event_ids=("ev1",), idempotency_key=None,
                        due_at=NOW + i, flow=base.RunFlow(priority_ms=p * 1000))
            for i, p in enumerate((0, 300, 0, 600))]
    await store.ingest([event()], runs, NOW)
    claimed = [(await store.claim_due(NOW + 10, 1, OWNER, LEASE))[0].run_id for _ in range(4)]
    assert claimed == ["r3", "r1", "r0", "r2"]  # 600 s, 300 s, then equal priorities by due time
    # priority only reorders what is due: a high-priority call due later waits for its time
    late = base.NewRun(id="late", function_slug="app-f", app_id="app-1", event_ids=("ev1",), idempotency_key=None,
                       due_at=NOW + 60_000, flow=base.RunFlow(priority_ms=600_000))
    await store.ingest([], [late], NOW)
    assert await store.claim_due(NOW + 10, 1, OWNER, LEASE) == []


async def test_rate_limited_runs_are_stored_skipped_without_work(store: base.Store) -> None:
    flow = base.RunFlow(rate_limit=("k", 1, 60_000))
    made = [base.NewRun(id=f"r{i}", function_slug="app-f", app_id="app-1", event_ids=("ev1",), idempotency_key=None,
                        due_at=NOW, flow=flow) for i in range(3)]
    assert await store.ingest([event()], made, NOW) == ["r0", "r1", "r2"]
    statuses = [(await store.get_run(f"r{i}")).status for i in range(3)]  # type: ignore[union-attr]
    assert statuses == [protocol.RunStatus.QUEUED, protocol.RunStatus.SKIPPED, protocol.RunStatus.SKIPPED]
    assert [i.run_id for i in await store.claim_due(NOW, 10, OWNER, LEASE)] == ["r0"]
    # a new window admits again
    later = base.NewRun(id="r9", function_slug="app-f", app_id="app-1", event_ids=("ev1",), idempotency_key=None,
                        due_at=NOW + 60_001, flow=flow)
    await store.ingest([], [later], NOW + 60_001)
    assert (await store.get_run("r9")).status == protocol.RunStatus.QUEUED  # type: ignore[union-attr]


async def test_throttled_runs_get_later_due_times(store: base.Store) -> None:
    flow = base.RunFlow(throttle=("t", 2, 1000, 1))  # 2 per second, evenly: every 500 ms
    made = [base.NewRun(id=f"r{i}", function_slug="app-f", app_id="app-1", event_ids=("ev1",), idempotency_key=None,
                        due_at=NOW, flow=flow) for i in range(3)]
    await store.ingest([event()], made, NOW)
    assert [i.run_id for i in await store.claim_due(NOW, 10, OWNER, LEASE)] == ["r0"]
    assert [i.run_id for i in await store.claim_due(NOW + 500, 10, OWNER, LEASE)] == ["r1"]
    assert [i.run_id for i in await store.claim_due(NOW + 1000, 10, OWNER, LEASE)] == ["r2"]


def keyed_run(run_id: str, key: str = "tenant-a", limit: int = 1) -> base.NewRun:
    return base.NewRun(id=run_id, function_slug="app-f", app_id="app-1", event_ids=("ev1",), idempotency_key=None,
                       due_at=NOW, flow=base.RunFlow(concurrency=((key, limit),)))


async def test_claim_never_leases_more_calls_of_a_key_than_its_limit(store: base.Store) -> None:
    await store.ingest([event()], [keyed_run(f"a{i}") for i in range(3)] + [keyed_run("b0", "tenant-b")], NOW)
    first = await store.claim_due(NOW, 10, OWNER, LEASE)
    assert sorted(i.run_id for i in first) == ["a0", "b0"]  # one per key; b is not starved by a's backlog
    assert await store.claim_due(NOW, 10, OWNER, LEASE) == []  # a's others wait (blocked), nothing spins
    assert await store.next_due_at() != NOW  # blocked calls are not "due" for the scheduler's timer
    a0 = next(i for i in first if i.run_id == "a0")
    await store.apply(a0, OWNER, [base.FinishRun(protocol.RunStatus.COMPLETED, 1)], NOW, LEASE)
    nxt = await store.claim_due(NOW, 10, OWNER, LEASE)
    assert [i.run_id for i in nxt] == ["a1"]  # the freed slot goes to the next call of the key


async def test_a_follow_up_call_keeps_the_slot_of_the_call_it_replaces(store: base.Store) -> None:
    await store.ingest([event()], [keyed_run("a0"), keyed_run("a1")], NOW)
    (item,) = await store.claim_due(NOW, 10, OWNER, LEASE)
    save = base.SaveStep("h1", "s", "StepRun", base.StepStatus.COMPLETED, {"data": 1}, NOW, NOW)
    applied = await store.apply(item, OWNER, [save, base.Enqueue("step", NOW)], NOW, LEASE)
    assert [i.run_id for i in applied.ready] == [item.run_id]  # runs on at once, in the same slot
    assert await store.claim_due(NOW, 10, OWNER, LEASE) == []  # the other run still waits


async def test_a_follow_up_call_waits_when_its_key_is_full(store: base.Store) -> None:
    # two limits: the run's second key is full because another run holds it
    both = base.NewRun(id="r1", function_slug="app-f", app_id="app-1", event_ids=("ev1",), idempotency_key=None,
                       due_at=NOW, flow=base.RunFlow(concurrency=(("k1", 5), ("k2", 1))))
    other = keyed_run("r2", "k2", 1)
    await store.ingest([event()], [both], NOW)
    (item,) = await store.claim_due(NOW, 10, OWNER, LEASE)
    await store.ingest([], [other], NOW)
    sleep = base.SaveStep("hs", "nap", "Sleep", base.StepStatus.SLEEPING, None, NOW, NOW + 10)
    await store.apply(item, OWNER, [sleep, base.Enqueue("step", NOW + 10)], NOW, LEASE)
    (o,) = await store.claim_due(NOW, 10, OWNER, LEASE)  # r2 takes k2 while r1 sleeps
    assert o.run_id == "r2"
    assert await store.claim_due(NOW + 10, 10, OWNER, LEASE) == []  # r1's wake waits for k2
    await store.apply(o, OWNER, [base.FinishRun(protocol.RunStatus.COMPLETED, 1)], NOW + 11, LEASE)
    assert [i.run_id for i in await store.claim_due(NOW + 11, 10, OWNER, LEASE)] == ["r1"]


async def test_a_freed_slot_goes_to_a_call_whose_other_keys_have_room(store: base.Store) -> None:
    # Two limits: a shared key "g" (2 at once) and one per tenant (1 at once).
    def run(run_id: str, tenant: str) -> base.NewRun:
        return base.NewRun(id=run_id, function_slug="app-f", app_id="app-1", event_ids=("ev1",),
                           idempotency_key=None, due_at=NOW, flow=base.RunFlow(concurrency=(("g", 2), (tenant, 1))))

    await store.ingest([event()], [run("a0", "a"), run("c0", "c")], NOW)
    first = await store.claim_due(NOW, 10, OWNER, LEASE)
    assert sorted(i.run_id for i in first) == ["a0", "c0"]  # g is full
    await store.ingest([], [run("a1", "a"), run("b0", "b")], NOW)
    assert await store.claim_due(NOW, 10, OWNER, LEASE) == []  # both wait for g (a1 for a too)
    c0 = next(i for i in first if i.run_id == "c0")
    await store.apply(c0, OWNER, [base.FinishRun(protocol.RunStatus.COMPLETED, 1)], NOW, LEASE)
    # g has room again: b0 takes it at once; a1 (first in line) still waits for tenant a's slot.
    assert [i.run_id for i in await store.claim_due(NOW, 10, OWNER, LEASE)] == ["b0"]


async def test_extend_leases_keeps_an_owners_calls_from_being_taken_over(store: base.Store) -> None:
    item = await started(store)
    assert await store.extend_leases(OWNER, NOW + 2 * LEASE) == 1
    assert await store.claim_due(NOW + LEASE, 10, "node-b", LEASE) == []  # the old expiry has passed
    assert await store.extend_leases("node-b", NOW + 5 * LEASE) == 0  # only the owner's leases
    taken = await store.claim_due(NOW + 2 * LEASE, 10, "node-b", LEASE)
    assert [i.id for i in taken] == [item.id]


async def test_applied_migrations_are_listed_in_order(store: base.Store) -> None:
    names = await store.applied_migrations()
    assert names and names == sorted(names) and names[0].startswith("0001_")


async def test_purge_deletes_old_ended_runs_and_unneeded_events_only(store: base.Store) -> None:
    await store.sync_app(app_record(), [fn_record()])
    await store.ingest([event("old"), event("live"), event("lone")],
                       [new_run("done", "old"), new_run("running", "live")], NOW)
    (done_item, running_item) = sorted(await store.claim_due(NOW, 10, OWNER, LEASE), key=lambda i: i.run_id)
    save = base.SaveStep("h1", "s", "StepRun", base.StepStatus.COMPLETED, {"data": 1}, NOW, NOW)
    await store.apply(done_item, OWNER, [save, base.FinishRun(protocol.RunStatus.COMPLETED, 1)], NOW, LEASE)
    assert await store.purge(NOW, NOW) == 0  # nothing older than the cutoff yet
    removed = await store.purge(NOW + 1, NOW + 1)
    assert removed == 3  # the ended run, its event, and the event that started nothing
    assert await store.get_run("done") is None and await store.get_steps("done") == []
    assert await store.get_run("running") is not None  # not ended: kept, with its event
    assert await store.get_event("live") is not None
    assert await store.get_event("old") is None and await store.get_event("lone") is None
    assert running_item.run_id == "running"


async def test_purge_works_through_a_backlog_in_batches(store: base.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "PURGE_BATCH", 3)  # 10 ended runs: batches of 3, 3, 3 and 1
    await store.sync_app(app_record(), [fn_record()])
    await store.ingest([event(f"ev{i}") for i in range(10)] + [event("live"), event("lone1"), event("lone2")],
                       [new_run(f"done{i}", f"ev{i}") for i in range(10)] + [new_run("running", "live")], NOW)
    save = base.SaveStep("h1", "s", "StepRun", base.StepStatus.COMPLETED, {"data": 1}, NOW, NOW)
    for item in await store.claim_due(NOW, 20, OWNER, LEASE):
        if item.run_id != "running":
            await store.apply(item, OWNER, [save, base.FinishRun(protocol.RunStatus.COMPLETED, 1)], NOW, LEASE)
    assert await store.purge(NOW + 1, NOW + 1) == 10 + 10 + 2  # the runs, their events, the lone events
    for i in range(10):
        assert await store.get_run(f"done{i}") is None and await store.get_steps(f"done{i}") == []
        assert await store.get_event(f"ev{i}") is None
    assert await store.get_run("running") is not None and await store.get_event("live") is not None
    assert await store.purge(NOW + 1, NOW + 1) == 0


async def test_purge_lets_other_writes_in_between_its_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # SQLite has one writer: a purge of a large backlog in one transaction held every other write back.
    monkeypatch.setattr(base, "PURGE_BATCH", 2)
    store = open_store(f"sqlite:///{tmp_path / 'ratchet.db'}")
    try:
        await store.ingest([event(f"ev{i}") for i in range(20)], [new_run(f"r{i}", f"ev{i}") for i in range(20)], NOW)
        for item in await store.claim_due(NOW, 20, OWNER, LEASE):
            await store.apply(item, OWNER, [base.FinishRun(protocol.RunStatus.COMPLETED, 1)], NOW, LEASE)
        purge = asyncio.get_running_loop().create_task(store.purge(NOW + 1, NOW + 1))
        await asyncio.sleep(0)  # the purge has started its first batch
        await store.ingest([event("meanwhile")], [new_run("meanwhile", "meanwhile")], NOW + 1)
        assert not purge.done()
        left = await store.count_runs()
        assert 1 < left <= 19, left  # the send committed while ended runs were still waiting for their batch
        assert await purge == 40
        assert [r.id for r in await store.list_runs(limit=10)] == ["meanwhile"]
        plan = " ".join(str(r[-1]) for r in store._db.execute(  # type: ignore[attr-defined]
            "EXPLAIN QUERY PLAN SELECT id FROM runs WHERE ended_at < 5 AND status NOT IN ('QUEUED', 'RUNNING')"))
        assert "runs_ended" in plan, plan
        plan = " ".join(str(r[-1]) for r in store._db.execute(  # type: ignore[attr-defined]
            "EXPLAIN QUERY PLAN SELECT seq FROM events WHERE received_at < 5"))
        assert "events_received" in plan, plan
    finally:
        await store.close()


async def test_claiming_ahead_of_time_starts_runs_at_now_not_at_the_due_time(store: base.Store) -> None:
    await store.ingest([event()], [new_run("soon", due=NOW + 20)], NOW)
    (item,) = await store.claim_due(NOW, 10, OWNER, LEASE, due_by=NOW + 25)
    assert item.run_id == "soon" and item.lease_until == NOW + LEASE
    run = await store.get_run("soon")
    assert run is not None and run.started_at == NOW
    assert await store.claim_due(NOW, 10, OWNER, LEASE, due_by=NOW + 25) == []


# ------------------------------------------------------------------------------ poison items and dead letters

async def test_fail_item_counts_the_failure_and_releases_the_item_until_retry_at(store: base.Store) -> None:
    item = await started(store)
    assert item.failures == 0 and item.failure is None
    assert not await store.fail_item(item, "node-b", "boom", NOW, NOW + 1000)  # not node-b's: nothing written
    assert await store.fail_item(item, OWNER, "KeyError: 'x'", NOW, NOW + 1000)
    assert await store.claim_due(NOW + 999, 10, OWNER, LEASE) == []
    (again,) = await store.claim_due(NOW + 1000, 10, OWNER, LEASE)
    assert (again.id, again.attempt, again.failures, again.failure) == (item.id, 0, 1, "KeyError: 'x'")


async def test_a_lease_that_runs_out_counts_as_a_failure(store: base.Store) -> None:
    item = await started(store)
    (taken,) = await store.claim_due(NOW + LEASE, 10, "node-b", LEASE)
    assert (taken.id, taken.failures, taken.failure) == (item.id, 1, base.LEASE_EXPIRED)
    (again,) = await store.claim_due(NOW + 2 * LEASE, 10, "node-c", LEASE)
    assert again.failures == 2


async def test_releasing_every_lease_at_start_up_counts_a_failure_but_releasing_ones_own_does_not(
        store: base.Store) -> None:
    item = await started(store)
    await store.release_leases(OWNER)
    (again,) = await store.claim_due(NOW, 10, OWNER, LEASE)
    assert again.failures == 0
    await store.release_leases()
    (third,) = await store.claim_due(NOW, 10, OWNER, LEASE)
    assert (third.id, third.failures) == (item.id, 1)


async def test_fail_item_frees_the_concurrency_slot_meanwhile(store: base.Store) -> None:
    await store.ingest([event()], [keyed_run("a0"), keyed_run("a1")], NOW)
    (first,) = await store.claim_due(NOW, 10, OWNER, LEASE)
    assert await store.fail_item(first, OWNER, "boom", NOW, NOW + 1000)
    (other,) = await store.claim_due(NOW, 10, OWNER, LEASE)
    assert other.run_id != first.run_id


async def test_a_dead_lettered_item_leaves_the_queue_with_its_reason_and_fails_the_run(store: base.Store) -> None:
    item = await started(store)
    assert await store.fail_item(item, OWNER, "boom", NOW, NOW)
    (again,) = await store.claim_due(NOW, 10, OWNER, LEASE)
    fail = base.FinishRun(protocol.RunStatus.FAILED, {"name": "DeadLettered", "message": "boom"}, error="boom")
    applied = await store.apply(again, OWNER, [fail], NOW + 5, LEASE, dead_letter=base.GiveUp("boom", 2))
    assert applied.accepted
    assert await store.claim_due(NOW + 10 * LEASE, 10, OWNER, LEASE) == []  # gone from the queue
    (letter,) = await store.list_dead_letters()
    assert (letter.item_id, letter.run_id, letter.kind, letter.target, letter.failures, letter.reason,
            letter.created_at) == (item.id, "run1", "call", item.target, 2, "boom", NOW + 5)
    run = await store.get_run("run1")
    assert run is not None and run.status == protocol.RunStatus.FAILED and run.error == "boom"


async def test_dead_letters_list_newest_first_by_run_and_page(store: base.Store) -> None:
    await store.sync_app(app_record(), [fn_record()])
    await store.ingest([event()], [new_run(f"r{i}") for i in range(3)], NOW)
    items = sorted(await store.claim_due(NOW, 10, OWNER, LEASE), key=lambda i: i.run_id)
    for i, item in enumerate(items):
        await store.apply(item, OWNER, [], NOW + i, LEASE, dead_letter=base.GiveUp(f"reason {i}", 0))
    letters = await store.list_dead_letters()
    assert [d.run_id for d in letters] == ["r2", "r1", "r0"]
    assert [d.run_id for d in await store.list_dead_letters(limit=1, before=letters[0].id)] == ["r1"]
    assert [d.reason for d in await store.list_dead_letters(run_id="r0")] == ["reason 0"]
    assert await store.purge(NOW + 2, NOW + 2) >= 0
    assert [d.run_id for d in await store.list_dead_letters()] == ["r2"]  # older ones went with retention


async def test_a_dead_letter_of_an_item_that_is_not_held_is_not_written(store: base.Store) -> None:
    item = await started(store)
    applied = await store.apply(item, "node-b", [], NOW, LEASE, dead_letter=base.GiveUp("boom", 1))
    assert not applied.accepted
    assert await store.list_dead_letters() == []


async def test_a_run_state_has_no_function_once_a_sync_removed_it(store: base.Store) -> None:
    item = await started(store)
    state = await store.load_run_state(item.run_id, NOW)
    assert state is not None and state.function is not None
    await store.sync_app(app_record(checksum="c2"), [fn_record("app-other")])
    state = await store.load_run_state(item.run_id, NOW)
    assert state is not None and state.function is None


async def test_list_runs_filters_by_app_time_several_statuses_and_search(store: base.Store) -> None:
    await store.sync_app(app_record(), [fn_record()])
    events = [base.EventRecord(internal_id=f"e{i}", id=f"e{i}", name="e/x", data={"customer": name}, ts=NOW,
                               received_at=NOW) for i, name in enumerate(["Ada_Lovelace", "grace%hopper", "Alan"])]
    runs = [base.NewRun(id=ids.new_ulid(NOW + i * 1000), function_slug="app-f", app_id="app-1" if i < 2 else "app-2",
                        event_ids=(f"e{i}",), idempotency_key=None, due_at=NOW) for i in range(3)]
    await store.ingest(events, runs, NOW)
    r0, r1, r2 = (r.id for r in runs)
    assert [r.id for r in await store.list_runs(app_id="app-2")] == [r2]
    assert await store.count_runs(app_id="app-1") == 2
    assert await store.count_runs(status=["QUEUED", "FAILED"]) == 3 and await store.count_runs(status=["FAILED"]) == 0
    # created_at is the time of ingest; the id bound must not hide runs created at the bound
    assert [r.id for r in await store.list_runs(created_from=NOW)] == [r2, r1, r0]
    assert await store.list_runs(created_from=NOW + 1) == []
    assert await store.list_runs(created_to=NOW) == []
    assert await store.count_runs(search="ada_") == 1  # case-blind, `_` is not a wildcard
    assert [r.id for r in await store.list_runs(search="ADA_LOVE")] == [r0]
    assert await store.count_runs(search="l_n") == 0  # would match "Alan" if `_` were a wildcard
    assert [r.id for r in await store.list_runs(search="%hop")] == [r1]  # `%` is literal too
    assert [r.id for r in await store.list_runs(search=r2)] == [r2]  # a run id
    assert [r.id for r in await store.list_runs(search="customer", limit=1, before=r2)] == [r1]
    assert [r.id for r in await store.list_runs(search="AL")] == [r2]  # too short for a trigram index
    assert await store.count_runs(search="ada_", app_id="app-1", created_from=NOW, created_to=NOW + 1) == 1


async def test_a_search_that_many_events_match_pages_the_same_way(store: base.Store) -> None:
    """When many recent events match (rows.common_search) a runs list checks the newest runs one by one
    instead of collecting every match first: the same runs either way."""
    await store.sync_app(app_record(), [fn_record()])
    n = 1100
    events = [base.EventRecord(internal_id=f"e{i}", id=f"e{i}", name="e/x",
                               data={"note": "Needle" if i % 2 else "hay", "i": i}, ts=NOW, received_at=NOW)
              for i in range(2 * n)]
    runs = [base.NewRun(id=ids.new_ulid(NOW + i), function_slug="app-f", app_id="app-1", event_ids=(f"e{i}",),
                        idempotency_key=None, due_at=NOW) for i in range(2 * n)]
    await store.ingest(events, runs, NOW)
    needles = [r.id for r in reversed(runs[1::2])]
    assert [r.id for r in await store.list_runs(search="needle", limit=3)] == needles[:3]
    assert [r.id for r in await store.list_runs(search="NEEDLE", limit=3, before=needles[500])] == needles[501:504]
    assert await store.count_runs(search="needle") == n
    assert await store.list_runs(search="needle", created_to=NOW) == []


async def test_the_change_marker_moves_with_writes_only(store: base.Store) -> None:
    first = await store.change_marker()
    await store.list_runs()
    assert await store.change_marker() == first or isinstance(first, str)  # reads do not move SQLite's
    await store.sync_app(app_record(), [fn_record()])
    await store.ingest([event()], [new_run()], NOW)
    assert await store.change_marker() != first


async def test_events_are_listed_by_text_in_their_data(store: base.Store) -> None:
    events = [base.EventRecord(internal_id=f"e{i}", id=f"e{i}", name="e/x" if i < 3 else "e/y", ts=NOW,
                               received_at=NOW, data={"who": who})
              for i, who in enumerate(["Ada", "Grace", "ada lovelace", "ADA", "100% sure"])]
    await store.ingest(events, [], NOW)
    found = await store.list_events(name=None, limit=10, search="ada")
    assert [e.internal_id for e in found] == ["e3", "e2", "e0"]  # newest first, case-blind
    assert [e.internal_id for e in await store.list_events(name="e/x", limit=10, search="ada")] == ["e2", "e0"]
    assert [e.internal_id for e in await store.list_events(name=None, limit=1, search="ada",
                                                          before=found[0].seq)] == ["e2"]
    assert [e.internal_id for e in await store.list_events(name=None, limit=10, search="0%")] == ["e4"]
    assert await store.list_events(name=None, limit=10, search="a_a") == []  # `_` is itself, not any letter


async def test_count_runs_can_stop_at_a_cap(store: base.Store) -> None:
    await store.sync_app(app_record(), [fn_record()])
    await store.ingest([event()], [new_run(f"c{i}") for i in range(5)], NOW)
    assert await store.count_runs(at_most=3) == 3
    assert await store.count_runs(at_most=10) == 5
    assert await store.count_runs(search="k", at_most=2) == 2  # every event's data has the key "k"


async def test_a_capped_count_of_a_text_is_exact_below_its_cap_whether_matches_are_dense_or_sparse(
        store: base.Store) -> None:
    """(PostgreSQL counts a text in most of the newest events run by run, a sparser one from its events.)"""
    await store.sync_app(app_record(), [fn_record()])
    events = [base.EventRecord(internal_id=f"e{i}", id=f"e{i}", name="e/x", ts=NOW, received_at=NOW,
                               data={"tag": "needle" if i % 4 == 0 else "hay"}) for i in range(40)]
    await store.ingest(events, [new_run(f"s{i:02d}", f"e{i}") for i in range(40)], NOW)
    assert await store.count_runs(search="needle", at_most=100) == 10  # a quarter of the events: sparse
    assert await store.count_runs(search="needle", at_most=4) == 4
    assert await store.count_runs(search="hay", at_most=100) == 30  # three quarters: dense
    assert await store.count_runs(search="hay", at_most=7) == 7
    assert await store.count_runs(search="hay", status="QUEUED", at_most=100) == 30
    assert await store.count_runs(search="hay", status="FAILED", at_most=100) == 0
