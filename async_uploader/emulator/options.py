"""Settings of one emulated store."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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
    log_path: Path | None = None
    faults: FaultOptions = field(default_factory=FaultOptions)
    quotas: dict[str, float] | None = None
    connection_mbps: float | None = None
    latency_ms: float = 0.0
    # Seconds the store's clock is off from this machine's: the Date it sends and the time signatures are judged by.
    clock_offset: float = 0.0
    clock_skew_limit: float = 900.0
    processing_delay: float = 0.05

    def __post_init__(self) -> None:
        if self.max_part_size < 1:
            raise ValueError("max_part_size must be positive")
        if self.connection_mbps is not None and self.connection_mbps <= 0:
            raise ValueError("connection_mbps must be positive")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must not be negative")
        for kind, rate in (self.quotas or {}).items():
            if kind not in SERVICE_QUOTAS:
                raise ValueError(f"unknown quota kind {kind!r} (expected control, parts or listings)")
            if rate <= 0:
                raise ValueError(f"quota for {kind} must be positive")

    @staticmethod
    def service_quotas() -> dict[str, float]:
        """The service's default request rates per kind of request."""
        return dict(SERVICE_QUOTAS)
