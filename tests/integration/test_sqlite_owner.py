"""SQLite specifics: one server process per database file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ratchet.server.store import base, open_store
from tests.harness import ratchet


async def test_a_second_store_on_the_same_file_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    path = tmp_path / "one.db"
    first = open_store(f"sqlite:///{path}")
    with pytest.raises(base.StoreError, match="in use by another Ratchet server"):
        open_store(f"sqlite:///{path}")
    await first.close()
    again = open_store(f"sqlite:///{path}")  # free once the first is closed
    await again.close()


async def test_the_cli_refuses_a_database_another_server_holds(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    holder = open_store(f"sqlite:///{path}")
    try:
        result = ratchet("dev", "--db", str(path), "--port", "1", timeout=20)
        assert result.returncode == 2, (result.stdout, result.stderr)
        assert "in use by another Ratchet server" in result.stderr
    finally:
        await holder.close()
