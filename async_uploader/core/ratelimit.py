"""Request-start rate arithmetic: a reserving token bucket, an adaptive rate, and the Limiter protocol.

Pure and synchronous: every time comes from an injected clock or an argument. The limiters that wait
(``engine.limiter.LocalLimiter``, the shared budgets in ``fleet``) are thin shells around these.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

from .config import RateLimits

__all__ = [
    "LIMITED_KINDS",
    "AdaptiveRate",
    "AdaptiveState",
    "Clock",
    "Limiter",
    "RequestKind",
    "TokenBucket",
    "kind_rates",
]

Clock = Callable[[], float]


class RequestKind(enum.StrEnum):
    """Which service quota a request counts against."""

    PART = "parts"
    """UploadReadSetPart."""
    CONTROL = "control"
    """Create, Complete and Abort."""
    LISTING = "listings"
    """ListReadSetUploadParts, ListMultipartReadSetUploads and GetReadSetMetadata."""
    UNLIMITED = "unlimited"
    """Requests under no quota we know of (GetReadSet): never wait."""


class TokenBucket:
    """``rate`` request starts per second with bursts of up to ``burst``; every reservation is kept.

    ``reserve_nowait`` takes a token now and returns how long to wait before using it, so concurrent callers
    get staggered waits 0, 1/rate, 2/rate, ... in the order they asked. The state is the time at which the
    reserved schedule ends (GCRA); changing the rate keeps what was already reserved.
    """

    def __init__(self, rate: float, burst: float = 1.0, clock: Clock = time.monotonic) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._clock = clock
        self._burst = burst
        self._scheduled_until = -math.inf
        self._rate = 0.0
        self.set_rate(rate)

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst

    def set_burst(self, burst: float) -> None:
        """Hold up to ``burst`` tokens from now on."""
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._burst = burst

    def set_rate(self, rate: float) -> None:
        """Use ``rate`` for reservations made from now on; earlier ones keep their start times."""
        if not rate > 0 or math.isinf(rate):
            raise ValueError(f"rate must be positive and finite, not {rate}")
        self._rate = rate

    def delay(self, now: float | None = None) -> float:
        """Seconds the next reservation would wait, without making it."""
        now = self._clock() if now is None else now
        interval = 1.0 / self._rate
        return max(0.0, self._scheduled_until - (self._burst - 1.0) * interval - now)

    def reserve_nowait(self, now: float | None = None) -> float:
        """Reserve one token and return the seconds to wait before starting (0.0 when one is free now)."""
        now = self._clock() if now is None else now
        wait = self.delay(now)
        self._scheduled_until = max(self._scheduled_until, now) + 1.0 / self._rate
        return wait


@dataclass(frozen=True, slots=True)
class AdaptiveState:
    """Where an ``AdaptiveRate`` stands: its rate now and the history of its last cut (None: never cut)."""

    rate: float
    cut_at: float | None = None
    before_cut: float = 0.0
    after_cut: float = 0.0
    decreases: int = 0


class AdaptiveRate:
    """A rate that falls on throttles and climbs back: multiplicative decrease, CUBIC-shaped recovery.

    A throttle multiplies the rate by ``beta`` (never below ``min_rate``), at most once per ``window``
    seconds, so the burst of 429s answering requests already in flight counts once. Successes then raise
    it along a cubic curve that is back at the pre-throttle rate ``recover_seconds`` after the cut, then
    probes on toward ``max_rate``. ``state()`` and ``from_state()`` carry the whole history as a frozen value,
    so a budget shared through a file or a scheduler keeps one curve for many processes.
    """

    def __init__(
        self,
        max_rate: float,
        *,
        beta: float = 0.7,
        min_rate: float = 0.5,
        recover_seconds: float = 10.0,
        window: float = 1.0,
    ) -> None:
        if not max_rate > 0 or not 0 < beta < 1 or not min_rate > 0 or recover_seconds <= 0 or window < 0:
            raise ValueError("need max_rate > 0, 0 < beta < 1, min_rate > 0, recover_seconds > 0, window >= 0")
        self.max_rate = max_rate
        self.beta = beta
        self.min_rate = min(min_rate, max_rate)
        self.recover_seconds = recover_seconds
        self.window = window
        self._state = AdaptiveState(max_rate)

    @classmethod
    def from_state(
        cls, state: AdaptiveState, max_rate: float, *, min_rate: float = 0.5, recover_seconds: float = 10.0
    ) -> AdaptiveRate:
        """An AdaptiveRate continuing from ``state``, its rate clamped to this one's bounds."""
        adaptive = cls(max_rate, min_rate=min_rate, recover_seconds=recover_seconds)
        rate = max(adaptive.min_rate, min(max_rate, state.rate)) if state.cut_at is not None else max_rate
        adaptive._state = replace(state, rate=rate)
        return adaptive

    def state(self) -> AdaptiveState:
        return self._state

    @property
    def rate(self) -> float:
        return self._state.rate

    @property
    def decreases(self) -> int:
        return self._state.decreases

    def rate_at(self, now: float) -> float:
        """The recovery curve's rate at ``now`` (max_rate when never throttled)."""
        state = self._state
        if state.cut_at is None:
            return self.max_rate
        k = self.recover_seconds
        progress = (max(0.0, now - state.cut_at) - k) / k
        # w(t) = W + (W - w0)·((t - K)/K)³: w0 at the cut, W at K, then faster growth past W.
        value = state.before_cut + (state.before_cut - state.after_cut) * progress**3
        return max(self.min_rate, min(self.max_rate, value))

    def on_throttle(self, now: float) -> float:
        """Cut the rate by ``beta`` unless it was cut under ``window`` seconds ago; return the rate."""
        state = self._state
        if state.cut_at is not None and now - state.cut_at < self.window:
            return state.rate
        current = state.rate  # as far as successes have raised it, not the curve's later promise
        after = max(self.min_rate, current * self.beta)
        self._state = AdaptiveState(after, now, current, after, state.decreases + 1)
        return after

    def on_success(self, now: float) -> float:
        """Move the rate along the recovery curve; return it."""
        state = self._state
        if state.cut_at is not None and now - state.cut_at >= self.window:
            self._state = replace(state, rate=self.rate_at(now))
        return self._state.rate


@runtime_checkable
class Limiter(Protocol):
    """Request-start limits shared by every upload of one Uploader (local, or a shared backend)."""

    def reserve(self, kind: RequestKind) -> float:
        """Reserve a start for ``kind``; return the seconds to wait before it."""
        ...

    async def acquire(self, kind: RequestKind) -> None:
        """Reserve a start and sleep until it is due."""
        ...

    def on_throttle(self, kind: RequestKind) -> None:
        """A ``kind`` request was throttled."""
        ...

    def on_success(self, kind: RequestKind) -> None:
        """A ``kind`` request succeeded."""
        ...

    def current_rate(self, kind: RequestKind) -> float | None:
        """Starts per second now allowed for ``kind``; None when unlimited."""
        ...


LIMITED_KINDS = (RequestKind.PART, RequestKind.CONTROL, RequestKind.LISTING)
"""The request kinds a quota applies to."""


def kind_rates(rates: RateLimits, factor: float = 1.0) -> dict[RequestKind, float]:
    """Each limited kind's top rate, ``quota × factor``; kinds without a limit are left out."""
    limits = {RequestKind.PART: rates.parts, RequestKind.CONTROL: rates.control, RequestKind.LISTING: rates.listings}
    return {kind: rate * factor for kind, rate in limits.items() if rate is not None}
