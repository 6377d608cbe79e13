"""Settings of one emulated store."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .etag import FAMILIES
from .faults import SERVICE_QUOTAS, FaultOptions

DEFAULT_MAX_PART_SIZE = 104_857_600


@dataclass(frozen=True)
class StoreOptions:
    """How the store listens, whom it trusts, what it keeps and how it misbehaves."""

    host: str = "127.0.0.1"
    port: int = 0
    data_dir: Path | None = None
    access_key: str = "test"
    secret_key: str = "test"
    # More access key -> secret key pairs the store accepts (rotating credentials).
    extra_keys: dict[str, str] = field(default_factory=dict)
    max_part_size: int = DEFAULT_MAX_PART_SIZE
    discard: bool = False
    # Compute SHA-256 over every part body received, even one sent as UNSIGNED-PAYLOAD: a store that checksums
    # everything it takes in, so the store side spends CPU on every byte (for benchmarks).
    hash_parts: bool = False
    log_path: Path | None = None
    faults: FaultOptions = field(default_factory=FaultOptions)
    quotas: dict[str, float] | None = None
    connection_mbps: float | None = None
    latency_ms: float = 0.0
    # Seconds the store's clock is off from this machine's: the Date it sends and the time signatures are judged by.
    clock_offset: float = 0.0
    clock_skew_limit: float = 900.0
    # A read set stays PROCESSING_UPLOAD at least this long after Complete (serve --ingest-delay), and at least
    # its size over ``ingest_mbps`` MB/s (serve --ingest-rate): as slow as the service can be, to try waiting.
    processing_delay: float = 0.05
    ingest_mbps: float | None = None
    # The ETag family the store computes FASTQ ETags with (MD5up, SHA256up or SHA512up).
    etag_family: str = "MD5up"
    # A connection with no request for this long is closed; so is one still sending its headers by then.
    idle_timeout: float = 30.0
    # A request body from which no byte arrives for this long is answered 408 and its connection closed.
    body_timeout: float = 30.0
    # Serve HTTPS: with ``tls_cert``/``tls_key`` (PEM files), else with a certificate for the loopback
    # names signed by a CA made at start (its PEM is written where ``LocalStore.ca_path`` says).
    tls: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # The sequence stores this store knows; a request naming another is answered 404 ResourceNotFoundException, as
    # the service does. None: any well-formed store id is a store (made on first use).
    store_ids: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.etag_family not in FAMILIES:
            raise ValueError(f"etag_family must be one of {', '.join(FAMILIES)}, got {self.etag_family!r}")
        for name in ("idle_timeout", "body_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        self._check_tls()
        if self.max_part_size < 1:
            raise ValueError("max_part_size must be positive")
        if self.connection_mbps is not None and self.connection_mbps <= 0:
            raise ValueError("connection_mbps must be positive")
        if self.latency_ms < 0 or self.processing_delay < 0:
            raise ValueError("latency_ms and processing_delay must not be negative")
        if self.ingest_mbps is not None and self.ingest_mbps <= 0:
            raise ValueError("ingest_mbps must be positive")
        self._check_quotas()

    def _check_tls(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_cert is not None and not self.tls:
            raise ValueError("tls_cert and tls_key need tls=True")

    def _check_quotas(self) -> None:
        for kind, rate in (self.quotas or {}).items():
            if kind not in SERVICE_QUOTAS:
                raise ValueError(f"unknown quota kind {kind!r} (expected control, parts or listings)")
            if rate <= 0:
                raise ValueError(f"quota for {kind} must be positive")

    @staticmethod
    def service_quotas() -> dict[str, float]:
        """The service's default request rates per kind of request."""
        return dict(SERVICE_QUOTAS)
