"""Parsing of request values: path ids, query numbers, page tokens and JSON bodies, strictly.

Every function here either returns a value of the expected type or raises an :class:`ApiError` (400): no
input, however hostile, may escape as another exception (a 500). Numbers are ASCII digits only, since
``"²".isdigit()`` is true while ``int("²")`` raises.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from .errors import ApiError, validation

ID_RE = re.compile(r"[0-9]{10,36}")
SOURCES = ("SOURCE1", "SOURCE2")
MAX_PART_NUMBER = 10_000
MAX_PAGE = 100


def ascii_int(value: str, what: str, digits: int) -> int:
    """``value`` as a non-negative integer of at most ``digits`` ASCII digits."""
    if not (value.isascii() and value.isdigit()) or len(value) > digits:
        raise validation(f"{what} must be an integer, got {value[:40]!r}")
    return int(value)


def check_id(value: str, what: str) -> str:
    if not ID_RE.fullmatch(value):
        raise validation(f"{what} {value[:40]!r} must be 10 to 36 digits")
    return value


def check_source(value: object, what: str = "partSource", choices: tuple[str, ...] = SOURCES) -> str:
    if not isinstance(value, str) or value not in choices:
        shown = value[:40] if isinstance(value, str) else type(value).__name__
        raise validation(f"{what} must be one of {', '.join(choices)}, got {shown!r}")
    return value


def check_part_number(value: object) -> int:
    """A partNumber from a query string (text) or a JSON body (an integer), within 1..10,000."""
    if isinstance(value, str):
        value = ascii_int(value, "partNumber", 6)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_PART_NUMBER:
        shown = value if isinstance(value, int) else type(value).__name__
        raise validation(f"partNumber must be between 1 and {MAX_PART_NUMBER}, got {shown!r}")
    return value


def page_size(max_results: str | None) -> int:
    if max_results is None:
        return MAX_PAGE
    size = ascii_int(max_results, "maxResults", 4)
    if not 1 <= size <= MAX_PAGE:
        raise validation(f"maxResults must be between 1 and {MAX_PAGE}, got {size}")
    return size


def encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def decode_token(token: str) -> int:
    """The offset an opaque nextToken stands for; anything not made by :func:`encode_token` is refused."""
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, binascii.Error, RecursionError):
        raise validation("invalid nextToken") from None
    offset = decoded.get("offset") if isinstance(decoded, dict) else None
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= 10**9:
        raise validation("invalid nextToken")
    return offset


def page(items: list[Any], max_results: str | None, next_token: str | None) -> tuple[list[Any], str | None]:
    """Slice ``items`` for one page; tokens are opaque offsets."""
    size = page_size(max_results)
    start = 0 if next_token is None else decode_token(next_token)
    chunk = items[start : start + size]
    end = start + len(chunk)
    return chunk, encode_token(end) if end < len(items) else None


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object (an empty body is an empty object)."""
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError("SerializationException", "request body is not valid JSON", 400) from None
    if not isinstance(body, dict):
        raise ApiError("SerializationException", "request body must be a JSON object", 400)
    return body
