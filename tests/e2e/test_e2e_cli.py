"""The `ratchet` CLI rejects bad input with exit code 2 and a message naming the option."""

from __future__ import annotations

import asyncio
import re
from importlib import resources
from pathlib import Path

import asyncpg
import pytest

from tests.harness import Api, ServerProcess, free_port, ratchet, send_and_get_run, wait_until

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(("args", "names"), [
    (["--port", "0"], "--port"),
    (["--port", "70000"], "--port"),
    (["-u", "notaurl"], "-u"),
    (["--retry-interval", "-1"], "--retry-interval"),
], ids=["port-0", "port-70000", "bad-url", "negative-retry-interval"])
def test_dev_rejects_bad_input(tmp_path: Path, args: list[str], names: str) -> None:
    db = tmp_path / "ratchet.db"
    result = ratchet("dev", "--db", str(db), *args, timeout=20)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert names in result.stderr, result.stderr
    assert not db.exists(), "the server must not start (or create its database) on bad input"


def test_sync_rejects_bad_url() -> None:
    result = ratchet("sync", "notaurl", timeout=20)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "URL" in result.stderr and "notaurl" in result.stderr, result.stderr


def test_sync_against_a_server_that_is_down() -> None:
    server = f"http://127.0.0.1:{free_port()}"
    result = ratchet("sync", "http://127.0.0.1:9/api/inngest", "--server", server, timeout=20)
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert "could not reach the server" in result.stderr and server in result.stderr, result.stderr


def test_sync_against_a_live_server(e2e) -> None:
    app_url = e2e.stack.app.url
    ok = ratchet("sync", app_url, "--server", e2e.server.url, timeout=30)
    assert ok.returncode == 0, (ok.stdout, ok.stderr)
    assert f"synced {app_url}" in ok.stdout

    everything = ratchet("sync", "--server", e2e.server.url, timeout=30)
    assert everything.returncode == 0, (everything.stdout, everything.stderr)
    assert f"synced {app_url}" in everything.stdout

    dead_app = f"http://127.0.0.1:{free_port()}/api/inngest"
    bad = ratchet("sync", dead_app, "--server", e2e.server.url, timeout=60)
    assert bad.returncode == 1, (bad.stdout, bad.stderr)
    assert f"failed {dead_app}" in bad.stderr, bad.stderr


@pytest.mark.parametrize(("args", "needle"), [
    ([], "RUN_ID or --function"),
    (["r1", "--function", "f"], "RUN_ID or --function"),
    (["r1", "--dry-run"], "--function only"),
], ids=["nothing", "both", "dry-run-without-function"])
def test_cancel_rejects_bad_input(args: list[str], needle: str) -> None:
    result = ratchet("cancel", *args, timeout=20)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert needle in result.stderr, result.stderr


def test_cancel_a_sleeping_run_and_in_bulk(e2e) -> None:
    api = e2e.api
    run_id = send_and_get_run(api, "e2e/sleep", {"sleep_s": 120})
    wait_until(lambda: any(s["id"] == "nap" for s in api.run(run_id)["steps"]), 10, "the run to sleep")
    ok = ratchet("cancel", run_id, "--server", e2e.server.url, timeout=30)
    assert ok.returncode == 0, (ok.stdout, ok.stderr)
    assert api.run(run_id)["status"] == "CANCELLED"
    again = ratchet("cancel", run_id, "--server", e2e.server.url, timeout=30)
    assert again.returncode == 1 and "already ended" in again.stderr, (again.stdout, again.stderr)

    others = [send_and_get_run(api, "e2e/sleep", {"sleep_s": 120}) for _ in range(2)]
    fn = api.run(others[0])["function_id"]
    dry = ratchet("cancel", "--function", fn, "--dry-run", "--server", e2e.server.url, timeout=30)
    assert dry.returncode == 0 and "2 run(s) would be cancelled" in dry.stdout, (dry.stdout, dry.stderr)
    bulk = ratchet("cancel", "--function", fn, "--server", e2e.server.url, timeout=30)
    assert bulk.returncode == 0 and "cancelled 2 run(s)" in bulk.stdout, (bulk.stdout, bulk.stderr)
    assert {api.run(r)["status"] for r in others} == {"CANCELLED"}


SIGNING_KEY = "signkey-prod-" + "ab" * 32


@pytest.mark.parametrize(("args", "needle"), [
    ([], "ratchet keys new"),
    (["--signing-key", SIGNING_KEY], "event key"),
    (["--signing-key", "zz", "--event-key", "e"], "--signing-key"),
    (["--signing-key", "signkey-prod-abc", "--event-key", "e"], "even number of hex digits"),
    (["--signing-key", SIGNING_KEY, "--event-key", "e"],
     "(--api-token or RATCHET_API_TOKEN); make one with `ratchet keys new`, or pass --no-api"),
    (["--signing-key", SIGNING_KEY, "--event-key", "e", "--api-token", " "], "make one with `ratchet keys new`"),
    (["--signing-key", SIGNING_KEY, "--event-key", "e", "--api-token", "rat_x", "--no-api"], "contradict"),
], ids=["no-keys", "no-event-key", "not-hex", "odd-length", "no-api-token", "blank-api-token", "no-api-and-token"])
def test_start_refuses_to_run_without_usable_keys(tmp_path: Path, args: list[str], needle: str) -> None:
    db = tmp_path / "ratchet.db"
    result = ratchet("start", "--db", str(db), *args, timeout=20)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert needle in result.stderr, result.stderr
    assert not db.exists()


def test_keys_new_prints_keys_start_accepts() -> None:
    result = ratchet("keys", "new", timeout=20)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split("=", 1) for line in result.stdout.split())
    assert lines["RATCHET_SIGNING_KEY"].startswith("signkey-prod-") and len(lines["RATCHET_EVENT_KEY"]) == 64
    assert lines["RATCHET_API_TOKEN"].startswith("rat_")


def test_migrate_applies_the_schema_and_reports_it(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    result = ratchet("migrate", "--db", str(db), timeout=30)
    assert result.returncode == 0, result.stderr
    assert re.search(r"schema at \d{4}_\w+\.sql \(\d+ applied\)", result.stdout), result.stdout
    assert db.exists()
    again = ratchet("migrate", "--db", str(db), timeout=30)
    assert again.stdout == result.stdout  # nothing new to apply
    bad = ratchet("migrate", "--postgres-uri", "mysql://x", timeout=30)
    assert bad.returncode == 2 and "--postgres-uri" in bad.stderr


def test_start_with_no_api_takes_events_and_refuses_the_api(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "ratchet.db", tmp_path / "server.log", retry_interval=None, command="start",
                           extra_args=["--signing-key", SIGNING_KEY, "--event-key", "ev-key", "--no-api",
                                       "--host", "127.0.0.1"])
    try:
        server.start()
        api = Api(server.url)
        assert api.http.get("/v1/runs").status_code == 401
        assert api.http.get("/v1/runs", headers={"authorization": "Bearer anything"}).status_code == 401
        assert api.send({"name": "e/x", "data": {}}, key="ev-key")
    finally:
        server.stop()


@pytest.fixture
def migrations() -> list[str]:
    return sorted(p.name for p in (resources.files("ratchet.server.store") / "migrations" / "postgres").iterdir()
                  if p.name.endswith(".sql"))


def test_migrate_a_postgres_database_named_by_the_environment(tmp_path: Path, pg_db: str,
                                                             migrations: list[str]) -> None:
    db = tmp_path / "unused.db"
    result = ratchet("migrate", "--db", str(db), timeout=60, env={"RATCHET_POSTGRES_URI": pg_db})
    assert result.returncode == 0, result.stderr
    assert f"schema at {migrations[-1]} ({len(migrations)} applied)" in result.stdout, result.stdout
    assert "postgresql://" in result.stdout and not db.exists()
    again = ratchet("migrate", "--postgres-uri", pg_db, timeout=60)  # the option names the same database
    assert again.returncode == 0 and again.stdout == result.stdout, (again.stdout, again.stderr)
    assert asyncio.run(_applied(pg_db)) == migrations

    down = ratchet("migrate", timeout=60, env={"RATCHET_POSTGRES_URI": "postgresql://postgres@127.0.0.1:1/x"})
    assert down.returncode == 2 and "cannot open the PostgreSQL store" in down.stderr, (down.stdout, down.stderr)


def test_dev_uses_the_postgres_database_named_by_the_environment(tmp_path: Path, pg_db: str,
                                                                migrations: list[str]) -> None:
    db = tmp_path / "unused.db"
    server = ServerProcess(db, tmp_path / "server.log", env={"RATCHET_POSTGRES_URI": pg_db})
    try:
        server.start()
        api = Api(server.url)
        (event_id,) = api.send({"name": "e/x", "data": {"k": 1}})
        assert asyncio.run(_applied(pg_db)) == migrations  # migrated at start
        assert asyncio.run(_event_names(pg_db, event_id)) == ["e/x"]  # stored there
        assert not db.exists()
    finally:
        server.stop()


async def _applied(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [r[0] for r in await conn.fetch("SELECT name FROM schema_migrations ORDER BY version")]
    finally:
        await conn.close()


async def _event_names(url: str, event_id: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [r[0] for r in await conn.fetch("SELECT name FROM events WHERE internal_id = $1", event_id)]
    finally:
        await conn.close()
