"""Cron schedules: when a function's schedule fires next, and the event a tick sends. Pure.

A schedule is a 5-field cron expression, optionally prefixed with `TZ=<zone>` (or `CRON_TZ=<zone>`);
without a zone it runs in UTC. Each schedule has exactly one queue item, its next tick; firing a tick
queues the following one in the same transaction, so a tick fires once even across restarts and with
several server processes (the item is claimed under a lease). Ticks missed while the server was down
fire once, then the schedule continues from now.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import croniter

from ratchet import protocol
from ratchet.server.engine import lifecycle
from ratchet.server.store import base


class CronError(ValueError):
    """A schedule that cannot be used; the message names it."""


def parse(spec: str) -> tuple[ZoneInfo | None, str]:
    """Split `TZ=Europe/Paris 0 9 * * *` into (zone, `0 9 * * *`); raises CronError."""
    text = spec.strip()
    zone = None
    if text.startswith(("TZ=", "CRON_TZ=")):
        head, _, text = text.partition(" ")
        name = head.split("=", 1)[1]
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise CronError(f"unknown time zone {name!r} in cron {spec!r}") from None
        text = text.strip()
    if len(text.split()) != 5 or not croniter.croniter.is_valid(text):
        raise CronError(f"invalid cron expression {spec!r}: expected 5 fields (minute hour day month weekday)")
    return zone, text


def next_fire(spec: str, after_ms: int) -> int:
    """The first tick strictly after `after_ms` (ms since the epoch)."""
    zone, expr = parse(spec)
    start = datetime.fromtimestamp(after_ms / 1000, tz=UTC).astimezone(zone or UTC)
    nxt = croniter.croniter(expr, start).get_next(datetime)
    return int(nxt.timestamp() * 1000)


def _jitter_ms(jitter: str | None, rand: float) -> int:
    if not jitter:
        return 0
    return int(protocol.parse_duration(jitter).total_seconds() * 1000 * rand)


def item(function_slug: str, spec: str, jitter: str | None, *, after_ms: int, rand: float) -> base.NewItem:
    """The queue item of a schedule's next tick after `after_ms` (plus up to `jitter`)."""
    scheduled = next_fire(spec, after_ms)
    return base.NewItem(base.ItemKind.CRON, f"cron:{function_slug}", scheduled + _jitter_ms(jitter, rand),
                        {"function": function_slug, "cron": spec, "jitter": jitter, "scheduled_at": scheduled})


def schedules(functions: list[base.FunctionRecord], *, now: int, rand: float) -> list[base.NewItem]:
    """One next-tick item per cron trigger of `functions` (at sync time)."""
    return [item(fn.slug, t.cron, t.jitter, after_ms=now, rand=rand)
            for fn in functions for t in fn.config.triggers if t.cron is not None]


def tick(payload: dict[str, Any], *, fired_at: int, now: int, rand: float) -> tuple[dict[str, Any], base.NewItem]:
    """The `inngest/scheduled.timer` event of a tick, and the schedule's next item."""
    spec = str(payload["cron"])
    scheduled = int(payload.get("scheduled_at") or fired_at)
    event = {"name": lifecycle.SCHEDULED, "ts": fired_at,
             "data": {"cron": spec, "scheduledAt": protocol.format_time(datetime.fromtimestamp(scheduled / 1000, UTC)),
                      "fireAt": protocol.format_time(datetime.fromtimestamp(fired_at / 1000, UTC))}}
    nxt = item(str(payload["function"]), spec, payload.get("jitter"), after_ms=max(now, scheduled), rand=rand)
    return event, nxt
