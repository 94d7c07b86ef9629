"""Which functions an event starts."""

from __future__ import annotations

import functools
import re

from ratchet.server.store import base


@functools.lru_cache(maxsize=4096)
def _pattern(trigger: str) -> re.Pattern[str] | None:
    """A regex for a wildcard trigger (`shop/*`, `app/user.*`); None for a plain name."""
    if "*" not in trigger:
        return None
    return re.compile("^" + ".*".join(re.escape(part) for part in trigger.split("*")) + "$")


def event_matches(trigger: str, name: str) -> bool:
    """True when an event called `name` fires an event trigger `trigger` (exact, or with `*` wildcards)."""
    pattern = _pattern(trigger)
    return trigger == name if pattern is None else pattern.match(name) is not None


def functions_for_event(name: str, functions: list[base.FunctionRecord]) -> list[base.FunctionRecord]:
    """The functions with an event trigger matching `name` (each at most once)."""
    out = []
    for fn in functions:
        if any(t.event is not None and event_matches(t.event, name) for t in fn.config.triggers):
            out.append(fn)
    return out
