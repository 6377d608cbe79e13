"""Part bodies over HTTP/1.1 on sockets of our own: h11 frames each request and reads each answer, and TLS is an
``ssl.SSLSocket`` in non-blocking mode, so OpenSSL encrypts a whole slice in one call and writes the records
straight to the socket.

Why (README "Performance"): asyncio's TLS transport encrypts into a memory BIO, copies the records out into a new
bytes object and copies them again into the transport's buffer; those copies, not the cipher, were most of what
TLS added to the client's CPU per GiB. Here the copies left are the page cache into one page-aligned buffer per
request (``edge.sources``) and the kernel's own into the socket.

Only part bodies come this way (``edge.transport`` sends the large ones here); control requests, and anything
through an ``https://`` proxy, stay on aiohttp. The behaviour is the transport's own: the proxy of each URL from the
environment (``core.proxy``: CONNECT for https targets, absolute-form requests for http ones, Proxy-Authorization
from the proxy URL), certificates checked with the transport's SSL context, ``connect_timeout`` for the name
lookup, the connect, the proxy's CONNECT and the TLS handshake together, and ``read_timeout`` as the progress
deadline of every wait on the socket. A server that answers before the whole body is sent (a refusal) has that
answer read and returned. A kept-alive connection found closed before any byte of its answer is replaced once, at
once (parts are idempotent). Every failure becomes ``TransportError`` (or ``CertificateError``,
``ProxyRefusedError``) naming the host, here and nowhere else; ``asyncio.CancelledError`` always propagates, and
any exception closes the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import select
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass

import anyio
import h11
from yarl import URL

from ..core.errors import CertificateError, ProxyRefusedError, TransportError, UploaderError
from ..core.proxy import Proxy
from .messages import CA_HINT, ProgressCall, Response, ScratchBody, unnamed, where
from .sources import PartBuffer, aligned_buffer

__all__ = ["SCRATCH_SIZE", "DirectPool"]

SCRATCH_SIZE = 256 * 1024
"""Bytes read and handed to OpenSSL at a time: a page-aligned buffer per request in flight (measured: 256 KiB to
1 MiB cost the same CPU per GiB; the smaller keeps memory low at high concurrency)."""

_RECEIVE = 65536
_DEFAULT_PORTS = {"http": 80, "https": 443}


class _Closed(Exception):
    """The server closed the connection (or reset it) before its answer was complete."""

    def __init__(self, reason: str, *, answered: bool) -> None:
        super().__init__(reason)
        self.answered = answered  # some byte of an answer had arrived: not a stale kept-alive connection


class _Stalled(Exception):
    """No progress within the deadline."""


class _Answered(Exception):
    """The server began its answer before the whole body was sent."""


@dataclass(frozen=True)
class _Key:
    """Which connections can carry a request: same scheme, host and port, through the same proxy."""

    scheme: str
    host: str
    port: int
    proxy: str | None


def host_header(url: URL) -> str:
    """The Host header botocore's signer computed for ``url``: lower case, brackets for IPv6, no default port."""
    host = (url.host or "").lower()
    if ":" in host:
        host = f"[{host}]"
    if url.explicit_port is not None and url.explicit_port != _DEFAULT_PORTS.get(url.scheme):
        host = f"{host}:{url.explicit_port}"
    return host


async def _ready(fd: int, *, read: bool, write: bool, within: float) -> bool:
    """Wait until ``fd`` can be read or written (as asked), at most ``within`` seconds; True when readable."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[bool] = loop.create_future()

    def wake(readable: bool) -> None:
        if not waiter.done():
            waiter.set_result(readable)

    if read:
        loop.add_reader(fd, wake, True)
    if write:
        loop.add_writer(fd, wake, False)
    try:
        with anyio.fail_after(within):
            return await waiter
    except TimeoutError:
        raise _Stalled from None
    finally:
        if read:
            loop.remove_reader(fd)
        if write:
            loop.remove_writer(fd)


class _Connection:
    """One socket (TLS or not) and its HTTP/1.1 state; one request at a time."""

    def __init__(self, sock: socket.socket, key: _Key, read_timeout: float) -> None:
        self.sock = sock
        self.key = key
        self.read_timeout = read_timeout
        self.http = h11.Connection(h11.CLIENT)
        self.answered = False
        self.idle_since = time.monotonic()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def alive(self) -> bool:
        """An idle connection the server has not closed, nor written to: nothing for HTTP to read on it."""
        poller = select.poll()
        try:
            poller.register(self.sock.fileno(), select.POLLIN)
        except (OSError, ValueError):
            return False
        if not poller.poll(0):
            return True
        if not isinstance(self.sock, ssl.SSLSocket):
            return False  # the server's close, or bytes it had no business sending
        try:
            self.sock.recv(_RECEIVE)  # TLS records that are not data (a session ticket) leave nothing to read
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return True
        except (OSError, ssl.SSLError):
            return False
        return False

    @property
    def reusable(self) -> bool:
        return self.http.our_state is h11.DONE and self.http.their_state is h11.DONE

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: ScratchBody,
        scratch: memoryview,
        call: ProgressCall | None,
    ) -> Response:
        self.answered = False
        try:
            await self._write(self.http.send(h11.Request(method=method, target=target, headers=headers)) or b"")
            async with contextlib.aclosing(body.views(scratch, call)) as views:
                async for view in views:
                    # the view itself goes out (no copy); h11 only counts its length against Content-Length
                    for piece in self.http.send_with_data_passthrough(h11.Data(data=view)) or ():  # type: ignore[arg-type]
                        await self._write(piece)
            self.http.send(h11.EndOfMessage())
        except _Answered:
            pass  # a refusal before the whole body was sent: it is the answer
        return await self._answer()

    async def _write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        fd = self.sock.fileno()
        while view:
            try:
                sent = self.sock.send(view)
            except (ssl.SSLWantWriteError, BlockingIOError):
                try:
                    readable = await _ready(fd, read=True, write=True, within=self.read_timeout)
                except _Stalled:
                    raise _Stalled(f"no bytes of the body were accepted for {self.read_timeout:g} s") from None
                if readable and self._take_early():
                    raise _Answered from None
                continue
            except ssl.SSLWantReadError:
                await _ready(fd, read=True, write=False, within=self.read_timeout)
                continue
            view = view[sent:]

    def _take_early(self) -> bool:
        """Read what arrived while the body was being sent; True when it is (the start of) an answer or EOF."""
        try:
            data = self.sock.recv(_RECEIVE)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return False  # TLS 1.3 session tickets and the like: nothing for HTTP
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            data = b""
        if not data:
            raise _Closed("the server closed the connection", answered=self.answered)
        self.answered = True
        self.http.receive_data(data)
        return True

    async def _receive(self) -> bytes:
        fd = self.sock.fileno()
        while True:
            try:
                return self.sock.recv(_RECEIVE)
            except (ssl.SSLWantReadError, BlockingIOError):
                wait_write = False
            except ssl.SSLWantWriteError:
                wait_write = True
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            try:
                await _ready(fd, read=not wait_write, write=wait_write, within=self.read_timeout)
            except _Stalled:
                raise _Stalled(f"no bytes of the answer arrived for {self.read_timeout:g} s") from None

    async def _answer(self) -> Response:
        status, headers, body = 0, {}, bytearray()
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                data = await self._receive()
                if not data and not self.answered:
                    raise _Closed("the server closed the connection", answered=False)
                self.answered = self.answered or bool(data)
                self.http.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
                # as the server spelled them, as the aiohttp path returns them
                headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers.raw_items()}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.idle_since = time.monotonic()
                return Response(status, headers, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                raise _Closed("the server closed the connection", answered=self.answered)


def _header_list(url: URL, headers: Mapping[str, str], length: int, proxy: Proxy | None) -> list[tuple[str, str]]:
    names = {name.lower() for name in headers}
    listed = [("Host", host_header(url))] if "host" not in names else []
    listed += list(headers.items())
    if "content-length" not in names:
        listed.append(("Content-Length", str(length)))
    if "user-agent" not in names:
        listed.append(("User-Agent", "async-uploader"))
    if proxy is not None and url.scheme == "http":
        listed += list(proxy.headers().items())
    return listed


async def _open_tcp(host: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    failure: OSError | None = None
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise failure or OSError(errno.EHOSTUNREACH, "no address to connect to")


async def _tunnel(sock: socket.socket, url: URL, proxy: Proxy, read_timeout: float) -> None:
    """CONNECT through ``proxy`` to the host of ``url`` over the plain socket ``sock``."""
    host = (url.host or "").lower()
    authority = f"[{host}]:{url.port}" if ":" in host else f"{host}:{url.port}"
    tunnel = _Connection(sock, _Key("http", "", 0, proxy.url), read_timeout)
    headers = [("Host", authority), *proxy.headers().items()]
    await tunnel._write(tunnel.http.send(h11.Request(method="CONNECT", target=authority, headers=headers)) or b"")
    tunnel.http.send(h11.EndOfMessage())
    while True:
        event = tunnel.http.next_event()
        if event is h11.NEED_DATA:
            data = await tunnel._receive()
            if not data:
                raise _Closed("the proxy closed the connection", answered=False)
            tunnel.http.receive_data(data)
        elif isinstance(event, h11.Response):
            if 200 <= event.status_code < 300:
                return
            raise _ProxyAnswer(event.status_code, event.reason.decode("latin-1"))


class _ProxyAnswer(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}".rstrip())
        self.status = status
        self.reason = reason


async def _handshake(sock: socket.socket, context: ssl.SSLContext, host: str) -> ssl.SSLSocket:
    secure = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
    fd = secure.fileno()
    try:
        while True:
            try:
                secure.do_handshake()
                return secure
            except ssl.SSLWantReadError:
                await _ready(fd, read=True, write=False, within=float("inf"))
            except ssl.SSLWantWriteError:
                await _ready(fd, read=False, write=True, within=float("inf"))
    except BaseException:
        secure.close()  # wrap_socket took the descriptor: closing ``sock`` would not release it
        raise


def _reason(exc: BaseException) -> str:
    """What happened, in the words the aiohttp path uses for the same failure."""
    if isinstance(exc, _Closed | _Stalled):
        return str(exc)
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(exc, BrokenPipeError):
        return "the server closed the connection"
    if isinstance(exc, h11.RemoteProtocolError):
        return f"the answer is not valid HTTP/1.1 ({exc})"
    if isinstance(exc, h11.LocalProtocolError):
        return f"body not sent: {exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc})"
    if isinstance(exc, OSError):
        return f"cannot connect ({exc.strerror or type(exc).__name__})"
    return unnamed(exc)


_FAILURES = (OSError, ssl.SSLError, h11.ProtocolError, _Closed, _Stalled, _ProxyAnswer)


class DirectPool:
    """Kept-alive HTTP/1.1 connections for part bodies, keyed by origin and proxy, and their scratch buffers."""

    def __init__(
        self,
        context: ssl.SSLContext,
        *,
        connect_timeout: float,
        read_timeout: float,
        keepalive_timeout: float,
        limit: int = 100,
        scratch_size: int = SCRATCH_SIZE,
    ) -> None:
        self.context = context
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.keepalive_timeout = keepalive_timeout
        self.limit = limit
        self.scratch_size = scratch_size
        self._idle: dict[_Key, list[_Connection]] = {}
        self._scratch: list[PartBuffer] = []
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
        key = _Key(url.scheme, (url.host or "").lower(), url.port or 0, proxy.url if proxy else None)
        forward = proxy is not None and url.scheme == "http"
        target = str(url) if forward else url.raw_path_qs
        listed = _header_list(url, headers, body.length, proxy)
        scratch = self._scratch.pop() if self._scratch else aligned_buffer(self.scratch_size)
        try:
            return await self._send(method, url, key, target, listed, body, memoryview(scratch), proxy, call)
        finally:
            if len(self._scratch) < self.limit:
                self._scratch.append(scratch)

    async def _send(
        self,
        method: str,
        url: URL,
        key: _Key,
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
                if reused and not connection.answered and isinstance(exc, _Closed | ConnectionError):
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
            return response

    def _idle_count(self) -> int:
        return sum(len(connections) for connections in self._idle.values())

    def _reuse(self, key: _Key) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if now - connection.idle_since < self.keepalive_timeout and connection.alive():
                return connection
            connection.close()
        return None

    async def _connect(self, method: str, url: URL, key: _Key, proxy: Proxy | None) -> _Connection:
        via = URL(proxy.url) if proxy is not None else url
        host, port = via.host or "", via.port or _DEFAULT_PORTS.get(via.scheme, 80)
        try:
            with anyio.fail_after(self.connect_timeout):
                sock = await _open_tcp(host, port)
                try:
                    if proxy is not None and url.scheme == "https":
                        await _tunnel(sock, url, proxy, self.read_timeout)
                    if url.scheme == "https":
                        sock = await _handshake(sock, self.context, url.host or "")
                except BaseException:
                    sock.close()
                    raise
        except TimeoutError:
            exc = TransportError(f"no connection within {self.connect_timeout:g} s")
            raise self._error(method, url, proxy, exc, connecting=True) from None
        except (*_FAILURES, UploaderError) as exc:
            raise self._error(method, url, proxy, exc, connecting=True) from exc
        return _Connection(sock, key, self.read_timeout)

    def _error(
        self, method: str, url: URL, proxy: Proxy | None, exc: BaseException, *, connecting: bool = False
    ) -> UploaderError:
        """The one translation of a failure into the transport's errors."""
        if isinstance(exc, ssl.SSLCertVerificationError):
            reason = exc.verify_message or exc.reason or str(exc)
            return CertificateError(
                f"{method} {where(url)}: the TLS certificate cannot be verified ({reason}); {CA_HINT}"
            )
        if isinstance(exc, _ProxyAnswer) and proxy is not None:
            text = f"the proxy {proxy.shown} answered {exc}"
            if exc.status in (403, 407):
                hint = "check the user and password in HTTPS_PROXY/HTTP_PROXY" if exc.status == 407 else "ask its admin"
                return ProxyRefusedError(f"{method} {where(url)}: {text}; {hint}")
            return TransportError(f"{method} {where(url)}: {text}")
        if isinstance(exc, UploaderError) and not isinstance(exc, TransportError):
            return exc
        reason = str(exc) if isinstance(exc, TransportError) else _reason(exc)
        if proxy is not None and connecting and isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError):
            return TransportError(f"{method} {where(url)}: cannot reach the proxy {proxy.shown}: {reason}")
        shown = f"{where(url)} through the proxy {proxy.shown}" if proxy is not None else where(url)
        return TransportError(f"{method} {shown}: {reason}")

    def close(self) -> None:
        """Close every idle connection; no request may be sent after."""
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        self._scratch.clear()
