"""The aiohttp path of ``edge.transport``: one ``ClientSession`` for what the sockets of ``edge.pool`` do not serve
(anything through an ``https://`` proxy, a body that is no ``ScratchBody``, or every request when the transport is
made with ``direct_from=None``).

Importing aiohttp costs about a tenth of a second of CPU (its connector builds TLS settings at import), so
``edge.transport`` imports this module only when a request first needs it: an upload to an endpoint it reaches
directly, or through an ``http://`` proxy, never loads aiohttp.

A body aiohttp sends (a ``BodySource``, or ``bytes`` past 512 KiB) is a custom payload with an explicit
Content-Length (never chunked): its slices are written to the connection as they are read, each followed by a
drain, so at most about one slice per request is buffered, and each must be accepted within the progress deadline
(``read_timeout``). An answer's body is read up to its cap (``edge.messages.cap_for``). Every aiohttp, timeout or
OS error becomes the transport's error in the words of ``edge.messages`` (``raise ... from exc``);
``asyncio.CancelledError`` always propagates.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import aiohttp.abc
import aiohttp.connector
import aiohttp.payload
import anyio
from yarl import URL

from ..core.errors import UploaderError
from ..core.proxy import Proxy
from .messages import (
    BodySource,
    BytesBody,
    Response,
    answer_too_large,
    cap_for,
    certificate_error,
    collect_body,
    failure,
    iterate,
    proxy_answer_error,
    proxy_unreachable,
    unnamed,
)

__all__ = ["Session"]

_LARGE_BODY = 512 * 1024


class _ShortBodyError(Exception):
    """The body source produced a different number of bytes than it announced."""


class _StalledError(Exception):
    """The connection accepted no slice of the body within the progress deadline."""


class _SourcePayload(aiohttp.payload.Payload):
    """A BodySource as an aiohttp payload of known size, so aiohttp sends Content-Length, never chunked.

    Each slice must be accepted by the connection within ``stall`` seconds (the progress deadline).
    """

    def __init__(self, body: BodySource, stall: float) -> None:
        super().__init__(body)
        self._body = body
        self._size = body.length
        self._stall = stall

    async def write(self, writer: aiohttp.abc.AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: aiohttp.abc.AbstractStreamWriter, content_length: int | None) -> None:
        limit = self._body.length if content_length is None else min(content_length, self._body.length)
        sent = 0
        async for piece in iterate(self._body):
            size = piece.nbytes if isinstance(piece, memoryview) else len(piece)
            if sent + size > limit:
                raise _ShortBodyError(f"the body produced more than the {limit} bytes announced")
            if size:
                try:
                    with anyio.fail_after(self._stall):
                        await writer.write(piece)
                        await writer.drain()
                except TimeoutError:
                    raise _StalledError(f"no bytes of the body were accepted for {self._stall:g} s") from None
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


@dataclass(frozen=True)
class _Timeouts:
    connect: float
    read: float


def _describe(exc: BaseException, timeouts: _Timeouts) -> str:
    short = next((cause for cause in _causes(exc) if isinstance(cause, _ShortBodyError | _StalledError)), None)
    if short is not None:
        return f"body not sent: {short}"
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return f"no bytes of the answer arrived for {timeouts.read:g} s"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return f"no connection within {timeouts.connect:g} s"
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
    return unnamed(exc)


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes | None:
    """The answer's body, or None when it announces more than ``cap`` bytes or goes on past them: only what has
    arrived is held (aiohttp stops reading the socket while its buffer is full)."""
    if response.content_length is not None and response.content_length > cap:
        return None
    body = bytearray()
    async for chunk in response.content.iter_any():
        if len(body) + len(chunk) > cap:
            return None
        body += chunk
    return bytes(body)


def _certificate_reason(exc: aiohttp.ClientConnectorCertificateError) -> str:
    cert_error = exc.certificate_error
    return getattr(cert_error, "verify_message", None) or getattr(cert_error, "reason", None) or str(cert_error)


def _translate(exc: BaseException, method: str, url: URL, proxy: Proxy | None, timeouts: _Timeouts) -> UploaderError:
    """The one translation of an aiohttp, timeout or OS failure into the transport's errors."""
    own = _own_cause(exc)
    if own is not None:  # e.g. a SourceError raised while the body was read
        return own
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return certificate_error(method, url, _certificate_reason(exc))
    if proxy is not None and isinstance(exc, aiohttp.ClientHttpProxyError):
        return proxy_answer_error(method, url, proxy, exc.status, exc.message)
    if proxy is not None and isinstance(exc, aiohttp.ClientProxyConnectionError):
        return proxy_unreachable(method, url, proxy, _describe(exc, timeouts))
    return failure(method, url, proxy, _describe(exc, timeouts))


class Session:
    """One aiohttp ``ClientSession`` with at most ``limit`` connections, made on first use (inside the running
    event loop); ``tls`` gives the transport's TLS settings for each request that speaks TLS."""

    def __init__(
        self,
        tls: Callable[[], ssl.SSLContext],
        *,
        limit: int,
        connect_timeout: float,
        read_timeout: float,
        keepalive_timeout: float,
    ) -> None:
        self.tls = tls
        self.limit = limit
        self.timeouts = _Timeouts(connect_timeout, read_timeout)
        self.keepalive_timeout = keepalive_timeout
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            extra: dict[str, Any] = {}
            if getattr(aiohttp.connector, "NEEDS_CLEANUP_CLOSED", False):
                extra["enable_cleanup_closed"] = True  # only where Python still leaks aborted TLS transports
            connector = aiohttp.TCPConnector(
                limit=self.limit,
                ttl_dns_cache=300,
                keepalive_timeout=self.keepalive_timeout,
                **extra,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.timeouts.connect, sock_read=self.timeouts.read
                ),
                headers={"User-Agent": "async-uploader"},
                # the headers the sockets of edge.pool send, no more: no Accept or Accept-Encoding, and no
                # Content-Type aiohttp would guess for a part body (botocore sets none on a streaming payload)
                skip_auto_headers=("Accept", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def send(
        self, method: str, target: URL, headers: Mapping[str, str], body: bytes | BodySource, proxy: Proxy | None
    ) -> Response:
        """Send one request; every failure is the transport's error, naming the host (and the proxy)."""
        try:
            return await self._send(method, target, headers, body, proxy)
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError, _ShortBodyError, _StalledError) as exc:
            error = _translate(exc, method, target, proxy, self.timeouts)
            if error is _own_cause(exc):
                raise error from None
            raise error from exc

    def _payload(self, body: bytes | BodySource) -> Any:
        """What aiohttp is handed as the request body."""
        if isinstance(body, bytes | bytearray | memoryview) and len(body) <= _LARGE_BODY:
            return bytes(body) if body else None
        if isinstance(body, bytes | bytearray | memoryview):
            # written in slices, each within the progress deadline (aiohttp would write a bytes body whole, and
            # wait on a peer that stopped reading for ever)
            body = BytesBody(body)
        return _SourcePayload(body, self.timeouts.read)

    async def _send(
        self, method: str, target: URL, headers: Mapping[str, str], body: bytes | BodySource, proxy: Proxy | None
    ) -> Response:
        session = self._open()
        via: dict[str, Any] = {}
        if proxy is not None and target.scheme == "https":  # CONNECT: the proxy sees only the tunnel's request
            via = {"proxy": proxy.url, "proxy_headers": proxy.headers()}
        elif proxy is not None:  # forwarded: the proxy reads (and removes) Proxy-Authorization from the request
            via = {"proxy": proxy.url}
            headers = {**headers, **proxy.headers()}
        if target.scheme == "https" or (proxy is not None and URL(proxy.url).scheme == "https"):
            via["ssl"] = self.tls()  # each request that speaks TLS names the context: the session holds none
        data = self._payload(body)
        async with session.request(
            method, target, headers=dict(headers), data=data, allow_redirects=False, **via
        ) as response:
            if proxy is not None and response.status == 407:  # a forwarding proxy's refusal
                raise proxy_answer_error(method, target, proxy, 407, response.reason or "")
            cap = cap_for(response.status)
            content = await _read_capped(response, cap)
            if content is None:
                response.close()  # the rest of that answer is never read: the connection cannot carry another
                raise answer_too_large(method, target, proxy, cap, response.content_length)
            return Response(response.status, dict(response.headers), content)

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
