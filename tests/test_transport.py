"""transport.py against a real aiohttp server on 127.0.0.1 (port 0), and the mock transport."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from async_uploader.core import errors
from async_uploader.edge.transport import (
    AiohttpTransport,
    BodySource,
    MockTransport,
    Response,
    SentRequest,
    collect_body,
)

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


def test_slice_body_is_a_body_source() -> None:
    assert isinstance(SliceBody(b"x"), BodySource)


async def test_body_source_sent_with_content_length_not_chunked() -> None:
    seen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.Response:
        seen["headers"] = dict(request.headers)
        seen["body"] = await request.read()
        seen["raw_path"] = request.raw_path
        return web.json_response({"checksum": "ok"})

    data = bytes(range(256)) * (3 * 4096 + 7)  # about 3 MiB, not a multiple of the slice size
    body = SliceBody(data)
    async with serve(handler) as base, AiohttpTransport(limit=4) as transport:
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


async def test_encoded_url_and_headers_arrive_unchanged() -> None:
    seen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.Response:
        seen["raw_path"] = request.raw_path
        seen["headers"] = dict(request.headers)
        seen["body"] = await request.read()
        seen["method"] = request.method
        return web.Response(status=200, body=b"{}", headers={"x-amzn-RequestId": "r1"})

    path = "/sequencestore/1/uploads?maxResults=5&nextToken=a%2Fb%2Bc%3Dd%20e%26f"
    async with serve(handler) as base, AiohttpTransport() as transport:
        response = await transport.send(
            "POST", base + path, {"Content-Type": "application/json", "X-Amz-Date": "20240101T000000Z"}, b'{"a":1}'
        )
        assert response.headers["x-amzn-RequestId"] == "r1"
        assert seen["raw_path"] == path
        assert seen["headers"]["Content-Type"] == "application/json"
        assert seen["headers"]["X-Amz-Date"] == "20240101T000000Z"
        assert seen["headers"]["Host"] == base.removeprefix("http://")
        assert seen["body"] == b'{"a":1}'

        response = await transport.send("DELETE", base + "/x/abort", {}, b"")
        assert seen["method"] == "DELETE" and seen["body"] == b""
        assert "Transfer-Encoding" not in seen["headers"]


async def test_slices_are_written_as_they_are_read() -> None:
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

    async with serve(handler) as base, AiohttpTransport() as transport:
        response = await asyncio.wait_for(transport.send("PUT", base + "/p", {}, WaitingBody()), 30)
    assert response.status == 200
    assert bytes(received) == b"a" * MIB + b"b" * MIB


async def test_error_status_is_returned_not_raised() -> None:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(
            {"message": "slow down"}, status=429, headers={"x-amzn-ErrorType": "ThrottlingException"}
        )

    async with serve(handler) as base, AiohttpTransport() as transport:
        response = await transport.send("PUT", base + "/p", {}, SliceBody(b"x" * 100))
    assert response.status == 429
    assert response.headers["x-amzn-ErrorType"] == "ThrottlingException"


async def test_early_answer_while_body_is_sent() -> None:
    """The server refuses without reading a large body: the client sees the 403, or a TransportError."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(
            {"message": "bad signature"}, status=403, headers={"x-amzn-ErrorType": "AccessDeniedException"}
        )

    async with serve(handler, lingering_time=0) as base, AiohttpTransport() as transport:
        try:
            response = await asyncio.wait_for(transport.send("PUT", base + "/p", {}, SliceBody(b"z" * 16 * MIB)), 60)
        except errors.TransportError as exc:
            assert "127.0.0.1" in str(exc)
        else:
            assert response.status == 403


async def test_connection_refused_is_transport_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with AiohttpTransport(connect_timeout=5) as transport:
        with pytest.raises(errors.TransportError, match=f"127.0.0.1:{port}: cannot connect") as caught:
            await transport.send("GET", f"http://127.0.0.1:{port}/x", {}, b"")
    assert caught.value.retryable
    assert caught.value.__cause__ is not None


async def test_server_disconnect_is_transport_error() -> None:
    async def slam(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    async with raw_server(slam) as base, AiohttpTransport() as transport:
        with pytest.raises(errors.TransportError, match=r"127\.0\.0\.1"):
            await transport.send("GET", base + "/x", {}, b"")


async def test_read_timeout_is_transport_error() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.read()  # never answers; returns when the client gives up
        writer.close()

    async with raw_server(silent) as base, AiohttpTransport(read_timeout=0.2) as transport:
        with pytest.raises(errors.TransportError, match=r"no bytes of the answer arrived for 0\.2 s"):
            await transport.send("GET", base + "/x", {}, b"")
        with pytest.raises(errors.TransportError, match=r"no bytes of the answer arrived for 0\.2 s"):
            await transport.send("PUT", base + "/x", {}, b"abc")


async def test_a_body_the_peer_stops_reading_fails_at_the_progress_deadline() -> None:
    """The read timeout is a progress deadline on the body too: a peer that takes the headers and then reads
    nothing stalls the upload once the socket buffers are full, and the attempt fails, not hangs."""
    headers_read = asyncio.Event()

    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        headers_read.set()
        await asyncio.sleep(30)  # reads no byte of the body

    body = SliceBody(bytes(64 * MIB), size=MIB)
    started = asyncio.get_running_loop().time()
    async with raw_server(stalls) as base, AiohttpTransport(read_timeout=0.3) as transport:
        with pytest.raises(errors.TransportError, match=r"no bytes of the body were accepted for 0\.3 s"):
            await transport.send("PUT", base + "/x", {}, body)
    assert headers_read.is_set()
    assert asyncio.get_running_loop().time() - started < 10


async def test_cancellation_propagates() -> None:
    connected = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        with contextlib.suppress(Exception):
            await reader.read()
        writer.close()

    async with raw_server(silent) as base, AiohttpTransport() as transport:
        task = asyncio.create_task(transport.send("PUT", base + "/x", {}, SliceBody(b"q" * 1000)))
        await asyncio.wait_for(connected.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_body_shorter_than_announced_is_transport_error() -> None:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({})

    async with serve(handler) as base, AiohttpTransport() as transport:
        with pytest.raises(errors.TransportError, match="body not sent"):
            await asyncio.wait_for(transport.send("PUT", base + "/p", {}, SliceBody(b"x" * 10, length=20)), 30)
        with pytest.raises(errors.TransportError, match="more than"):
            await asyncio.wait_for(transport.send("PUT", base + "/p", {}, SliceBody(b"x" * 10, length=5)), 30)


async def test_our_errors_raised_while_reading_the_body_pass_through() -> None:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({})

    class Failing:
        length = 10

        async def slices(self) -> AsyncIterator[bytes | memoryview]:
            yield b"12345"
            raise errors.SourceError("source changed while read")

    async with serve(handler) as base, AiohttpTransport() as transport:
        with pytest.raises(errors.SourceError, match="changed"):
            await asyncio.wait_for(transport.send("PUT", base + "/p", {}, Failing()), 30)


async def test_closed_transport_refuses() -> None:
    transport = AiohttpTransport()
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
