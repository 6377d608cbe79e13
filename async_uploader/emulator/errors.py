"""The store's error replies: rest-json status, ``x-amzn-ErrorType`` code and ``{"message"}`` body."""

from __future__ import annotations

STATUS = {
    "ValidationException": 400,
    "ServiceQuotaExceededException": 402,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "UnknownOperationException": 404,
    "NotSupportedOperationException": 405,
    "RequestTimeoutException": 408,
    "ThrottlingException": 429,
    "InternalServerException": 500,
    "ServiceUnavailableException": 503,
}


class ApiError(Exception):
    """An error answered to the client; ``code`` picks the status unless ``status`` is given."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status if status is not None else STATUS.get(code, 400)


def validation(message: str) -> ApiError:
    return ApiError("ValidationException", message)


def not_found(message: str) -> ApiError:
    return ApiError("ResourceNotFoundException", message)


def denied(message: str) -> ApiError:
    return ApiError("AccessDeniedException", message)
