"""Requests over HTTP/1.1 on sockets of our own: kept-alive connections (``edge.http11``) keyed by origin and
proxy, opened directly or through a proxy's CONNECT tunnel (``edge.tunnel``), and their scratch buffers.

Part bodies and the control requests (a ``bytes`` body as ``edge.messages.BytesBody``) come this way; only what
goes through an ``https://`` proxy stays on aiohttp (``edge.transport``). The behaviour is the transport's own:
the proxy of each URL from the environment (``core.proxy``: CONNECT for https targets, absolute-form requests for
http ones, Proxy-Authorization from the proxy URL), certificates checked with the transport's SSL context,
``connect_timeout`` for the name lookup, the connect, the proxy's CONNECT and the TLS handshake together, and
``read_timeout`` as the progress deadline of every wait on the socket. A kept-alive connection found closed before
any byte of its answer is replaced once, at once, for an idempotent method (as aiohttp does: PUT, GET, DELETE;
a POST's failure is the caller's to retry). A forwarding proxy's 407 is ``ProxyRefusedError``. An answer past its
cap (``edge.http11``) is ``AnswerTooLargeError``, not retried. Every failure becomes ``TransportError`` (or
``CertificateError``, ``ProxyRefusedError``) naming the host, in ``DirectPool._error`` and nowhere else, in the
words of ``edge.messages``; ``asyncio.CancelledError`` always propagates, and any exception closes the socket.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Mapping

import anyio
import h11
from yarl import URL

from ..core.errors import TransportError, UploaderError
from ..core.proxy import Proxy
from .http11 import (
    DEFAULT_PORTS,
    Closed,
    Connection,
    Key,
    Stalled,
    TooLarge,
    handshake,
    host_header,
    open_tcp,
    reason,
)
from .messages import (
    ProgressCall,
    Response,
    ScratchBody,
    answer_too_large,
    certificate_error,
    failure,
    proxy_answer_error,
    proxy_unreachable,
)
from .sources import PartBuffer, aligned_buffer
from .tunnel import ProxyAnswer, tunnel

__all__ = ["SCRATCH_SIZE", "TLS_SCRATCH_SIZE", "DirectPool"]

SCRATCH_SIZE = 256 * 1024
"""Bytes read and written at a time over plain HTTP: a page-aligned buffer per request in flight (measured: 256 KiB
to 1 MiB cost the same CPU per GiB; the smaller keeps memory low at high concurrency)."""

TLS_SCRATCH_SIZE = 1024 * 1024
"""Bytes read and handed to OpenSSL at a time over TLS, where each slice is one hand-off to a sender thread: four
times fewer hand-offs than 256 KiB, measured as a lower CPU per GiB through an efficient terminator."""

TLS_FULL_SLICES = 16
"""At most this many requests at once take ``TLS_SCRATCH_SIZE`` buffers; the others take ``SCRATCH_SIZE`` ones. A
distant link that the self-tuning fills with 64 requests held 64 MiB of slices (peak RSS 112 MiB); it now holds
28 MiB, and each of those connections is slow enough that smaller slices cost no throughput."""

_FAILURES = (OSError, ssl.SSLError, h11.ProtocolError, Closed, Stalled, ProxyAnswer, TooLarge)


_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
"""Methods whose request may be sent again on a fresh connection when a kept-alive one turns out closed."""

_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
"""Methods whose empty body is announced by no Content-Length at all (as aiohttp sends them)."""


def _header_list(
    method: str, url: URL, headers: Mapping[str, str], length: int, proxy: Proxy | None
) -> list[tuple[str, str]]:
    names = {name.lower() for name in headers}
    listed = [("Host", host_header(url))] if "host" not in names else []
    listed += list(headers.items())
    if "content-length" not in names and (length or method not in _NO_BODY):
        listed.append(("Content-Length", str(length)))
    if "user-agent" not in names:
        listed.append(("User-Agent", "async-uploader"))
    if proxy is not None and url.scheme == "http":
        listed += list(proxy.headers().items())
    return listed


class DirectPool:
    """Kept-alive HTTP/1.1 connections for every request it supports, keyed by origin and proxy, and their
    scratch buffers.

    ``context`` gives the transport's TLS settings when a connection first needs them."""

    def __init__(
        self,
        context: Callable[[], ssl.SSLContext],
        *,
        connect_timeout: float,
        read_timeout: float,
        keepalive_timeout: float,
        limit: int = 100,
        scratch_size: int = SCRATCH_SIZE,
        tls_scratch_size: int = TLS_SCRATCH_SIZE,
    ) -> None:
        self.context = context
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.keepalive_timeout = keepalive_timeout
        self.limit = limit
        self.scratch_size = scratch_size
        self.tls_scratch_size = tls_scratch_size
        self._idle: dict[Key, list[Connection]] = {}
        self._scratch: dict[int, list[PartBuffer]] = {}
        self._full_slices = 0  # requests holding a TLS-sized buffer now
        self._closed = False

    @staticmethod
    def supports(proxy: Proxy | None) -> bool:
        """Whether this pool can reach a target through ``proxy`` (an http:// proxy or none)."""
        return proxy is None or URL(proxy.url).scheme == "http"

    async def send(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        body: ScratchBody,
        proxy: Proxy | None,
        call: ProgressCall | None = None,
    ) -> Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        key = Key(url.scheme, (url.host or "").lower(), url.port or 0, proxy.url if proxy else None)
        forward = proxy is not None and url.scheme == "http"
        target = str(url) if forward else url.raw_path_qs
        listed = _header_list(method, url, headers, body.length, proxy)
        full = url.scheme == "https" and self._full_slices < TLS_FULL_SLICES
        size = self.tls_scratch_size if full else self.scratch_size
        spare = self._scratch.setdefault(size, [])
        scratch = spare.pop() if spare else aligned_buffer(size)
        self._full_slices += full
        try:
            return await self._send(method, url, key, target, listed, body, memoryview(scratch), proxy, call)
        finally:
            self._full_slices -= full
            if len(spare) < self.limit:
                spare.append(scratch)

    async def _send(
        self,
        method: str,
        url: URL,
        key: Key,
        target: str,
        headers: list[tuple[str, str]],
        body: ScratchBody,
        scratch: memoryview,
        proxy: Proxy | None,
        call: ProgressCall | None,
    ) -> Response:
        stale_retried = False
        while True:
            connection = None if stale_retried else self._reuse(key)
            reused = connection is not None
            if connection is None:
                connection = await self._connect(method, url, key, proxy)
            try:
                response = await connection.request(method, target, headers, body, scratch, call)
            except _FAILURES as exc:
                connection.close()
                stale = reused and not connection.answered and isinstance(exc, Closed | ConnectionError)
                if stale and method in _IDEMPOTENT:
                    stale_retried = True  # a kept-alive connection the server had closed: once more, on a fresh one
                    continue
                raise self._error(method, url, proxy, exc) from exc
            except BaseException:
                connection.close()
                raise
            if connection.reusable and not self._closed and self._idle_count() < self.limit:
                connection.http.start_next_cycle()
                self._idle.setdefault(key, []).append(connection)
            else:
                connection.close()
            if proxy is not None and url.scheme == "http" and response.status == 407:  # a forwarding proxy's refusal
                raise proxy_answer_error(method, url, proxy, 407, connection.reason)
            return response

    def _idle_count(self) -> int:
        return sum(len(connections) for connections in self._idle.values())

    def _reuse(self, key: Key) -> Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if now - connection.idle_since < self.keepalive_timeout and connection.alive():
                return connection
            connection.close()
        return None

    async def _connect(self, method: str, url: URL, key: Key, proxy: Proxy | None) -> Connection:
        via = URL(proxy.url) if proxy is not None else url
        host, port = via.host or "", via.port or DEFAULT_PORTS.get(via.scheme, 80)
        try:
            with anyio.fail_after(self.connect_timeout):
                sock = await open_tcp(host, port)
                try:
                    if proxy is not None and url.scheme == "https":
                        await tunnel(sock, url, proxy, self.read_timeout)
                    if url.scheme == "https":
                        sock = await handshake(sock, self.context(), url.host or "")
                except BaseException:
                    sock.close()
                    raise
        except TimeoutError:
            exc = TransportError(f"no connection within {self.connect_timeout:g} s")
            raise self._error(method, url, proxy, exc, connecting=True) from None
        except (*_FAILURES, UploaderError) as exc:
            raise self._error(method, url, proxy, exc, connecting=True) from exc
        return Connection(sock, key, self.read_timeout)

    def _error(
        self, method: str, url: URL, proxy: Proxy | None, exc: BaseException, *, connecting: bool = False
    ) -> UploaderError:
        """The one translation of a failure into the transport's errors."""
        if isinstance(exc, TooLarge):
            return answer_too_large(method, url, proxy, exc.cap, exc.announced)
        if isinstance(exc, ssl.SSLCertVerificationError):
            return certificate_error(method, url, exc.verify_message or exc.reason or str(exc))
        if isinstance(exc, ProxyAnswer) and proxy is not None:
            return proxy_answer_error(method, url, proxy, exc.status, exc.reason)
        if isinstance(exc, UploaderError) and not isinstance(exc, TransportError):
            return exc
        said = str(exc) if isinstance(exc, TransportError) else reason(exc)
        if proxy is not None and connecting and isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError):
            return proxy_unreachable(method, url, proxy, said)
        return failure(method, url, proxy, said)

    def close(self) -> None:
        """Close every idle connection; no request may be sent after."""
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        self._scratch.clear()
