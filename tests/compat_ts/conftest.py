"""A Node app on the official `inngest` npm package (version pinned in package.json) against `ratchet dev`.

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


class NodeUnavailable(Exception):
    """node/npm is missing or `npm ci` failed."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


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


@pytest.fixture(scope="session")
def ts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TsStack]:
    """A server plus the TS SDK app, one per xdist worker for the session; cases use distinct events."""
    try:
        ensure_node_modules()
    except NodeUnavailable as exc:
        if in_ci():
            pytest.fail(f"the TS SDK compat tier needs node and npm (CI=true): {exc}", pytrace=False)
        pytest.skip(f"TS SDK compat tier skipped: {exc}")
    stack = TsStack(tmp_path_factory.mktemp("compat-ts"))
    with contextlib.closing(stack.start()):
        yield stack
