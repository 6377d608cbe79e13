"""Part bodies over TLS read, hashed and written by one sender thread (``edge.http11.Connection.send_in_thread``).

Real part bodies (a file's, a stream's) go to a TLS server of aiohttp's on 127.0.0.1: the bytes arrive whole, the
digest and the progress are the attempt's, a refusal before the end is the answer, a server that stops reading
fails at the progress deadline, a part that cannot be read fails with the source's error, and cancelling ends
the send at once."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme
import xxhash
from aiohttp import web
from yarl import URL

from async_uploader.core import errors
from async_uploader.core.config import Source
from async_uploader.core.plan import Part
from async_uploader.edge import http11
from async_uploader.edge import pool as pool_module
from async_uploader.edge.messages import BytesBody, Response, ThreadBody
from async_uploader.edge.pool import DirectPool
from async_uploader.edge.sources import BufferPool, FileSource, PartItem, StreamSource
from async_uploader.edge.sources.body import PartBody
from async_uploader.edge.transport import HttpTransport

MIB = 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def serve_tls(
    handler: Handler, tmp_path: Path, *, tickets: int = 2, **server_options: Any
) -> AsyncIterator[tuple[str, str]]:
    """(https://localhost:PORT, the PEM of a fresh CA that signed its certificate); ``tickets``: the TLS 1.3
    session tickets the server sends after each handshake (records that make the client's socket readable)."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.num_tickets = tickets
    ca.issue_cert("localhost").configure_cert(context)
    app = web.Application(client_max_size=128 * MIB)
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, **server_options)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield f"https://localhost:{runner.addresses[0][1]}", str(ca_file)
    finally:
        await runner.cleanup()


def transport(ca_file: str, **options: Any) -> HttpTransport:
    return HttpTransport(direct_from=0, ca_bundle=ca_file, **options)


@pytest.fixture
def file_part(tmp_path: Path) -> Any:
    """(a FileSource over 11 MiB of random bytes, its bytes): closed after the test."""
    path = tmp_path / "r1.fq.gz"
    data = os.urandom(11 * MIB + 5)
    path.write_bytes(data)
    reader = FileSource(Source.SOURCE1, path, MIB)
    yield reader, data
    reader.close()


def threads_reading(body: PartBody) -> set[str]:
    """Wrap ``body.piece`` so that the names of the threads calling it are recorded."""
    names: set[str] = set()
    piece = body.piece

    def recording(position: int, scratch: memoryview) -> memoryview:
        names.add(threading.current_thread().name)
        return piece(position, scratch)

    body.piece = recording  # type: ignore[method-assign]
    return names


async def test_a_file_part_arrives_whole_read_by_a_sender_thread_with_its_digest_and_progress(
    tmp_path: Path, file_part: tuple[FileSource, bytes]
) -> None:
    reader, data = file_part
    received: list[bytes] = []

    async def handler(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.json_response({})

    part = Part(Source.SOURCE1, 2, 3 * MIB + 7, 7 * MIB + 3)  # slices of every size, at an odd offset
    expected = data[part.offset : part.offset + part.length]
    sent: list[int] = []
    body = reader.body(PartItem(part), sent.append)
    assert isinstance(body, ThreadBody) and body.threaded
    names = threads_reading(body)
    async with serve_tls(handler, tmp_path) as (base, ca_file), transport(ca_file) as client:
        for _ in range(2):  # sent again (kept alive): the progress of the first attempt is taken back
            assert (await client.send("PUT", base + "/p", {}, body)).status == 200
    assert received == [expected, expected]
    assert body.digest == xxhash.xxh3_64(expected).hexdigest()
    assert sum(sent) == len(expected)
    assert names and all(name.startswith("async-uploader-send-part") for name in names)


async def test_the_progress_of_a_part_is_collected_while_its_thread_is_still_writing(tmp_path: Path) -> None:
    """The server reads nothing of the body until the client has reported some of it: far more than the socket
    buffers hold, the part cannot be all written before then, so only the loop's periodic collection of what the
    thread has written (``http11._Progress``) lets it arrive; the rest is reported when the body is out. The
    server sends no session ticket, whose arrival would hand the loop the progress too (the socket turns
    readable, the thread comes back)."""
    path = tmp_path / "r1.fq.gz"
    data = os.urandom(48 * MIB)
    path.write_bytes(data)
    sent: list[int] = []
    received: list[bytes] = []

    async def handler(request: web.Request) -> web.Response:
        with anyio.fail_after(30):  # no progress before the end would leave the body stuck: fail, not hang
            while not any(n > 0 for n in sent):
                await asyncio.sleep(0.01)
        received.append(await request.read())
        return web.json_response({})

    reader = FileSource(Source.SOURCE1, path, MIB)
    try:
        body = reader.body(PartItem(Part(Source.SOURCE1, 1, 0, len(data))), sent.append)
        async with serve_tls(handler, tmp_path, tickets=0) as (base, ca_file), transport(ca_file) as client:
            assert (await client.send("PUT", base + "/p", {}, body)).status == 200
    finally:
        reader.close()
    assert received == [data]
    progress = [n for n in sent if n > 0]
    assert sum(progress) == len(data)
    assert len(progress) >= 2 and progress[0] < len(data)  # reported while it went, then the rest at the end


async def test_beyond_the_whole_part_senders_a_part_goes_slice_by_slice(
    tmp_path: Path, file_part: tuple[FileSource, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every whole-part sender busy, a part does not wait for one: the loop reads it and shared threads write
    each slice; it arrives the same, digest and progress alike."""
    reader, data = file_part
    received: list[bytes] = []

    async def handler(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.json_response({})

    monkeypatch.setattr(http11, "_PART_SENDERS", threading.BoundedSemaphore(1))
    assert http11._PART_SENDERS.acquire(blocking=False)  # the one whole-part sender is busy
    part = Part(Source.SOURCE1, 1, 0, 3 * MIB + 1)
    sent: list[int] = []
    body = reader.body(PartItem(part), sent.append)
    names = threads_reading(body)
    async with serve_tls(handler, tmp_path) as (base, ca_file), transport(ca_file) as client:
        assert (await client.send("PUT", base + "/p", {}, body)).status == 200
    assert received == [data[: part.length]]
    assert body.digest == xxhash.xxh3_64(data[: part.length]).hexdigest()
    assert sum(sent) == part.length
    assert not names  # no sender thread read it


async def test_a_streamed_part_is_sent_from_the_memory_it_is_held_in(tmp_path: Path) -> None:
    data = os.urandom(5 * MIB + 11)
    received: list[bytes] = []

    async def handler(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.json_response({})

    pool = BufferPool(8 * MIB, 1)
    stream = StreamSource(Source.SOURCE2, io.BufferedReader(io.BytesIO(data)), 8 * MIB, pool)
    first = await stream.next_part()
    assert first is not None
    body = stream.body(PartItem(*first))
    async with serve_tls(handler, tmp_path) as (base, ca_file), transport(ca_file) as client:
        assert (await client.send("PUT", base + "/p", {}, body)).status == 200
    assert received == [data]
    assert body.digest == xxhash.xxh3_64(data).hexdigest()


async def test_a_refusal_before_the_end_of_the_body_is_the_answer(
    tmp_path: Path, file_part: tuple[FileSource, bytes]
) -> None:
    reader, _ = file_part

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"message": "no"}, status=403)

    body = reader.body(PartItem(Part(Source.SOURCE1, 1, 0, 11 * MIB + 5)))
    async with serve_tls(handler, tmp_path, lingering_time=0) as (base, ca_file), transport(ca_file) as client:
        try:
            response = await asyncio.wait_for(client.send("PUT", base + "/p", {}, body), 60)
        except errors.TransportError as exc:  # the server may reset the connection before its answer is read
            assert "localhost" in str(exc)
        else:
            assert response.status == 403


def stalling(headers_read: asyncio.Event, done: asyncio.Event) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A handler that reads a request's headers and no byte of its body, until ``done`` (or 30 s)."""

    async def stalls(request: web.Request) -> web.Response:
        headers_read.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 30)
        return web.json_response({})

    return stalls


def zeros(tmp_path: Path, size: int) -> tuple[bytes, FileSource]:
    """A file of ``size`` zero bytes, and its reader in 1 MiB slices."""
    data = bytes(size)
    path = tmp_path / "zeros"
    path.write_bytes(data)
    return data, FileSource(Source.SOURCE1, path, MIB)


async def test_a_server_that_stops_reading_fails_at_the_progress_deadline(tmp_path: Path) -> None:
    headers_read, done = asyncio.Event(), asyncio.Event()
    stalls = stalling(headers_read, done)
    data, reader = zeros(tmp_path, 64 * MIB)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        body = reader.body(PartItem(Part(Source.SOURCE1, 1, 0, len(data))))
        async with serve_tls(stalls, tmp_path) as (base, ca_file), transport(ca_file, read_timeout=0.3) as client:
            with pytest.raises(errors.TransportError, match=r"no bytes of the body were accepted for 0\.3 s"):
                await client.send("PUT", base + "/p", {}, body)
            done.set()
    finally:
        reader.close()
    assert headers_read.is_set()
    assert loop.time() - started < 20


async def test_a_part_that_cannot_be_read_fails_with_the_sources_error(
    tmp_path: Path, file_part: tuple[FileSource, bytes]
) -> None:
    reader, _ = file_part

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({})

    body = reader.body(PartItem(Part(Source.SOURCE1, 3, 10 * MIB, 4 * MIB)))  # past the end of the file
    async with serve_tls(handler, tmp_path) as (base, ca_file), transport(ca_file) as client:
        with pytest.raises(errors.SourceError, match="shrank"):
            await asyncio.wait_for(client.send("PUT", base + "/p", {}, body), 60)


async def test_cancelling_ends_a_send_blocked_in_its_thread_at_once(tmp_path: Path) -> None:
    headers_read, done = asyncio.Event(), asyncio.Event()
    stalls = stalling(headers_read, done)
    data, reader = zeros(tmp_path, 64 * MIB)
    sent: list[int] = []
    loop = asyncio.get_running_loop()
    try:
        body = reader.body(PartItem(Part(Source.SOURCE1, 1, 0, len(data))), sent.append)
        async with serve_tls(stalls, tmp_path) as (base, ca_file), transport(ca_file, read_timeout=60) as client:
            task = asyncio.create_task(client.send("PUT", base + "/p", {}, body))
            await asyncio.wait_for(headers_read.wait(), 10)
            await asyncio.sleep(0.2)  # the thread is blocked: the server reads nothing
            started = loop.time()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
            assert loop.time() - started < 5
            done.set()
    finally:
        reader.close()
    assert 0 <= sum(sent) < len(data)  # what was written before, reported once


async def test_at_most_sixteen_requests_at_once_hold_full_size_tls_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sixty-four requests in flight to a distant store held 64 MiB of slices: past sixteen, a TLS request takes
    the small buffer plain HTTP uses."""
    pool = DirectPool(ssl.create_default_context, connect_timeout=1, read_timeout=1, keepalive_timeout=1)
    made: list[int] = []

    def counted(size: int) -> Any:
        made.append(size)
        return bytearray(size)

    release = asyncio.Event()

    async def held(*args: object) -> Response:
        await release.wait()
        return Response(200, {}, b"")

    monkeypatch.setattr(pool_module, "aligned_buffer", counted)
    monkeypatch.setattr(pool, "_send", held)
    tls, plain = URL("https://store.invalid/part"), URL("http://store.invalid/part")
    sends = [pool.send("PUT", tls, {}, BytesBody(b"x"), None) for _ in range(20)]
    sends.append(pool.send("PUT", plain, {}, BytesBody(b"x"), None))
    tasks = [asyncio.ensure_future(send) for send in sends]
    while len(made) < len(tasks):
        await asyncio.sleep(0)
    assert sorted(made) == [pool_module.SCRATCH_SIZE] * 5 + [pool_module.TLS_SCRATCH_SIZE] * 16
    release.set()
    await asyncio.gather(*tasks)
    assert pool._full_slices == 0
    made.clear()
    await pool.send("PUT", tls, {}, BytesBody(b"x"), None)  # a spare full-size slice is used again
    assert made == []
