"""What every transport speaks: the request body protocols, the answer, and the words its errors share.

A ``BodySource`` is a part body of known ``length`` offered as fresh slices (``slices()``), which a transport
may keep until it has written them. A ``ScratchBody`` can also fill a caller's reusable buffer (``views()``): the
sockets of ``edge.http11`` send each view before asking for the next, so one page-aligned buffer per request
carries the whole part.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from yarl import URL

__all__ = [
    "CA_HINT",
    "BodySource",
    "ProgressCall",
    "Response",
    "ScratchBody",
    "Transport",
    "collect_body",
    "iterate",
    "unnamed",
    "where",
]

CA_HINT = (
    "if a proxy or firewall inspects TLS, or the endpoint has a private CA, set AWS_CA_BUNDLE, a profile's "
    "ca_bundle or --ca-bundle to its CA certificate (PEM)"
)
"""What to set when a certificate cannot be verified."""

ProgressCall = Callable[[Callable[[int], None], int], object]
"""How a body's progress callback is run: called directly, or handed to the loop that owns it
(``loop.call_soon_threadsafe``) when the body is sent from another thread."""


@dataclass(frozen=True)
class Response:
    """An HTTP answer, whatever its status. Header names are compared case-insensitively by the parsers."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@runtime_checkable
class BodySource(Protocol):
    """A request body of known ``length`` offered as slices; ``slices()`` starts afresh for each attempt."""

    length: int

    def slices(self) -> AsyncIterator[bytes | bytearray | memoryview]: ...


@runtime_checkable
class ScratchBody(BodySource, Protocol):
    """A body that can also be read into a reusable buffer, for a sender that writes each piece out at once.

    ``views(scratch, call)`` starts afresh for each attempt and yields views either of ``scratch`` or of memory the
    body owns; each is valid only until the next is asked for. Progress callbacks are run through ``call``.
    """

    def views(self, scratch: memoryview, call: ProgressCall | None = None) -> AsyncGenerator[memoryview, None]: ...


class Transport(Protocol):
    async def send(self, method: str, url: str, headers: Mapping[str, str], body: bytes | BodySource) -> Response: ...

    async def aclose(self) -> None: ...


async def iterate(body: BodySource) -> AsyncIterator[bytes | bytearray | memoryview]:
    """The slices of ``body`` (a ``slices`` coroutine returning an iterator is accepted too)."""
    slices: Any = body.slices()
    if inspect.isawaitable(slices):
        slices = await slices
    async for piece in slices:
        yield piece


async def collect_body(body: bytes | bytearray | memoryview | BodySource) -> bytes:
    """The whole body as bytes (for tests and the mock transport)."""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    chunks = [bytes(piece) async for piece in iterate(body)]
    return b"".join(chunks)


def where(url: URL) -> str:
    """``host:port`` of a URL (or only the host when the URL has no port), as error messages name it."""
    return f"{url.host}:{url.port}" if url.port is not None else str(url.host)


def unnamed(exc: BaseException) -> str:
    """A failure no translation table names: its type and text."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
