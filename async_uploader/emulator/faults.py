"""Pure decisions about injected faults and request-rate quotas.

Every decision is a function of the seed and the stable identity of the request (operation, store, the
upload's identity, source, part number and how many times that identity was seen before), never of a shared
random stream nor of an id the store drew, so a given ``--seed`` makes the same decisions on every run, whatever
order the requests arrive in.
"""

from __future__ import annotations

import enum
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

# The operations a store answers, by the names of the service model.
OPERATIONS = (
    "CreateMultipartReadSetUpload",
    "UploadReadSetPart",
    "CompleteMultipartReadSetUpload",
    "AbortMultipartReadSetUpload",
    "ListReadSetUploadParts",
    "ListMultipartReadSetUploads",
    "GetReadSetMetadata",
    "GetReadSet",
    "ListReadSets",
    "GetSequenceStore",
)


@dataclass(frozen=True)
class FaultOptions:
    """Probabilities (0..1) of each injected fault, drawn per request identity and attempt.

    ``seed`` also makes the store's ids repeat from run to run; without one, faults are drawn as for seed 0
    and ids are random.
    """

    seed: int | None = None
    throttle_rate: float = 0.0
    error_rate: float = 0.0
    reset_rate: float = 0.0
    # Report every FASTQ ETag with one hex digit changed, so a client's end-to-end check can be seen to fail.
    corrupt_etag: bool = False
    # Inject throttles, errors and resets only into these operations (None: into every operation).
    operations: frozenset[str] | None = None

    def __post_init__(self) -> None:
        for name in ("throttle_rate", "error_rate", "reset_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {value}")
        if self.throttle_rate + self.error_rate + self.reset_rate > 1.0:
            raise ValueError("throttle_rate + error_rate + reset_rate must not exceed 1")
        unknown = sorted(set(self.operations or ()) - set(OPERATIONS))
        if unknown:
            raise ValueError(f"unknown operation {unknown[0]!r} for faults (expected one of {', '.join(OPERATIONS)})")

    @property
    def active(self) -> bool:
        return self.throttle_rate > 0 or self.error_rate > 0 or self.reset_rate > 0

    def applies_to(self, operation: str) -> bool:
        return self.operations is None or operation in self.operations


class Fault(enum.StrEnum):
    THROTTLE = "throttle"
    ERROR_500 = "error500"
    ERROR_503 = "error503"
    RESET = "reset"
    QUOTA = "quota"


@dataclass(frozen=True)
class RequestKey:
    """What identifies a request for fault decisions (retries of one part share a key).

    ``upload`` is the upload's stable identity (see ``State.upload_identity``), not its id, so the draw does not
    hang on an id the store picked; for a Create it is the identity of the request's fields.
    """

    operation: str
    store_id: str = ""
    upload: str = ""
    source: str = ""
    part_number: int = 0


def _uniform(seed: int | None, key: RequestKey, attempt: int, salt: str) -> float:
    seed = 0 if seed is None else seed
    text = f"{seed}|{salt}|{key.operation}|{key.store_id}|{key.upload}|{key.source}|{key.part_number}|{attempt}"
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def decide(options: FaultOptions, key: RequestKey, attempt: int) -> Fault | None:
    """The fault (if any) to inject into the ``attempt``-th request (0-based) with this key."""
    if not options.active:
        return None
    u = _uniform(options.seed, key, attempt, "fault")
    if u < options.throttle_rate:
        return Fault.THROTTLE
    u -= options.throttle_rate
    if u < options.error_rate:
        second = _uniform(options.seed, key, attempt, "status")
        return Fault.ERROR_500 if second < 0.5 else Fault.ERROR_503
    u -= options.error_rate
    if u < options.reset_rate:
        return Fault.RESET
    return None


def reset_offset(options: FaultOptions, key: RequestKey, attempt: int, length: int) -> int:
    """How many body bytes to read before dropping the connection (somewhere in 10%..90%)."""
    fraction = 0.1 + 0.8 * _uniform(options.seed, key, attempt, "offset")
    return int(length * fraction)


class QuotaBucket:
    """A token bucket of ``rate`` requests per second holding at most ``burst`` tokens.

    ``try_take`` never waits: it answers whether a request may pass now (the store replies 429 otherwise).
    """

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1.0, rate if burst is None else burst)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()

    def try_take(self, now: float | None = None) -> bool:
        now = self._clock() if now is None else now
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


QUOTA_KIND = {
    "CreateMultipartReadSetUpload": "control",
    "CompleteMultipartReadSetUpload": "control",
    "AbortMultipartReadSetUpload": "control",
    "UploadReadSetPart": "parts",
    "ListReadSetUploadParts": "listings",
    "ListMultipartReadSetUploads": "listings",
    "GetReadSetMetadata": "listings",
    "ListReadSets": "listings",
    "GetSequenceStore": "listings",
}

SERVICE_QUOTAS = {"control": 1.0, "parts": 10.0, "listings": 5.0}


PACER_SLACK = 0.05
"""Seconds a connection's reads may run behind its schedule and still catch up: a store whose loop serves many
connections wakes each a little late, and without the slack every late wake-up was lost for good (at 22
connections capped at 25 MB/s each got 15). An idle connection earns no more credit than this."""


class Pacer:
    """Spaces reads of one connection so it receives at most ``bytes_per_second`` on average, late wake-ups (up to
    ``PACER_SLACK``) made up."""

    def __init__(self, bytes_per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.bytes_per_second = bytes_per_second
        self._clock = clock
        self._next = clock()

    def delay_after(self, nbytes: int, now: float | None = None) -> float:
        """Account ``nbytes`` just read; return seconds to wait before reading more."""
        now = self._clock() if now is None else now
        self._next = max(self._next, now - PACER_SLACK) + nbytes / self.bytes_per_second
        return max(0.0, self._next - now)
