"""An endpoint URL whose scheme the server does not speak: ``https://`` to a plain-HTTP server, ``http://`` to a
TLS one. Retrying cannot help, the URL must change: ``ConfigError`` (exit 2) with a hint naming the scheme
(``edge.messages.wrong_scheme``); ``edge.transport`` asks here when an attempt failed.

``https://`` to plain HTTP shows itself in OpenSSL's words: the server's first bytes (``HTTP/1.1 400``) are no TLS
record (``WRONG_VERSION_NUMBER``, or ``record layer failure`` in newer OpenSSL). ``http://`` to TLS shows less: a
TLS server closes the connection, or sends an alert, instead of answering. So a failure of that kind on an
``http://`` origin that has never answered is checked once, directly (not through a proxy): a TLS handshake with
the origin that completes (certificate not checked: only the protocol is in question), or that ends in a TLS
alert, proves it speaks TLS. Anything else keeps the failure as it was. Both paths of ``edge.transport`` are read
(the sockets of ``edge.pool``, and aiohttp's errors when that path has loaded it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
from collections.abc import Iterator

import h11
from yarl import URL

from .http11 import Closed

__all__ = ["answered_in_plain", "may_be_tls", "speaks_tls"]

_PLAIN_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL"}
)
"""OpenSSL's reasons when a TLS client reads bytes that are no TLS record."""

_NOT_HTTP: tuple[type[BaseException], ...] = (ConnectionResetError, Closed, h11.RemoteProtocolError)
"""How a plain client sees a TLS server: closed or reset before any answer, or bytes that are not HTTP."""


def _not_http() -> tuple[type[BaseException], ...]:
    """``_NOT_HTTP``, and aiohttp's words for the same when aiohttp is loaded (its errors exist only then: this
    module never loads it)."""
    if "aiohttp" not in sys.modules:
        return _NOT_HTTP
    import aiohttp  # noqa: PLC0415 (already loaded: the transport's aiohttp path has run)
    import aiohttp.http_exceptions  # noqa: PLC0415

    return (
        *_NOT_HTTP,
        aiohttp.ServerDisconnectedError,
        aiohttp.ClientResponseError,
        aiohttp.http_exceptions.HttpProcessingError,
    )


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 8:
        seen.append(current)
        yield current
        current = current.__cause__ or current.__context__


def answered_in_plain(exc: BaseException) -> bool:
    """Whether a TLS client's failure ``exc`` says the server answered with bytes that are no TLS record."""
    # aiohttp's ClientConnectorSSLError is an ssl.SSLError without a reason: its cause has one
    return any(
        getattr(cause, "reason", None) in _PLAIN_REASONS for cause in _causes(exc) if isinstance(cause, ssl.SSLError)
    )


def may_be_tls(exc: BaseException) -> bool:
    """Whether a plain client's failure ``exc`` is what a TLS server would cause (worth a look: ``speaks_tls``)."""
    not_http = _not_http()
    return any(isinstance(cause, not_http) for cause in _causes(exc))


async def speaks_tls(url: URL, within: float) -> bool:
    """Whether the origin of ``url`` completes a TLS handshake, or answers one with a TLS alert, within
    ``within`` seconds."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the protocol is in question here, not who the server is
    try:
        async with asyncio.timeout(within):
            _, writer = await asyncio.open_connection(url.host, url.port, ssl=context, server_hostname=url.host)
    except ssl.SSLError as exc:
        return exc.reason not in _PLAIN_REASONS and not isinstance(exc, ssl.SSLEOFError)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    return True
