"""The request budget a fleet shares, as numbers: each quota's rate, and the buckets a scheduler keeps.

The service's quotas hold for the whole account, so every process uploading into it draws from one budget. The
budgets run at ``quota × margin`` (0.9 unless configured), with a burst of one, so no one-second window sees more
starts than the quota even with a few milliseconds of jitter between the budget and the service. Pure and
synchronous: ``fleet.filebudget`` keeps a budget in a locked file, ``fleet.dask_budget`` in a Dask scheduler.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..core.config import RateLimits
from ..core.ratelimit import AdaptiveRate, TokenBucket, kind_rates

__all__ = ["DEFAULT_BUDGET", "SharedBudget", "budget_rates"]

DEFAULT_BUDGET = "async-uploader"
"""The budget every batch draws from unless told otherwise: batches on one cluster share the account's quota."""


def budget_rates(rates: RateLimits, margin: float = 0.9) -> dict[str, float]:
    """The bucket rates for ``rates``: each quota times the smaller of ``margin`` and ``rates.margin``."""
    if not 0 < margin <= 1:
        raise ValueError("margin must be in (0, 1]")
    return {kind.value: rate for kind, rate in kind_rates(rates, min(margin, rates.margin)).items()}


@dataclass
class _KindBudget:
    bucket: TokenBucket
    adaptive: AdaptiveRate
    reserved: int = 0
    throttles: int = 0


class SharedBudget:
    """Token buckets with adaptive rates, one per request kind: the state a scheduler keeps for a budget.

    Pure and synchronous; the scheduler's clock (monotonic) is the only clock that matters.
    """

    def __init__(self, rates: Mapping[str, float], clock: Any = time.monotonic) -> None:
        self._clock = clock
        self.kinds: dict[str, _KindBudget] = {}
        self.configure(rates)

    def configure(self, rates: Mapping[str, float]) -> None:
        """Set the top rate of each kind; reservations already made and the throttle history are kept."""
        for kind, rate in rates.items():
            current = self.kinds.get(kind)
            if current is None:
                self.kinds[kind] = _KindBudget(TokenBucket(rate, 1.0, self._clock), AdaptiveRate(rate))
            elif current.adaptive.max_rate != rate:
                current.adaptive = AdaptiveRate(rate)
                current.bucket.set_rate(rate)

    def reserve(self, kind: str, count: int, successes: int = 0) -> tuple[list[float], float | None]:
        """Reserve ``count`` starts; return each one's delay in seconds and the kind's rate now."""
        budget = self.kinds.get(kind)
        if budget is None:
            return [0.0] * count, None
        now = self._clock()
        if successes:
            budget.bucket.set_rate(budget.adaptive.on_success(now))
        budget.reserved += count
        return [budget.bucket.reserve_nowait(now) for _ in range(count)], budget.bucket.rate

    def throttle(self, kind: str) -> float | None:
        """A request of ``kind`` was throttled somewhere in the fleet: cut the rate (once per window)."""
        budget = self.kinds.get(kind)
        if budget is None:
            return None
        budget.throttles += 1
        budget.bucket.set_rate(budget.adaptive.on_throttle(self._clock()))
        return budget.bucket.rate

    def state(self) -> dict[str, dict[str, float]]:
        return {
            kind: {
                "rate": b.bucket.rate,
                "maxRate": b.adaptive.max_rate,
                "reserved": b.reserved,
                "throttles": b.throttles,
                "decreases": b.adaptive.decreases,
            }
            for kind, b in self.kinds.items()
        }
