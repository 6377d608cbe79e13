"""Clock skew: is a refused signature this machine's clock, and by how much? Pure, no I/O.

An error answer means clock skew when its code is one the AWS SDKs treat as such (or its message says the
signature expired, as a 403 AccessDeniedException does) and the service's ``Date`` header is at least
``SKEW_THRESHOLD`` away from the local clock: the rule of the Java, JavaScript and Go SDKs.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping

__all__ = ["SKEW_CODES", "SKEW_THRESHOLD", "describe_skew", "server_offset", "skew_offset"]

SKEW_CODES = frozenset(
    {
        "RequestTimeTooSkewed",
        "RequestExpired",
        "RequestInTheFuture",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "AuthFailure",
    }
)
"""Error codes that may mean a skewed clock (the list the AWS SDKs for Java and JavaScript use)."""
SKEW_THRESHOLD = 240.0
"""Seconds of difference from which the clock, not the credentials, is blamed (the SDKs use 4 minutes)."""
_PHRASES = ("signature expired", "too skewed", "request has expired", "in the future")


def server_offset(headers: Mapping[str, str], local_now: float) -> float | None:
    """The service's clock minus ``local_now`` (Unix seconds), from the answer's Date header; None without one."""
    value = next((v for k, v in headers.items() if k.lower() == "date"), None)
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    stamp = parsed.timestamp()
    return stamp - local_now if math.isfinite(stamp) else None


def skew_offset(code: str | None, message: str, headers: Mapping[str, str], local_now: float) -> float | None:
    """The clock offset when this error answer is a skewed clock's doing, else None."""
    lowered = message.lower()
    if (code or "").split(":", 1)[0] not in SKEW_CODES and not any(phrase in lowered for phrase in _PHRASES):
        return None
    offset = server_offset(headers, local_now)
    if offset is None or abs(offset) < SKEW_THRESHOLD:
        return None
    return offset


def describe_skew(offset: float) -> str:
    """``your clock is 20 minutes behind the service`` for an ``offset`` (service minus local) of +1200 s."""
    minutes = abs(offset) / 60.0
    amount = f"{minutes:.0f} minutes" if minutes >= 2 else f"{abs(offset):.0f} seconds"
    direction = "behind" if offset > 0 else "ahead of"
    return f"your clock is {amount} {direction} the service"
