"""The public API: ``async_uploader.__all__`` is pinned, sorted, and every name in it resolves."""

from __future__ import annotations

import async_uploader

PUBLIC = [
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


def test_the_public_names_are_pinned() -> None:
    assert async_uploader.__all__ == PUBLIC


def test_every_public_name_resolves() -> None:
    for name in async_uploader.__all__:
        assert getattr(async_uploader, name) is not None, name


def test_nothing_public_is_left_out() -> None:
    exported = set(async_uploader.__all__)
    public = {name for name in vars(async_uploader) if not name.startswith("_") and name[0].isupper()}
    assert public <= exported, public - exported
