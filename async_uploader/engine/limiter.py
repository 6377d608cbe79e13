"""The in-process request budget: a token bucket (and an adaptive rate) per limited kind of request.

Every decision is the core's (``TokenBucket.reserve_nowait``, ``AdaptiveRate``); ``acquire`` only sleeps for the
delay its reservation returned.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

from ..core.config import RateLimits
from ..core.ratelimit import AdaptiveRate, Clock, RequestKind, TokenBucket, kind_rates

__all__ = ["LocalLimiter"]


class LocalLimiter:
    """The default ``Limiter``: one TokenBucket (and AdaptiveRate) per limited kind, at ``rate × margin``.

    Each bucket holds ``burst`` tokens, by default one second of its kind's rate (10 parts, 5 listings, 1 control
    request at the service's quotas), as a quota of N requests per second holds them: an upload's first ten parts
    start at once instead of a tenth of a second apart. A throttle (429) empties that allowance: the kind then
    starts one request at a time, at the rate the throttles cut, until the rate is back at the top. ``clock`` and
    ``sleep`` are injected so tests run on a fake clock, instantly.
    """

    def __init__(
        self,
        rates: RateLimits | None = None,
        *,
        adaptive: bool = True,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        burst: float | None = None,
        min_rate: float = 0.5,
        recover_seconds: float = 10.0,
    ) -> None:
        rates = RateLimits() if rates is None else rates
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[RequestKind, TokenBucket] = {}
        self._adaptive: dict[RequestKind, AdaptiveRate] = {}
        self._bursts: dict[RequestKind, tuple[float, float]] = {}  # (the top rate, the burst held there)
        for kind, top in kind_rates(rates, rates.margin).items():
            self._bursts[kind] = (top, max(1.0, top) if burst is None else burst)
            self._buckets[kind] = TokenBucket(top, self._bursts[kind][1], clock)
            if adaptive:
                self._adaptive[kind] = AdaptiveRate(top, min_rate=min_rate, recover_seconds=recover_seconds)

    def reserve(self, kind: RequestKind) -> float:
        bucket = self._buckets.get(kind)
        return 0.0 if bucket is None else bucket.reserve_nowait(self._clock())

    async def acquire(self, kind: RequestKind) -> None:
        delay = self.reserve(kind)
        if delay > 0:
            await self._sleep(delay)

    def on_throttle(self, kind: RequestKind) -> None:
        adaptive = self._adaptive.get(kind)
        if adaptive is not None:
            bucket = self._buckets[kind]
            bucket.set_rate(adaptive.on_throttle(self._clock()))
            bucket.set_burst(1.0)

    def on_success(self, kind: RequestKind) -> None:
        adaptive = self._adaptive.get(kind)
        if adaptive is not None:
            bucket, (top, burst) = self._buckets[kind], self._bursts[kind]
            bucket.set_rate(adaptive.on_success(self._clock()))
            if bucket.rate >= top and bucket.burst != burst:
                bucket.set_burst(burst)

    def current_rate(self, kind: RequestKind) -> float | None:
        bucket = self._buckets.get(kind)
        return None if bucket is None else bucket.rate

    def decreases(self, kind: RequestKind) -> int:
        """How many times throttles have cut ``kind``'s rate."""
        adaptive = self._adaptive.get(kind)
        return 0 if adaptive is None else adaptive.decreases
