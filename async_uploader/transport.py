"""HTTP transport: the one place aiohttp is used on the client side, and where its errors become ours.

``AiohttpTransport`` keeps one ``ClientSession`` with a bounded keep-alive pool. A part body (a
``BodySource``) is sent as a custom payload with an explicit Content-Length (never chunked): its slices are
written to the connection as they are read, each followed by a drain, so at most about one slice per
request is buffered. Every aiohttp, timeout or OS error becomes ``TransportError`` (``raise ... from exc``),
naming the host and what happened; ``asyncio.CancelledError`` always propagates.

``MockTransport`` is the test seam: it hands each request, body collected, to a handler function.
"""

from __future__ import annotations

import asyncio
import inspect
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import aiohttp
import aiohttp.abc
import aiohttp.connector
import aiohttp.payload
from yarl import URL

from .errors import TransportError, UploaderError

__all__ = [
    "AiohttpTransport",
    "BodySource",
    "MockTransport",
    "Response",
    "SentRequest",
    "Transport",
    "collect_body",
]


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


class Transport(Protocol):
    async def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | BodySource,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Response: ...

    async def aclose(self) -> None: ...


async def _iterate(body: BodySource) -> AsyncIterator[bytes | bytearray | memoryview]:
    slices: Any = body.slices()
    if inspect.isawaitable(slices):  # a coroutine returning an iterator is accepted too
        slices = await slices
    async for piece in slices:
        yield piece


async def collect_body(body: bytes | bytearray | memoryview | BodySource) -> bytes:
    """The whole body as bytes (for tests and the mock transport)."""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    chunks = [bytes(piece) async for piece in _iterate(body)]
    return b"".join(chunks)


_LARGE_BODY = 512 * 1024


class _ShortBodyError(Exception):
    """The body source produced a different number of bytes than it announced."""


class _SourcePayload(aiohttp.payload.Payload):
    """A BodySource as an aiohttp payload of known size, so aiohttp sends Content-Length, never chunked."""

    def __init__(self, body: BodySource) -> None:
        super().__init__(body, content_type="application/octet-stream")
        self._body = body
        self._size = body.length

    async def write(self, writer: aiohttp.abc.AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: aiohttp.abc.AbstractStreamWriter, content_length: int | None) -> None:
        limit = self._body.length if content_length is None else min(content_length, self._body.length)
        sent = 0
        async for piece in _iterate(self._body):
            size = piece.nbytes if isinstance(piece, memoryview) else len(piece)
            if sent + size > limit:
                raise _ShortBodyError(f"the body produced more than the {limit} bytes announced")
            if size:
                await writer.write(piece)
                await writer.drain()
                sent += size
        if sent != limit:
            raise _ShortBodyError(f"the body produced {sent} bytes, not the {limit} announced")

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a streamed part body cannot be decoded")

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return await collect_body(self._body)


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 8:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _own_cause(exc: BaseException) -> UploaderError | None:
    return next((cause for cause in _causes(exc) if isinstance(cause, UploaderError)), None)


def _describe(exc: BaseException) -> str:
    short = next((cause for cause in _causes(exc) if isinstance(cause, _ShortBodyError)), None)
    if short is not None:
        return f"body not sent: {short}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or type(exc.os_error).__name__
        return f"cannot connect ({reason})"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the response body was cut short"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _where(url: URL) -> str:
    return f"{url.host}:{url.port}" if url.port is not None else str(url.host)


class AiohttpTransport:
    """One aiohttp session with at most ``limit`` connections, kept alive between requests.

    The session is created on first use, inside the running event loop. ``timeout`` passed to ``send`` bounds
    the whole request; otherwise only the connect and per-read timeouts apply.
    """

    def __init__(
        self,
        limit: int = 100,
        connect_timeout: float = 20.0,
        read_timeout: float = 120.0,
        verify_tls: bool = True,
        *,
        keepalive_timeout: float = 30.0,
    ) -> None:
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.verify_tls = verify_tls
        self.keepalive_timeout = keepalive_timeout
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the transport is closed")
        if self._session is None:
            extra: dict[str, Any] = {}
            if getattr(aiohttp.connector, "NEEDS_CLEANUP_CLOSED", False):
                extra["enable_cleanup_closed"] = True  # only where Python still leaks aborted TLS transports
            connector = aiohttp.TCPConnector(
                limit=self.limit,
                ttl_dns_cache=300,
                keepalive_timeout=self.keepalive_timeout,
                ssl=self.verify_tls,
                **extra,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.connect_timeout, sock_read=self.read_timeout
                ),
                headers={"User-Agent": "async-uploader"},
            )
        return self._session

    async def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | BodySource,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Response:
        session = self._open()
        target = URL(url, encoded=True)  # already percent-encoded exactly as signed
        data: Any
        if isinstance(body, bytes | bytearray | memoryview):
            # aiohttp warns that a large bytes body may stall the loop; a file-like payload is written in pieces.
            data = (io.BytesIO(body) if len(body) > _LARGE_BODY else bytes(body)) if body else None
        else:
            data = _SourcePayload(body)
        options: dict[str, Any] = {}
        if timeout is not None:  # otherwise the session's connect and per-read timeouts apply
            options["timeout"] = aiohttp.ClientTimeout(
                total=timeout, sock_connect=self.connect_timeout, sock_read=self.read_timeout
            )
        try:
            async with session.request(
                method,
                target,
                headers=dict(headers),
                data=data,
                allow_redirects=False,
                **options,
            ) as response:
                content = await response.read()
                return Response(response.status, dict(response.headers), content)
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError, _ShortBodyError) as exc:
            own = _own_cause(exc)
            if own is not None:  # e.g. a SourceError raised while the body was read
                raise own from None
            raise TransportError(f"{method} {_where(target)}: {_describe(exc)}") from exc

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> AiohttpTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


@dataclass(frozen=True)
class SentRequest:
    """A request as the mock transport saw it, body collected into bytes."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    timeout: float | None = None

    @property
    def url_parts(self) -> URL:
        return URL(self.url, encoded=True)

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


Handler = Callable[[SentRequest], "Response | Awaitable[Response]"]


@dataclass
class MockTransport:
    """Answers every request with ``handler(request)`` (plain or async) and keeps them all in ``requests``.

    A handler may raise (e.g. ``TransportError``) to simulate a network failure.
    """

    handler: Handler
    requests: list[SentRequest] = field(default_factory=list)
    closed: bool = False

    async def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | BodySource,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Response:
        sent = SentRequest(method, url, dict(headers), await collect_body(body), timeout)
        self.requests.append(sent)
        answer = self.handler(sent)
        if inspect.isawaitable(answer):
            answer = await answer
        return answer

    async def aclose(self) -> None:
        self.closed = True
