"""The Store contract: every backend must pass this suite (parametrized over backends in conftest)."""

from __future__ import annotations

from ratchet import protocol
from ratchet.server.store import base

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
