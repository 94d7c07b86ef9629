"""A Node app on the official `inngest` npm package (version pinned in package.json) against `ratchet dev`,
and (`ts_prod`) the same app in production mode against `ratchet start` with a signing key and an event key.

The app's dependencies are installed once with `npm ci` (from package-lock.json) into
tests/compat_ts/node_modules when that folder is missing or was installed from another lock file. Without
node/npm or the npm registry the tier is skipped on a developer machine and fails under CI=true.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Self

import pytest

from tests import harness

ROOT = Path(__file__).parent
APP = ROOT / "app.js"
NODE_MODULES = ROOT / "node_modules"
#: Written into node_modules after a successful install: the hash of the files it was installed from.
STAMP = NODE_MODULES / ".ratchet-installed"
APP_ID = "compat-ts"
STREAM_APP_ID = "compat-ts-stream"
FUNCTIONS = ("two-steps", "sleep", "wait-event", "wait-timeout", "invoke-child", "invoke-parent", "sender",
             "on-sent", "flaky-step", "non-retriable", "parallel", "step-exhausted", "retry-after",
             "failing-child", "invoke-fails", "fragile", "fragile-failure", "checkpointed")
STREAM_FUNCTIONS = ("two-steps", "fails")
NPM_TIMEOUT_S = 300
#: Production mode (`ts_prod`): the server's signing key, which the app has too, its event key and API token.
SIGNING_KEY = "signkey-prod-" + "5e" * 32
EVENT_KEY = "compat-ts-" + "e7" * 16
API_TOKEN = "rat_compat-ts-token"


class NodeUnavailable(Exception):
    """node/npm is missing or `npm ci` failed."""


def _lock_hash() -> str:
    h = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def ensure_node_modules() -> None:
    """`npm ci` into tests/compat_ts unless node_modules is already installed from this lock file.

    xdist workers share the folder, so the check and the install happen under a file lock.
    """
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise NodeUnavailable(f"{tool} is not on PATH")
    wanted = _lock_hash()
    with (ROOT / ".npm-install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if STAMP.exists() and STAMP.read_text().strip() == wanted and (NODE_MODULES / "inngest").is_dir():
            return
        try:
            proc = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=ROOT, capture_output=True,
                                  text=True, timeout=NPM_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise NodeUnavailable(f"npm ci did not finish in {NPM_TIMEOUT_S} s") from None
        if proc.returncode != 0:
            raise NodeUnavailable(f"npm ci failed with code {proc.returncode}:\n{proc.stdout[-2000:]}"
                                  f"\n{proc.stderr[-4000:]}")
        STAMP.write_text(wanted + "\n")


class TsStack(harness.Stack):
    """The Node app (two serve paths: the main app and a streaming one) and a server syncing both; it
    starts and stops like `harness.Stack` and differs only in what it builds."""

    def __init__(self, workdir: Path) -> None:  # not Stack.__init__: the app is fixed
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.count_dir = workdir / "counts"
        self.count_dir.mkdir(parents=True, exist_ok=True)
        self._build()

    def _build(self) -> None:
        server_port = harness.free_port()
        server_url = f"http://127.0.0.1:{server_port}"
        env = {"INNGEST_DEV": "1", "INNGEST_BASE_URL": server_url, "COMPAT_DIR": str(self.count_dir),
               "NODE_ENV": "development"}
        self.app = harness.NodeAppProcess(APP, self.workdir / "app.log", env=env)
        self.server = harness.ServerProcess(self.workdir / "ratchet.db", self.workdir / "server.log",
                                            port=server_port,
                                            app_urls=[self.app.url, self.app.url_for("/api/stream")])
        self.api = harness.Api(server_url)

    def start(self, slugs: Iterable[str] = (), *, attempts: int = 3) -> Self:
        return super().start(slugs or [f"{APP_ID}-{f}" for f in FUNCTIONS]
                             + [f"{STREAM_APP_ID}-{f}" for f in STREAM_FUNCTIONS], attempts=attempts)

    def slug(self, fn_id: str, app_id: str = APP_ID) -> str:
        return f"{app_id}-{fn_id}"

    def count(self, run_id: str, label: str) -> int:
        """How many times the app ran `label` for `run_id`."""
        path = self.count_dir / f"{run_id}.{label}"
        return len(path.read_text().splitlines()) if path.exists() else 0


def prod_app_env(server_url: str, count_dir: Path, *, signing_key: str = SIGNING_KEY,
                 event_key: str = EVENT_KEY) -> dict[str, str]:
    """Environment of app.js in production mode: only what the SDK reads (no INNGEST_* leaks in from ours)."""
    env = {k: "" for k in os.environ if k.startswith("INNGEST_")}
    env.update({"INNGEST_DEV": "0", "INNGEST_SIGNING_KEY": signing_key, "INNGEST_EVENT_KEY": event_key,
                "INNGEST_API_BASE_URL": server_url, "INNGEST_EVENT_API_BASE_URL": server_url,
                "COMPAT_DIR": str(count_dir), "NODE_ENV": "production"})
    return env


def prod_server_args(signing_key: str = SIGNING_KEY, *extra: str) -> list[str]:
    """`ratchet start` options: keys, API token, loopback only."""
    return ["--signing-key", signing_key, "--event-key", EVENT_KEY, "--api-token", API_TOKEN,
            "--host", "127.0.0.1", *extra]


class TsProdStack(TsStack):
    """The same app and apps in production mode: `ratchet start` (signing key, event key, API token; no
    `--retry-interval`, so plain retries back off for real) and the SDK with INNGEST_DEV=0 and the keys."""

    def _build(self) -> None:
        server_port = harness.free_port()
        server_url = f"http://127.0.0.1:{server_port}"
        self.app = harness.NodeAppProcess(APP, self.workdir / "app.log", env=prod_app_env(server_url, self.count_dir))
        self.server = harness.ServerProcess(self.workdir / "ratchet.db", self.workdir / "server.log",
                                            port=server_port, retry_interval=None, command="start",
                                            extra_args=prod_server_args(),
                                            app_urls=[self.app.url, self.app.url_for("/api/stream")])
        self.api = harness.Api(server_url, token=API_TOKEN)


def require_node() -> None:
    """Install the app's dependencies, or skip (fail under CI=true) without node/npm."""
    try:
        ensure_node_modules()
    except NodeUnavailable as exc:
        harness.unavailable(f"the TS SDK compat tier needs node and npm: {exc}")


@pytest.fixture(scope="session")
def ts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TsStack]:
    """A server plus the TS SDK app, one per xdist worker for the session; cases use distinct events."""
    require_node()
    stack = TsStack(tmp_path_factory.mktemp("compat-ts"))
    with contextlib.closing(stack.start()):
        yield stack


@pytest.fixture(scope="session")
def ts_prod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TsProdStack]:
    """`ratchet start` plus the TS SDK app in production mode, one per xdist worker for the session."""
    require_node()
    stack = TsProdStack(tmp_path_factory.mktemp("compat-ts-prod"))
    with contextlib.closing(stack.start()):
        yield stack
