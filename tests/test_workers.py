"""--workers: part bodies sent from event loops in threads of their own, against the local store over HTTP and
TLS (signatures verified); cancellation that waits for the worker to let go of the body."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from async_uploader import FileType, ReadSet, RetryConfig, ServiceConfig, Source, UploadConfig, Uploader
from async_uploader.edge.messages import ProgressCall
from async_uploader.edge.transport import HttpTransport
from async_uploader.edge.workers import WorkerTransport
from async_uploader.emulator import LocalStore, StoreOptions
from tests.helpers import fast_config, gzip_like, upload_argv

STORE_ID = "1234567890"
KIB = 1024
pytestmark = pytest.mark.usefixtures("test_credentials")


def read_set(paths: list[Path]) -> ReadSet:
    return ReadSet(paths[0], FileType.FASTQ, "subject-1", "sample-1", "workers", source2=paths[1])


class Recording(WorkerTransport):
    """Notes the thread each part body is read on."""

    def __init__(self, workers: int) -> None:
        super().__init__(HttpTransport(), [HttpTransport() for _ in range(workers - 1)])
        self.threads: set[str] = set()

    async def send(self, method: str, url: str, headers: Any, body: Any) -> Any:
        if hasattr(body, "views"):
            views = body.views
            threads = self.threads

            async def noting(scratch: memoryview, call: ProgressCall | None = None) -> AsyncGenerator[memoryview]:
                threads.add(threading.current_thread().name)
                async for view in views(scratch, call):
                    yield view

            body.views = noting
        return await super().send(method, url, headers, body)


@pytest.mark.parametrize("workers", [2, 3])
async def test_a_read_set_sent_from_several_loops_is_the_users_bytes(tmp_path: Path, workers: int) -> None:
    paths = [gzip_like(tmp_path / f"r{n}.fq", 40 * 64 * KIB + n) for n in (1, 2)]
    transport = Recording(workers)
    retry = RetryConfig(max_attempts=4, base_delay=0.005, max_delay=0.05)
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store")) as store:
        service = ServiceConfig(endpoint_url=store.url, region="us-east-1", connect_timeout=5, read_timeout=30)
        async with Uploader(fast_config(64 * KIB, retry=retry), service=service, transport=transport) as up:
            result = await up.upload(read_set(paths), store_id=STORE_ID, checkpoint=False)
            for source, path in zip((Source.SOURCE1, Source.SOURCE2), paths, strict=True):
                parts = [
                    await up.client.download_part(STORE_ID, result.read_set_id, source, n)
                    for n in range(1, result.parts[source] + 1)
                ]
                assert b"".join(parts) == path.read_bytes()
            assert result.bytes == {Source.SOURCE1: paths[0].stat().st_size, Source.SOURCE2: paths[1].stat().st_size}
    workers_used = {name for name in transport.threads if name.startswith("async-uploader-worker-")}
    assert len(workers_used) == workers - 1 and threading.main_thread().name in transport.threads
    assert not [t for t in threading.enumerate() if t.name.startswith("async-uploader-worker-")]  # all joined


async def test_the_cli_uploads_with_workers_over_tls(tls_store: Any, tmp_path: Path, run_cli: Any) -> None:
    front, ca_file, store = tls_store
    paths = [gzip_like(tmp_path / f"r{n}.fq.gz", 600 * KIB + n) for n in (1, 2)]
    extra = ("--ca-bundle", str(ca_file), "--part-size", "64KiB", "--workers", "2", "--quiet")
    run = await run_cli(*upload_argv(front.url, *paths, name="workers", extra=extra), limit=60)
    assert run.returncode == 0, run.stderr
    parts = [r for r in store.requests if r["operation"] == "UploadReadSetPart"]
    assert len(parts) == 20
    bad = await run_cli("upload", str(paths[0]), "--store-id", STORE_ID, "--workers", "0", limit=30)
    assert bad.returncode == 2 and "--workers" in bad.stderr and "Traceback" not in bad.stderr


async def test_cancelling_waits_until_the_worker_has_let_go_of_the_body() -> None:
    headers_read = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        headers_read.set()
        await asyncio.sleep(30)

    released: list[str] = []

    class Slow:
        length = 64 * 1024 * 1024

        async def slices(self) -> AsyncIterator[bytes]:
            yield bytes(self.length)

        async def views(self, scratch: memoryview, call: ProgressCall | None = None) -> AsyncGenerator[memoryview]:
            try:
                while True:
                    yield scratch
            finally:
                await asyncio.sleep(0.2)  # the worker takes its time to let go
                released.append(threading.current_thread().name)

    server = await asyncio.start_server(stalls, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = WorkerTransport.make(2, HttpTransport)
    try:
        first = asyncio.create_task(transport.send("PUT", f"http://127.0.0.1:{port}/a", {}, Slow()))
        await asyncio.wait_for(headers_read.wait(), 10)
        second = asyncio.create_task(transport.send("PUT", f"http://127.0.0.1:{port}/b", {}, Slow()))
        await asyncio.sleep(0.3)
        for task in (first, second):
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert sorted(released) == sorted([threading.main_thread().name, "async-uploader-worker-1"])
    finally:
        await transport.aclose()
        server.close()
        for writer in writers:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        with contextlib.suppress(Exception):
            await server.wait_closed()


def test_workers_are_bounded() -> None:
    with pytest.raises(Exception, match="workers"):
        UploadConfig(workers=0)
