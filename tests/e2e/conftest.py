from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import harness

APP = Path(__file__).parent / "apps" / "durable_app.py"
FUNCTIONS = ("e2e-sleep", "e2e-block", "e2e-many")


class E2EEnv:
    def __init__(self, stack: harness.Stack, marks: Path) -> None:
        self.stack = stack
        self.server = stack.server
        self.api = stack.api
        self.marks = marks

    def count(self, run_id: str, label: str) -> int:
        """How many times the app ran `label` for `run_id`."""
        path = self.marks / f"{run_id}.{label}"
        return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture
def e2e(tmp_path: Path) -> Iterator[E2EEnv]:
    """A fresh `ratchet dev` (own SQLite file) with the official-SDK durable app; both killed afterwards."""
    marks = tmp_path / "marks"
    marks.mkdir()
    with harness.Stack(tmp_path, APP, env={"E2E_DIR": str(marks)}) as stack:
        stack.start(FUNCTIONS)
        yield E2EEnv(stack, marks)


PRIMITIVES_APP = Path(__file__).parent / "apps" / "primitives_app.py"
PRIMITIVES = ("e2e-prim-batch", "e2e-prim-waiter", "e2e-prim-short-wait", "e2e-prim-child", "e2e-prim-parent", "e2e-prim-parallel",
              "e2e-prim-cron")


@pytest.fixture
def e2e_prim(tmp_path: Path) -> Iterator[E2EEnv]:
    """Like `e2e`, with the app of waits, invoke, parallel steps and cron (`apps/primitives_app.py`)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    with harness.Stack(tmp_path, PRIMITIVES_APP, env={"E2E_DIR": str(marks)}) as stack:
        stack.start(PRIMITIVES)
        yield E2EEnv(stack, marks)
