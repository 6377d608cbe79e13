"""Timers around awaiting uploads: a progress bar redrawn, progress events written, a Dask worker's reports.

``async with Monitor(Tick(0.2, draw), Tick(1.0, report)):`` around awaiting an upload calls each callback every
``interval`` seconds (each reads the statistics snapshot it shows), and once more as the block exits, so the last
figures shown are the final ones. Each timer is a task of the monitor's own task group, which only
the timers run in: an exception of the block goes on as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import anyio
from anyio.abc import TaskGroup

__all__ = ["Monitor", "Tick"]

log = logging.getLogger("async_uploader")


@dataclass(frozen=True)
class Tick:
    """Call ``callback`` every ``interval`` seconds."""

    interval: float
    callback: Callable[[], None]


class Monitor:
    """Runs timed callbacks while the ``async with`` block runs, and each once more at its end."""

    def __init__(self, *ticks: Tick) -> None:
        self._ticks = ticks
        self._group: TaskGroup | None = None

    def _call(self, tick: Tick) -> None:
        try:
            tick.callback()
        except Exception:  # a broken display must not break the upload
            log.exception("progress display failed")

    async def _run(self, tick: Tick) -> None:
        while True:
            await anyio.sleep(tick.interval)
            self._call(tick)

    async def __aenter__(self) -> Monitor:
        if self._ticks:
            self._group = anyio.create_task_group()
            await self._group.__aenter__()
            for tick in self._ticks:
                self._group.start_soon(self._run, tick)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        group, self._group = self._group, None
        if group is None:
            return
        group.cancel_scope.cancel()
        try:
            # The timers never raise, and the block's own exception is not theirs: it goes on, unwrapped.
            await group.__aexit__(None, None, None)
        finally:
            for tick in self._ticks:
                self._call(tick)
