"""What every transport speaks: the request body protocols, the answer, and the words its errors share.

The failures both transports (aiohttp's and ``edge.pool``'s sockets) can meet alike are worded here, once:
an untrusted certificate, a proxy's refusal, a proxy that cannot be reached, any other failure of an attempt.

A ``BodySource`` is a part body of known ``length`` offered as fresh slices (``slices()``), which a transport
may keep until it has written them. A ``ScratchBody`` can also fill a caller's reusable buffer (``views()``): the
sockets of ``edge.pool`` send each view before asking for the next, so one page-aligned buffer per request
carries the whole part. A ``ThreadBody`` can also be read by the sender thread that writes it (``piece()``).
``BytesBody`` gives a request's ``bytes`` body (the control requests') the ``ScratchBody`` interface, so those go
over the same sockets as the parts.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from yarl import URL

from ..core.errors import AnswerTooLargeError, CertificateError, ConfigError, ProxyRefusedError, TransportError
from ..core.protocol import answer_limit
from ..core.proxy import Proxy

__all__ = [
    "CA_HINT",
    "OPERATION",
    "BodySource",
    "BytesBody",
    "ProgressCall",
    "Response",
    "ScratchBody",
    "ThreadBody",
    "Transport",
    "answer_too_large",
    "cap_for",
    "certificate_error",
    "collect_body",
    "failure",
    "iterate",
    "proxy_answer_error",
    "proxy_unreachable",
    "unnamed",
    "where",
    "wrong_scheme",
]

CA_HINT = (
    "if a proxy or firewall inspects TLS, or the endpoint has a private CA, set AWS_CA_BUNDLE, a profile's "
    "ca_bundle or --ca-bundle to its CA certificate (PEM)"
)
"""What to set when a certificate cannot be verified."""

OPERATION: contextvars.ContextVar[str] = contextvars.ContextVar("async_uploader_operation", default="")
"""The operation of the request being sent (set by the client around each send): it sets the most the answer may
hold (``core.protocol.answer_limit``). It follows a send into a worker's loop, as every context variable does
through ``call_soon_threadsafe``; unset, an answer may hold ``core.protocol.DEFAULT_ANSWER_LIMIT``."""

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


@runtime_checkable
class ThreadBody(ScratchBody, Protocol):
    """A ``ScratchBody`` a sender thread can read itself, one attempt at a time, when ``threaded``.

    On the event loop: ``start(call)`` begins an attempt (rewinding an earlier one), ``advance(n, call)`` reports
    progress, ``finish()`` ends a complete attempt (the digest). In the one thread writing the attempt:
    ``piece(position, scratch)`` gives the bytes from ``position`` on (in ``scratch`` or memory the body owns), in
    order, each valid until the next is asked for.
    """

    @property
    def threaded(self) -> bool: ...

    def start(self, call: ProgressCall | None = None) -> None: ...

    def piece(self, position: int, scratch: memoryview) -> memoryview: ...

    def advance(self, nbytes: int, call: ProgressCall | None = None) -> None: ...

    def finish(self) -> None: ...


class BytesBody:
    """A ``bytes`` body as a ``ScratchBody``: its views are of the bytes themselves (no copy into the scratch)."""

    SLICE = 1024 * 1024
    """The most bytes one view holds, so a large body is written in pieces as a part's is."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.data = bytes(data)
        self.length = len(self.data)

    async def slices(self) -> AsyncIterator[bytes | bytearray | memoryview]:
        view = memoryview(self.data)
        for start in range(0, self.length, self.SLICE):
            yield view[start : start + self.SLICE]

    async def views(self, scratch: memoryview, call: ProgressCall | None = None) -> AsyncGenerator[memoryview, None]:
        async for piece in self.slices():
            yield memoryview(piece)


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


def certificate_error(method: str, url: URL, reason: str) -> CertificateError:
    """The server's certificate could not be verified (``reason``, OpenSSL's words): what to set, not retried."""
    return CertificateError(f"{method} {where(url)}: the TLS certificate cannot be verified ({reason}); {CA_HINT}")


def proxy_answer_error(method: str, url: URL, proxy: Proxy, status: int, reason: str) -> TransportError:
    """The proxy answered ``status`` instead of passing the request on: 407 and 403 are a setting to fix
    (``ProxyRefusedError``, not retried); anything else may pass (``TransportError``)."""
    text = f"the proxy {proxy.shown} answered {status} {reason}".rstrip()
    if status in (403, 407):
        hint = "check the user and password in HTTPS_PROXY/HTTP_PROXY" if status == 407 else "ask its admin"
        return ProxyRefusedError(f"{method} {where(url)}: {text}; {hint}")
    return TransportError(f"{method} {where(url)}: {text}")


def proxy_unreachable(method: str, url: URL, proxy: Proxy, reason: str) -> TransportError:
    """No connection to the proxy itself (it is named, its password redacted)."""
    return TransportError(f"{method} {where(url)}: cannot reach the proxy {proxy.shown}: {reason}")


def failure(method: str, url: URL, proxy: Proxy | None, reason: str) -> TransportError:
    """Any other failure of an attempt: the host (and the proxy it went through) and what happened."""
    shown = f"{where(url)} through the proxy {proxy.shown}" if proxy is not None else where(url)
    return TransportError(f"{method} {shown}: {reason}")


def cap_for(status: int) -> int:
    """The most bytes the answer with ``status`` to the request being sent may hold."""
    return answer_limit(OPERATION.get(), status)


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.4g} {unit}"
    return f"{count} bytes"


def answer_too_large(
    method: str, url: URL, proxy: Proxy | None, cap: int, announced: int | None
) -> AnswerTooLargeError:
    """An answer announced, or sent, more than ``cap`` bytes: a broken proxy or middlebox, not retried."""
    operation = OPERATION.get()
    what = f"the answer to {operation}" if operation else "the answer"
    if announced is not None:
        size = f"announces {announced} bytes, more than the {_size(cap)} it may hold"
    else:
        size = f"went on past {_size(cap)}, the most it may hold"
    shown = f"{where(url)} through the proxy {proxy.shown}" if proxy is not None else where(url)
    return AnswerTooLargeError(f"{method} {shown}: {what} {size}; is a proxy or middlebox in the way broken?")


def wrong_scheme(method: str, url: URL) -> ConfigError:
    """The server does not speak the scheme of ``url`` (``edge.schemes`` found out): the URL to fix, not retried."""
    if url.scheme == "https":
        text = "the endpoint answered in plain HTTP, not TLS: use http:// in --endpoint-url (or AWS_ENDPOINT_URL)"
    else:
        text = "the endpoint speaks TLS, not plain HTTP: use https:// in --endpoint-url (or AWS_ENDPOINT_URL)"
    return ConfigError(f"{method} {where(url)}: {text}")
