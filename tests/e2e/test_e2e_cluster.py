"""Two `ratchet start` nodes (production mode) on one PostgreSQL database, 1,000 runs of a three-step
function under two concurrency limits (2 steps in flight per user, 5 per organisation of 5 users), and
a `kill -9` of one node mid-way.

Checks that every run completes, that each step is recorded once and never rewritten (a test-only trigger
logs every committed write to `steps`) with the result of one real execution (each returns a unique token;
the first execution's unless its reply died with the node), and that the app never saw more step bodies in flight than the limits
allow, per user or per organisation, including around the takeover of the dead node's calls.

Why a step may run twice but never overlap: a call the dead node had in flight still runs to its end in
the app (a step takes 20 ms) and its reply is lost, so the surviving node calls again once the lease
(2 s) runs out, long after the first execution ended. The slot stays taken until then (the dead node's
leased call still counts against the limits), so no other call can use it either.

(No function-wide limit: every call of the function would then take the same advisory lock, in each
claim and each apply, on every node; on the shared 2-core machine that serialises the cluster at some
30 applies/s and 1,000 runs take minutes. Two keyed limits exercise the same admission, blocking and
unblocking paths, with both limits binding.) Needs the PostgreSQL server of the dev and CI machines
(fails under CI=true when it is unreachable, skips elsewhere).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import re
import signal
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from tests import harness

pytestmark = pytest.mark.e2e

APP = Path(__file__).parent / "apps" / "cluster_app.py"
KEY = "signkey-prod-" + "3c" * 32
EVENT_KEY = "cluster-" + "b2" * 20
TOKEN = "rat_cluster-token"
SLUG = "cluster-work"
STEPS = ["s1", "s2", "s3"]
#: The limits `apps/cluster_app.py` declares (it reports them too): 2 steps in flight per user, 5 per
#: organisation of 5 users (so both bind).
USER_LIMIT, ORG_LIMIT = 2, 5
N_RUNS = 1000
USERS, USERS_PER_ORG = 20, 5
#: Kill a node once this many runs have completed.
KILL_AT = 300
LEASE_S = 2.0


def event_data(i: int) -> dict[str, Any]:
    user = i % USERS
    return {"user": f"u{user:02d}", "org": f"o{user // USERS_PER_ORG}", "i": i}


@pytest.fixture
def cluster_db(pg_db: str) -> str:
    """A fresh database for the two nodes (`pg_db` of conftest.py)."""
    return pg_db


class Db:
    """One asyncpg connection driven synchronously (the test looks at the nodes' database directly)."""

    def __init__(self, url: str) -> None:
        self._runner = asyncio.Runner()
        self._conn: asyncpg.Connection = self._runner.run(asyncpg.connect(url))

    def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return self._runner.run(self._conn.fetch(sql, *args))

    def execute(self, sql: str) -> None:
        self._runner.run(self._conn.execute(sql))

    def fetchval(self, sql: str, *args: Any) -> Any:
        return self._runner.run(self._conn.fetchval(sql, *args))

    def close(self) -> None:
        try:
            self._runner.run(self._conn.close())
        finally:
            self._runner.close()


#: Test-only: a log of the committed writes to `steps` (BEFORE INSERT fires for every attempt, also those ON
#: CONFLICT DO NOTHING skips; AFTER INSERT only for rows inserted; any UPDATE or DELETE is logged too).
STEP_WRITES_LOG = """
CREATE TABLE step_writes (id BIGSERIAL PRIMARY KEY, run_id TEXT, hash TEXT, op TEXT NOT NULL, memo TEXT);
CREATE FUNCTION log_step_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO step_writes (run_id, hash, op, memo) VALUES (OLD.run_id, OLD.hash, TG_WHEN || ' DELETE', OLD.memo);
        RETURN OLD;
    END IF;
    INSERT INTO step_writes (run_id, hash, op, memo) VALUES (NEW.run_id, NEW.hash, TG_WHEN || ' ' || TG_OP, NEW.memo);
    RETURN NEW;
END $$;
CREATE TRIGGER step_write_attempts BEFORE INSERT OR UPDATE OR DELETE ON steps
    FOR EACH ROW EXECUTE FUNCTION log_step_write();
CREATE TRIGGER step_writes_done AFTER INSERT OR UPDATE OR DELETE ON steps
    FOR EACH ROW EXECUTE FUNCTION log_step_write();
"""


def again_keys(executed: dict[tuple[str, str], list[Any]]) -> set[tuple[str, str]]:
    """The (run, step) pairs whose body ran more than once."""
    return {k for k, v in executed.items() if len(v) > 1}


def node_id(server: harness.ServerProcess) -> str:
    """The id the node writes as `lease_owner` (it logs it at start)."""
    def logged() -> str | None:
        m = re.search(r"node id (node-[0-9a-f]+)", server.log_path.read_text(errors="replace"))
        return m.group(1) if m else None

    return harness.wait_until(logged, 10, f"{server.log_path.name} to log its node id")


@pytest.mark.timeout(300)  # ~45 s on a quiet 2-core machine; minutes when other test runs share it
def test_two_nodes_one_killed_mid_load(tmp_path: Path, cluster_db: str) -> None:
    t0 = time.monotonic()
    common = ["--signing-key", KEY, "--event-key", EVENT_KEY, "--api-token", TOKEN, "--host", "127.0.0.1",
              "--postgres-uri", cluster_db, "--lease-seconds", str(LEASE_S)]
    a = harness.ServerProcess(tmp_path / "a.db", tmp_path / "a.log", retry_interval=None, command="start",
                              extra_args=common)
    b = harness.ServerProcess(tmp_path / "b.db", tmp_path / "b.log", retry_interval=None, command="start",
                              extra_args=common)
    env = {"INNGEST_DEV": "", "INNGEST_SIGNING_KEY": KEY, "INNGEST_EVENT_KEY": EVENT_KEY, "PYTHONUNBUFFERED": "1",
           "INNGEST_API_BASE_URL": a.url, "INNGEST_EVENT_API_BASE_URL": a.url}
    app = harness.AppProcess(APP, tmp_path / "app.log", env=env)
    db: Db | None = None
    try:
        app.start(timeout=30)
        a.app_urls = [app.url]  # a syncs the app; b learns the function from a's sync (NOTIFY)
        a.launch()
        b.launch()
        a.wait_ready()
        b.wait_ready()
        api_a, api_b = harness.Api(a.url, timeout=30, token=TOKEN), harness.Api(b.url, timeout=30, token=TOKEN)
        harness.wait_synced(api_a, [SLUG])
        harness.wait_synced(api_b, [SLUG])
        owner_a, owner_b = node_id(a), node_id(b)
        assert owner_a != owner_b
        db = Db(cluster_db)
        db.execute(STEP_WRITES_LOG)  # the nodes migrated the database at start; no step written yet
        started = time.monotonic()

        # 1,000 events in batches of 100, half to each node, both nodes at once
        events = [{"name": "cluster/work", "data": event_data(i)} for i in range(N_RUNS)]
        batches = [(api_a if k // 100 % 2 else api_b, events[k:k + 100]) for k in range(0, N_RUNS, 100)]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            event_ids = [i for ids in pool.map(lambda b: b[0].send(b[1], key=EVENT_KEY), batches) for i in ids]
        assert len(set(event_ids)) == N_RUNS
        sent_s = time.monotonic() - started

        # Both nodes claim work (seen in `queue.lease_owner`). Once KILL_AT runs are done, freeze node a
        # (SIGSTOP) and look at what it holds: if it holds calls, SIGKILL it there, else let it go on and
        # look again a moment later. (Looking first and killing after would race with a's own progress.)
        owners_seen: set[str] = set()
        orphaned: list[asyncpg.Record] = []
        assert a.proc is not None

        def killed_holding_calls() -> bool:
            nonlocal orphaned
            owners_seen.update(r[0] for r in db.fetch("SELECT DISTINCT lease_owner FROM queue "
                                                      "WHERE lease_owner IS NOT NULL"))
            if db.fetchval("SELECT count(*) FROM runs WHERE status = 'COMPLETED'") < KILL_AT:
                return False
            os.killpg(a.proc.pid, signal.SIGSTOP)
            orphaned = db.fetch("SELECT id, run_id, kind, target FROM queue WHERE lease_owner = $1", owner_a)
            if not orphaned:
                os.killpg(a.proc.pid, signal.SIGCONT)
                return False
            a.kill9()
            return True

        harness.wait_until(killed_holding_calls, 120, f"{KILL_AT} runs done and node a holding calls")
        killed_at = time.monotonic()
        completed_at_kill = db.fetchval("SELECT count(*) FROM runs WHERE status = 'COMPLETED'")
        assert KILL_AT <= completed_at_kill < N_RUNS, completed_at_kill
        assert {owner_a, owner_b} <= owners_seen, (owner_a, owner_b, owners_seen)  # both nodes claimed work

        # b takes over the dead node's calls once their lease runs out, and finishes everything
        harness.wait_until(lambda: db.fetchval("SELECT count(*) FROM queue WHERE lease_owner = $1", owner_a) == 0,
                           LEASE_S * 5 + 10, "the dead node's calls to be taken over")
        takeover_s = time.monotonic() - killed_at

        def completed() -> bool:
            reply = api_b.http.get("/v1/runs/count", params={"function_id": SLUG, "status": "COMPLETED"})
            return reply.json()["data"]["count"] == N_RUNS

        harness.wait_until(completed, 240, f"all {N_RUNS} runs to complete", interval=0.2)
        all_done_s = time.monotonic() - started
        harness.wait_until(lambda: db.fetchval("SELECT count(*) FROM queue") == 0, 10, "the queue to drain")

        # 1. every run completed (REST API), one run per event, nothing else
        runs = api_b.runs(function_id=SLUG, limit=1000)
        assert len(runs) == N_RUNS and {r["status"] for r in runs} == {"COMPLETED"}
        assert api_b.http.get("/v1/runs/count").json()["data"]["count"] == N_RUNS
        pairs = db.fetch("SELECT event_id, run_id FROM run_events")
        assert sorted(e for e, _ in pairs) == sorted(event_ids)
        assert {r for _, r in pairs} == {r["id"] for r in runs}

        # 2. each step recorded once: written once and never rewritten (the trigger's log of committed
        # writes: one INSERT per step, no UPDATE or DELETE; an INSERT that found the row, ON CONFLICT DO
        # NOTHING, left it alone and comes from a step that really ran twice) ...
        writes = db.fetch("SELECT run_id, hash, op, memo FROM step_writes ORDER BY id")
        ops = Counter(op for _, _, op, _ in writes)
        assert set(ops) <= {"BEFORE INSERT", "AFTER INSERT"}, ops  # no UPDATE or DELETE of a step, ever
        attempts: dict[tuple[str, str], list[str]] = defaultdict(list)
        inserted: Counter[tuple[str, str]] = Counter()
        for run_id, hash_, op, memo in writes:
            if op == "BEFORE INSERT":
                attempts[(run_id, hash_)].append(memo)
            else:
                inserted[(run_id, hash_)] += 1
        recorded = {(r[0], r[1]): (r[2], r[3]) for r in db.fetch("SELECT run_id, hash, name, memo FROM steps")}
        assert len(recorded) == N_RUNS * len(STEPS)
        assert set(inserted) == set(recorded) and set(inserted.values()) == {1}, "a step row inserted twice"
        assert set(attempts) == set(recorded)
        for key, (_, memo) in recorded.items():
            assert memo == attempts[key][0], (key, memo, attempts[key])  # the first result written stayed
        conflicts = [(k[0], recorded[k][0]) for k, memos in attempts.items() if len(memos) > 1]
        rows = db.fetch("SELECT s.run_id, array_agg(s.name ORDER BY s.seq), array_agg(s.seq ORDER BY s.seq), "
                        "array_agg(s.hash ORDER BY s.seq), r.stack FROM steps s JOIN runs r ON r.id = s.run_id "
                        "GROUP BY s.run_id, r.stack")
        assert len(rows) == N_RUNS
        for run_id, names, seqs, hashes, stack in rows:
            assert list(names) == STEPS and list(seqs) == [0, 1, 2], (run_id, names, seqs)
            assert orjson.loads(stack) == list(hashes), (run_id, stack, hashes)
        # ... and in the API, with the output of one real execution, the same one the function saw
        stats = httpx.get(f"http://127.0.0.1:{app.port}/stats", timeout=30).json()
        executed: dict[tuple[str, str], list[tuple[str, float, float]]] = defaultdict(list)
        for run_id, step_id, token, t_start, t_end in stats["executions"]:
            executed[(run_id, step_id)].append((token, t_start, t_end))
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            full_runs = list(pool.map(api_b.run, [r["id"] for r in runs]))
        recorded_tokens = {(run_id, name): orjson.loads(memo)["data"]
                           for (run_id, _), (name, memo) in recorded.items()}
        for run in full_runs:
            assert [s["id"] for s in run["steps"]] == STEPS, run
            assert all(s["status"] == "completed" for s in run["steps"]), run
            outputs = {s["id"]: s["output"] for s in run["steps"]}
            assert run["output"] == outputs, run
            for step_id, token in outputs.items():
                assert token == recorded_tokens[(run["id"], step_id)], (run["id"], step_id, token)
                tokens = [t for t, _, _ in sorted(executed[(run["id"], step_id)], key=lambda e: e[1])]
                # Tokens are unique per execution: the output is one real execution's, and the first one's
                # unless an earlier execution's reply was lost with the dead node (checked below).
                assert token in tokens, (run["id"], step_id, token, tokens)
                if token != tokens[0]:
                    assert (run["id"], step_id) in again_keys(executed), (run["id"], step_id, token, tokens)
        assert set(executed) == {(r["id"], s) for r in runs for s in STEPS}
        # A second write of a recorded step (left alone) comes from a second real execution of it.
        for run_id, step_name in conflicts:
            assert len(executed[(run_id, step_name)]) > 1, (run_id, step_name)

        # 3. the limits held where the steps ran, per user and per organisation
        assert stats["limits"] == {"user": USER_LIMIT, "org": ORG_LIMIT}
        assert stats["in_flight"] == 0
        peaks = stats["max_in_flight"]
        users = {k: v for k, v in peaks.items() if k.startswith("user:")}
        orgs = {k: v for k, v in peaks.items() if k.startswith("org:")}
        assert len(users) == USERS and len(orgs) == USERS // USERS_PER_ORG, peaks
        assert max(users.values()) <= USER_LIMIT and max(orgs.values()) <= ORG_LIMIT, peaks
        # (not vacuous: the limits were reached)
        assert max(users.values()) == USER_LIMIT and max(orgs.values()) == ORG_LIMIT, peaks

        # A step body ran again only for a call the dead node held, and only after the first run of it ended.
        again = {k: v for k, v in executed.items() if len(v) > 1}
        orphaned_runs = {row["run_id"] for row in orphaned}
        assert sum(len(v) - 1 for v in again.values()) <= len(orphaned), (again, orphaned)
        for (run_id, step_id), execs in again.items():
            assert run_id in orphaned_runs, (run_id, step_id, execs)
            ordered = sorted(execs, key=lambda e: e[1])
            for first, second in itertools.pairwise(ordered):
                assert first[2] <= second[1], (run_id, step_id, execs)

        print(f"\ncluster: {N_RUNS} events sent in {sent_s:.1f} s, all runs done {all_done_s:.1f} s after the "
              f"first send (test {time.monotonic() - t0:.1f} s); node a killed at {completed_at_kill} completed "
              f"runs holding {len(orphaned)} items ({dict(Counter(row['kind'] for row in orphaned))}), taken over "
              f"in {takeover_s:.1f} s; {len(stats['executions'])} step executions, "
              f"{sum(len(v) - 1 for v in again.values())} re-executed, {len(conflicts)} second writes left alone; max in flight: per user "
              f"{max(users.values())}/{USER_LIMIT}, per org {max(orgs.values())}/{ORG_LIMIT}, overall {peaks['all']}")
    finally:
        if db is not None:
            db.close()
        a.stop()
        b.stop()
        app.stop()
