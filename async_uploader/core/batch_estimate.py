"""What a batch would cost before it sends anything: its requests and the least time they take at the quotas.

Pure: the plans of the read sets to upload in, numbers out (``async-uploader batch --dry-run`` prints them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .config import RateLimits
from .plan import Plan

__all__ = ["BatchEstimate", "estimate_batch"]


@dataclass(frozen=True)
class BatchEstimate:
    """The requests of a batch by operation, and the least time they take when each kind starts at its quota."""

    read_sets: int
    parts: int
    bytes: int
    requests: dict[str, int]
    seconds: float
    """The longest of: every Create and Complete at the control quota, every part at the part quota, every
    GetReadSetMetadata at the listing quota (they overlap; the network and the store can only add to it)."""
    rates: RateLimits

    def as_json(self) -> dict[str, Any]:
        return {
            "readSets": self.read_sets,
            "parts": self.parts,
            "bytes": self.bytes,
            "requests": dict(self.requests),
            "secondsAtQuota": round(self.seconds, 1),
            "quotas": {"parts": self.rates.parts, "control": self.rates.control, "listings": self.rates.listings},
        }


def _at(count: int, rate: float | None) -> float:
    return count / rate if rate else 0.0


def estimate_batch(plans: Sequence[Plan], rates: RateLimits) -> BatchEstimate:
    """The requests of fresh uploads of ``plans`` and the least time they take at ``rates``.

    N read sets need N Creates and N Completes, which share the control quota (1/s: 2N seconds at least), their
    parts at the part quota, and at least one GetReadSetMetadata each. Retries are not counted.
    """
    count = len(plans)
    parts = sum(plan.total_parts for plan in plans)
    requests = {
        "CreateMultipartReadSetUpload": count,
        "UploadReadSetPart": parts,
        "CompleteMultipartReadSetUpload": count,
        "GetReadSetMetadata": count,
    }
    seconds = max(_at(2 * count, rates.control), _at(parts, rates.parts), _at(count, rates.listings))
    return BatchEstimate(
        read_sets=count,
        parts=parts,
        bytes=sum(sum(plan.sizes.values()) for plan in plans),
        requests=requests,
        seconds=math.ceil(seconds * 10) / 10,
        rates=rates,
    )
