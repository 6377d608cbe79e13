"""What an upload reports: its result, a frozen statistics snapshot, and the tallies behind that snapshot.

One ``UploadStatistics`` snapshot is read by the progress bar, the JSON events and the benchmarks alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import Source

__all__ = ["Counters", "UploadResult", "UploadStatistics"]


@dataclass(frozen=True)
class UploadResult:
    """What a finished upload produced."""

    read_set_id: str
    upload_id: str
    store_id: str
    bytes: dict[Source, int]
    parts: dict[Source, int]
    seconds: float
    retries: int
    throttles: int
    resumed_parts: int
    checkpoint: Path | None = None
    status: str = "ACTIVE"

    def as_json(self) -> dict[str, object]:
        return {
            "readSetId": self.read_set_id,
            "uploadId": self.upload_id,
            "storeId": self.store_id,
            "bytes": {s.value: n for s, n in self.bytes.items()},
            "parts": {s.value: n for s, n in self.parts.items()},
            "seconds": round(self.seconds, 3),
            "retries": self.retries,
            "throttles": self.throttles,
            "resumedParts": self.resumed_parts,
            "status": self.status,
        }


@dataclass(frozen=True)
class UploadStatistics:
    """A snapshot of one upload, read by the progress bar, the JSON events and the benchmarks alike.

    ``bytes_sent`` counts bytes handed to connections (smooth progress); ``bytes_done`` only acknowledged parts.
    """

    state: str
    bytes_done: dict[Source, int]
    bytes_sent: dict[Source, int]
    bytes_total: dict[Source, int | None]
    parts_done: dict[Source, int]
    parts_total: dict[Source, int | None]
    parts_in_flight: dict[Source, int]
    retries: int
    throttles: int
    rate_limit: float | None
    elapsed: float
    resumed_parts: int

    @property
    def total_bytes_done(self) -> int:
        return sum(self.bytes_done.values())

    @property
    def total_bytes_sent(self) -> int:
        return sum(self.bytes_sent.values())

    @property
    def total_bytes(self) -> int | None:
        totals = list(self.bytes_total.values())
        return None if any(t is None for t in totals) else sum(t or 0 for t in totals)

    @property
    def fraction(self) -> float | None:
        total = self.total_bytes
        return None if not total else min(1.0, self.total_bytes_sent / total)

    @property
    def throughput(self) -> float:
        """Bytes per second sent so far."""
        return self.total_bytes_sent / self.elapsed if self.elapsed > 0 else 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "state": self.state,
            "bytesDone": self.total_bytes_done,
            "bytesSent": self.total_bytes_sent,
            "bytesTotal": self.total_bytes,
            "partsDone": {s.value: n for s, n in self.parts_done.items()},
            "partsTotal": {s.value: n for s, n in self.parts_total.items()},
            "partsInFlight": {s.value: n for s, n in self.parts_in_flight.items()},
            "retries": self.retries,
            "throttles": self.throttles,
            "rateLimit": self.rate_limit,
            "elapsed": round(self.elapsed, 3),
        }


@dataclass
class Counters:
    """The mutable tallies behind ``UploadStatistics``; only the upload's own tasks change them."""

    sources: tuple[Source, ...]
    state: str = "starting"
    started: float = field(default_factory=time.monotonic)
    bytes_done: dict[Source, int] = field(default_factory=dict)
    bytes_sent: dict[Source, int] = field(default_factory=dict)
    bytes_total: dict[Source, int | None] = field(default_factory=dict)
    parts_done: dict[Source, int] = field(default_factory=dict)
    parts_total: dict[Source, int | None] = field(default_factory=dict)
    in_flight: dict[Source, int] = field(default_factory=dict)
    retries: int = 0
    throttles: int = 0
    resumed_parts: int = 0

    def __post_init__(self) -> None:
        for source in self.sources:
            for table in (self.bytes_done, self.bytes_sent, self.parts_done, self.in_flight):
                table[source] = 0
            self.bytes_total.setdefault(source, None)
            self.parts_total.setdefault(source, None)
