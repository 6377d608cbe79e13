"""Request-start rate limits: a reserving token bucket, an adaptive rate, and the Limiter the engine uses.

The core is synchronous and takes its time from an injected clock; only ``LocalLimiter.acquire`` waits, by
sleeping for the delay its reservation returned, so the event loop is never blocked.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from .config import RateLimits

__all__ = ["AdaptiveRate", "Clock", "Limiter", "LocalLimiter", "RequestKind", "TokenBucket"]

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


class AdaptiveRate:
    """A rate that falls on throttles and climbs back: multiplicative decrease, CUBIC-shaped recovery.

    A throttle multiplies the rate by ``beta`` (never below ``min_rate``), at most once per ``window``
    seconds, so the burst of 429s answering requests already in flight counts once. Successes then raise
    it along a cubic curve that is back at the pre-throttle rate ``recover_seconds`` after the cut, then
    probes on toward ``max_rate``.
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
        self._rate = max_rate
        self._cut_at: float | None = None
        self._before_cut = max_rate
        self._after_cut = max_rate
        self.decreases = 0

    @property
    def rate(self) -> float:
        return self._rate

    def rate_at(self, now: float) -> float:
        """The recovery curve's rate at ``now`` (max_rate when never throttled)."""
        if self._cut_at is None:
            return self.max_rate
        k = self.recover_seconds
        progress = (max(0.0, now - self._cut_at) - k) / k
        # w(t) = W + (W - w0)·((t - K)/K)³: w0 at the cut, W at K, then faster growth past W.
        value = self._before_cut + (self._before_cut - self._after_cut) * progress**3
        return max(self.min_rate, min(self.max_rate, value))

    def on_throttle(self, now: float) -> float:
        """Cut the rate by ``beta`` unless it was cut under ``window`` seconds ago; return the rate."""
        if self._cut_at is not None and now - self._cut_at < self.window:
            return self._rate
        current = self._rate  # as far as successes have raised it, not the curve's later promise
        self._before_cut = current
        self._after_cut = max(self.min_rate, current * self.beta)
        self._cut_at = now
        self._rate = self._after_cut
        self.decreases += 1
        return self._rate

    def on_success(self, now: float) -> float:
        """Move the rate along the recovery curve; return it."""
        if self._cut_at is not None and now - self._cut_at >= self.window:
            self._rate = self.rate_at(now)
        return self._rate


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


class LocalLimiter:
    """The in-process Limiter: one TokenBucket (and AdaptiveRate) per limited kind, at ``rate × margin``."""

    def __init__(
        self,
        rates: RateLimits | None = None,
        *,
        adaptive: bool = True,
        clock: Clock = time.monotonic,
        burst: float = 1.0,
        min_rate: float = 0.5,
        recover_seconds: float = 10.0,
    ) -> None:
        rates = RateLimits() if rates is None else rates
        self._clock = clock
        self._buckets: dict[RequestKind, TokenBucket] = {}
        self._adaptive: dict[RequestKind, AdaptiveRate] = {}
        limits = {
            RequestKind.PART: rates.parts,
            RequestKind.CONTROL: rates.control,
            RequestKind.LISTING: rates.listings,
        }
        for kind, rate in limits.items():
            if rate is None:
                continue
            top = rate * rates.margin
            self._buckets[kind] = TokenBucket(top, burst, clock)
            if adaptive:
                self._adaptive[kind] = AdaptiveRate(top, min_rate=min_rate, recover_seconds=recover_seconds)

    def reserve(self, kind: RequestKind) -> float:
        bucket = self._buckets.get(kind)
        return 0.0 if bucket is None else bucket.reserve_nowait(self._clock())

    async def acquire(self, kind: RequestKind) -> None:
        # Imported here so the synchronous core stays free of asyncio.
        import asyncio

        delay = self.reserve(kind)
        if delay > 0:
            await asyncio.sleep(delay)

    def on_throttle(self, kind: RequestKind) -> None:
        adaptive = self._adaptive.get(kind)
        if adaptive is not None:
            self._buckets[kind].set_rate(adaptive.on_throttle(self._clock()))

    def on_success(self, kind: RequestKind) -> None:
        adaptive = self._adaptive.get(kind)
        if adaptive is not None:
            self._buckets[kind].set_rate(adaptive.on_success(self._clock()))

    def current_rate(self, kind: RequestKind) -> float | None:
        bucket = self._buckets.get(kind)
        return None if bucket is None else bucket.rate

    def decreases(self, kind: RequestKind) -> int:
        """How many times throttles have cut ``kind``'s rate."""
        adaptive = self._adaptive.get(kind)
        return 0 if adaptive is None else adaptive.decreases
