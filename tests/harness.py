"""Helpers for the out-of-process tiers (e2e, compat) and the benchmark: real processes, real ports.

Everything here waits on a condition with a deadline and a short poll interval; nothing sleeps and
hopes. Processes run in their own process group so `kill9()` and cleanup take their children too.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn, Self, TypeVar

import httpx

T = TypeVar("T")

#: Poll interval of `wait_until` (seconds).
POLL_S = 0.02
#: How long a server or app may take to come up.
START_TIMEOUT_S = 20.0
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port that was free a moment ago (the OS picks it, so parallel workers rarely collide), and not
    one this process handed out before: the OS may offer a just-closed port again, and a server and its
    app were once given the same one."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_until(fn: Callable[[], T], timeout: float = 10.0, message: str = "condition", *,
               interval: float = POLL_S) -> T:
    """Poll `fn` until it returns something truthy and return that; fail naming `message` at the deadline.

    Exceptions from `fn` count as "not yet" (a server that is restarting refuses connections); the last
    one is reported if the deadline passes.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = fn()
            if value:
                return value
            last = value
        except Exception as exc:  # noqa: BLE001 - reported below
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {message} (last: {last!r})")
        time.sleep(interval)


def in_ci() -> bool:
    """Whether this is a CI run (`CI` set to anything but empty, 0, false or no, in any case): there a tier
    that cannot run (no PostgreSQL, no node) fails instead of skipping. Every tier's fixtures ask this."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> NoReturn:
    """Skip the test for `reason`, or fail it on CI (`in_ci`)."""
    import pytest

    if in_ci():
        pytest.fail(f"{reason} (CI is set: this test must run)", pytrace=False)
    pytest.skip(reason)


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a process a test starts: this one's without its `RATCHET_*` variables (a
    developer's RATCHET_POSTGRES_URI or RATCHET_SIGNING_KEY would change what the server does), plus `env`."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("RATCHET_")}
    return {**inherited, **(env or {})}


def _ratchet_cmd() -> list[str]:
    script = Path(sys.executable).parent / "ratchet"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "ratchet.server.cli"]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _Process:
    """A subprocess in its own process group, logging to a file."""

    name = "process"

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.last_error: Exception | None = None

    def _spawn(self, args: list[str], env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {' '.join(args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=child_env(env), cwd=cwd, start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return _tail(self.log_path)

    def _signal_group(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def kill9(self) -> None:
        """SIGKILL the whole process group and reap it: no shutdown code runs."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it is still there after `timeout`; always reaps the group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(signal.SIGKILL)  # leftovers in the group, if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def _wait_ready(self, check: Callable[[], bool], timeout: float) -> None:
        def ready() -> bool:
            if not self.alive:
                code = self.proc.returncode if self.proc else None
                raise _Exited(f"{self.name} exited with code {code} before it was ready; log:\n{self.log()}")
            return check()

        deadline = time.monotonic() + timeout
        while True:
            try:
                if ready():
                    return
            except _Exited:
                raise
            except Exception as exc:  # noqa: BLE001 - not up yet
                self.last_error = exc
            if time.monotonic() >= deadline:
                raise AssertionError(f"{self.name} not ready after {timeout:g} s (last error: {self.last_error!r}); "
                                     f"log:\n{self.log()}")
            time.sleep(POLL_S)


class _Exited(AssertionError):
    pass


class ServerProcess(_Process):
    """`ratchet dev` as a subprocess on a SQLite file; survives `kill9()` + `restart()` on the same db."""

    name = "ratchet server"

    def __init__(self, db_path: Path, log_path: Path, *, port: int | None = None,
                 app_urls: Iterable[str] = (), retry_interval: float | None = 0.2,
                 extra_args: Iterable[str] = (), command: str = "dev", env: Mapping[str, str] | None = None) -> None:
        super().__init__(log_path)
        self.command = command  # `dev`, or `start` (production mode: pass the keys in extra_args)
        self.env = dict(env or {})  # on top of `child_env()`
        self.db_path = db_path
        self.port = port or free_port()
        self.app_urls = list(app_urls)
        self.retry_interval = retry_interval
        self.extra_args = list(extra_args)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def args(self) -> list[str]:
        args = [*_ratchet_cmd(), self.command, "--port", str(self.port), "--db", str(self.db_path),
                "--log-level", "info"]
        for u in self.app_urls:
            args += ["-u", u]
        if self.retry_interval is not None:
            args += ["--retry-interval", str(self.retry_interval)]
        return args + self.extra_args

    def launch(self) -> None:
        """Start the process without waiting for it (see `wait_ready`)."""
        self._spawn(self.args(), env=self.env)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Wait until `/health` answers 200."""
        self._wait_ready(lambda: httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200, timeout)

    def start(self, timeout: float = START_TIMEOUT_S) -> ServerProcess:
        """Start and wait for `/health`."""
        self.launch()
        self.wait_ready(timeout)
        return self

    def restart(self, timeout: float = START_TIMEOUT_S) -> ServerProcess:
        """Start again on the same port and database (killing the old one first if it still runs)."""
        if self.alive:
            self.kill9()
        return self.start(timeout)


class AppProcess(_Process):
    """A uvicorn app (`app` object of a module file) on a free port.

    `interface="wsgi"` serves a WSGI app (Flask) through uvicorn's WSGI adapter.
    """

    name = "app"

    def __init__(self, app_file: Path, log_path: Path, *, env: Mapping[str, str] | None = None,
                 port: int | None = None, interface: str = "auto", attr: str = "app",
                 serve_path: str = "/api/inngest") -> None:
        super().__init__(log_path)
        self.app_file = Path(app_file)
        self.env = dict(env or {})
        self.port = port or free_port()
        self.interface = interface
        self.attr = attr
        self.serve_path = serve_path

    @property
    def url(self) -> str:
        """The serve URL to sync (`-u`)."""
        return f"http://127.0.0.1:{self.port}{self.serve_path}"

    def launch(self) -> None:
        """Start the process without waiting for it (see `wait_ready`)."""
        args = [sys.executable, "-m", "uvicorn", "--app-dir", str(self.app_file.parent), "--host", "127.0.0.1",
                "--port", str(self.port), "--interface", self.interface, "--no-access-log",
                f"{self.app_file.stem}:{self.attr}"]
        self._spawn(args, env=self.env)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Wait until the SDK answers GET on the serve path (introspection)."""
        self._wait_ready(lambda: httpx.get(self.url, timeout=1.0).status_code < 500, timeout)

    def start(self, timeout: float = START_TIMEOUT_S) -> AppProcess:
        self.launch()
        self.wait_ready(timeout)
        return self


class NodeAppProcess(_Process):
    """A Node app (`node <script>`) listening on `$PORT`, e.g. one on the official `inngest` npm package.

    `url` is its main serve URL; `url_for(path)` gives others on the same port.
    """

    name = "node app"

    def __init__(self, script: Path, log_path: Path, *, env: Mapping[str, str] | None = None,
                 port: int | None = None, serve_path: str = "/api/inngest", node: str = "node") -> None:
        super().__init__(log_path)
        self.script = Path(script)
        self.env = dict(env or {})
        self.port = port or free_port()
        self.serve_path = serve_path
        self.node = node

    def url_for(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def url(self) -> str:
        """The serve URL to sync (`-u`)."""
        return self.url_for(self.serve_path)

    def launch(self) -> None:
        """Start the process without waiting for it (see `wait_ready`)."""
        self._spawn([self.node, str(self.script)], env={**self.env, "PORT": str(self.port)}, cwd=self.script.parent)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Wait until the SDK answers GET on the serve path (introspection)."""
        self._wait_ready(lambda: httpx.get(self.url, timeout=1.0).status_code < 500, timeout)

    def start(self, timeout: float = START_TIMEOUT_S) -> NodeAppProcess:
        self.launch()
        self.wait_ready(timeout)
        return self


def sdk_env(server_url: str, **extra: str) -> dict[str, str]:
    """Environment for an official-SDK app that talks to a Ratchet server in dev mode."""
    return {"INNGEST_DEV": "1", "INNGEST_API_BASE_URL": server_url, "INNGEST_EVENT_API_BASE_URL": server_url,
            "PYTHONUNBUFFERED": "1", **extra}


class Api:
    """A small client for the server's REST read API and event API."""

    def __init__(self, base_url: str, timeout: float = 5.0, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"authorization": f"Bearer {token}"} if token else None
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    def close(self) -> None:
        self.http.close()

    def _data(self, path: str, **params: Any) -> Any:
        resp = self.http.get(path, params=params or None)
        resp.raise_for_status()
        return resp.json()["data"]

    def send(self, events: dict[str, Any] | list[dict[str, Any]], key: str = "test-key") -> list[str]:
        """POST events; returns the event ids the server accepted."""
        resp = self.http.post(f"/e/{key}", json=events)
        assert resp.status_code == 200, f"event API replied {resp.status_code}: {resp.text}"
        ids = resp.json()["ids"]
        expected = len(events) if isinstance(events, list) else 1
        assert len(ids) == expected, f"sent {expected} events, got ids {ids}"
        return ids

    def run(self, run_id: str) -> dict[str, Any]:
        return self._data(f"/v1/runs/{run_id}")

    def runs(self, **params: Any) -> list[dict[str, Any]]:
        return self._data("/v1/runs", **params)

    def event_runs(self, event_id: str) -> list[dict[str, Any]]:
        return self._data(f"/v1/events/{event_id}/runs")

    def functions(self) -> list[dict[str, Any]]:
        return self._data("/v1/functions")

    def gql_run(self, run_id: str) -> dict[str, Any]:
        """`run(runID:) { status output error }` through `/v0/gql`; `output` decoded from its JSON text."""
        resp = self.http.post("/v0/gql", json={
            "query": "query($id: String!) { run(runID: $id) { status output error } }", "variables": {"id": run_id}})
        resp.raise_for_status()
        body = resp.json()
        assert not body.get("errors"), body
        run = dict(body["data"]["run"])
        if run["output"] is not None:
            run["output"] = json.loads(run["output"])
        return run


def wait_synced(api: Api, slugs: Iterable[str], timeout: float = 15.0) -> None:
    """Wait until the server lists every function in `slugs` (sync runs in the background)."""
    wanted = set(slugs)

    def synced() -> bool:
        listed = {f["id"] for f in api.functions()}
        return wanted <= listed

    wait_until(synced, timeout, f"functions {sorted(wanted)} to be synced")


def wait_runs_for_event(api: Api, event_id: str, count: int = 1, timeout: float = 10.0) -> list[str]:
    """The ids of the runs event `event_id` started, once there are `count` of them."""
    def enough() -> list[dict[str, Any]] | None:
        runs = api.event_runs(event_id)
        return runs if len(runs) >= count else None

    runs = wait_until(enough, timeout, f"{count} run(s) for event {event_id}")
    assert len(runs) == count, f"event {event_id} started {len(runs)} runs, expected {count}: {runs}"
    return [r["id"] for r in runs]


def send_and_get_runs(api: Api, name: str, data: dict[str, Any] | None = None, *, count: int = 1,
                      timeout: float = 10.0) -> list[str]:
    """Send one event and return the ids of the `count` runs it starts (waiting until they exist)."""
    (event_id,) = api.send({"name": name, "data": data or {}})
    return wait_runs_for_event(api, event_id, count, timeout)


def send_and_get_run(api: Api, name: str, data: dict[str, Any] | None = None, timeout: float = 10.0) -> str:
    """Send one event and return the id of the one run it starts."""
    (run_id,) = send_and_get_runs(api, name, data, count=1, timeout=timeout)
    return run_id


def wait_run(api: Api, run_id: str, status: str = "COMPLETED", timeout: float = 15.0) -> dict[str, Any]:
    """Wait until the run ends; assert it ended with `status` and return it (with its steps)."""
    def ended() -> dict[str, Any] | None:
        run = api.run(run_id)
        return run if run["status"] in TERMINAL else None

    run = wait_until(ended, timeout, f"run {run_id} to end with {status}")
    assert run["status"] == status, f"run {run_id} ended {run['status']}, expected {status}: {run}"
    return run


def cron_items(db_path: Path, slug: str) -> list[int]:
    """The due times (ms) of function `slug`'s queued cron ticks, read from the server's SQLite file."""
    with contextlib.closing(sqlite3.connect(db_path, timeout=10)) as db:
        rows = db.execute("SELECT due_at FROM queue WHERE kind = 'cron' AND run_id = ?", (f"cron:{slug}",)).fetchall()
    return [int(r[0]) for r in rows]


def make_cron_due_now(db_path: Path, slug: str) -> int:
    """White-box nudge: move function `slug`'s next cron tick to now, so a test need not wait for the
    schedule. Opens the (WAL-mode) SQLite file beside the server for one short transaction; returns the
    new due time (ms). Asserts the schedule had exactly one tick queued."""
    now = time.time_ns() // 1_000_000
    with contextlib.closing(sqlite3.connect(db_path, timeout=10)) as db, db:
        cur = db.execute("UPDATE queue SET due_at = ? WHERE kind = 'cron' AND run_id = ?", (now, f"cron:{slug}"))
        assert cur.rowcount == 1, f"expected one cron tick queued for {slug}, updated {cur.rowcount}"
    return now


def ratchet(*args: str, timeout: float = 30.0, env: Mapping[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    """Run the `ratchet` CLI to completion and capture its output."""
    return subprocess.run([*_ratchet_cmd(), *args], capture_output=True, text=True, timeout=timeout,
                          env=child_env(env), stdin=subprocess.DEVNULL, check=False)



class Stack:
    """A Ratchet server with one official-SDK app synced to it, and an `Api` client for the server."""

    def __init__(self, workdir: Path, app_file: Path, *, interface: str = "auto",
                 env: Mapping[str, str] | None = None, retry_interval: float | None = 0.2,
                 db_name: str = "ratchet.db") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self._app_args = (app_file, interface, dict(env or {}))
        self._server_args = (workdir / db_name, retry_interval)
        self._build()

    def _build(self) -> None:
        app_file, interface, env = self._app_args
        db_path, retry_interval = self._server_args
        server_port = free_port()
        server_url = f"http://127.0.0.1:{server_port}"
        self.app = AppProcess(app_file, self.workdir / "app.log", env=sdk_env(server_url, **env),
                              interface=interface)
        self.server = ServerProcess(db_path, self.workdir / "server.log", port=server_port,
                                    app_urls=[self.app.url], retry_interval=retry_interval)
        self.api = Api(server_url)

    def start(self, slugs: Iterable[str] = (), *, attempts: int = 3) -> Self:
        """Start the app and the server side by side, and wait until `slugs` are synced.

        A port taken between `free_port()` and the bind is retried on fresh ports. Cleans up on failure.
        """
        for attempt in range(attempts):
            try:
                self.app.launch()
                self.server.launch()
                self.app.wait_ready()
                self.server.wait_ready()
                break
            except _Exited as exc:
                self.close()
                if "address already in use" not in str(exc).lower() or attempt == attempts - 1:
                    raise
                self._build()
            except BaseException:
                self.close()
                raise
        try:
            wait_synced(self.api, slugs)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop both processes (always safe to call)."""
        try:
            self.server.stop()
        finally:
            try:
                self.app.stop()
            finally:
                self.api.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
