"""Failed dashboard logins, limited per client: after `LIMIT` failures within `WINDOW_MS`, `POST /login`
answers 429 (with Retry-After) until the oldest of them is older than the window, so an API token cannot
be guessed at speed. Pure bookkeeping with an explicit `now`; the state is this process's alone (each node
of a cluster counts its own)."""

from __future__ import annotations

import collections

#: Failed logins a client may make within the window before it must wait.
LIMIT = 5
WINDOW_MS = 60_000
#: Clients remembered at most (the least recently failing are forgotten first), bounding the memory an
#: attacker with many addresses can make us spend.
MAX_CLIENTS = 10_000


class FailedLogins:
    """The recent failed logins of each client (its address)."""

    def __init__(self, *, limit: int = LIMIT, window_ms: int = WINDOW_MS, max_clients: int = MAX_CLIENTS) -> None:
        self.limit = limit
        self.window_ms = window_ms
        self.max_clients = max_clients
        self._failures: collections.OrderedDict[str, collections.deque[int]] = collections.OrderedDict()

    def _recent(self, client: str, now: int) -> collections.deque[int] | None:
        times = self._failures.get(client)
        if times is None:
            return None
        while times and times[0] <= now - self.window_ms:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        return times

    def wait_ms(self, client: str, now: int) -> int:
        """0 if `client` may try to log in now; else how long until it may."""
        times = self._recent(client, now)
        if times is None or len(times) < self.limit:
            return 0
        return times[-self.limit] + self.window_ms - now

    def failed(self, client: str, now: int) -> None:
        times = self._recent(client, now)
        if times is None:
            times = self._failures[client] = collections.deque(maxlen=self.limit)
        times.append(now)
        self._failures.move_to_end(client)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)
