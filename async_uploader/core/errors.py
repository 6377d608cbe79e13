"""Every exception async_uploader raises, in one tree.

Single inheritance throughout; the CLI maps a class to an exit code by walking this tree.

    UploaderError                      base of everything raised on purpose
    ├── UsageError                     the caller asked for something impossible (exit 2)
    │   ├── ConfigError                a setting or read-set field is invalid (an endpoint URL of the wrong scheme)
    │   ├── SourceError                a source is missing, empty, a directory, unreadable or changed while read
    │   ├── PlanError                  a source needs more than 10,000 parts of at most 100 MiB
    │   ├── CredentialsError           no AWS credentials could be found or refreshed
    │   ├── CheckpointMismatchError    a checkpoint belongs to other sources, or its sources changed since
    │   └── CheckpointBusyError        another process is uploading with the same checkpoint now
    ├── CheckpointError                a checkpoint file cannot be read or written
    ├── TransportError                 no HTTP answer: connection refused or reset, timeout, a lost proxy (retryable)
    │   ├── CertificateError           the server's TLS certificate is not trusted (not retried)
    │   └── ProxyRefusedError          the proxy refused the request: 407 or 403 (not retried)
    ├── AnswerTooLargeError            an answer larger than its operation's cap: a broken middlebox (not retried)
    ├── ServiceError                   the service answered with an error (code, status, message)
    │   ├── ValidationError            400 ValidationException
    │   ├── ServiceQuotaExceededError  402 ServiceQuotaExceededException
    │   ├── AccessDeniedError          403 AccessDeniedException
    │   │   └── ClockSkewError         403 because this machine's clock is off (retried once, corrected)
    │   ├── ResourceNotFoundError      404 ResourceNotFoundException
    │   │   └── ReadSetGoneError       404 for a read set this upload made: deleted since, or the store made anew
    │   ├── NotSupportedOperationError 405 NotSupportedOperationException
    │   ├── RequestTimeoutError        408 RequestTimeoutException (retryable)
    │   ├── ThrottlingError            429 ThrottlingException (retryable, slows the rate)
    │   ├── InternalServerError        500 InternalServerException (retryable)
    │   └── UnavailableError           502, 503, 504 or another unexpected status from the network path (retryable)
    ├── RetryExhaustedError            a retryable failure persisted past the attempt limit (cause chained)
    ├── UploadFailedError              the store completed the upload but marked the read set UPLOAD_FAILED
    ├── StillProcessingError           the read set is not ACTIVE within the wait timeout (retryable: run again)
    ├── AlreadyInStoreError            --if-exists fail, and the store holds a read set of these files already
    ├── VerificationError              the read set's ETag or counts differ from the user's bytes (read set kept)
    └── UploadInterruptedError         stopped by a signal or cancellation; the checkpoint can resume it
"""

from __future__ import annotations

__all__ = [
    "AccessDeniedError",
    "AlreadyInStoreError",
    "AnswerTooLargeError",
    "CertificateError",
    "CheckpointBusyError",
    "CheckpointError",
    "CheckpointMismatchError",
    "ClockSkewError",
    "ConfigError",
    "CredentialsError",
    "InternalServerError",
    "NotSupportedOperationError",
    "PlanError",
    "ProxyRefusedError",
    "ReadSetGoneError",
    "RequestTimeoutError",
    "ResourceNotFoundError",
    "RetryExhaustedError",
    "ServiceError",
    "ServiceQuotaExceededError",
    "SourceError",
    "StillProcessingError",
    "ThrottlingError",
    "TransportError",
    "UnavailableError",
    "UploadFailedError",
    "UploadInterruptedError",
    "UploaderError",
    "UsageError",
    "ValidationError",
    "VerificationError",
    "error_for_code",
]


class UploaderError(Exception):
    """Base class of every error async_uploader raises on purpose."""

    retryable: bool = False


class UsageError(UploaderError):
    """The caller asked for something that cannot work; fixing the input is the way out."""


class ConfigError(UsageError):
    """A setting or a read-set metadata field is invalid."""


class SourceError(UsageError):
    """A source is missing, empty, a directory, unreadable, or changed while it was read."""


class PlanError(UsageError):
    """A source cannot be split into at most 10,000 parts of at most 100 MiB."""


class CredentialsError(UsageError):
    """No AWS credentials were found, or they could not be refreshed."""


class CheckpointMismatchError(UsageError):
    """A checkpoint does not match the read set given, or a source changed since it was written."""


class CheckpointBusyError(UsageError):
    """Another process holds the checkpoint's lock: it is uploading the same read set now."""


class CheckpointError(UploaderError):
    """A checkpoint file cannot be read or written."""


class TransportError(UploaderError):
    """No HTTP answer arrived: connection refused or reset, timeout, TLS failure."""

    retryable = True


class CertificateError(TransportError):
    """The server's TLS certificate could not be verified; retrying cannot help, a CA bundle can."""

    retryable = False


class ProxyRefusedError(TransportError):
    """The proxy answered 407 (authentication) or 403 (policy): a setting to fix, not retried."""

    retryable = False


class AnswerTooLargeError(UploaderError):
    """An answer held (or announced) more bytes than its operation's cap (``core.protocol.OPERATIONS``).

    The service's answers are small JSON documents, a listing's page or one part: a body past the cap, or one that
    never ends, is a proxy or middlebox in the way gone wrong. Not retried: the same path would answer the same,
    each try costing the cap's bytes; the run ends at once with one line naming the endpoint and the size (exit 1).
    """


class ServiceError(UploaderError):
    """The service answered with an error. ``code`` is the x-amzn-ErrorType, ``status`` the HTTP status."""

    code: str = "ServiceError"

    def __init__(self, message: str, *, status: int = 0, code: str | None = None, operation: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.operation = operation
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        where = f"{self.operation}: " if self.operation else ""
        return f"{where}{self.code} ({self.status}): {self.message}"


class ValidationError(ServiceError):
    """400 ValidationException: the request broke one of the service's rules."""

    code = "ValidationException"


class ServiceQuotaExceededError(ServiceError):
    """402 ServiceQuotaExceededException: an account quota is used up."""

    code = "ServiceQuotaExceededException"


class AccessDeniedError(ServiceError):
    """403 AccessDeniedException: wrong credentials, a bad signature, or no permission."""

    code = "AccessDeniedException"


class ClockSkewError(AccessDeniedError):
    """The service refused a signature as expired and its Date says this machine's clock is off.

    ``offset`` is the service's clock minus this machine's, in seconds. Retryable when the signing clock has
    just been corrected by that offset; not once a corrected signature was refused too.
    """

    def __init__(self, message: str, *, offset: float, retryable: bool, status: int = 403, operation: str = "") -> None:
        super().__init__(message, status=status, code="ClockSkew", operation=operation)
        self.offset = offset
        self.retryable = retryable


class ResourceNotFoundError(ServiceError):
    """404 ResourceNotFoundException: unknown store, or the upload was aborted or expired."""

    code = "ResourceNotFoundException"


class ReadSetGoneError(ResourceNotFoundError):
    """404 for the read set a checkpoint (or this upload's Complete) made: it was deleted, or the store made anew.
    The store id is right: the message says how to upload the files again (``--restart``)."""

    def __str__(self) -> str:
        return self.message


class NotSupportedOperationError(ServiceError):
    """405 NotSupportedOperationException."""

    code = "NotSupportedOperationException"


class RequestTimeoutError(ServiceError):
    """408 RequestTimeoutException: the service gave up waiting; retried."""

    code = "RequestTimeoutException"
    retryable = True


class ThrottlingError(ServiceError):
    """429 ThrottlingException: too many requests; retried after a backoff and the rate is lowered."""

    code = "ThrottlingException"
    retryable = True


class InternalServerError(ServiceError):
    """500 InternalServerException: retried."""

    code = "InternalServerException"
    retryable = True


class UnavailableError(ServiceError):
    """502, 503, 504 or another unexpected status from the network path: retried."""

    code = "ServiceUnavailable"
    retryable = True


class RetryExhaustedError(UploaderError):
    """A retryable failure persisted through every allowed attempt; ``__cause__`` is the last one."""


class UploadFailedError(UploaderError):
    """The store accepted Complete but marked the read set UPLOAD_FAILED."""


class AlreadyInStoreError(UploaderError):
    """The store already holds a read set of these files (same name, subject, sample, type and sizes, and the same
    ETag where one can be computed), and the caller asked for that to be a failure (``if_exists="fail"``)."""

    def __init__(self, message: str, *, read_set_id: str) -> None:
        super().__init__(message)
        self.read_set_id = read_set_id


class StillProcessingError(UploaderError):
    """The read set is still being processed by the store when the wait for it ends. Nothing is lost: the same
    command run again goes on waiting (nothing is sent again), so it counts as transient."""

    retryable = True

    def __init__(self, message: str, *, read_set_id: str) -> None:
        super().__init__(message)
        self.read_set_id = read_set_id


class VerificationError(UploaderError):
    """The service's ETag or read counts differ from those of the user's bytes. The read set is kept, for the
    record: ``read_set_id`` names it."""

    def __init__(self, message: str, *, read_set_id: str) -> None:
        super().__init__(message)
        self.read_set_id = read_set_id


class UploadInterruptedError(UploaderError):
    """The upload was stopped by a signal or cancellation and is left open so a checkpoint can resume it."""

    def __init__(self, message: str, *, upload_id: str | None = None, checkpoint: str | None = None) -> None:
        super().__init__(message)
        self.upload_id = upload_id
        self.checkpoint = checkpoint


_BY_CODE: dict[str, type[ServiceError]] = {
    cls.code: cls
    for cls in (
        ValidationError,
        ServiceQuotaExceededError,
        AccessDeniedError,
        ResourceNotFoundError,
        NotSupportedOperationError,
        RequestTimeoutError,
        ThrottlingError,
        InternalServerError,
    )
}

_BY_STATUS: dict[int, type[ServiceError]] = {
    400: ValidationError,
    402: ServiceQuotaExceededError,
    403: AccessDeniedError,
    404: ResourceNotFoundError,
    405: NotSupportedOperationError,
    408: RequestTimeoutError,
    429: ThrottlingError,
    500: InternalServerError,
}


def error_for_code(code: str | None, status: int) -> type[ServiceError]:
    """The exception class for an error reply: by its x-amzn-ErrorType first, then by its status."""
    if code:
        found = _BY_CODE.get(code.split(":", 1)[0])
        if found is not None:
            return found
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500 or status == 0:
        return UnavailableError
    return ServiceError
