"""Bytes in and out: a part's body streamed to disk (hashed, paced, maybe dropped), a stored file served in parts."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import xxhash
from aiohttp import web

from .faults import Pacer
from .wire import read_some

CHUNK = 4 * 1024 * 1024
# A write that blocks longer than this (dirty-page throttling on a slow disk) moves later writes to a thread.
SLOW_WRITE = 0.02


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Receiver:
    """Streams part bodies: page-cache writes inline, moved to a thread once the disk proves slow."""

    def __init__(self, body_timeout: float) -> None:
        self.body_timeout = body_timeout
        self.threaded_writes = False
        self.writer = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="store-write")

    def close(self) -> None:
        self.writer.shutdown(wait=True)

    async def receive(
        self,
        request: web.Request,
        tmp: Path | None,
        want_sha: bool,
        pacer: Pacer | None,
        drop_at: int | None,
        drop: Callable[[int], None],
    ) -> tuple[int, bytes, str]:
        """Hash the body and write it to ``tmp`` (unless discarding); ``drop(received)`` past ``drop_at`` bytes.

        Returns (bytes received, xxh3-128 digest, SHA-256 hex or "").
        """
        hasher = xxhash.xxh3_128()
        sha = hashlib.sha256() if want_sha else None
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600) if tmp is not None else -1
        # One write at a time per part, in a thread, overlapping the read of the next chunk so the loop keeps
        # serving other requests.
        writing: concurrent.futures.Future[None] | None = None
        received = 0
        try:
            while chunk := await read_some(request, self.body_timeout, CHUNK):
                received += len(chunk)
                if drop_at is not None and received >= drop_at:
                    drop(received)
                hasher.update(chunk)
                if sha is not None:
                    sha.update(chunk)
                if fd >= 0:
                    writing = await self._write(fd, chunk, writing)
                if pacer is not None:
                    await _pace(pacer, len(chunk))
            if writing is not None:
                await asyncio.wrap_future(writing)
        except BaseException:
            _remove(tmp)
            raise
        finally:
            _close_after(fd, writing)
        return received, hasher.digest(), sha.hexdigest() if sha is not None else ""

    async def _write(
        self, fd: int, chunk: bytes, writing: concurrent.futures.Future[None] | None
    ) -> concurrent.futures.Future[None] | None:
        """Write ``chunk`` once the previous write (``writing``) is done: inline while the disk keeps up, else in a
        thread. Returns the write still running, if any."""
        if writing is not None:
            await asyncio.wrap_future(writing)
        if self.threaded_writes:
            return self.writer.submit(write_all, fd, chunk)
        began = time.perf_counter()
        write_all(fd, chunk)
        self.threaded_writes = time.perf_counter() - began > SLOW_WRITE
        return None


async def _pace(pacer: Pacer, size: int) -> None:
    delay = pacer.delay_after(size)
    if delay > 0:
        await asyncio.sleep(delay)


def _remove(tmp: Path | None) -> None:
    if tmp is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _close_after(fd: int, writing: concurrent.futures.Future[None] | None) -> None:
    """Close ``fd`` (-1: none) now, or when the write still running on it ends."""
    if fd < 0:
        return
    if writing is not None and not writing.done():
        writing.add_done_callback(lambda _: os.close(fd))
    else:
        os.close(fd)


async def send_slice(request: web.Request, path: Path, offset: int, length: int) -> web.StreamResponse:
    """Serve ``length`` bytes of ``path`` from ``offset``: one part of a stored file, re-cut at its part size."""
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = length
    fd = await asyncio.to_thread(os.open, path, os.O_RDONLY)
    try:
        await response.prepare(request)
        end = offset + length
        while offset < end:
            chunk = await asyncio.to_thread(os.pread, fd, min(CHUNK, end - offset), offset)
            if not chunk:
                raise ConnectionResetError(f"{path} is shorter than its recorded length")
            await response.write(chunk)
            offset += len(chunk)
        await response.write_eof()
    finally:
        os.close(fd)
    return response
