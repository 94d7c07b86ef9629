"""The `ratchet` command line."""

from __future__ import annotations

import gc
import logging
import sys
import urllib.parse
from pathlib import Path
from typing import Annotated

import httpx
import orjson
import typer
import uvicorn

from ratchet.server import auth
from ratchet.server import config as config_mod
from ratchet.server.engine import retry

app = typer.Typer(name="ratchet", help="Ratchet: durable functions for your app.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(2)


@app.command()
def dev(
    port: Annotated[int, typer.Option("--port", "-p", help="Port for the API and event API.")] = 8288,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    db: Annotated[Path, typer.Option("--db", help="SQLite database file.")] = Path(".ratchet") / "ratchet.db",
    postgres_uri: Annotated[str | None, typer.Option(
        "--postgres-uri", envvar="RATCHET_POSTGRES_URI", help="Use PostgreSQL instead of SQLite.")] = None,
    urls: Annotated[list[str] | None, typer.Option("-u", "--sdk-url",
                                                   help="URL of an app to sync at start-up (repeatable).")] = None,
    retry_interval: Annotated[float | None, typer.Option(
        "--retry-interval", help="Retry failed calls after this many seconds instead of backing off.")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
    lease_seconds: Annotated[float, typer.Option(
        "--lease-seconds", help="How soon another node takes over a dead node's calls.")] = 30.0,
    retention_days: Annotated[float | None, typer.Option(
        "--retention-days", help="Delete runs (and events nothing needs) this many days after they end.")] = None,
) -> None:
    """Start the dev server: SQLite, no keys, apps synced from -u URLs."""
    if retry_interval is not None and retry_interval < 0:
        raise _fail(f"--retry-interval must not be negative, got {retry_interval}")
    level = _check_server_options(port, urls, log_level, lease_seconds, retention_days)
    db_url = _db_url(db, postgres_uri)
    policy = retry.RetryPolicy(fixed_s=retry_interval) if retry_interval is not None else retry.RetryPolicy()
    cfg = config_mod.ServerConfig(host=host, port=port, db_url=db_url, kind="dev", app_urls=tuple(urls or ()),
                                  retry=policy, lease_s=lease_seconds,
                                  retention_s=None if retention_days is None else retention_days * 86400)
    _serve(cfg, level)


@app.command()
def start(
    signing_key: Annotated[str | None, typer.Option(
        "--signing-key", envvar="RATCHET_SIGNING_KEY", help="Signs calls to apps; SDKs use it too.")] = None,
    signing_key_fallback: Annotated[str | None, typer.Option(
        "--signing-key-fallback", envvar="RATCHET_SIGNING_KEY_FALLBACK", help="A previous key, while rotating.")] = None,
    event_keys: Annotated[list[str] | None, typer.Option(
        "--event-key", envvar="RATCHET_EVENT_KEY", help="Accepted event key (repeatable).")] = None,
    api_tokens: Annotated[list[str] | None, typer.Option(
        "--api-token", envvar="RATCHET_API_TOKEN", help="Bearer token for the REST/GraphQL API (repeatable).")] = None,
    port: Annotated[int, typer.Option("--port", "-p", help="Port for the API and event API.")] = 8288,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "0.0.0.0",
    db: Annotated[Path, typer.Option("--db", help="SQLite database file.")] = Path(".ratchet") / "ratchet.db",
    postgres_uri: Annotated[str | None, typer.Option(
        "--postgres-uri", envvar="RATCHET_POSTGRES_URI", help="PostgreSQL database (several nodes may share it).")
    ] = None,
    urls: Annotated[list[str] | None, typer.Option("-u", "--sdk-url",
                                                   help="URL of an app to sync at start-up (repeatable).")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
    lease_seconds: Annotated[float, typer.Option(
        "--lease-seconds", help="How soon another node takes over a dead node's calls.")] = 30.0,
    retention_days: Annotated[float, typer.Option(
        "--retention-days", help="Delete runs (and events nothing needs) this many days after they end.")] = 30.0,
    no_api: Annotated[bool, typer.Option(
        "--no-api", help="Run without an API token: the REST/GraphQL APIs and the dashboard refuse every "
                         "request (a node that only takes events and runs work).")] = False,
) -> None:
    """Start the production server: requests to apps are signed, SDKs and events need keys."""
    if not signing_key:
        raise _fail("ratchet start needs a signing key (--signing-key or RATCHET_SIGNING_KEY) and at least one "
                    "event key (--event-key or RATCHET_EVENT_KEY); make them with `ratchet keys new`")
    if not event_keys:
        raise _fail("ratchet start needs at least one event key (--event-key or RATCHET_EVENT_KEY); "
                    "make one with `ratchet keys new`")
    for name, key in (("--signing-key", signing_key), ("--signing-key-fallback", signing_key_fallback)):
        if key and (problem := auth.check_signing_key(key)):
            raise _fail(f"{name}: {problem}")
    for key in event_keys:
        if not key.strip():
            raise _fail("--event-key must not be empty")
    level = _check_server_options(port, urls, log_level, lease_seconds, retention_days)
    db_url = _db_url(db, postgres_uri)
    keys = tuple(k for k in (signing_key, signing_key_fallback) if k)
    tokens = tuple(t for t in api_tokens or () if t.strip())
    if no_api and tokens:
        raise _fail("--no-api and --api-token (or RATCHET_API_TOKEN) contradict each other: give one")
    if not tokens and not no_api:
        raise _fail("ratchet start needs an API token for the REST/GraphQL APIs and the dashboard (--api-token "
                    "or RATCHET_API_TOKEN); make one with `ratchet keys new`, or pass --no-api to run a node "
                    "whose APIs refuse every request")
    cfg = config_mod.ServerConfig(host=host, port=port, db_url=db_url, kind="cloud", app_urls=tuple(urls or ()),
                                  signing_keys=keys, event_keys=tuple(event_keys), api_tokens=tokens,
                                  lease_s=lease_seconds, retention_s=retention_days * 86400)
    _serve(cfg, level)


@app.command()
def migrate(
    db: Annotated[Path, typer.Option("--db", help="SQLite database file.")] = Path(".ratchet") / "ratchet.db",
    postgres_uri: Annotated[str | None, typer.Option(
        "--postgres-uri", envvar="RATCHET_POSTGRES_URI", help="PostgreSQL database to migrate.")] = None,
) -> None:
    """Apply the store's migrations and exit (servers also apply them at start)."""
    import asyncio

    from ratchet.server.store import base, open_store_async

    url = _db_url(db, postgres_uri)

    async def run() -> list[str]:
        store = await open_store_async(url)
        try:
            return await store.applied_migrations()
        finally:
            await store.close()

    try:
        names = asyncio.run(run())
    except base.StoreError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"{_shown(url)}: schema at {names[-1] if names else 'no migrations'} ({len(names)} applied)")


keys_app = typer.Typer(help="Make keys for `ratchet start`.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("new")
def keys_new() -> None:
    """Print a new signing key, event key and API token (store them as secrets)."""
    typer.echo(f"RATCHET_SIGNING_KEY={auth.new_signing_key()}")
    typer.echo(f"RATCHET_EVENT_KEY={auth.new_event_key()}")
    typer.echo(f"RATCHET_API_TOKEN={auth.new_api_token()}")


def _check_server_options(port: int, urls: list[str] | None, log_level: str, lease_seconds: float,
                          retention_days: float | None) -> str:
    """The options `dev` and `start` share; exits 2 naming the first bad one. Returns the log level."""
    if not 1 <= port <= 65535:
        raise _fail(f"--port must be between 1 and 65535, got {port}")
    for url in urls or []:
        if not url.startswith(("http://", "https://")):
            raise _fail(f"-u must be an http(s) URL, got {url!r}")
    level = log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise _fail(f"--log-level must be debug, info, warning or error, got {log_level!r}")
    if not 1 <= lease_seconds <= 3600:
        raise _fail(f"--lease-seconds must be between 1 and 3600, got {lease_seconds:g}")
    if retention_days is not None and retention_days <= 0:
        raise _fail(f"--retention-days must be positive, got {retention_days:g}")
    return level


def _auth_header(api_token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {api_token}"} if api_token else {}


def _shown(db_url: str) -> str:
    """The database URL without its password, for logs."""
    parts = urllib.parse.urlsplit(db_url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return db_url


def _db_url(db: Path, postgres_uri: str | None) -> str:
    """The store URL: PostgreSQL when given (checked for its scheme), else the SQLite file (checked free)."""
    if postgres_uri:
        if not postgres_uri.startswith(("postgres://", "postgresql://")):
            raise _fail(f"--postgres-uri must start with postgresql://, got {postgres_uri!r}")
        return postgres_uri
    _check_db_free(db)
    return str(db)


def _check_db_free(db: Path) -> None:
    """Refuse at once (exit 2) when another server holds the SQLite file, instead of a start-up traceback."""
    from ratchet.server.store import base
    from ratchet.server.store.sqlite.connection import OwnerLock

    db.parent.mkdir(parents=True, exist_ok=True)
    try:
        OwnerLock(str(db)).release()
    except base.StoreError as exc:
        raise _fail(str(exc)) from None


def _serve(cfg: config_mod.ServerConfig, level: str) -> None:
    from ratchet.server.app import create_app

    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # The server allocates many short-lived objects per call; collecting the young generation less often
    # and keeping start-up objects out of collection avoids pauses of several ms on the event loop.
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    typer.secho(f"Ratchet {cfg.kind} server on {cfg.base_url} (database {_shown(cfg.db_url)})",
                fg=typer.colors.GREEN, err=True)
    uvicorn.run(create_app(cfg), host=cfg.host, port=cfg.port, log_level=level.lower(), access_log=False,
                loop="uvloop", http="httptools", timeout_graceful_shutdown=5)


@app.command()
def sync(
    url: Annotated[str | None, typer.Argument(help="App URL to sync; all known apps when omitted.")] = None,
    server: Annotated[str, typer.Option("--server", help="Ratchet server URL.")] = "http://127.0.0.1:8288",
    api_token: Annotated[str | None, typer.Option(
        "--api-token", envvar="RATCHET_API_TOKEN", help="API token of a production server.")] = None,
) -> None:
    """Ask the server to (re-)sync an app, or every known app."""
    if url is not None and not url.startswith(("http://", "https://")):
        raise _fail(f"URL must be an http(s) URL, got {url!r}")
    body = orjson.dumps({"url": url}) if url else b""
    try:
        resp = httpx.post(f"{server.rstrip('/')}/v1/apps/sync", content=body, timeout=60,
                          headers=_auth_header(api_token))
    except httpx.HTTPError as exc:
        raise _fail(f"could not reach the server at {server}: {exc}") from None
    try:
        reply = resp.json()
        results = reply.get("data", [])
    except ValueError:
        raise _fail(f"unexpected reply from {server} (status {resp.status_code})") from None
    if resp.status_code >= 400 and not results:
        typer.secho(f"error: {reply.get('error', resp.text)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    ok = True
    for r in results:
        if r.get("ok"):
            typer.echo(f"synced {r['url']}")
        else:
            ok = False
            typer.secho(f"failed {r['url']}: {r.get('error')}", fg=typer.colors.RED, err=True)
    if not ok or resp.status_code >= 400:
        raise typer.Exit(1)


@app.command()
def cancel(
    run_id: Annotated[str | None, typer.Argument(help="The run to cancel.")] = None,
    function: Annotated[str | None, typer.Option("--function", help="Cancel this function's runs in bulk.")] = None,
    start: Annotated[str | None, typer.Option("--from", help="Bulk: runs created at or after (ISO time).")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Bulk: runs created before (ISO time).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Bulk: only count the runs.")] = False,
    server: Annotated[str, typer.Option("--server", help="Ratchet server URL.")] = "http://127.0.0.1:8288",
    api_token: Annotated[str | None, typer.Option(
        "--api-token", envvar="RATCHET_API_TOKEN", help="API token of a production server.")] = None,
) -> None:
    """Cancel one run, or (with --function) every run of a function that has not ended."""
    if (run_id is None) == (function is None):
        raise _fail("give either a RUN_ID or --function")
    if run_id is not None and (start or end or dry_run):
        raise _fail("--from, --to and --dry-run apply to --function only")
    base = server.rstrip("/")
    try:
        if run_id is not None:
            resp = httpx.post(f"{base}/v1/runs/{run_id}/cancel", timeout=30, headers=_auth_header(api_token))
        else:
            body = {"function_id": function, "from": start, "to": end, "dry_run": dry_run}
            resp = httpx.post(f"{base}/v1/runs/cancel", json={k: v for k, v in body.items() if v is not None},
                              timeout=300, headers=_auth_header(api_token))
    except httpx.HTTPError as exc:
        raise _fail(f"could not reach the server at {server}: {exc}") from None
    try:
        reply = resp.json()
    except ValueError:
        raise _fail(f"unexpected reply from {server} (status {resp.status_code})") from None
    if resp.status_code >= 400:
        typer.secho(f"error: {reply.get('error', resp.text)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    data = reply["data"]
    if run_id is not None:
        typer.echo(f"cancelled run {run_id}")
    elif dry_run:
        typer.echo(f"{data['matched']} run(s) would be cancelled")
    else:
        typer.echo(f"cancelled {data['cancelled']} run(s)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
