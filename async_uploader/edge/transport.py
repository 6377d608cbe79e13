"""HTTP transport: where requests leave the process, and where the network's errors become ours.

``HttpTransport`` sends every request it can over sockets of its own (``edge.pool``: h11 framing, OpenSSL writing
whole slices straight to the socket, one page-aligned buffer per request): part bodies of ``direct_from`` bytes and
more, and the control requests (Create, Complete, List..., Get..., the probe: ``bytes`` bodies), directly or
through an ``http://`` proxy. Every other request (through an ``https://`` proxy, a body that is no
``ScratchBody``, or all of them when ``direct_from`` is None) goes through one aiohttp ``ClientSession``
(``edge.session``), which is imported on first use only: importing aiohttp costs about a tenth of a second of CPU,
most of a small upload's start-up. Every failure becomes ``TransportError`` (``raise ... from exc``), naming the
host and what happened; ``asyncio.CancelledError`` always propagates. An answer's header names are as the server
spelled them on both paths (a plain dict): its readers look them up without regard to case.

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

import inspect
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from yarl import URL

from ..core.errors import CertificateError, ConfigError, ProxyRefusedError, TransportError
from ..core.proxy import Proxy, proxy_for
from .messages import (
    CA_HINT,
    BodySource,
    BytesBody,
    ProgressCall,
    Response,
    ScratchBody,
    Transport,
    collect_body,
    wrong_scheme,
)
from .pool import DirectPool
from .schemes import answered_in_plain, may_be_tls, speaks_tls

if TYPE_CHECKING:
    from .session import Session

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

_TLS_CHECK = 2.0
"""Seconds a plain origin that failed before it ever answered has to show it speaks TLS (a TLS server answers a
handshake in one round trip; a plain one that reads without answering costs this once per failed attempt)."""


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
    """Every request ``edge.pool`` can carry over its sockets (bytes bodies, and part bodies of ``direct_from``
    bytes or more); the rest over one aiohttp session (``edge.session``).

    Each keeps at most ``limit`` connections alive between requests. The session, and aiohttp itself, are loaded
    on first use, inside the running event loop. ``direct_from=None`` sends everything through aiohttp.
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
        self._session: Session | None = None
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

    def _open(self) -> Session:
        if self._closed:
            raise RuntimeError("the transport is closed")
        if self._session is None:
            from .session import Session  # noqa: PLC0415 (aiohttp is loaded only when a request needs it)

            self._session = Session(
                self.tls,
                limit=self.limit,
                connect_timeout=self.connect_timeout,
                read_timeout=self.read_timeout,
                keepalive_timeout=self.keepalive_timeout,
            )
        return self._session

    def proxy_for(self, url: str) -> Proxy | None:
        """The proxy requests to ``url`` go through, None for a direct connection."""
        return proxy_for(url, self.environ)

    def _direct_body(self, body: bytes | BodySource, proxy: Proxy | None) -> ScratchBody | None:
        """The body as ``edge.pool`` sends it, or None when the request goes through aiohttp."""
        if self.direct_from is None or not DirectPool.supports(proxy):
            return None
        if isinstance(body, bytes | bytearray | memoryview):
            return BytesBody(body)
        return body if isinstance(body, ScratchBody) and body.length >= self.direct_from else None

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
        direct = self._direct_body(body, proxy)
        if direct is not None:
            return await self._direct.send(method, target, headers, direct, proxy, call)
        if call is not None and not isinstance(body, bytes | bytearray | memoryview):
            raise ValueError("only a body sent directly reports its progress through a call")
        return await self._open().send(method, target, headers, body, proxy)

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

    async def aclose(self) -> None:
        self._closed = True
        self._direct.close()
        if self._session is not None:
            session, self._session = self._session, None
            await session.aclose()

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
