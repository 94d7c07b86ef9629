"""Reruns, as pure decisions: which recorded steps of a run a rerun keeps as its memo, and which of the
function's flow control a rerun still obeys.

A rerun from a chosen step keeps every step the original run recorded before it (in recorded order, the
run's `stack`) that had finished: completed or failed for good, or a sleep that is over. The SDK then
skips those and runs the chosen step and everything after it again.
"""

from __future__ import annotations

from collections.abc import Sequence

from ratchet.server.store import base


class UnknownStep(ValueError):
    """`from_step` names no step of the run; the message lists the step ids it has."""


def finished(step: base.StepRecord, now: int) -> bool:
    """Is the step's result final by `now` (what the memo the SDK is sent holds)?"""
    if step.status in (base.StepStatus.COMPLETED, base.StepStatus.FAILED):
        return True
    return step.status == base.StepStatus.SLEEPING and step.ended_at is not None and step.ended_at <= now


def recorded_order(steps: Sequence[base.StepRecord], stack: Sequence[str]) -> list[base.StepRecord]:
    """The steps in the order the run recorded them (its stack); any not on the stack go last."""
    position = {h: i for i, h in enumerate(stack)}
    return sorted(steps, key=lambda s: position.get(s.hash, len(position)))


def find_step(steps: Sequence[base.StepRecord], from_step: str) -> base.StepRecord:
    """The step `from_step` names: its hash, or else its id (the first step recorded with that id, when a
    loop repeats it). Raises UnknownStep listing the ids there are."""
    for step in steps:
        if step.hash == from_step:
            return step
    for step in steps:
        if step.name == from_step:
            return step
    if not steps:
        raise UnknownStep(f"from_step: the run recorded no steps, so there is no step {from_step!r} to start from")
    names = ", ".join(repr(n) for n in dict.fromkeys(s.name for s in steps))
    raise UnknownStep(f"from_step: the run has no step with id or hash {from_step!r}; its step ids are {names}")


def memo_to_copy(steps: Sequence[base.StepRecord], stack: Sequence[str], from_step: str, now: int
                 ) -> tuple[base.StepRecord, list[base.StepRecord]]:
    """The step a rerun starts from, and the finished steps recorded before it, in recorded order, which
    the rerun gets as its memo exactly as stored. Raises UnknownStep."""
    ordered = recorded_order(steps, stack)
    chosen = find_step(ordered, from_step)
    before = ordered[:ordered.index(chosen)]
    return chosen, [s for s in before if finished(s, now)]


def rerun_flow(flow: base.RunFlow | None) -> base.RunFlow | None:
    """The flow control a rerun keeps: it was asked for explicitly, so no rate limit, singleton, debounce
    or batch drops, replaces or holds it (nor the idempotency key, which the caller leaves out), but
    concurrency limits, throttle and priority, which only delay or order runs, still hold."""
    if flow is None:
        return None
    kept = base.RunFlow(priority_ms=flow.priority_ms, throttle=flow.throttle, concurrency=flow.concurrency)
    return None if kept == base.RunFlow() else kept
