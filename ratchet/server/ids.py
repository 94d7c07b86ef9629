"""Identifiers: ULIDs for events and runs, and the deterministic ids a send's id seed asks for."""

from __future__ import annotations

import base64
import binascii
import os
import time

from ulid import ULID

_last: tuple[int, int] = (0, 0)


def new_ulid(ms: int | None = None) -> str:
    """A fresh ULID string (26 characters), monotonic within this process.

    Ids made in the same millisecond count up from the first one's random part, so sorting by id keeps
    creation order (list pages rely on it).
    """
    global _last
    t = time.time_ns() // 1_000_000 if ms is None else ms
    last_ms, last_rand = _last
    if t <= last_ms and last_rand < 2**80 - 1:
        t, rand = last_ms, last_rand + 1
    else:
        rand = int.from_bytes(os.urandom(10), "big") >> 1  # leave headroom to count up
    _last = (t, rand)
    return str(ULID.from_bytes(t.to_bytes(6, "big") + rand.to_bytes(10, "big")))


def parse_seed(header: str) -> tuple[int, bytes] | None:
    """Read an `x-inngest-event-id-seed` header (`<unix ms>,<base64 of 10 bytes>`); None when malformed."""
    try:
        ms_text, b64 = header.split(",", 1)
        ms = int(ms_text)
        entropy = base64.b64decode(b64, validate=True)
    except (ValueError, binascii.Error):
        return None
    if len(entropy) != 10 or not 0 <= ms < 2**48:
        return None
    return ms, entropy


def seeded_ulid(seed: tuple[int, bytes], index: int) -> str:
    """The id of the `index`-th (1-based) event of a request sent with `seed`.

    The seed's entropy is kept, except that its last four bytes, read as a big-endian uint32, are
    advanced by `index`; a retried request therefore gets the same ids.
    """
    ms, entropy = seed
    counter = (int.from_bytes(entropy[6:10], "big") + index) % 2**32
    return str(ULID.from_bytes(ms.to_bytes(6, "big") + entropy[:6] + counter.to_bytes(4, "big")))
