"""The test harness's environment rules: what counts as CI, and what the processes it starts inherit."""

from __future__ import annotations

import pytest

from tests import harness


@pytest.mark.parametrize(("value", "ci"), [
    (None, False), ("", False), ("0", False), ("false", False), ("False", False), ("no", False), (" NO ", False),
    ("true", True), ("True", True), ("TRUE", True), ("1", True), ("yes", True),
])
def test_in_ci_is_case_insensitive(monkeypatch: pytest.MonkeyPatch, value: str | None, ci: bool) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert harness.in_ci() is ci


def test_unavailable_skips_locally_and_fails_on_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        harness.unavailable("no server")
    monkeypatch.setenv("CI", "True")
    with pytest.raises(pytest.fail.Exception, match="no server"):
        harness.unavailable("no server")


def test_started_processes_do_not_inherit_ratchet_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATCHET_POSTGRES_URI", "postgresql://elsewhere/db")
    monkeypatch.setenv("RATCHET_SIGNING_KEY", "signkey-prod-00")
    monkeypatch.setenv("SOMETHING_ELSE", "kept")
    env = harness.child_env({"RATCHET_EVENT_KEY": "set-by-the-test"})
    assert "RATCHET_POSTGRES_URI" not in env and "RATCHET_SIGNING_KEY" not in env
    assert env["RATCHET_EVENT_KEY"] == "set-by-the-test"
    assert env["SOMETHING_ELSE"] == "kept"
