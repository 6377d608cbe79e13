"""async_uploader: fast, resumable asyncio uploads of read sets into AWS HealthOmics sequence stores.

The layers, each importing only those below it: ``cli`` → ``fleet`` → ``engine`` → ``edge`` → ``core``; the
local store (``emulator``) imports nothing of them.

async with Uploader(UploadConfig(), service=ServiceConfig(region="us-east-1")) as up:
    result = await up.upload(ReadSet(Path("r1.fq.gz"), FileType.FASTQ, "subject", "sample", "name",
                                     source2=Path("r2.fq.gz")), store_id="1234567890")
"""

from __future__ import annotations

import importlib
import typing

from .core.config import (
    DEFAULT_PART_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    FileType,
    RateLimits,
    ReadSet,
    RetryConfig,
    ServiceConfig,
    Source,
    UploadConfig,
    parse_size,
)
from .core.errors import (
    AccessDeniedError,
    CertificateError,
    CheckpointError,
    CheckpointMismatchError,
    ClockSkewError,
    ConfigError,
    CredentialsError,
    InternalServerError,
    NotSupportedOperationError,
    PlanError,
    ProxyRefusedError,
    ReadSetGoneError,
    RequestTimeoutError,
    ResourceNotFoundError,
    RetryExhaustedError,
    ServiceError,
    ServiceQuotaExceededError,
    SourceError,
    ThrottlingError,
    TransportError,
    UnavailableError,
    UploaderError,
    UploadFailedError,
    UploadInterruptedError,
    UsageError,
    ValidationError,
)
from .core.ratelimit import Limiter, RequestKind
from .core.stats import UploadResult, UploadStatistics
from .core.version import VERSION as __version__

if typing.TYPE_CHECKING:
    from .engine.limiter import LocalLimiter
    from .engine.uploader import Uploader, UploadHandle, upload_read_set

# The engine (botocore, anyio, the transfer code) is imported on first use of one of its names, so a command
# that needs none of it (``--version``, ``--help``, ``serve``) does not pay for it.
_LAZY = {
    "LocalLimiter": ".engine.limiter",
    "Uploader": ".engine.uploader",
    "UploadHandle": ".engine.uploader",
    "upload_read_set": ".engine.uploader",
}


def __getattr__(name: str) -> typing.Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_PART_SIZE",
    "MAX_PARTS",
    "MAX_PART_SIZE",
    "AccessDeniedError",
    "CertificateError",
    "CheckpointError",
    "CheckpointMismatchError",
    "ClockSkewError",
    "ConfigError",
    "CredentialsError",
    "FileType",
    "InternalServerError",
    "Limiter",
    "LocalLimiter",
    "NotSupportedOperationError",
    "PlanError",
    "ProxyRefusedError",
    "RateLimits",
    "ReadSet",
    "ReadSetGoneError",
    "RequestKind",
    "RequestTimeoutError",
    "ResourceNotFoundError",
    "RetryConfig",
    "RetryExhaustedError",
    "ServiceConfig",
    "ServiceError",
    "ServiceQuotaExceededError",
    "Source",
    "SourceError",
    "ThrottlingError",
    "TransportError",
    "UnavailableError",
    "UploadConfig",
    "UploadFailedError",
    "UploadHandle",
    "UploadInterruptedError",
    "UploadResult",
    "UploadStatistics",
    "Uploader",
    "UploaderError",
    "UsageError",
    "ValidationError",
    "__version__",
    "parse_size",
    "upload_read_set",
]
