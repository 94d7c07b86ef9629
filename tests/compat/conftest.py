from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import harness

APPS = Path(__file__).parent / "apps"
FUNCTIONS = ("two-steps", "sleep", "flaky-step", "non-retriable", "fn-error", "retry-after", "step-exhausted",
             "wait-event", "wait-twice", "invoke-child", "invoke-slow", "invoke-parent", "sender", "on-sent",
             "parallel-steps", "parallel-invoke-child", "parallel-mode-default", "parallel-race", "parallel-race-groups",
             "cancellable",
             "bulk-sleep", "bounded", "fragile", "fragile-failure", "filtered", "cron")
#: framework -> (app file, uvicorn interface, app id)
FRAMEWORKS = {
    "fastapi": (APPS / "fastapi_app.py", "auto", "compat-fastapi"),
    "flask": (APPS / "flask_app.py", "wsgi", "compat-flask"),
}


class CompatEnv:
    def __init__(self, stack: harness.Stack, count_dir: Path, app_id: str) -> None:
        self.stack = stack
        self.api = stack.api
        self.count_dir = count_dir
        self.app_id = app_id

    def slug(self, fn_id: str) -> str:
        """The server's id of the app's function `fn_id`."""
        return f"{self.app_id}-{fn_id}"

    def count(self, run_id: str, label: str) -> int:
        """How many times the app ran `label` for `run_id`."""
        path = self.count_dir / f"{run_id}.{label}"
        return len(path.read_text().splitlines()) if path.exists() else 0


def _start(framework: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CompatEnv]:
    app_file, interface, app_id = FRAMEWORKS[framework]
    work = tmp_path_factory.mktemp(f"compat-{framework}")
    count_dir = work / "counts"
    count_dir.mkdir()
    with harness.Stack(work, app_file, interface=interface, env={"COMPAT_DIR": str(count_dir)}) as stack:
        stack.start([f"{app_id}-{fn}" for fn in FUNCTIONS])
        yield CompatEnv(stack, count_dir, app_id)


# One stack per framework per xdist worker, kept for the session: a parametrized module fixture would be
# torn down and rebuilt each time a worker's tests switch framework.
@pytest.fixture(scope="session")
def compat_fastapi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CompatEnv]:
    yield from _start("fastapi", tmp_path_factory)


@pytest.fixture(scope="session")
def compat_flask(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CompatEnv]:
    yield from _start("flask", tmp_path_factory)


@pytest.fixture(params=sorted(FRAMEWORKS))
def compat(request: pytest.FixtureRequest) -> CompatEnv:
    """A server plus an official-SDK app (FastAPI async, or Flask sync); cases use distinct events."""
    return request.getfixturevalue(f"compat_{request.param}")


# ----------------------------------------------------------------------------------------------------
# Ratchet's own SDK (`ratchet.sdk.flask`, plain `def` functions) under Flask, served through uvicorn's WSGI
# interface; see tests/compat/test_ratchet_sdk_flask.py.

RATCHET_FLASK_ID = "rflask"
RATCHET_FLASK_FUNCTIONS = ("two-steps", "sleep", "flaky-step", "non-retriable", "wait-event", "wait-timeout",
                           "invoke-child", "invoke-parent", "sender", "on-sent", "parallel-wait", "parallel-race",
                           "cancellable", "fragile", "fragile-failure")


@pytest.fixture(scope="session")
def ratchet_flask(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CompatEnv]:
    """A server plus a Ratchet-SDK Flask app (sync functions), one per xdist worker for the session."""
    work = tmp_path_factory.mktemp("compat-ratchet-flask")
    count_dir = work / "counts"
    count_dir.mkdir()
    with harness.Stack(work, APPS / "ratchet_flask_app.py", interface="wsgi",
                       env={"COMPAT_DIR": str(count_dir)}) as stack:
        stack.start([f"{RATCHET_FLASK_ID}-{fn}" for fn in RATCHET_FLASK_FUNCTIONS])
        yield CompatEnv(stack, count_dir, RATCHET_FLASK_ID)


# ----------------------------------------------------------------------------------------------------
# Flow control with the official SDK (FastAPI): tests/compat/test_compat_flow.py.

FLOW_ID = "compat-flow"
FLOW_FUNCTIONS = ("concurrency", "throttle", "rate-limit", "debounce", "batch", "priority", "singleton-skip",
                  "singleton-cancel", "idempotency")


class FlowEnv(CompatEnv):
    def lines(self, key: str, label: str) -> list[str]:
        """The lines the app recorded in `<key>.<label>`, one per execution."""
        path = self.count_dir / f"{key}.{label}"
        return path.read_text().splitlines() if path.exists() else []

    @property
    def bad_url(self) -> str:
        """The serve URL of the app's second client, whose function the server must refuse to sync."""
        return f"http://127.0.0.1:{self.stack.app.port}/api/bad"


@pytest.fixture(scope="session")
def compat_flow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowEnv]:
    """A server plus an official-SDK FastAPI app with flow-control functions, one per xdist worker."""
    work = tmp_path_factory.mktemp("compat-flow")
    count_dir = work / "counts"
    count_dir.mkdir()
    with harness.Stack(work, APPS / "flow_app.py", env={"COMPAT_DIR": str(count_dir)}) as stack:
        stack.start([f"{FLOW_ID}-{fn}" for fn in FLOW_FUNCTIONS])
        yield FlowEnv(stack, count_dir, FLOW_ID)
