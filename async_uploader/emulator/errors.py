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
    "ConflictException": 409,
    "RangeNotSatisfiableException": 416,
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


# The code answered for a status that aiohttp's HTTP parser or body limits chose (a request that reached no route).
CODE_OF_STATUS = {
    400: "ValidationException",
    404: "UnknownOperationException",
    405: "NotSupportedOperationException",
    408: "RequestTimeoutException",
    411: "ValidationException",
    413: "ValidationException",
    414: "ValidationException",
    431: "ValidationException",
}


def for_status(status: int, message: str) -> ApiError:
    """An error for an HTTP status decided below the routes; never a 5xx unless one was asked for."""
    code = CODE_OF_STATUS.get(status)
    if code is None:
        code, status = ("InternalServerException", 500) if status >= 500 else ("ValidationException", 400)
    return ApiError(code, message, status)


def validation(message: str) -> ApiError:
    return ApiError("ValidationException", message)


def not_found(message: str) -> ApiError:
    return ApiError("ResourceNotFoundException", message)


def denied(message: str) -> ApiError:
    return ApiError("AccessDeniedException", message)


def too_large(message: str) -> ApiError:
    return ApiError("ValidationException", message, 413)
