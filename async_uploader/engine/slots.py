"""Request slots whose number can change while requests hold them: fixed, or learned (``core.concurrency``).

``Slots.acquire()`` waits, first come first served, until fewer requests are in flight than ``limit``;
``release()`` frees one. A lowered limit takes nothing away from requests in flight: it only holds back new ones
until enough have finished. With a tuner, ``sent(n)`` (the parts' progress) feeds it the bytes sent; every
``window`` it is told whether the limit held requests back (a part waited for a slot, no more were in flight than
the limit when the window began, and no part holding a slot waited for the rate limiter or a retry's backoff:
``hold()``/``unhold()`` around those waits) and, with ``load``, how busy the cores were since the last window
and how much of that was this process (``edge.cores``); the limit follows what it returns. Under a quota, parts
hold slots while they wait for the limiter's tokens: such windows say nothing about the limit.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import anyio

from ..core.concurrency import ConcurrencyTuner

__all__ = ["HELD", "Slots"]

HELD = 0.002
"""Seconds of waiting (for tokens, or a backoff) that make a window say nothing about the limit."""


class Slots:
    """At most ``limit`` holders at once; ``limit`` fixed at ``maximum``, or moved by ``tuner``."""

    def __init__(
        self,
        maximum: int,
        tuner: ConcurrencyTuner | None = None,
        clock: Callable[[], float] = time.monotonic,
        load: Callable[[], tuple[float, float] | None] | None = None,
    ) -> None:
        self.maximum = maximum
        self.tuner = tuner
        self._load = load
        self.limit = maximum if tuner is None else tuner.limit
        self.peak = 0
        """The most requests that were in flight at once."""
        self._clock = clock
        self._in_flight = 0
        self._waiters: deque[anyio.Event] = deque()
        self._waited = False
        self._over = False
        self._holding = 0
        self._held = False
        self._sent = 0
        self._due = 0.0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def acquire(self) -> None:
        if self._in_flight < self.limit and not self._waiters:
            self._take()
            return
        self._waited = True
        granted = anyio.Event()
        self._waiters.append(granted)
        try:
            await granted.wait()
        except BaseException:
            if granted.is_set():  # the slot came with the cancellation: give it on
                self.release()
            else:
                self._waiters.remove(granted)
            raise

    def release(self) -> None:
        self._in_flight -= 1
        if self.tuner is not None:
            self._tick()
        self._wake()

    def sent(self, nbytes: int) -> None:
        """Bytes of part bodies written (only with a tuner: without one it is not needed)."""
        if self.tuner is not None and nbytes > 0:
            self._sent += nbytes
            self._tick()

    def _take(self) -> None:
        self._in_flight += 1
        self.peak = max(self.peak, self._in_flight)
        if self.tuner is not None:
            self._tick()

    def _wake(self) -> None:
        while self._waiters and self._in_flight < self.limit:
            self._in_flight += 1
            self.peak = max(self.peak, self._in_flight)
            self._waiters.popleft().set()

    def _tick(self) -> None:
        assert self.tuner is not None
        now = self._clock()
        if now < self._due:
            return
        # The window shows what the limit does when a part waited for a slot in it, the requests of a higher
        # limit had drained by its start (a lowered limit holds back new parts only), and no slot's part waited
        # for the rate limiter's tokens or a retry's backoff.
        limited = self._waited and not self._over and not self._held and not self._holding
        busy, own = (self._load() if self._load is not None else None) or (None, None)
        self.limit = self.tuner.observe(now, self._sent, limited, busy, own)
        self._waited, self._over, self._held = bool(self._waiters), self._in_flight > self.limit, False
        self._due = now + self.tuner.window
        self._wake()

    def hold(self) -> float:
        """A slot's part starts to wait (for the rate limiter, or a retry's backoff); pass what it returns to
        ``unhold`` when it stops."""
        self._holding += 1
        return self._clock()

    def unhold(self, since: float) -> None:
        self._holding -= 1
        if self._clock() - since > HELD:
            self._held = True
