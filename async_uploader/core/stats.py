"""What an upload reports: its result, and one frozen statistics snapshot in one JSON shape.

``UploadStatistics`` is read by the progress bar, the JSON events (locally and from Dask workers alike) and the
benchmarks; ``as_json()`` is the only place its JSON shape is written (the schema is in ``core.events``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .config import Source

__all__ = ["UploadResult", "UploadStatistics", "Verification"]


@dataclass(frozen=True)
class Verification:
    """Whether the service holds exactly the user's reads: its ETag and counts against those computed here.

    ``verified`` only when every digest (and the counts the store reports) agree; otherwise ``reason`` says why
    not, and ``failed`` is set when something disagrees (or the local bytes do not decode), not when nothing could
    be compared (a BAM, a store that reports no ETag, verification switched off).
    """

    verified: bool
    reason: str | None = None
    failed: bool = False
    algorithm: str | None = None
    local: Mapping[str, str] = field(default_factory=dict)
    remote: Mapping[str, str] = field(default_factory=dict)
    reads: int | None = None
    bases: int | None = None
    remote_reads: int | None = None
    remote_bases: int | None = None

    def with_reason(self, reason: str | None, *, failed: bool = False, verified: bool = False) -> Verification:
        return replace(self, reason=reason, failed=failed, verified=verified)

    def line(self) -> str:
        """One line for people: ``verified: ...`` or ``not verified: ...``."""
        if self.verified:
            sources = ", ".join(self.local)
            counts = f"; {self.reads:,} reads, {self.bases:,} bases" if self.reads is not None else ""
            return f"verified: the store's {self.algorithm} of {sources} equals the upload's{counts}"
        return f"not verified: {self.reason}"

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"verified": self.verified, "algorithm": self.algorithm}
        data["local"] = dict(self.local)
        data["remote"] = dict(self.remote)
        if self.reads is not None:
            data.update(
                reads=self.reads, bases=self.bases, remoteReads=self.remote_reads, remoteBases=self.remote_bases
            )
        if self.reason is not None:
            data["reason"] = self.reason
        return data


@dataclass(frozen=True)
class Timings:
    """Seconds spent in each phase of one upload: ``transfer`` from the first part sent to the last acknowledged,
    ``complete`` in Complete, ``store`` waiting for the store to process the read set (PROCESSING_UPLOAD to
    ACTIVE, as seen by polling), ``verify`` comparing once ACTIVE (waiting for the local hash to finish
    included), ``total`` the whole upload; ``transferred`` the bytes sent in the transfer."""

    transfer: float = 0.0
    complete: float = 0.0
    store: float = 0.0
    verify: float = 0.0
    total: float = 0.0
    transferred: int = 0

    @property
    def transfer_rate(self) -> float:
        """Bytes per second over the transfer alone."""
        return self.transferred / self.transfer if self.transfer > 0 else 0.0

    def as_json(self) -> dict[str, float]:
        return {
            "transferSeconds": round(self.transfer, 3),
            "completeSeconds": round(self.complete, 3),
            "storeSeconds": round(self.store, 3),
            "verifySeconds": round(self.verify, 3),
            "transferMBps": round(self.transfer_rate / 1e6, 1),
        }


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
    verification: Verification | None = None
    timings: Timings = field(default_factory=Timings)
    receipt: Path | None = None
    existing: bool = False  # the store held these files already: nothing was sent
    plain_bytes: dict[Source, int] = field(default_factory=dict)
    """The plain FASTQ read of each source sent gzip-compressed (``bytes`` holds what was sent)."""

    def compression(self) -> dict[Source, float]:
        """Plain bytes per byte sent, for each source sent gzip-compressed."""
        return {s: n / self.bytes[s] for s, n in self.plain_bytes.items() if self.bytes.get(s)}

    @property
    def verified(self) -> bool:
        return self.verification is not None and self.verification.verified

    def as_json(self) -> dict[str, object]:
        verification = self.verification or Verification(False, reason="verification was switched off")
        if self.status != "ACTIVE" and self.verification is None:
            verification = Verification(False, reason=f"the read set is {self.status}: not verified yet")
        return {
            "readSetId": self.read_set_id,
            "uploadId": self.upload_id,
            "storeId": self.store_id,
            "bytes": {s.value: n for s, n in self.bytes.items()},
            "parts": {s.value: n for s, n in self.parts.items()},
            "seconds": round(self.seconds, 3),
            **self.timings.as_json(),
            "retries": self.retries,
            "throttles": self.throttles,
            "resumedParts": self.resumed_parts,
            "status": self.status,
            "verified": None if self.status != "ACTIVE" and self.verification is None else verification.verified,
            "verification": verification.as_json(),
            "receipt": str(self.receipt) if self.receipt is not None else None,
            "existing": self.existing,
            **self._compressed_json(),
        }

    def _compressed_json(self) -> dict[str, object]:
        if not self.plain_bytes:
            return {}
        ratios = self.compression()
        return {
            "compressed": {
                s.value: {"plainBytes": n, "ratio": round(ratios.get(s, 0.0), 3)} for s, n in self.plain_bytes.items()
            }
        }


def _sum(values: Mapping[Source, int | None]) -> int | None:
    total = 0
    for value in values.values():
        if value is None:
            return None
        total += value
    return total


@dataclass(frozen=True)
class UploadStatistics:
    """A snapshot of one upload.

    ``bytes_sent`` counts bytes handed to connections (smooth progress); ``bytes_done`` only acknowledged parts.
    A total is None while it is unknown (a stream not read to its end).
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
    phase_elapsed: float = 0.0
    timings: Timings = field(default_factory=Timings)

    @property
    def total_bytes_done(self) -> int:
        return sum(self.bytes_done.values())

    @property
    def total_bytes_sent(self) -> int:
        return sum(self.bytes_sent.values())

    @property
    def total_bytes(self) -> int | None:
        return _sum(self.bytes_total)

    @property
    def total_parts(self) -> int | None:
        return _sum(self.parts_total)

    @property
    def fraction(self) -> float | None:
        total = self.total_bytes
        return None if not total else min(1.0, self.total_bytes_done / total)

    @property
    def throughput(self) -> float:
        """Bytes per second sent so far."""
        return self.total_bytes_sent / self.elapsed if self.elapsed > 0 else 0.0

    def as_json(self) -> dict[str, object]:
        """The snapshot as the ``progress`` event carries it: totals first, then the figures per source."""
        fraction = self.fraction
        return {
            "state": self.state,
            "bytesDone": self.total_bytes_done,
            "bytesSent": self.total_bytes_sent,
            "bytesTotal": self.total_bytes,
            "fraction": None if fraction is None else round(fraction, 4),
            "partsDone": sum(self.parts_done.values()),
            "partsTotal": self.total_parts,
            "partsInFlight": sum(self.parts_in_flight.values()),
            "retries": self.retries,
            "throttles": self.throttles,
            "rateLimit": self.rate_limit,
            "resumedParts": self.resumed_parts,
            "elapsed": round(self.elapsed, 3),
            "phaseElapsed": round(self.phase_elapsed, 3),
            "bytesPerSecond": round(self.total_bytes_done / self.elapsed, 1) if self.elapsed > 0 else 0.0,
            "sources": {
                source.value: {
                    "bytesDone": self.bytes_done.get(source, 0),
                    "bytesSent": self.bytes_sent.get(source, 0),
                    "bytesTotal": self.bytes_total.get(source),
                    "partsDone": self.parts_done.get(source, 0),
                    "partsTotal": self.parts_total.get(source),
                    "partsInFlight": self.parts_in_flight.get(source, 0),
                }
                for source in self.bytes_total
            },
        }
