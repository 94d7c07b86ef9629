"""List pages with 100,000 runs: how fast the requests the dashboard makes answer (issue 6: under 200 ms).

    python -m bench.lists [--backends sqlite,postgres] [--runs 100000] [--requests 30] [--pg-admin-url URL]

For each backend it seeds a fresh store (a new SQLite file; on PostgreSQL a new database created through
--pg-admin-url and dropped at the end) with `--runs` runs of 8 functions in 3 apps, each triggered by its
own event carrying ~300 bytes of order data, created over the last 30 days, with mixed statuses (80 %
completed, 8 % failed, 4 % cancelled, 3 % running, 3 % queued, 2 % skipped). Then it starts a real
`ratchet dev` on that store and times, `--requests` times over HTTP after one warm-up, exactly the requests
the dashboard makes, grouped as it sends them: a runs page (its page of 25 and its count, capped at 10,000,
at once) for each filter, time range and search and deep in the list, a bulk action's count, the events
pages, an event's runs and a run's page. It exits 1 if any of them takes TARGET_MS or more (p95). One
more row, the uncapped count of a text in every run, is informational: printed, never failing the run
(the dashboard does not ask it).

`main(argv)` prints the table; `measure(...)` returns the figures as a dict for `python -m bench`.

The apps and functions are synced through the Store API, and so is the run the run page shows (ingest,
claim, apply with four steps). The 100,000 runs, their events and the links between them are written by
bench-only SQL, straight into the tables (`executemany` on SQLite, COPY on PostgreSQL) with their final
statuses: through `ingest` and one `apply` per run it took minutes on SQLite and ten on PostgreSQL, and
measures nothing here. Those rows are what the engine writes for a run, minus queue items (the runs that
have not ended have none, so the server leaves them alone).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
from ulid import ULID

from ratchet import protocol
from ratchet.server import ids
from ratchet.server.store import base, open_store_async
from tests import harness

PG_ADMIN_URL = os.environ.get("RATCHET_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
TARGET_MS = 200.0
#: The dashboard's page size.
PAGE = 25
DAY_MS = 24 * 3600 * 1000
SPREAD_MS = 30 * DAY_MS
#: The queue item of the run with steps is due this far ahead, so the server leaves it be until claimed here.
FAR_MS = 10 * 365 * DAY_MS
#: Runs created in the same millisecond.
SLICE = 50

#: app → {function: (event name, share of the runs)}
APPS: dict[str, dict[str, tuple[str, float]]] = {
    "shop": {"order-created": ("shop/order.created", 0.30), "payment-retry": ("shop/payment.failed", 0.05),
             "send-receipt": ("shop/order.paid", 0.20)},
    "billing": {"invoice": ("billing/invoice.due", 0.15), "charge": ("billing/charge", 0.10),
                "refund": ("billing/refund.requested", 0.02)},
    "mail": {"welcome": ("mail/user.signed-up", 0.08), "digest": ("mail/digest.weekly", 0.10)},
}
STATUSES = (("COMPLETED", 0.80), ("FAILED", 0.08), ("CANCELLED", 0.04), ("RUNNING", 0.03), ("QUEUED", 0.03),
            ("SKIPPED", 0.02))
FIRST = ("ada", "grace", "alan", "edsger", "barbara", "donald", "margaret", "ken", "dennis", "frances",
         "john", "leslie", "niklaus", "tony", "radia", "sophie", "linus", "guido", "anders", "bjarne")
LAST = ("lovelace", "hopper", "turing", "dijkstra", "liskov", "knuth", "hamilton", "thompson", "ritchie",
        "allen", "backus", "lamport", "wirth", "hoare", "perlman", "wilson", "torvalds", "rossum", "hejlsberg")
CITIES = ("Lisbon", "Oslo", "Nairobi", "Osaka", "Lima", "Austin", "Lyon", "Perth", "Pune", "Tartu")
SKUS = ("mug", "shirt", "sticker", "poster", "hoodie", "cap", "notebook", "pen", "bag", "socks")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


# ------------------------------------------------------------------------------------------------ seeding


@dataclasses.dataclass
class Seeded:
    """What the requests need to know about the seeded store."""

    run_ids: list[str]  #: oldest first
    start_ms: int
    end_ms: int
    rare_order: str  #: an order id that is in exactly one event's data
    detail_run: str  #: a run with steps, for the run page
    statuses: dict[str, int]
    deep_event_cursor: str  #: an event `cursor` halfway down the events list (seqs count up from 1)


def _event_data(rng: random.Random, n: int) -> dict[str, Any]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    items = [{"sku": rng.choice(SKUS), "qty": rng.randint(1, 4), "price": rng.randint(300, 9000) / 100}
             for _ in range(rng.randint(1, 3))]
    return {"order_id": f"ord-{n:07d}", "customer": {"name": f"{first.title()} {last.title()}",
                                                     "email": f"{first}.{last}{n % 997}@example.com",
                                                     "city": rng.choice(CITIES)},
            "items": items, "total": round(sum(i["qty"] * i["price"] for i in items), 2), "currency": "EUR"}


async def seed_store(url: str, runs: int, rng: random.Random, log: Any = print) -> Seeded:
    t0 = time.perf_counter()
    store = await open_store_async(url)  # creates the schema
    try:
        functions = await _sync_apps(store, protocol.now_ms())
    finally:
        await store.close()
    now = protocol.now_ms()
    start = now - SPREAD_MS
    events, rows, links, counts = _rows(runs, functions, rng, start, now)
    await _bulk_insert(url, events, rows, links)
    log(f"  inserted {runs:,} runs with their events ({time.perf_counter() - t0:.0f} s)")
    store = await open_store_async(url)
    try:
        detail = await _run_with_steps(store, functions[0], now)
    finally:
        await store.close()
    return Seeded(run_ids=[r[0] for r in rows], start_ms=start, end_ms=now, rare_order=f"ord-{runs // 3:07d}",
                  detail_run=detail, statuses=counts, deep_event_cursor=str(runs // 2))


async def _sync_apps(store: base.Store, now: int) -> list[tuple[str, str, str, float]]:
    """The apps and their functions, synced through the store: (slug, app id, event name, share of runs)."""
    functions = []
    for app_name, fns in APPS.items():
        app_url = f"http://127.0.0.1:9/{app_name}/api/inngest"  # nothing listens: no run is ever called
        records = []
        for fn_id, (event, _) in fns.items():
            slug = f"{app_name}-{fn_id}"
            fn_url = f"{app_url}?fnId={slug}&stepId=step"
            config = protocol.FunctionConfig(
                id=slug, name=fn_id, triggers=[protocol.TriggerConfig(event=event)],
                steps={"step": protocol.StepConfig(runtime=protocol.RuntimeConfig(url=fn_url))})
            records.append(base.FunctionRecord(slug=slug, app_id="", name=fn_id, config=config, url=fn_url))
        app = base.AppRecord(id=str(uuid.uuid4()), name=app_name, url=app_url, sdk="py:v0.5.19",
                             framework="fast_api", checksum=uuid.uuid4().hex, synced_at=now)
        stored, _ = await store.sync_app(app, [dataclasses.replace(r, app_id=app.id) for r in records])
        functions += [(f"{app_name}-{fn}", stored.id, ev, share) for fn, (ev, share) in fns.items()]
    return functions


def _rows(runs: int, functions: list[tuple[str, str, str, float]], rng: random.Random, start: int, now: int
          ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[str, str]], dict[str, int]]:
    """The rows of `runs` runs, their events and the links between them, as the engine would have written
    them: bursts of SLICE runs every ~15 s over [start, now), run and event ids made at creation time
    (list pages and time filters rely on it), one event per run, then a final status."""
    weights = [f[3] for f in functions]
    names, status_weights = zip(*STATUSES, strict=True)
    counts: dict[str, int] = dict.fromkeys(names, 0)
    events, rows, links = [], [], []
    for s in range(0, runs, SLICE):
        k = min(SLICE, runs - s)
        ms = start + int((s + k) * (now - start) / runs) - rng.randint(0, 999)
        for i in range(k):
            slug, app_id, event_name, _ = rng.choices(functions, weights)[0]
            internal, run_id = _ulid(ms, rng), _ulid(ms, rng)
            events.append((internal, internal, event_name, orjson.dumps(_event_data(rng, s + i)).decode(), ms, ms))
            status = rng.choices(names, status_weights)[0]
            counts[status] += 1
            started = None if status in ("QUEUED", "SKIPPED") else ms + rng.randint(2, 40)
            ended = None if status in ("QUEUED", "RUNNING") else (started or ms) + rng.randint(5, 5000)
            output = ('{"ok":true}' if status == "COMPLETED" else
                      '{"name":"Error","message":"card declined"}' if status == "FAILED" else None)
            error = ("card declined" if status == "FAILED" else
                     "cancelled through the API" if status == "CANCELLED" else None)
            rows.append((run_id, slug, app_id, status, f'["{internal}"]', ms, started, ended, output, error))
            links.append((internal, run_id))
    return events, rows, links, counts


def _ulid(ms: int, rng: random.Random) -> str:
    """A ULID of millisecond `ms`. Not `ids.new_ulid`: its ids never go back in time within a process, and
    the second backend's seeding starts 30 days before the first one's ended."""
    return str(ULID.from_bytes(ms.to_bytes(6, "big") + rng.randbytes(10)))


async def _bulk_insert(url: str, events: list[tuple[Any, ...]], runs: list[tuple[Any, ...]],
                       links: list[tuple[str, str]]) -> None:
    """Bench-only SQL (see the module's docstring): the rows straight into the tables; the indexes (the
    PostgreSQL trigram index too) keep up as they do for the engine's writes."""
    ev_cols = ("internal_id", "id", "name", "data", "ts", "received_at")
    run_cols = ("id", "function_slug", "app_id", "status", "event_ids", "created_at", "started_at", "ended_at",
                "output", "error")
    if url.startswith(("postgres://", "postgresql://")):
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            async with conn.transaction():
                await conn.copy_records_to_table("events", records=events, columns=ev_cols)
                await conn.copy_records_to_table("runs", records=runs, columns=run_cols)
                await conn.copy_records_to_table("run_events", records=links, columns=("event_id", "run_id"))
            await conn.execute("VACUUM ANALYZE")  # what autovacuum does soon after a bulk load
        finally:
            await conn.close()
        return
    db = sqlite3.connect(url)
    try:
        with db:
            db.executemany(f"INSERT INTO events ({', '.join(ev_cols)}) VALUES ({', '.join('?' * len(ev_cols))})",
                           events)
            db.executemany(f"INSERT INTO runs ({', '.join(run_cols)}) VALUES ({', '.join('?' * len(run_cols))})",
                           runs)
            db.executemany("INSERT INTO run_events (event_id, run_id) VALUES (?, ?)", links)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


async def _run_with_steps(store: base.Store, fn: tuple[str, str, str, float], now: int) -> str:
    """One finished run with a few steps, recorded through ingest, claim and apply as the engine does."""
    slug, app_id, event_name, _ = fn
    internal = ids.new_ulid(now)
    event = base.EventRecord(internal_id=internal, id=internal, name=event_name, data={"order_id": "ord-detail"},
                             ts=now, received_at=now)
    run_id = ids.new_ulid(now)
    due = now + FAR_MS  # the only queue item: nothing else to claim
    await store.ingest([event], [base.NewRun(id=run_id, function_slug=slug, app_id=app_id, event_ids=(internal,),
                                             idempotency_key=None, due_at=due)], now)
    await store.mark_running(run_id, now)
    (item,) = await store.claim_due(due, 1, "bench", 60_000)
    assert item.run_id == run_id, item
    commands: list[base.Command] = [
        base.SaveStep(hash=protocol.step_hash(name, 0), name=name, op=protocol.Opcode.STEP_RUN.value,
                      status=base.StepStatus.COMPLETED, memo={"data": {"step": name, "ok": True}},
                      started_at=now + 10 * k, ended_at=now + 10 * k + 5)
        for k, name in enumerate(("reserve-stock", "charge-card", "send-receipt", "notify-warehouse"))]
    commands.append(base.FinishRun(protocol.RunStatus.COMPLETED, {"done": True}, None))
    assert (await store.apply(item, "bench", commands, now + 50, 60_000)).accepted
    return run_id


# ------------------------------------------------------------------------------------------------ timing


@dataclasses.dataclass(frozen=True)
class Call:
    """One HTTP request: GET unless `body` is given (then a POST of that JSON)."""

    path: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    body: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class Timed:
    """What one row of the table times: `stages` one after the other, the calls of a stage sent together,
    as the dashboard sends them (a runs page asks for its page and its capped count at once; a run's page
    asks for the run, then its events), timed until the last answer. `informational` rows are not requests
    the dashboard makes: they are printed, never held to TARGET_MS."""

    label: str
    stages: tuple[tuple[Call, ...], ...]
    informational: bool = False


#: The dashboard's runs count stops here ("10,000+ runs").
COUNT_CAP = 10_000


def runs_page(label: str, filters: dict[str, Any], before: str | None = None) -> Timed:
    """A runs page as the dashboard loads it: a page of 25 and the count (up to COUNT_CAP), together."""
    page = {**filters, "limit": PAGE} | ({"before": before} if before else {})
    return Timed(f"runs page: {label}", ((Call("/v1/runs", page),
                                          Call("/v1/runs/count", {**filters, "at_most": COUNT_CAP})),))


def requests_of(seeded: Seeded) -> list[Timed]:
    """What each row times: the requests the dashboard's pages make (a runs page with each filter, deep
    pages, a bulk action's count, the events pages, an event's runs, a run's page), and one informational
    row, the uncapped count of a text found in every run (the dashboard never asks it)."""
    ids_sorted = seeded.run_ids
    deep = ids_sorted[len(ids_sorted) // 2]  # the cursor of a page halfway down the list
    day_from = seeded.start_ms + 15 * DAY_MS
    window = {"from": day_from, "to": day_from + DAY_MS}
    filters: list[tuple[str, dict[str, Any]]] = [
        ("all", {}),
        ("status=FAILED", {"status": "FAILED"}),
        ("function", {"function_id": "shop-order-created"}),
        ("app", {"app_id": "<billing>"}),
        ("last 24 hours", {"from": seeded.end_ms - DAY_MS}),
        ("one day, 15 days ago", window),
        ("function + status + day", {"function_id": "shop-order-created", "status": "COMPLETED", **window}),
        ("q=text, 5 % of runs", {"q": "lovelace"}),
        ("q=text, every run", {"q": "example.com"}),
        ("q=text, one match", {"q": seeded.rare_order}),
        ("q=text, no match", {"q": "no-such-text"}),
        ("q=run id", {"q": ids_sorted[len(ids_sorted) // 3]}),
    ]
    out = [runs_page(label, params) for label, params in filters]
    out.append(runs_page("deep (before=)", {}, before=deep))
    out.append(runs_page("status deep", {"status": "COMPLETED"}, before=deep))
    out.append(Timed("runs page: functions, then apps", ((Call("/v1/functions"),), (Call("/v1/apps"),))))
    # A bulk action's count before it asks to confirm (a function's runs; with a status, as filtered).
    fn = {"function_id": "shop-order-created", "dry_run": True}
    out.append(Timed("bulk cancel count: function", ((Call("/v1/runs/cancel", body=fn),),)))
    out.append(Timed("bulk replay count: function, FAILED",
                     ((Call("/v1/runs/replay", body={**fn, "status": "FAILED"}),),)))
    out.append(Timed("events page", ((Call("/v1/events", {"limit": PAGE}),),)))
    out.append(Timed("events page: deep",
                     ((Call("/v1/events", {"limit": PAGE, "before": seeded.deep_event_cursor}),),)))
    out.append(Timed("events page: by name", ((Call("/v1/events", {"limit": PAGE, "name": "shop/order.paid"}),),)))
    for label, text in (("5 % of events", "lovelace"), ("one event", seeded.rare_order), ("none", "no-such-text")):
        out.append(Timed(f"events page: q=text, {label}", ((Call("/v1/events", {"limit": PAGE, "q": text}),),)))
    out.append(Timed("an event's runs", ((Call("/v1/events/<detail-event>/runs"),),)))
    out.append(Timed("run page: the run, then its event",
                     ((Call(f"/v1/runs/{seeded.detail_run}"),), (Call("/v1/events/<detail-event>"),))))
    out.append(Timed("count q=text, every run, uncapped (informational)",
                     ((Call("/v1/runs/count", {"q": "example.com"}),),), informational=True))
    return out


async def _send(http: httpx.AsyncClient, call: Call, names: dict[str, str]) -> httpx.Response:
    def fill(v: Any) -> Any:
        return names.get(v, v) if isinstance(v, str) else v

    path = call.path
    for placeholder, value in names.items():
        path = path.replace(placeholder, value)
    params = {k: fill(v) for k, v in call.params.items()}
    if call.body is not None:
        return await http.post(path, params=params, json=call.body)
    return await http.get(path, params=params)


async def _time_all(base_url: str, seeded: Seeded, requests: int) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        apps = {a["name"]: a["id"] for a in (await http.get("/v1/apps")).json()["data"]}
        detail = (await http.get(f"/v1/runs/{seeded.detail_run}")).json()["data"]
        names = {"<billing>": apps["billing"], "<detail-event>": detail["event_ids"][0]}
        async def load(timed: Timed) -> list[httpx.Response]:
            replies: list[httpx.Response] = []
            for stage in timed.stages:
                replies += await asyncio.gather(*(_send(http, c, names) for c in stage))
            return replies

        for timed in requests_of(seeded):
            first = await load(timed)  # a warm-up, and a check that each answer is right
            for resp in first:
                assert resp.status_code == 200, (timed.label, str(resp.request.url), resp.status_code, resp.text)
            samples = []
            for _ in range(requests):
                t0 = time.perf_counter()
                replies = await load(timed)
                samples.append((time.perf_counter() - t0) * 1000)
                assert all(r.status_code == 200 for r in replies), (timed.label, [r.text for r in replies])
            results[timed.label] = {"p50": pct(samples, 50), "p95": pct(samples, 95), "max": max(samples),
                                    "ok": pct(samples, 95) < TARGET_MS, "rows": _rows_shown(first),
                                    "informational": timed.informational}
    return results


def _rows_shown(replies: list[httpx.Response]) -> str:
    """What the answer held: the count (capped counts as `10,000+`), or how many items came back."""
    for resp in replies:
        data = resp.json()["data"]
        if isinstance(data, dict) and "count" in data:
            return f"{data['count']:,}{'+' if data.get('capped') else ''}"
        if isinstance(data, dict) and "matched" in data:
            return f"{data['matched']:,}"
    data = replies[0].json()["data"]
    return f"{len(data):,}" if isinstance(data, list) else "1"


def time_requests(base_url: str, seeded: Seeded, requests: int) -> dict[str, dict[str, Any]]:
    return asyncio.run(_time_all(base_url, seeded, requests))


def passed(figures: dict[str, Any]) -> bool:
    """Did every request the dashboard makes answer under TARGET_MS (p95)? Informational rows do not count."""
    return all(r["ok"] for r in figures["results"].values() if not r.get("informational"))


@contextlib.contextmanager
def fresh_store(backend: str, workdir: Path, admin_url: str) -> Iterator[tuple[Path, str | None]]:
    """(SQLite path, PostgreSQL URL or None): a new file, or a new database dropped afterwards."""
    if backend == "sqlite":
        yield workdir / "lists.db", None
        return
    import asyncpg

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(admin_url, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    name = f"ratchet_bench_lists_{uuid.uuid4().hex[:10]}"
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield workdir / "unused.db", admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def measure(backend: str, *, runs: int = 100_000, requests: int = 30, admin_url: str = PG_ADMIN_URL,
            seed: int = 6, log: Any = print) -> dict[str, Any]:
    """Seed a store on `backend`, start `ratchet dev` on it, time the list requests.

    Returns {"backend", "runs", "seed_s", "statuses",
             "results": {label: {p50, p95, max, ok, rows, informational}}}.
    """
    with tempfile.TemporaryDirectory(prefix="ratchet-bench-lists-") as tmp, \
            fresh_store(backend, Path(tmp), admin_url) as (db_path, pg_url):
        t0 = time.perf_counter()
        seeded = asyncio.run(seed_store(pg_url or str(db_path), runs, random.Random(seed), log))
        seed_s = time.perf_counter() - t0
        server = harness.ServerProcess(db_path, Path(tmp) / "server.log", retry_interval=None,
                                       extra_args=["--postgres-uri", pg_url] if pg_url else [])
        server.start()
        try:
            results = time_requests(server.url, seeded, requests)
        finally:
            server.stop()
    return {"backend": backend, "runs": runs, "seed_s": seed_s, "statuses": seeded.statuses, "results": results}


def print_table(figures: dict[str, Any], out: Any = sys.stdout) -> None:
    print(f"\n{BACKENDS[figures['backend']]}: {figures['runs']:,} runs (seeded in {figures['seed_s']:.0f} s; "
          + ", ".join(f"{k} {v:,}" for k, v in figures["statuses"].items()) + ")", file=out)
    print(f"{'request (several on a line: sent together)':<52} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} "
          f"{'rows':>8}  < {TARGET_MS:.0f} ms", file=out)
    for label, r in figures["results"].items():
        verdict = "(info)" if r.get("informational") else "yes" if r["ok"] else "NO"
        print(f"{label:<52} {r['p50']:>8.1f} {r['p95']:>8.1f} {r['max']:>8.1f} {r['rows']:>8}  {verdict}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lists", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite", help="comma-separated: sqlite,postgres")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=30, help="timed requests per line")
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL,
                        help="PostgreSQL database to connect to for CREATE/DROP DATABASE")
    args = parser.parse_args(argv)
    status = 0
    for backend in args.backends.split(","):
        if backend not in BACKENDS:
            parser.error(f"--backends: unknown backend {backend!r} (sqlite, postgres)")
        figures = measure(backend, runs=args.runs, requests=args.requests, admin_url=args.pg_admin_url)
        print_table(figures)
        if not passed(figures):
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
