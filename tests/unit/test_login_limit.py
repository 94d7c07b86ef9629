"""Failed-login bookkeeping (`login_limit`): a client may fail LIMIT times in a window, then waits."""

from __future__ import annotations

import pytest

from ratchet.server import login_limit

W = 60_000


@pytest.mark.parametrize(("failures", "now", "wait"), [
    ([], 0, 0),
    ([0, 1], 3, 0),  # 2 failures: under the limit of 3
    ([0, 1, 2], 10, W - 10),  # 3 failures: wait until the first leaves the window (0 + W)
    ([0, 1, 2], W - 1, 1),
    ([0, 1, 2], W, 0),  # the failure at 0 is out of the window: 2 left
    ([0, 100, 200, 300], 400, 100 + W - 400),  # the oldest of the last three (100) decides
    ([0, W, 2 * W], 2 * W, 0),  # spread out: never 3 in one window
])
def test_wait_ms(failures: list[int], now: int, wait: int) -> None:
    limits = login_limit.FailedLogins(limit=3, window_ms=W)
    for t in failures:
        limits.failed("1.2.3.4", t)
    assert limits.wait_ms("1.2.3.4", now) == wait
    assert limits.wait_ms("5.6.7.8", now) == 0  # per client


def test_success_forgets_the_failures() -> None:
    limits = login_limit.FailedLogins(limit=2, window_ms=W)
    limits.failed("a", 0)
    limits.failed("a", 1)
    assert limits.wait_ms("a", 2) > 0
    limits.succeeded("a")
    assert limits.wait_ms("a", 2) == 0


def test_memory_is_bounded_by_forgetting_the_least_recent_clients() -> None:
    limits = login_limit.FailedLogins(limit=1, window_ms=W, max_clients=2)
    for t, client in enumerate(["a", "b", "c"]):
        limits.failed(client, t)
    assert limits.wait_ms("a", 3) == 0  # forgotten
    assert limits.wait_ms("b", 3) > 0 and limits.wait_ms("c", 3) > 0
