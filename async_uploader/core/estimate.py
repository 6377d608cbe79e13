"""What an upload would do, before it does anything: the plan, the requests, the time at the service's quotas.

Pure: sizes in, numbers out (``async-uploader upload --dry-run`` prints them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .config import RateLimits, Source
from .plan import Plan

__all__ = ["Estimate", "estimate"]


@dataclass(frozen=True)
class Estimate:
    """Requests by operation and the least time they take when each kind is started at its quota."""

    plan: Plan
    streams: tuple[Source, ...]
    requests: dict[str, int]
    seconds: float | None
    """None when a stream's size (so its part count) is unknown."""
    rates: RateLimits

    def as_json(self) -> dict[str, Any]:
        sources: dict[str, Any] = {}
        for source, size in self.plan.sizes.items():
            count = self.plan.part_count(source)
            last = size - (count - 1) * self.plan.part_size
            sources[source.value] = {"bytes": size, "parts": count, "lastPartBytes": last}
        for source in self.streams:
            sources[source.value] = {"bytes": None, "parts": None, "lastPartBytes": None}
        return {
            "dryRun": True,
            "partSize": self.plan.part_size,
            "sources": sources,
            "requests": dict(self.requests),
            "secondsAtQuota": None if self.seconds is None else round(self.seconds, 1),
            "quotas": {"parts": self.rates.parts, "control": self.rates.control, "listings": self.rates.listings},
        }


def estimate(plan: Plan, rates: RateLimits, streams: tuple[Source, ...] = ()) -> Estimate:
    """The requests of a fresh upload of ``plan`` (plus sources of unknown size) and their time at ``rates``.

    One Create, a part request per part, one Complete and at least one GetReadSetMetadata (the wait for
    ACTIVE). Parts start at most ``rates.parts`` a second, Create and Complete share ``rates.control``; the
    network can only make it longer. Retries are not counted.
    """
    parts = plan.total_parts
    requests = {
        "CreateMultipartReadSetUpload": 1,
        "UploadReadSetPart": parts,
        "CompleteMultipartReadSetUpload": 1,
        "GetReadSetMetadata": 1,
    }
    seconds: float | None = None
    if not streams:
        part_time = parts / rates.parts if rates.parts else 0.0
        control_time = 1.0 / rates.control if rates.control else 0.0  # Complete waits a control slot after Create
        seconds = max(part_time, control_time) + (1.0 / rates.listings if rates.listings else 0.0)
        seconds = math.ceil(seconds * 10) / 10
    return Estimate(plan=plan, streams=streams, requests=requests, seconds=seconds, rates=rates)
