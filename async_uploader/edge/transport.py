"""HTTP transport: where requests leave the process, and where the network's errors become ours.

``HttpTransport`` sends part bodies of ``direct_from`` bytes and more over sockets of its own (``edge.pool``:
h11 framing, OpenSSL writing whole slices straight to the socket, one page-aligned buffer per request), and every
other request through one aiohttp ``ClientSession`` with a bounded keep-alive pool. A body aiohttp sends (a
``BodySource``) is a custom payload with an explicit Content-Length (never chunked): its slices are written to the
connection as they are read, each followed by a drain, so at most about one slice per request is buffered. Every
aiohttp, timeout or OS error becomes ``TransportError`` (``raise ... from exc``), naming the host and what
happened; ``asyncio.CancelledError`` always propagates.

Every answer's body is read up to a cap (``edge.messages.cap_for``: by operation and status, from
``core.protocol.OPERATIONS``) on both paths: past it the attempt fails with ``AnswerTooLargeError`` (not retried),
since a deadline of progress never fires while bytes keep coming.

Timeouts are about progress, never about size: ``connect_timeout`` bounds opening a connection, and
``read_timeout`` is a progress deadline on both directions: an attempt fails when the connection accepts no
slice of the body, or no byte of the answer arrives, for that long. How long a whole operation may take is the
engine's decision (a cancel scope around the call).

Proxies and TLS are as botocore has them: the proxy of each URL is chosen from the environment by
``core.proxy.proxy_for`` (HTTPS_PROXY, HTTP_PROXY, NO_PROXY, credentials in the proxy URL sent as
Proxy-Authorization, CONNECT for https targets); certificates are verified against the system's CAs, or
``ca_bundle``. The TLS settings are made on the first request that needs them (a plain-HTTP endpoint never does:
loading the system's CAs costs 20 ms or more of CPU), or at once when a CA bundle is named, so that a file that
cannot be used is refused before anything is sent. A certificate that cannot be verified is ``CertificateError``
and a proxy's 407 or 403 is ``ProxyRefusedError``: neither is retried. Failures to reach a proxy name it, its
password redacted. Both paths word their failures with the same builders (``edge.messages``) and behave alike
(``tests/test_transport.py`` runs each case through both).

An endpoint whose scheme the server does not speak (``https://`` to plain HTTP, ``http://`` to TLS) is
``ConfigError`` naming the scheme to use, on both paths (``edge.schemes``): retrying cannot help.

``MockTransport`` is the test seam: it hands each request, body collected, to a handler function.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import aiohttp.abc
import aiohttp.connector
import aiohttp.payload
import anyio
from yarl import URL

from ..core.errors import CertificateError, ConfigError, ProxyRefusedError, TransportError, UploaderError
from ..core.proxy import Proxy, proxy_for
from .messages import (
    CA_HINT,
    BodySource,
    ProgressCall,
    Response,
    ScratchBody,
    Transport,
    answer_too_large,
    cap_for,
    certificate_error,
    collect_body,
    failure,
    iterate,
    proxy_answer_error,
    proxy_unreachable,
    unnamed,
    wrong_scheme,
)
from .pool import DirectPool
from .schemes import answered_in_plain, may_be_tls, speaks_tls

__all__ = [
    "CA_HINT",
    "DIRECT_FROM",
    "BodySource",
    "HttpTransport",
    "MockTransport",
    "Response",
    "SentRequest",
    "Transport",
    "collect_body",
    "tls_context",
]

DIRECT_FROM = 0
"""Part bodies at least this large go over ``edge.pool``'s sockets: every one, since the direct path is as
cheap per request as aiohttp's and cheaper per byte (``make bench``, the tiny-parts and bulk scenarios)."""

_LARGE_BODY = 512 * 1024

_TLS_CHECK = 2.0
"""Seconds a plain origin that failed before it ever answered has to show it speaks TLS (a TLS server answers a
handshake in one round trip; a plain one that reads without answering costs this once per failed attempt)."""


class _ShortBodyError(Exception):
    """The body source produced a different number of bytes than it announced."""


class _StalledError(Exception):
    """The connection accepted no slice of the body within the progress deadline."""


class _SourcePayload(aiohttp.payload.Payload):
    """A BodySource as an aiohttp payload of known size, so aiohttp sends Content-Length, never chunked.

    Each slice must be accepted by the connection within ``stall`` seconds (the progress deadline).
    """

    def __init__(self, body: BodySource, stall: float) -> None:
        super().__init__(body, content_type="application/octet-stream")
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


def tls_context(
    ca_bundle: str | None = None, verify: bool = True, proxy_ca_bundle: str | None = None
) -> ssl.SSLContext:
    """The TLS settings of every connection: the system's CAs, or those of ``ca_bundle`` (plus a proxy's)."""
    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        context = ssl.create_default_context(cafile=ca_bundle)
        if proxy_ca_bundle:
            context.load_verify_locations(cafile=proxy_ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        which = ", ".join(path for path in (ca_bundle, proxy_ca_bundle) if path)
        reason = exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)
        raise ConfigError(f"cannot load the CA bundle {which}: {reason}") from None
    return context


class HttpTransport:
    """Part bodies of ``direct_from`` bytes or more over ``edge.pool``; the rest over one aiohttp session.

    Each keeps at most ``limit`` connections alive between requests. The session is created on first use, inside
    the running event loop. ``direct_from=None`` sends everything through aiohttp.
    """

    def __init__(
        self,
        limit: int = 100,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        verify_tls: bool = True,
        *,
        keepalive_timeout: float = 30.0,
        ca_bundle: str | None = None,
        proxy_ca_bundle: str | None = None,
        environ: Mapping[str, str] | None = None,
        direct_from: int | None = DIRECT_FROM,
    ) -> None:
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.verify_tls = verify_tls
        self.keepalive_timeout = keepalive_timeout
        self._tls_settings = (ca_bundle, verify_tls, proxy_ca_bundle)
        self._tls: ssl.SSLContext | None = None
        if ca_bundle or proxy_ca_bundle:
            self.tls()
        self.environ = dict(os.environ if environ is None else environ)
        """The environment proxies are chosen from (a copy taken when the transport is made)."""
        self.direct_from = direct_from
        self._session: aiohttp.ClientSession | None = None
        self._direct = DirectPool(
            self.tls,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            keepalive_timeout=keepalive_timeout,
            limit=limit,
        )
        self._answered: set[URL] = set()
        """The origins that have answered: a failure on one of them is no sign of a wrong scheme."""
        self._closed = False

    def tls(self) -> ssl.SSLContext:
        """The TLS settings of every connection (``tls_context``), made on first use."""
        if self._tls is None:
            self._tls = tls_context(*self._tls_settings)
        return self._tls

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

    def proxy_for(self, url: str) -> Proxy | None:
        """The proxy requests to ``url`` go through, None for a direct connection."""
        return proxy_for(url, self.environ)

    def _goes_direct(self, body: bytes | BodySource, proxy: Proxy | None) -> bool:
        return (
            self.direct_from is not None
            and isinstance(body, ScratchBody)
            and body.length >= self.direct_from
            and DirectPool.supports(proxy)
        )

    async def send(self, method: str, url: str, headers: Mapping[str, str], body: bytes | BodySource) -> Response:
        return await self.send_with(method, url, headers, body)

    async def send_with(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | BodySource,
        call: ProgressCall | None = None,
    ) -> Response:
        """``send``, the body's progress callbacks run through ``call`` (when it is sent from another thread)."""
        if self._closed:
            raise RuntimeError("the transport is closed")
        target = URL(url, encoded=True)  # already percent-encoded exactly as signed
        proxy = self.proxy_for(url)
        try:
            response = await self._route(method, target, headers, body, proxy, call)
        except TransportError as exc:
            mismatch = await self._wrong_scheme(method, target, proxy, exc)
            if mismatch is None:
                raise
            raise mismatch from None
        self._answered.add(target.origin())
        return response

    async def _route(
        self,
        method: str,
        target: URL,
        headers: Mapping[str, str],
        body: bytes | BodySource,
        proxy: Proxy | None,
        call: ProgressCall | None,
    ) -> Response:
        if self._goes_direct(body, proxy):
            assert isinstance(body, ScratchBody)
            return await self._direct.send(method, target, headers, body, proxy, call)
        if call is not None and not isinstance(body, bytes | bytearray | memoryview):
            raise ValueError("only a body sent directly reports its progress through a call")
        try:
            return await self._send_aiohttp(method, target, headers, body, proxy)
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError, _ShortBodyError, _StalledError) as exc:
            timeouts = _Timeouts(self.connect_timeout, self.read_timeout)
            error = _translate(exc, method, target, proxy, timeouts)
            if error is _own_cause(exc):
                raise error from None
            raise error from exc

    async def _wrong_scheme(
        self, method: str, target: URL, proxy: Proxy | None, exc: TransportError
    ) -> ConfigError | None:
        """``ConfigError`` when ``exc`` came of a server that does not speak the scheme of ``target``
        (``edge.schemes``), else None. A plain origin that has answered before is not checked again."""
        if isinstance(exc, CertificateError | ProxyRefusedError):
            return None
        if target.scheme == "https" and answered_in_plain(exc):
            return wrong_scheme(method, target)
        if target.scheme != "http" or proxy is not None or target.origin() in self._answered or not may_be_tls(exc):
            return None
        within = min(self.connect_timeout, _TLS_CHECK)
        return wrong_scheme(method, target) if await speaks_tls(target, within) else None

    def _payload(self, body: bytes | BodySource) -> Any:
        """What aiohttp is handed as the request body."""
        if isinstance(body, bytes | bytearray | memoryview):
            # aiohttp warns that a large bytes body may stall the loop; a file-like payload is written in pieces.
            return (io.BytesIO(body) if len(body) > _LARGE_BODY else bytes(body)) if body else None
        return _SourcePayload(body, self.read_timeout)

    async def _send_aiohttp(
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
        self._closed = True
        self._direct.close()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> HttpTransport:
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

    async def send(self, method: str, url: str, headers: Mapping[str, str], body: bytes | BodySource) -> Response:
        sent = SentRequest(method, url, dict(headers), await collect_body(body))
        self.requests.append(sent)
        answer = self.handler(sent)
        if inspect.isawaitable(answer):
            answer = await answer
        return answer

    async def aclose(self) -> None:
        self.closed = True
