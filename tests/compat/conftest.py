from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import harness

APPS = Path(__file__).parent / "apps"
FUNCTIONS = ("two-steps", "sleep", "flaky-step", "non-retriable", "fn-error", "retry-after")
#: framework -> (app file, uvicorn interface, app id)
FRAMEWORKS = {
    "fastapi": (APPS / "fastapi_app.py", "auto", "compat-fastapi"),
    "flask": (APPS / "flask_app.py", "wsgi", "compat-flask"),
}


class CompatEnv:
    def __init__(self, stack: harness.Stack, count_dir: Path) -> None:
        self.stack = stack
        self.api = stack.api
        self.count_dir = count_dir

    def count(self, run_id: str, label: str) -> int:
        """How many times the app ran `label` for `run_id`."""
        path = self.count_dir / f"{run_id}.{label}"
        return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture(scope="module", params=sorted(FRAMEWORKS))
def compat(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CompatEnv]:
    """One server plus one official-SDK app (FastAPI async, or Flask sync) shared by a module's cases."""
    app_file, interface, app_id = FRAMEWORKS[request.param]
    work = tmp_path_factory.mktemp(f"compat-{request.param}")
    count_dir = work / "counts"
    count_dir.mkdir()
    stack = harness.Stack(work, app_file, interface=interface, env={"COMPAT_DIR": str(count_dir)})
    with stack:
        stack.start([f"{app_id}-{fn}" for fn in FUNCTIONS])
        yield CompatEnv(stack, count_dir)
