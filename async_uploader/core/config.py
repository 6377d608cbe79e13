"""Frozen settings and read-set metadata, validated when they are created.

Nothing here does I/O beyond ``os.stat``-free checks: a ``ReadSet`` names its sources, it does not open them.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from .errors import ConfigError
from .fields import RULES, check_field, check_tags

__all__ = [
    "DEFAULT_PART_SIZE",
    "DEFAULT_WAIT_TIMEOUT",
    "MAX_PARTS",
    "MAX_PART_SIZE",
    "MIB",
    "FileType",
    "RateLimits",
    "ReadSet",
    "RetryConfig",
    "ServiceConfig",
    "Source",
    "UploadConfig",
    "parse_duration",
    "parse_size",
]

MIB = 1024 * 1024
MAX_PART_SIZE = 100 * MIB
"""The largest part the service accepts (104,857,600 bytes)."""
MAX_PARTS = 10_000
"""Part numbers run 1..10,000, separately for each source."""
DEFAULT_PART_SIZE = 100 * MIB
"""Chosen by measurement; see README "Choosing the part size"."""
DEFAULT_SLICE_SIZE = 1 * MIB
DEFAULT_WAIT_TIMEOUT = 12 * 3600.0
"""How long an upload waits for its read set to be ACTIVE. The service hashes every source before ACTIVE and
publishes no figure for how long; the largest read set it takes is 2 x 10,000 x 100 MiB of gzip, about 8 TB of
FASTQ once inflated, which at a few hundred MB/s of hashing is 6-11 hours. Twelve hours covers it; a pipeline that
would rather not hold a slot passes --no-wait and verifies later."""


class Source(enum.StrEnum):
    """A read set's two sources: SOURCE2 is the mate file of paired FASTQ."""

    SOURCE1 = "SOURCE1"
    SOURCE2 = "SOURCE2"


class FileType(enum.StrEnum):
    FASTQ = "FASTQ"
    BAM = "BAM"
    CRAM = "CRAM"
    UBAM = "UBAM"

    @classmethod
    def parse(cls, value: str) -> FileType:
        try:
            return cls(value.upper())
        except ValueError:
            raise ConfigError(f"file type {value!r} is not one of {', '.join(m.value for m in cls)}") from None


def _check_text(field: str, value: str | None, *, required: bool) -> None:
    if value is None:
        if required:
            raise ConfigError(f"{RULES[field].label} is required")
        return
    check_field(field, value)


def check_store_id(store_id: str) -> str:
    """Raise ConfigError unless ``store_id`` is 10-36 digits, as the service requires."""
    return check_field("sequenceStoreId", store_id)


SourceInput = Path | BinaryIO
"""A source is a file path, or a binary stream that need not seek (stdin, a pipe)."""


@dataclass(frozen=True)
class ReadSet:
    """One read set to upload: its sources and the metadata Create sends.

    ``source2`` is the mate file of paired FASTQ and is only allowed for FASTQ. BAM and CRAM are aligned
    and need ``reference_arn``.
    """

    source1: SourceInput
    file_type: FileType
    subject_id: str
    sample_id: str
    name: str
    source2: SourceInput | None = None
    reference_arn: str | None = None
    generated_from: str | None = None
    description: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Accept plain strings from callers that ignore the annotations: paths and file types.
        for name in ("source1", "source2"):
            given: object = getattr(self, name)
            if isinstance(given, str):
                object.__setattr__(self, name, Path(given))
        file_type: object = self.file_type
        if not isinstance(file_type, FileType):
            object.__setattr__(self, "file_type", FileType.parse(str(file_type)))
        _check_text("subjectId", self.subject_id, required=True)
        _check_text("sampleId", self.sample_id, required=True)
        _check_text("name", self.name, required=True)
        _check_text("generatedFrom", self.generated_from, required=False)
        _check_text("description", self.description, required=False)
        if self.source2 is not None and self.file_type is not FileType.FASTQ:
            raise ConfigError(f"a second source is only allowed for paired FASTQ, not {self.file_type.value}")
        if self.file_type in (FileType.BAM, FileType.CRAM) and not self.reference_arn:
            raise ConfigError(f"{self.file_type.value} is aligned: a reference ARN is required")
        _check_text("referenceArn", self.reference_arn, required=False)
        object.__setattr__(self, "tags", dict(self.tags))
        check_tags(dict(self.tags))

    @property
    def sources(self) -> dict[Source, SourceInput]:
        """The sources present, SOURCE1 first."""
        found: dict[Source, SourceInput] = {Source.SOURCE1: self.source1}
        if self.source2 is not None:
            found[Source.SOURCE2] = self.source2
        return found


@dataclass(frozen=True)
class RateLimits:
    """Request starts per second, by kind of request. Defaults are the service's default quotas.

    ``parts`` is UploadReadSetPart; ``control`` is Create, Complete and Abort together; ``listings`` is
    ListReadSetUploadParts, ListMultipartReadSetUploads and GetReadSetMetadata. ``None`` lifts a limit (for a
    local store). ``margin`` keeps the client just under a shared quota.
    """

    parts: float | None = 10.0
    control: float | None = 1.0
    listings: float | None = 5.0
    margin: float = 1.0

    def __post_init__(self) -> None:
        for label in ("parts", "control", "listings"):
            value = getattr(self, label)
            if value is not None and not value > 0:
                raise ConfigError(f"rate limit for {label} must be positive, or unlimited")
        if not 0 < self.margin <= 1:
            raise ConfigError("rate margin must be in (0, 1]")

    @classmethod
    def unlimited(cls) -> RateLimits:
        return cls(parts=None, control=None, listings=None)


@dataclass(frozen=True)
class RetryConfig:
    """Retries per request: exponential backoff with full jitter, at most ``max_attempts`` tries in all."""

    max_attempts: int = 10
    base_delay: float = 0.25
    max_delay: float = 20.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("max attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ConfigError("retry delays must satisfy 0 <= base_delay <= max_delay")


def check_endpoint_url(url: str) -> str:
    """Raise ConfigError unless ``url`` is an http(s) URL with a host and, if given, a port in 1-65535."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"endpoint URL {url!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(ch.isspace() for ch in url):
        raise ConfigError(f"endpoint URL {url!r} must be http://HOST[:PORT] or https://HOST[:PORT]")
    if port == 0:
        raise ConfigError(f"endpoint URL {url!r}: port 0 is not a port one can connect to")
    if parts.query or parts.fragment:
        raise ConfigError(f"endpoint URL {url!r} must have no query or fragment")
    return url


@dataclass(frozen=True)
class ServiceConfig:
    """Where requests go and how they are authenticated.

    With ``endpoint_url`` every request goes to that URL with no host prefix (a local store). Otherwise parts and
    Complete go to ``storage-omics.<region>.amazonaws.com`` and the rest to
    ``control-storage-omics.<region>.amazonaws.com`` over HTTPS. Credentials come from botocore's chain
    (environment, profile, SSO, instance role) unless ``profile`` names one.

    Timeouts, in seconds: ``connect_timeout`` to open a connection; ``read_timeout`` is a progress deadline (an
    attempt fails when no bytes move, either way, for that long), so a large part on a slow link is never cut
    short; ``operation_timeout`` bounds every request that carries no bulk data (Create, Complete, Abort,
    listings, metadata), retries included.

    TLS: ``verify_tls`` False skips certificate checks (testing only); ``ca_bundle`` is a PEM file of the CAs to
    trust instead of the system's (a private CA, a TLS-inspecting proxy); ``proxy_ca_bundle`` one trusted too for
    an ``https://`` proxy. Unset fields are filled from botocore's configuration (``edge.awsconfig``).
    """

    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    verify_tls: bool = True
    ca_bundle: str | None = None
    proxy_ca_bundle: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    operation_timeout: float = 120.0

    def __post_init__(self) -> None:
        if self.endpoint_url is not None:
            check_endpoint_url(self.endpoint_url)
        if min(self.connect_timeout, self.read_timeout, self.operation_timeout) <= 0:
            raise ConfigError("timeouts must be positive")


@dataclass(frozen=True)
class UploadConfig:
    """How an upload is carried out: the knobs users think in.

    ``part_size`` None picks DEFAULT_PART_SIZE, grown in whole MiB when a source would need more than 10,000
    parts. ``max_concurrency`` caps requests in flight per Uploader; with ``adaptive_concurrency`` the engine
    starts below it and keeps the number that throughput shows is best (``core.concurrency``), never above it.
    ``workers`` event loops, each in its own thread with its own connections, send the part bodies (1: the
    caller's loop alone). ``memory_budget`` bounds the part buffers
    used for sources that cannot seek (stdin, pipes). ``wait_for_active`` polls GetReadSetMetadata after Complete
    until the store has checked the read set (ACTIVE, or UPLOAD_FAILED raised as an error), for at most
    ``active_timeout`` seconds. ``if_exists``: when no checkpoint knows the upload and the store already holds a
    read set of the same name, subject, sample, file type and source sizes, ``skip`` reports it (when its ETag is
    the files' hash, or none can be computed), ``upload`` uploads all the same, ``fail`` fails naming it.
    ``verify`` hashes each FASTQ source while it uploads and compares the read set's
    ETag and counts with it once ACTIVE (README, "End-to-end verification"). ``compress`` gzip-compresses a plain
    FASTQ source while it uploads (the service stores FASTQ gzip-compressed only); False refuses one instead.
    """

    part_size: int | None = None
    max_concurrency: int = 64
    rates: RateLimits = field(default_factory=RateLimits)
    retry: RetryConfig = field(default_factory=RetryConfig)
    memory_budget: int = 1024 * MIB
    slice_size: int = DEFAULT_SLICE_SIZE
    wait_for_active: bool = True
    verify: bool = True
    active_timeout: float = DEFAULT_WAIT_TIMEOUT
    if_exists: str = "skip"
    adaptive: bool = True
    adaptive_concurrency: bool = True
    workers: int = 1
    compress: bool = True

    def __post_init__(self) -> None:
        if self.part_size is not None and not 1 <= self.part_size <= MAX_PART_SIZE:
            raise ConfigError(f"part size {self.part_size} is outside 1 byte .. 100 MiB ({MAX_PART_SIZE} bytes)")
        if not 1 <= self.max_concurrency <= 10_000:
            raise ConfigError("max concurrency must be between 1 and 10,000")
        if not 1 <= self.workers <= 64:
            raise ConfigError("workers must be between 1 and 64")
        if not 4096 <= self.slice_size <= 16 * MIB:
            raise ConfigError("slice size must be between 4 KiB and 16 MiB")
        if self.memory_budget < 1 * MIB:
            raise ConfigError("memory budget must be at least 1 MiB")
        if self.if_exists not in ("skip", "upload", "fail"):
            raise ConfigError(f"if_exists must be skip, upload or fail, not {self.if_exists!r}")


_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?i?b?)?\s*", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "ki": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "mi": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "gi": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
    "ti": 1024**4,
}


def parse_size(text: str) -> int:
    """Parse ``64MiB``, ``100MB``, ``1.5GiB`` or plain bytes into a whole number of bytes."""
    match = _SIZE.fullmatch(text)
    unit = (match.group(2) or "").lower() if match else ""
    if not match or unit not in _UNITS:
        raise ConfigError(f"size {text!r} is not a number of bytes or a size like 64MiB")
    value = float(match.group(1)) * _UNITS[unit]
    if value != int(value):
        raise ConfigError(f"size {text!r} is not a whole number of bytes")
    return int(value)


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hr|hrs|hours?|d|days?)?\s*")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Parse ``90``, ``90s``, ``30m``, ``6h`` or ``1d`` into seconds (a bare number is seconds)."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise ConfigError(f"duration {text!r} is not a number of seconds or a duration like 90s, 30m or 6h")
    unit = (match.group(2) or "s")[0].lower()
    return float(match.group(1)) * _DURATION_UNITS[unit]


def env_region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
