"""transport.py against a real aiohttp server on 127.0.0.1 (port 0), over plain HTTP and TLS, and the mock transport.

Every case runs twice (the ``path`` fixture): through aiohttp (``direct_from=None``) and over the sockets of
``edge.http11`` (``direct_from=0``), part bodies and control requests (``bytes`` bodies) alike: both must frame,
fail and time out alike."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import socket
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web

from async_uploader.core import errors
from async_uploader.edge.messages import OPERATION, ProgressCall, ScratchBody
from async_uploader.edge.transport import (
    BodySource,
    HttpTransport,
    MockTransport,
    Response,
    SentRequest,
    collect_body,
)
from async_uploader.edge.workers import WorkerTransport
from tests.conftest import silent_port

MIB = 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def serve(handler: Handler, **server_options: Any) -> AsyncIterator[str]:
    app = web.Application(client_max_size=64 * MIB)
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, **server_options)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def raw_server(on_connect: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> Any:
    writers: list[asyncio.StreamWriter] = []

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await on_connect(reader, writer)

    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for writer in writers:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        await server.wait_closed()


class SliceBody:
    """A BodySource of ``data`` in slices of ``size`` (memoryviews), counting how often it was started."""

    def __init__(self, data: bytes, size: int = MIB, length: int | None = None) -> None:
        self.data = data
        self.size = size
        self.length = len(data) if length is None else length
        self.starts = 0

    async def slices(self) -> AsyncIterator[bytes | memoryview]:
        self.starts += 1
        view = memoryview(self.data)
        for start in range(0, len(view), self.size):
            yield view[start : start + self.size]

    async def views(self, scratch: memoryview, call: ProgressCall | None = None) -> AsyncGenerator[memoryview, None]:
        async for piece in self.slices():  # through the scratch buffer, as a file's part is read
            for start in range(0, len(piece), len(scratch)):
                chunk = piece[start : start + len(scratch)]
                scratch[: len(chunk)] = chunk
                yield scratch[: len(chunk)]


Make = Callable[..., HttpTransport]


@pytest.fixture(params=["aiohttp", "direct"])
def path(request: pytest.FixtureRequest) -> Make:
    """An HttpTransport factory sending part bodies through aiohttp, or over edge.http11's sockets."""
    direct_from = None if request.param == "aiohttp" else 0
    return functools.partial(HttpTransport, direct_from=direct_from)


def test_slice_body_is_a_scratch_body() -> None:
    assert isinstance(SliceBody(b"x"), BodySource) and isinstance(SliceBody(b"x"), ScratchBody)


async def test_body_source_sent_with_content_length_not_chunked(path: Make) -> None:
    seen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.Response:
        seen["headers"] = dict(request.headers)
        seen["body"] = await request.read()
        seen["raw_path"] = request.raw_path
        return web.json_response({"checksum": "ok"})

    data = bytes(range(256)) * (3 * 4096 + 7)  # about 3 MiB, not a multiple of the slice size
    body = SliceBody(data)
    async with serve(handler) as base, path(limit=4) as transport:
        url = f"{base}/sequencestore/1/upload/2/part?partSource=SOURCE1&partNumber=3"
        response = await transport.send("PUT", url, {"Authorization": "x", "X-Amz-Date": "y"}, body)
        assert response.status == 200 and response.body == b'{"checksum": "ok"}'
        # A second attempt starts the body afresh on a kept-alive connection.
        response = await transport.send("PUT", url, {}, body)
        assert response.status == 200
    assert body.starts == 2
    assert seen["headers"]["Content-Length"] == str(len(data))
    assert "Transfer-Encoding" not in seen["headers"]
    assert seen["body"] == data
    assert seen["raw_path"] == "/sequencestore/1/upload/2/part?partSource=SOURCE1&partNumber=3"


async def test_encoded_url_and_headers_arrive_unchanged(path: Make) -> None:
    seen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.Response:
        seen["raw_path"] = request.raw_path
        seen["headers"] = dict(request.headers)
        seen["body"] = await request.read()
        seen["method"] = request.method
        return web.Response(status=200, body=b"{}", headers={"x-amzn-RequestId": "r1"})

    target = "/sequencestore/1/uploads?maxResults=5&nextToken=a%2Fb%2Bc%3Dd%20e%26f"
    async with serve(handler) as base, path() as transport:
        response = await transport.send(
            "POST", base + target, {"Content-Type": "application/json", "X-Amz-Date": "20240101T000000Z"}, b'{"a":1}'
        )
        assert response.headers["x-amzn-RequestId"] == "r1"
        assert seen["raw_path"] == target
        assert seen["headers"]["Content-Type"] == "application/json"
        assert seen["headers"]["X-Amz-Date"] == "20240101T000000Z"
        assert seen["headers"]["Host"] == base.removeprefix("http://")
        assert seen["headers"]["Content-Length"] == "7" and seen["headers"]["User-Agent"] == "async-uploader"
        assert seen["body"] == b'{"a":1}'

        response = await transport.send("DELETE", base + "/x/abort", {}, b"")
        assert seen["method"] == "DELETE" and seen["body"] == b""
        assert "Transfer-Encoding" not in seen["headers"] and seen["headers"]["Content-Length"] == "0"

        response = await transport.send("GET", base + "/x", {}, b"")  # an empty GET announces no body at all
        assert seen["method"] == "GET" and "Content-Length" not in seen["headers"]
        assert "Transfer-Encoding" not in seen["headers"]


async def test_bytes_bodies_of_every_size_arrive_whole_over_http_and_tls(path: Make, tmp_path: Path) -> None:
    """Control requests are bytes: small ones (head and body in one write), and large ones in pieces."""
    received: list[bytes] = []

    async def handler(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(status=200, body=received[-1][:100])

    sizes = (1, 64 * 1024, 64 * 1024 + 1, 3 * MIB + 5)
    bodies = [bytes(range(256)) * (size // 256) + b"e" * (size % 256) for size in sizes]
    for scheme in ("http", "https"):
        async with serve_over(scheme, handler, tmp_path) as (base, options), path(**options) as transport:
            for body in bodies:
                response = await asyncio.wait_for(transport.send("POST", base + "/p", {}, body), 30)
                assert response.status == 200 and response.body == body[:100]
    assert received == bodies * 2


async def test_answer_headers_are_found_whatever_their_case(path: Make) -> None:
    """The direct path keeps the server's spelling of each header name (aiohttp's gave its own): the readers of
    an answer's headers look them up without regard to case, so an error and the server's clock read alike."""
    from async_uploader.core.clock import server_offset  # noqa: PLC0415
    from async_uploader.core.protocol import error_from_response  # noqa: PLC0415

    answer = (
        b"HTTP/1.1 400 Bad Request\r\nx-amzn-errortype: ValidationException:http://internal/\r\n"
        b"DATE: Tue, 01 Dec 2026 10:00:00 GMT\r\ncontent-type: application/json\r\ncontent-length: 17\r\n\r\n"
        b'{"message":"bad"}'
    )

    async def answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        writer.write(answer)
        await writer.drain()

    async with raw_server(answers) as base, path() as transport:
        response = await transport.send("POST", base + "/x", {}, b"{}")
    error = error_from_response("CreateMultipartReadSetUpload", response.status, response.headers, response.body)
    assert (error.code, error.message) == ("ValidationException", "bad")
    offset = server_offset(response.headers, 0.0)
    assert offset is not None and offset > 1.7e9


async def test_slices_are_written_as_they_are_read(path: Make) -> None:
    """The second slice is only produced after the server has received the first: nothing is buffered whole."""
    first_arrived = asyncio.Event()
    received = bytearray()

    async def handler(request: web.Request) -> web.Response:
        while chunk := await request.content.read(64 * 1024):
            received.extend(chunk)
            if len(received) >= MIB:
                first_arrived.set()
        return web.json_response({"checksum": "ok"})

    class WaitingBody:
        length = 2 * MIB

        async def slices(self) -> AsyncIterator[bytes | memoryview]:
            yield memoryview(b"a" * MIB)
            await first_arrived.wait()
            yield memoryview(b"b" * MIB)

        async def views(self, scratch: memoryview, call: ProgressCall | None = None) -> AsyncGenerator[memoryview]:
            async for piece in self.slices():
                yield memoryview(piece)

    async with serve(handler) as base, path() as transport:
        response = await asyncio.wait_for(transport.send("PUT", base + "/p", {}, WaitingBody()), 30)
    assert response.status == 200
    assert bytes(received) == b"a" * MIB + b"b" * MIB


async def test_error_status_is_returned_not_raised(path: Make) -> None:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(
            {"message": "slow down"}, status=429, headers={"x-amzn-ErrorType": "ThrottlingException"}
        )

    async with serve(handler) as base, path() as transport:
        response = await transport.send("PUT", base + "/p", {}, SliceBody(b"x" * 100))
    assert response.status == 429
    assert response.headers["x-amzn-ErrorType"] == "ThrottlingException"


async def test_early_answer_while_body_is_sent(path: Make) -> None:
    """The server refuses without reading a large body: the client sees the 403, or a TransportError."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(
            {"message": "bad signature"}, status=403, headers={"x-amzn-ErrorType": "AccessDeniedException"}
        )

    async with serve(handler, lingering_time=0) as base, path() as transport:
        try:
            response = await asyncio.wait_for(transport.send("PUT", base + "/p", {}, SliceBody(b"z" * 16 * MIB)), 60)
        except errors.TransportError as exc:
            assert "127.0.0.1" in str(exc)
        else:
            assert response.status == 403


async def test_both_paths_send_the_same_headers_as_botocore_would(path: Make) -> None:
    # What the service sees must not depend on the path: only the headers asked for, Host, User-Agent and
    # Content-Length. No Content-Type on a part body (botocore sets none on a streaming payload), and no Accept
    # or Accept-Encoding (neither path asks the server to compress its answer).
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append({name.lower(): value for name, value in request.headers.items()})
        await request.read()
        return web.json_response({})

    asked = {"X-Amz-Date": "20261206T000000Z", "Authorization": "x"}
    json_type = {"Content-Type": "application/json"}
    async with serve(handler) as base, path() as transport:
        await transport.send("GET", base + "/x", asked, b"")
        await transport.send("POST", base + "/x", {**asked, **json_type}, b"{}")
        await transport.send("PUT", base + "/x", asked, SliceBody(b"x" * 100))
    common = {"host", "user-agent", "x-amz-date", "authorization"}
    assert [set(headers) for headers in seen] == [
        common,
        common | {"content-type", "content-length"},
        common | {"content-length"},
    ]
    assert seen[1]["content-type"] == "application/json" and seen[2]["content-length"] == "100"


async def test_connection_refused_is_transport_error(path: Make) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with path(connect_timeout=5) as transport:
        for body in (b"", SliceBody(b"x" * 100)):
            with pytest.raises(errors.TransportError, match=f"127.0.0.1:{port}: cannot connect") as caught:
                await transport.send("PUT", f"http://127.0.0.1:{port}/x", {}, body)
            assert caught.value.retryable
            assert caught.value.__cause__ is not None


async def test_connect_that_never_completes_ends_at_the_connect_timeout(path: Make) -> None:
    # A firewall that drops packets answers nothing: the connect must end at connect_timeout, as a transient
    # TransportError, for a control request and a part body, over HTTP and HTTPS (TLS never starts).
    with silent_port() as port:
        async with path(connect_timeout=0.5) as transport:
            for scheme, body in (("http", b""), ("http", SliceBody(b"x" * 100)), ("https", SliceBody(b"x" * 100))):
                with anyio.fail_after(60):  # a connect left unbounded fails here instead of hanging the suite
                    with pytest.raises(errors.TransportError, match=r"no connection within 0\.5 s") as caught:
                        await transport.send("PUT", f"{scheme}://127.0.0.1:{port}/x", {}, body)
                assert caught.value.retryable


async def test_server_disconnect_is_transport_error(path: Make) -> None:
    async def slam(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    # connect_timeout bounds the check that a server closing before it answered speaks TLS (it does not)
    async with raw_server(slam) as base, path(connect_timeout=0.5) as transport:
        with pytest.raises(errors.TransportError, match=r"127\.0\.0\.1"):
            await transport.send("GET", base + "/x", {}, b"")
        with pytest.raises(errors.TransportError, match=r"PUT 127\.0\.0\.1:\d+: "):
            await transport.send("PUT", base + "/x", {}, SliceBody(b"x" * 100))


async def test_read_timeout_is_transport_error(path: Make) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read()  # never answers; returns when the client gives up
        writer.close()

    async with raw_server(silent) as base, path(read_timeout=0.2) as transport:
        with pytest.raises(errors.TransportError, match=r"no bytes of the answer arrived for 0\.2 s"):
            await transport.send("GET", base + "/x", {}, b"")
        with pytest.raises(errors.TransportError, match=r"no bytes of the answer arrived for 0\.2 s"):
            await transport.send("PUT", base + "/x", {}, b"abc")
        with pytest.raises(errors.TransportError, match=r"no bytes of the answer arrived for 0\.2 s"):
            await transport.send("PUT", base + "/x", {}, SliceBody(b"x" * 100))


async def test_a_body_the_peer_stops_reading_fails_at_the_progress_deadline(path: Make) -> None:
    """The read timeout is a progress deadline on the body too: a peer that takes the headers and then reads
    nothing stalls the upload once the socket buffers are full, and the attempt fails, not hangs."""
    headers_read = asyncio.Event()

    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        headers_read.set()
        await asyncio.sleep(30)  # reads no byte of the body

    started = asyncio.get_running_loop().time()
    async with raw_server(stalls) as base, path(read_timeout=0.3) as transport:
        for body in (SliceBody(bytes(64 * MIB), size=MIB), bytes(64 * MIB)):
            headers_read.clear()
            with pytest.raises(errors.TransportError, match=r"no bytes of the body were accepted for 0\.3 s"):
                await asyncio.wait_for(transport.send("PUT", base + "/x", {}, body), 20)
            assert headers_read.is_set()
    assert asyncio.get_running_loop().time() - started < 20


async def test_cancellation_propagates(path: Make) -> None:
    connected = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        with contextlib.suppress(Exception):
            await reader.read()
        writer.close()

    async with raw_server(silent) as base, path() as transport:
        for body in (SliceBody(b"q" * 1000), b"{}"):
            connected.clear()
            task = asyncio.create_task(transport.send("PUT", base + "/x", {}, body))
            await asyncio.wait_for(connected.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


async def test_body_shorter_than_announced_is_transport_error(path: Make) -> None:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({})

    async with serve(handler) as base, path() as transport:
        with pytest.raises(errors.TransportError, match="body not sent"):
            await asyncio.wait_for(transport.send("PUT", base + "/p", {}, SliceBody(b"x" * 10, length=20)), 30)
        with pytest.raises(errors.TransportError, match="body not sent"):
            await asyncio.wait_for(transport.send("PUT", base + "/p", {}, SliceBody(b"x" * 10, length=5)), 30)


async def test_our_errors_raised_while_reading_the_body_pass_through(path: Make) -> None:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({})

    class Failing:
        length = 10

        async def slices(self) -> AsyncIterator[bytes | memoryview]:
            yield b"12345"
            raise errors.SourceError("source changed while read")

        async def views(self, scratch: memoryview, call: ProgressCall | None = None) -> AsyncGenerator[memoryview]:
            async for piece in self.slices():
                yield memoryview(piece)

    async with serve(handler) as base, path() as transport:
        with pytest.raises(errors.SourceError, match="changed"):
            await asyncio.wait_for(transport.send("PUT", base + "/p", {}, Failing()), 30)


async def test_closed_transport_refuses() -> None:
    transport = HttpTransport()
    await transport.aclose()
    with pytest.raises(RuntimeError):
        await transport.send("GET", "http://127.0.0.1:1/", {}, b"")


async def test_mock_transport_records_and_answers() -> None:
    async def handler(request: SentRequest) -> Response:
        await asyncio.sleep(0)
        return Response(201, {"a": "b"}, request.body[::-1])

    mock = MockTransport(handler)
    response = await mock.send("PUT", "http://h/p?x=%2F", {"X-Y": "z"}, SliceBody(b"abcdef", size=4))
    assert response == Response(201, {"a": "b"}, b"fedcba")
    sent = mock.requests[0]
    assert (sent.method, sent.url, sent.body) == ("PUT", "http://h/p?x=%2F", b"abcdef")
    assert sent.header("x-y") == "z" and sent.header("missing") is None
    assert sent.url_parts.raw_query_string == "x=%2F"
    plain = MockTransport(lambda r: Response(200, {}, b"ok"))
    assert (await plain.send("GET", "http://h/", {}, b"")).body == b"ok"
    await plain.aclose()
    assert plain.closed
    assert await collect_body(memoryview(b"xy")) == b"xy"


@contextlib.asynccontextmanager
async def serve_tls(handler: Handler, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """(https://localhost:PORT, the PEM of a fresh CA that signed its certificate)."""
    import trustme  # noqa: PLC0415 (only the TLS cases need it)

    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    app = web.Application(client_max_size=64 * MIB)
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://localhost:{port}", ca_file
    finally:
        await runner.cleanup()


async def test_tls_bodies_arrive_whole_and_an_unknown_ca_is_refused(path: Make, tmp_path: Path) -> None:
    received: list[bytes] = []

    async def handler(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.json_response({"checksum": "ok"})

    data = bytes(range(256)) * (5 * 4096 + 3)  # 5 MiB and 768 bytes: slices of every size
    async with serve_tls(handler, tmp_path) as (base, ca_file):
        async with path(ca_bundle=str(ca_file)) as transport:
            for _ in range(3):  # kept alive between parts
                response = await transport.send("PUT", base + "/p", {}, SliceBody(data))
                assert response.status == 200
        assert received == [data] * 3
        async with path(connect_timeout=5) as transport:
            for method, body in (("PUT", SliceBody(data)), ("POST", b"{}")):
                with pytest.raises(
                    errors.CertificateError, match=rf"{method} localhost:\d+: .*AWS_CA_BUNDLE"
                ) as caught:
                    await transport.send(method, base + "/p", {}, body)
                assert not caught.value.retryable
    assert len(received) == 3


async def test_a_tls_handshake_never_answered_fails_at_the_connect_timeout(path: Make) -> None:
    """``connect_timeout`` bounds the TLS handshake too: a server that takes the connection and never answers."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read()
        writer.close()

    async with raw_server(silent) as base, path(connect_timeout=0.3) as transport:
        url = base.replace("http://", "https://") + "/x"
        for method, body in (("GET", b""), ("PUT", SliceBody(b"x" * 1000))):
            with pytest.raises(
                errors.TransportError, match=rf"^{method} 127\.0\.0\.1:\d+: no connection within 0\.3 s$"
            ):
                await asyncio.wait_for(transport.send(method, url, {}, body), 30)


class _Watched(HttpTransport):
    """An HttpTransport noting each time its TLS settings are asked for."""

    def __init__(self, **options: Any) -> None:
        self.contexts: list[ssl.SSLContext] = []
        super().__init__(**options)

    def tls(self) -> ssl.SSLContext:
        context = super().tls()
        self.contexts.append(context)
        return context


@pytest.mark.parametrize("direct_from", [None, 0], ids=["aiohttp", "direct"])
async def test_tls_settings_are_made_only_for_tls_and_once(direct_from: int | None, tmp_path: Path) -> None:
    """Loading the system's CAs costs 20 ms or more of CPU: a plain-HTTP endpoint (a local store) never does it;
    over TLS every connection shares the one context."""

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({})

    plain = _Watched(direct_from=direct_from)
    async with serve(handler) as base, plain:
        await plain.send("POST", base + "/create", {}, b"{}")
        await plain.send("PUT", base + "/p", {}, SliceBody(b"x" * 70_000))
    assert plain.contexts == []
    async with serve_tls(handler, tmp_path) as (base, ca_file):
        tls = _Watched(direct_from=direct_from, ca_bundle=str(ca_file))
        async with tls:
            await tls.send("POST", base + "/create", {}, b"{}")
            await tls.send("PUT", base + "/p", {}, SliceBody(b"x" * 70_000))
            await tls.send("PUT", base + "/p", {}, SliceBody(b"x" * 70_000))
    assert len(tls.contexts) >= 2 and len({id(context) for context in tls.contexts}) == 1


async def test_kept_alive_connections_are_reused_and_one_the_server_closed_is_replaced(path: Make) -> None:
    """Sequential parts share one connection; when the server drops it while idle, the next part opens another
    and succeeds, without the caller seeing an error."""
    connections = 0
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

    async def one_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        served = 0
        while served < 2:  # two requests, then the server closes the idle connection
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            await reader.readexactly(_length(head))
            writer.write(answer)
            await writer.drain()
            served += 1
        writer.close()

    async with raw_server(one_connection) as base, path() as transport:
        for _ in range(2):
            assert (await transport.send("PUT", base + "/p", {}, SliceBody(b"x" * 300_000))).status == 200
        await asyncio.sleep(0.2)  # the server has closed the kept-alive connection by now
        for _ in range(2):
            assert (await transport.send("PUT", base + "/p", {}, SliceBody(b"y" * 300_000))).status == 200
        await asyncio.sleep(0.2)
        for method, body in (("POST", b"{}"), ("GET", b"")):  # control requests alike
            assert (await transport.send(method, base + "/c", {}, body)).status == 200
    assert connections == 3


async def test_a_kept_alive_connection_closed_under_a_request_is_retried_only_when_idempotent(path: Make) -> None:
    """The server takes a second request on a connection and closes it unanswered: a GET or a PUT is sent again
    on a fresh connection, as aiohttp does; a POST fails (it may have been acted on), in the same words."""
    connections = 0
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

    async def answers_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        for served in range(2):
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            await reader.readexactly(_length(head))
            if served:
                break  # the second request is taken, and the connection closed without an answer
            writer.write(answer)
            await writer.drain()
        writer.close()

    async with raw_server(answers_once) as base, path() as transport:
        # each request after the first finds the connection of the one before, which the server closes under it
        for method, body in (("GET", b""), ("GET", b""), ("PUT", b"{}"), ("PUT", SliceBody(b"x" * 1000))):
            before = connections
            assert (await transport.send(method, base + "/b", {}, body)).status == 200
            assert connections == before + 1
        with pytest.raises(errors.TransportError, match=r"^POST 127\.0\.0\.1:\d+: the server closed the connection$"):
            await transport.send("POST", base + "/b", {}, b"{}")


def _length(head: bytes) -> int:
    """The Content-Length of a request's head, 0 when it announces none."""
    lines = head.split(b"\r\n")
    return next((int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length")), 0)


async def test_a_forwarding_proxys_407_is_a_refusal_not_retried(path: Make) -> None:
    """An http:// target through an http:// proxy that wants credentials: ProxyRefusedError naming the proxy."""
    refusal = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

    async def refuses(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(refusal)
        await writer.drain()
        writer.close()

    async with raw_server(refuses) as proxy_url:
        environ = {"HTTP_PROXY": proxy_url.replace("http://", "http://u:secret@")}
        async with path(environ=environ) as transport:
            for method, body in (("GET", b""), ("POST", b"{}"), ("PUT", SliceBody(b"x" * 1000))):
                with pytest.raises(errors.ProxyRefusedError) as caught:
                    await transport.send(method, "http://store.invalid:8080/x", {}, body)
                message = str(caught.value)
                assert message.startswith(f"{method} store.invalid:8080: the proxy http://u:***@127.0.0.1:"), message
                assert "answered 407 Proxy Authentication Required" in message and "secret" not in message
                assert not caught.value.retryable


async def test_progress_runs_through_the_call_given(path: Make) -> None:
    """send_with hands its call to a directly sent body (which runs its progress through it); aiohttp refuses one."""
    calls: list[int] = []

    class Reporting(SliceBody):
        async def views(
            self, scratch: memoryview, call: ProgressCall | None = None
        ) -> AsyncGenerator[memoryview, None]:
            assert call is not None
            async for piece in super().views(scratch, call):
                yield piece
                call(calls.append, len(piece))

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({})

    def run_now(callback: Callable[[int], None], sent: int) -> None:
        callback(sent)

    async with serve(handler) as base, path() as transport:
        body = Reporting(b"p" * (3 * MIB))
        if transport.direct_from is None:
            with pytest.raises(ValueError, match="only a body sent directly"):
                await transport.send_with("PUT", base + "/p", {}, body, run_now)
        else:
            assert (await transport.send_with("PUT", base + "/p", {}, body, run_now)).status == 200
            assert sum(calls) == 3 * MIB and len(calls) > 1


@contextlib.asynccontextmanager
async def serve_over(scheme: str, handler: Handler, tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(base URL, transport options) of ``handler`` served over plain HTTP or TLS."""
    if scheme == "http":
        async with serve(handler) as base:
            yield base, {}
    else:
        async with serve_tls(handler, tmp_path) as (base, ca_file):
            yield base, {"ca_bundle": str(ca_file)}


@contextlib.contextmanager
def answering(operation: str) -> Any:
    """Requests sent inside are ``operation``'s, as the client marks them."""
    token = OPERATION.set(operation)
    try:
        yield
    finally:
        OPERATION.reset(token)


async def endless(request: web.Request) -> web.StreamResponse:
    """200 and a body that never ends (chunked), written as fast as the client reads it."""
    await request.read()
    response = web.StreamResponse(status=200)
    await response.prepare(request)
    chunk = b"x" * 65536
    while True:
        await response.write(chunk)


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_an_answer_that_never_ends_fails_at_its_operations_cap(path: Make, scheme: str, tmp_path: Path) -> None:
    """A part's answer may hold 64 KiB: an endless one fails past that, the endpoint and the size named, not
    retried; the next request (a fresh connection) is answered."""
    calls: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(request.path)
        if request.path == "/endless":
            return await endless(request)
        await request.read()
        return web.json_response({"checksum": "ok"})

    async with serve_over(scheme, handler, tmp_path) as (base, options), path(**options) as transport:
        with answering("UploadReadSetPart"):
            for body in (SliceBody(b"x" * 100_000), b"{}"):
                with pytest.raises(errors.AnswerTooLargeError) as caught:
                    await asyncio.wait_for(transport.send("PUT", base + "/endless", {}, body), 30)
                message = str(caught.value)
                assert re.search(r"^PUT (127\.0\.0\.1|localhost):\d+: the answer to UploadReadSetPart ", message)
                assert "went on past 64 KiB" in message and "\n" not in message
                assert not caught.value.retryable
            response = await transport.send("PUT", base + "/p", {}, SliceBody(b"y" * 100_000))
            assert response.status == 200
    assert calls == ["/endless", "/endless", "/p"]


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_an_answer_announcing_more_than_its_cap_fails_before_it_is_read(
    path: Make, scheme: str, tmp_path: Path
) -> None:
    """Content-Length above the cap fails at once; an error's answer is capped at 64 KiB whatever the operation;
    an answer up to its cap arrives whole."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        if request.path == "/huge":
            response = web.StreamResponse(status=200, headers={"Content-Length": str(10 * 1024 * MIB)})
            await response.prepare(request)
            await response.write(b"x" * 1000)  # and no more: the client decides on the Content-Length alone
            return response
        if request.path == "/error":
            return web.Response(status=500, body=b"e" * (64 * 1024 + 1))
        return web.Response(status=200, body=b"p" * (64 * 1024))

    async with serve_over(scheme, handler, tmp_path) as (base, options), path(**options) as transport:
        with answering("UploadReadSetPart"):
            with pytest.raises(errors.AnswerTooLargeError, match=r": the answer to UploadReadSetPart announces 10737"):
                await asyncio.wait_for(transport.send("PUT", base + "/huge", {}, SliceBody(b"x" * 1000)), 10)
            response = await transport.send("PUT", base + "/fits", {}, SliceBody(b"x" * 1000))
            assert len(response.body) == 64 * 1024
        with answering("ListReadSets"):
            assert len((await transport.send("POST", base + "/fits", {}, b"{}")).body) == 64 * 1024
            with pytest.raises(errors.AnswerTooLargeError, match="the answer to ListReadSets announces 65537 bytes"):
                await transport.send("POST", base + "/error", {}, b"{}")
        with pytest.raises(errors.AnswerTooLargeError, match="the answer announces 65537 bytes"):  # no operation
            await transport.send("PUT", base + "/error", {}, SliceBody(b"x" * 1000))


@pytest.mark.parametrize("served", ["http", "https"])
async def test_an_endpoint_that_does_not_speak_the_urls_scheme_is_a_configuration_error(
    path: Make, served: str, tmp_path: Path
) -> None:
    """https:// to a plain server, http:// to a TLS one: ConfigError naming the scheme to use, on both paths."""

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"checksum": "ok"})

    async with serve_over(served, handler, tmp_path) as (base, options), path(**options) as transport:
        wrong = base.replace("http://", "https://") if served == "http" else base.replace("https://", "http://")
        hint = "answered in plain HTTP, not TLS: use http://" if served == "http" else "speaks TLS, not plain HTTP"
        for method, body in (("GET", b""), ("PUT", SliceBody(b"x" * 1000))):
            with pytest.raises(errors.ConfigError, match=rf"^{method} [a-z0-9.]+:\d+: the endpoint {hint}") as caught:
                await asyncio.wait_for(transport.send(method, wrong + "/p", {}, body), 30)
            assert not caught.value.retryable and "--endpoint-url" in str(caught.value)
        assert (await transport.send("PUT", base + "/p", {}, SliceBody(b"x" * 1000))).status == 200


async def test_the_cap_follows_a_part_into_a_worker_loop() -> None:
    """Parts sent side by side go to the caller's loop and a worker's: both read the answer up to the part's cap."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await endless(request)

    async with serve(handler) as base, WorkerTransport.make(2, HttpTransport) as transport:
        with answering("UploadReadSetPart"):
            sends = [transport.send("PUT", base + f"/p{n}", {}, SliceBody(b"x" * 1000)) for n in range(2)]
            outcomes = await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), 30)
        assert len(transport._workers) == 1  # the second part went to the worker's loop
    for outcome in outcomes:
        assert isinstance(outcome, errors.AnswerTooLargeError), outcome
        assert "the answer to UploadReadSetPart went on past 64 KiB" in str(outcome)
