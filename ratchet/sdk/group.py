"""Parallel steps: `ctx.group.parallel((lambda: ctx.step.run("a", fa), lambda: ctx.step.run("b", fb)))`.

`Group` (for `async def` functions) and `GroupSync` (for `def` functions) run the callables one after the
other, inside a parallel group of the call's `_replay.Replay`: memoized steps give their values, new steps
are gathered and reported together as one 206 (`step.run` as StepPlanned), and in a call that targets one
step (`stepId=<hash>`) only that step runs while the others are skipped. The server then calls back once per
planned step, and the group returns when every step has a memo (reference §2.5, §2.6).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ratchet.sdk import _replay

ParallelMode = _replay.ParallelMode


class _GroupBase:
    def __init__(self, replay: _replay.Replay) -> None:
        self._replay = replay


class Group(_GroupBase):
    """`ctx.group` of an `async def` function."""

    async def parallel(
        self,
        callables: Sequence[Callable[[], Awaitable[Any]]],
        parallel_mode: ParallelMode | str = ParallelMode.WAIT,
    ) -> tuple[Any, ...]:
        """Run steps in parallel; return their results in the order of `callables`.

        Args:
            callables: Callables that each run one step, or several in sequence, e.g.
                `lambda: ctx.step.run("a", fa)` or an `async def` calling steps.
            parallel_mode: `ParallelMode.WAIT` (default) or `ParallelMode.RACE`. Both return every result;
                RACE makes the server resume the function after each step completes instead of after all,
                so callables with several steps advance independently.

        Returns:
            A tuple with the value of each callable, once all of their steps have completed.

        Raises:
            StepError: When a step of the group failed for good (raised in callable order).
        """
        mode = _check(callables, parallel_mode)
        run = self._replay.enter_group(mode)
        try:
            for fn in callables:
                try:
                    value = fn()
                    if inspect.isawaitable(value):
                        value = await value
                    run.returned(value)
                except _replay.StopAndReport as stop:
                    run.reported(stop.report)
                except _replay.StopUnexpected as stop:
                    run.skip(stop.unexpected)
        finally:
            self._replay.exit_group(run)
        return run.result()


class GroupSync(_GroupBase):
    """`ctx.group` of a plain `def` function; same as `Group`, without `await`."""

    def parallel(
        self,
        callables: Sequence[Callable[[], Any]],
        parallel_mode: ParallelMode | str = ParallelMode.WAIT,
    ) -> tuple[Any, ...]:
        """Run steps in parallel; return their results in order. See `Group.parallel`."""
        mode = _check(callables, parallel_mode)
        run = self._replay.enter_group(mode)
        try:
            for fn in callables:
                try:
                    value = fn()
                    if inspect.isawaitable(value):
                        _close(value)
                        raise TypeError("group.parallel(callables=...): a callable returned an awaitable; "
                                        "async steps need an `async def` ratchet function")
                    run.returned(value)
                except _replay.StopAndReport as stop:
                    run.reported(stop.report)
                except _replay.StopUnexpected as stop:
                    run.skip(stop.unexpected)
        finally:
            self._replay.exit_group(run)
        return run.result()


def _check(callables: object, parallel_mode: object) -> ParallelMode:
    if not isinstance(callables, (tuple, list)):
        raise TypeError(f"group.parallel(callables=...): expected a tuple or list of callables, "
                        f"got {type(callables).__name__}")
    for i, fn in enumerate(callables):
        if not callable(fn):
            raise TypeError(f"group.parallel(callables=...): item {i} is not callable: {fn!r}")
    # Also accept the official SDK's `inngest.ParallelMode` (an Enum whose values are the same strings).
    value = getattr(parallel_mode, "value", parallel_mode)
    try:
        return ParallelMode(value)
    except ValueError:
        raise ValueError(f"group.parallel(parallel_mode=...): expected ratchet.ParallelMode.WAIT or RACE, "
                         f"got {parallel_mode!r}") from None


def _close(value: Any) -> None:
    close = getattr(value, "close", None)
    if callable(close):
        close()
