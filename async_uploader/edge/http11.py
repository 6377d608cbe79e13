"""One HTTP/1.1 connection on a socket of our own: the waits on the socket, and one h11 exchange at a time.

TLS is an ``ssl.SSLSocket`` in non-blocking mode, so OpenSSL encrypts a whole slice in one call and writes the
records straight to the socket. A TLS part body is read, hashed and written by one sender thread from its first
byte to its last (``send_in_thread``: one hand-off per part); OpenSSL runs with the GIL released, so connections
encrypt on more than one core, and the loop only collects the progress, every ``PROGRESS_EVERY`` seconds. Other
bodies over TLS, and parts beyond ``PART_SENDERS`` at once, are written slice by slice from shared sender threads
(``write_in_thread``); the head, plain HTTP and every read stay on the loop. Why a socket of our own (README
"Performance"): asyncio's TLS transport encrypts into a memory BIO, copies the records out into a new bytes object
and copies them again into the transport's buffer; those copies, not the cipher, were most of what TLS added to
the client's CPU per GiB. Here the copies left are the page cache into one page-aligned buffer per request
(``edge.sources``) and the kernel's own into the socket.

``read_timeout`` is the progress deadline of every wait on the socket. A server that answers before the whole
body is sent (a refusal) has that answer read and returned. An answer's body is read up to its cap
(``edge.messages.cap_for``, by operation and status): one that announces more, or goes on past it, is
``TooLarge`` and the connection is not reused; h11 bounds the status line and headers (16 KiB). The exceptions
here (``Closed``, ``Stalled``, ``TooLarge``, h11's, ``OSError``, ``ssl.SSLError``) are the connection's own;
``edge.pool`` translates them, in one place, into the transport's errors (``reason`` gives the words). The pool
keeps connections alive between requests; the proxy tunnel is ``edge.tunnel``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import anyio
import h11
from yarl import URL

from .messages import BytesBody, ProgressCall, Response, ScratchBody, ThreadBody, cap_for, unnamed

__all__ = [
    "DEFAULT_PORTS",
    "Answered",
    "Closed",
    "Connection",
    "Key",
    "Stalled",
    "TooLarge",
    "handshake",
    "host_header",
    "open_tcp",
    "ready",
    "reason",
]

RECEIVE = 65536
_T = TypeVar("_T")
SMALL_BODY = 64 * 1024
"""A ``bytes`` body up to this size is written with its head in one write, on the loop."""
DEFAULT_PORTS = {"http": 80, "https": 443}


class Closed(Exception):
    """The server closed the connection (or reset it) before its answer was complete."""

    def __init__(self, reason: str, *, answered: bool) -> None:
        super().__init__(reason)
        self.answered = answered  # some byte of an answer had arrived: not a stale kept-alive connection


class Stalled(Exception):
    """No progress within the deadline."""


class TooLarge(Exception):
    """The answer announced, or sent, more than ``cap`` bytes (``announced`` when it said so up front)."""

    def __init__(self, cap: int, announced: int | None) -> None:
        super().__init__()
        self.cap = cap
        self.announced = announced


class Answered(Exception):
    """The server began its answer before the whole body was sent."""


@dataclass(frozen=True)
class Key:
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
    if url.explicit_port is not None and url.explicit_port != DEFAULT_PORTS.get(url.scheme):
        host = f"{host}:{url.explicit_port}"
    return host


async def ready(fd: int, *, read: bool, write: bool, within: float) -> bool:
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
        raise Stalled from None
    finally:
        if read:
            loop.remove_reader(fd)
        if write:
            loop.remove_writer(fd)


class Connection:
    """One socket (TLS or not) and its HTTP/1.1 state; one request at a time."""

    def __init__(self, sock: socket.socket, key: Key, read_timeout: float) -> None:
        self.sock = sock
        self.key = key
        self.read_timeout = read_timeout
        self.http = h11.Connection(h11.CLIENT)
        self.answered = False
        self.reason = ""  # the reason phrase of the last answer
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
            self.sock.recv(RECEIVE)  # TLS records that are not data (a session ticket) leave nothing to read
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
            head = self.http.send(h11.Request(method=method, target=target, headers=headers)) or b""
            tls = isinstance(self.sock, ssl.SSLSocket)
            if isinstance(body, BytesBody) and body.length <= SMALL_BODY:
                # a control request: head and body in one write, on the loop (one TLS record, no hand-off)
                await self.write(head + ((self.http.send(h11.Data(data=body.data)) or b"") if body.length else b""))
            elif tls and isinstance(body, ThreadBody) and body.threaded and _PART_SENDERS.acquire(blocking=False):
                try:
                    await self.write(head)
                    await self.send_in_thread(body, scratch, call)
                finally:
                    _PART_SENDERS.release()
            else:
                await self.write(head)
                # the views themselves go out (no copy); h11 only counts their length against Content-Length
                write = self.write_in_thread if tls else self.write
                async with contextlib.aclosing(body.views(scratch, call)) as views:
                    async for view in views:
                        for piece in self.http.send_with_data_passthrough(h11.Data(data=view)) or ():  # type: ignore[arg-type]
                            await write(piece)
            self.http.send(h11.EndOfMessage())
        except Answered:
            pass  # a refusal before the whole body was sent: it is the answer
        return await self._answer()

    async def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        fd = self.sock.fileno()
        while view:
            try:
                sent = self.sock.send(view)
            except (ssl.SSLWantWriteError, BlockingIOError):
                try:
                    readable = await ready(fd, read=True, write=True, within=self.read_timeout)
                except Stalled:
                    raise Stalled(f"no bytes of the body were accepted for {self.read_timeout:g} s") from None
                if readable and self._take_early():
                    raise Answered from None
                continue
            except ssl.SSLWantReadError:
                await ready(fd, read=True, write=False, within=self.read_timeout)
                continue
            view = view[sent:]

    async def send_in_thread(self, body: ThreadBody, scratch: memoryview, call: ProgressCall | None) -> None:
        """The whole body read, hashed and written by one sender thread: one hand-off per part, not per slice.

        The thread reads each slice into ``scratch`` (or takes a view of memory the body holds), hashes it and has
        OpenSSL encrypt and write it, with the GIL released; the thread never wakes the loop, which collects what
        it has written every ``PROGRESS_EVERY`` seconds (``_Progress``). The thread comes back early when the
        socket turns readable (the server's answer before the end of the body, or a TLS record that is not data:
        then it is sent on).
        Cancelling shuts the socket down and waits for the thread to let go of the buffer before propagating.
        """
        loop = asyncio.get_running_loop()
        body.start(call)
        sender = _BodySender(self, body, scratch, call)
        progress = _Progress.of(loop)
        progress.add(sender)
        try:
            while True:
                future = loop.run_in_executor(_senders(whole=True), sender.run)
                readable = await self._sent_by(future, sender.stop)
                if not readable:
                    break
                sender.flush()
                if self._take_early():
                    raise Answered
        finally:
            progress.discard(sender)
            sender.close()
        body.finish()

    async def write_in_thread(self, data: bytes | memoryview) -> None:
        """``write``, with the waits and OpenSSL's writes in a sender thread: one hand-off per slice.

        OpenSSL encrypts with the GIL released, so connections sending at once use more than one core, and the
        event loop is woken once per slice rather than once per socket buffer. Cancelling shuts the socket down
        (the thread's wait ends at once) and waits for the thread to let go of the slice before propagating.
        """
        view = memoryview(data)
        loop = asyncio.get_running_loop()
        while view:
            sent, readable = await self._sent_by(loop.run_in_executor(_senders(), self._send_some, view))
            view = view[sent:]
            if readable and self._take_early():
                raise Answered

    async def _sent_by(self, future: asyncio.Future[_T], stop: Callable[[], None] | None = None) -> _T:
        """What the sender thread behind ``future`` returns. Cancelled, it is told to ``stop``, the socket is shut
        down (the thread's wait on it ends at once) and the thread is waited for, so that it has let go of the
        buffer before the cancellation propagates."""
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if stop is not None:
                stop()
            if not future.done():
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_RDWR)
                with anyio.CancelScope(shield=True):
                    await asyncio.wait([future])
            raise

    def _send_some(self, view: memoryview) -> tuple[int, bool]:
        """In a sender thread: write ``view`` until done or until the socket is readable; (bytes sent, readable)."""
        fd = self.sock.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLOUT)
        total = 0
        while total < len(view):
            try:
                total += self.sock.send(view[total:])
                continue
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                pass
            events = poller.poll(self.read_timeout * 1000)
            if not events:
                raise Stalled(f"no bytes of the body were accepted for {self.read_timeout:g} s")
            if events[0][1] & (select.POLLIN | select.POLLHUP | select.POLLERR):
                return total, True
        return total, False

    def _take_early(self) -> bool:
        """Read what arrived while the body was being sent; True when it is (the start of) an answer or EOF."""
        try:
            data = self.sock.recv(RECEIVE)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return False  # TLS 1.3 session tickets and the like: nothing for HTTP
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            data = b""
        if not data:
            raise Closed("the server closed the connection", answered=self.answered)
        self.answered = True
        self.http.receive_data(data)
        return True

    async def receive(self) -> bytes:
        fd = self.sock.fileno()
        while True:
            try:
                return self.sock.recv(RECEIVE)
            except (ssl.SSLWantReadError, BlockingIOError):
                wait_write = False
            except ssl.SSLWantWriteError:
                wait_write = True
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            try:
                await ready(fd, read=not wait_write, write=wait_write, within=self.read_timeout)
            except Stalled:
                raise Stalled(f"no bytes of the answer arrived for {self.read_timeout:g} s") from None

    async def _answer(self) -> Response:
        status, headers, body, cap = 0, {}, bytearray(), 0
        while True:
            event = self.http.next_event()
            if event is h11.NEED_DATA:
                data = await self.receive()
                if not data and not self.answered:
                    raise Closed("the server closed the connection", answered=False)
                self.answered = self.answered or bool(data)
                self.http.receive_data(data)
            elif isinstance(event, h11.Response):
                status, cap = event.status_code, cap_for(event.status_code)
                self.reason = event.reason.decode("latin-1")
                # as the server spelled them, as the aiohttp path returns them
                headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers.raw_items()}
                _check_announced(event.headers, cap)
            elif isinstance(event, h11.Data):
                if len(body) + len(event.data) > cap:
                    raise TooLarge(cap, None)
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.idle_since = time.monotonic()
                return Response(status, headers, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                raise Closed("the server closed the connection", answered=self.answered)


class _BodySender:
    """One attempt at a body written by sender threads: where it is, and the progress the loop has collected.

    ``run`` goes on in a sender thread from where the last one stopped; ``written`` is only changed there,
    ``reported`` only on the loop (``flush``), so the two need no lock.
    """

    def __init__(
        self, connection: Connection, body: ThreadBody, scratch: memoryview, call: ProgressCall | None
    ) -> None:
        self.connection = connection
        self.body = body
        self.scratch = scratch
        self.call = call
        self.position = 0  # bytes of the body read so far
        self.written = 0  # bytes of the body written so far (the pieces whose output is all out)
        self.reported = 0
        self.stopped = False
        self.closed = False
        self._out: list[memoryview] = []  # what h11 made of the current piece, not yet written
        self._piece = 0

    def run(self) -> bool:
        """In a sender thread: write the rest of the body; True when the socket turned readable first."""
        connection, body = self.connection, self.body
        while not self.stopped:
            if not self._out:
                if self.position >= body.length:
                    return False
                view = body.piece(self.position, self.scratch)
                self.position += len(view)
                self._piece = len(view)
                data = h11.Data(data=view)  # type: ignore[arg-type]
                self._out = [memoryview(out) for out in connection.http.send_with_data_passthrough(data) or ()]
                continue
            sent, readable = connection._send_some(self._out[0])
            if sent == len(self._out[0]):
                del self._out[0]
                if not self._out:
                    self.written += self._piece
            else:
                self._out[0] = self._out[0][sent:]
            if readable:
                return True
        return False

    def stop(self) -> None:
        """From the loop: the thread writes nothing more once its current piece is out."""
        self.stopped = True

    def flush(self) -> None:
        """On the loop: report what was written since the last report."""
        written = self.written
        if not self.closed and written > self.reported:
            self.body.advance(written - self.reported, self.call)
            self.reported = written

    def close(self) -> None:
        """On the loop, once no thread runs: the last report; later flushes find nothing to say."""
        self.flush()
        self.closed = True


PROGRESS_EVERY = 0.05
"""Seconds between two collections of what the sender threads writing whole parts have written: the progress, and
the bytes the self-tuning judges in windows of 0.1 s. One timer per event loop for every body in flight: each
thread woke the loop once per MiB before, a thousand times a second per GiB/s; through an efficient TLS
terminator those wake-ups were half the loop's CPU (2 x 1 GiB: 0.13-0.19 CPU s on the loop's thread, now
0.06-0.08)."""


class _Progress:
    """The bodies sender threads are writing for one event loop; while there are any, a timer reports every
    ``PROGRESS_EVERY`` seconds what each has written since (``_BodySender.flush``). Only used on its loop."""

    _LOCAL = threading.local()  # each loop runs in a thread of its own: the one of the loop running there

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.senders: set[_BodySender] = set()
        self.timer: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Progress:
        progress: _Progress | None = getattr(cls._LOCAL, "progress", None)
        if progress is None or progress.loop is not loop:
            progress = cls._LOCAL.progress = cls(loop)
        return progress

    def add(self, sender: _BodySender) -> None:
        self.senders.add(sender)
        if self.timer is None:
            self.timer = self.loop.call_later(PROGRESS_EVERY, self._collect)

    def discard(self, sender: _BodySender) -> None:
        self.senders.discard(sender)
        if not self.senders and self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _collect(self) -> None:
        for sender in list(self.senders):
            sender.flush()
        self.timer = self.loop.call_later(PROGRESS_EVERY, self._collect) if self.senders else None


PART_SENDERS = 64
"""Whole parts written at once by threads of their own; a TLS body beyond that goes slice by slice through the
shared sender threads, so no request waits, head sent, for a thread to start its body."""
_PART_SENDERS = threading.BoundedSemaphore(PART_SENDERS)
_SENDERS: dict[bool, concurrent.futures.ThreadPoolExecutor] = {}
_SENDERS_LOCK = threading.Lock()


def _senders(*, whole: bool = False) -> concurrent.futures.ThreadPoolExecutor:
    """The process's threads that write TLS bodies, made on first use: those that write whole parts (one each, as
    many as ``PART_SENDERS``), or those shared by slices."""
    with _SENDERS_LOCK:
        if whole not in _SENDERS:
            name = "async-uploader-send-part" if whole else "async-uploader-send"
            size = PART_SENDERS if whole else 64
            _SENDERS[whole] = concurrent.futures.ThreadPoolExecutor(max_workers=size, thread_name_prefix=name)
        return _SENDERS[whole]


def _check_announced(headers: Iterable[tuple[bytes, bytes]], cap: int) -> None:
    """TooLarge when the Content-Length announced is above ``cap`` (h11 has checked it is a number)."""
    for name, value in headers:
        if name == b"content-length" and int(value) > cap:
            raise TooLarge(cap, int(value))


async def open_tcp(host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket to the first address of ``host`` that accepts."""
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


async def handshake(sock: socket.socket, context: ssl.SSLContext, host: str) -> ssl.SSLSocket:
    """``sock`` wrapped in TLS for ``host``, handshake done (the caller bounds how long it may take)."""
    secure = context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
    fd = secure.fileno()
    try:
        while True:
            try:
                secure.do_handshake()
                return secure
            except ssl.SSLWantReadError:
                await ready(fd, read=True, write=False, within=float("inf"))
            except ssl.SSLWantWriteError:
                await ready(fd, read=False, write=True, within=float("inf"))
    except BaseException:
        secure.close()  # wrap_socket took the descriptor: closing ``sock`` would not release it
        raise


def reason(exc: BaseException) -> str:
    """What happened, in the words the aiohttp path uses for the same failure."""
    if isinstance(exc, Closed | Stalled):
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
