"""Reading part bytes: seekable files by offset, and non-seekable streams through a bounded buffer pool.

A file part is read slice by slice (about 1 MiB each) as the connection takes them, so memory in flight is
concurrency × slice, whatever the part size. A slice the page cache holds is copied by the event loop itself
(RWF_NOWAIT never waits for the disk); anything else is read by a worker thread. A stream (stdin, a pipe) can
only be read once, so each part is read whole into a buffer borrowed from a pool whose size is the memory budget;
the buffer is kept until the store acknowledges the part, so a retry can resend it.

Every body computes an xxh3-64 digest of what it sent, for the checkpoint (skipped when the upload keeps none).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO, Protocol

import anyio
import xxhash

from ..core.checkpoint import SourceFingerprint
from ..core.config import Source
from ..core.errors import SourceError
from ..core.plan import Part

__all__ = [
    "BufferPool",
    "FileSource",
    "PartBody",
    "StreamSource",
    "check_source_path",
    "fingerprint_file",
    "fingerprint_source",
]

_SAMPLE = 64 * 1024


def fingerprint_file(path: str | os.PathLike[str], size: int) -> str:
    """A cheap content fingerprint: xxh3-64 of the size and the first, middle and last 64 KiB."""
    digest = xxhash.xxh3_64()
    digest.update(size.to_bytes(8, "little"))
    with open(path, "rb") as f:
        if size <= 3 * _SAMPLE:
            digest.update(f.read(size))
        else:
            for offset in (0, (size - _SAMPLE) // 2, size - _SAMPLE):
                f.seek(offset)
                digest.update(f.read(_SAMPLE))
    return digest.hexdigest()


def fingerprint_source(source: Source, path: str | os.PathLike[str]) -> SourceFingerprint:
    """Stat and fingerprint the file ``path`` as ``source`` (a symlink is followed: the file is what counts)."""
    absolute = os.path.abspath(path)
    info = os.stat(absolute)
    return SourceFingerprint(
        source,
        absolute,
        info.st_size,
        info.st_mtime_ns,
        fingerprint_file(absolute, info.st_size),
        ctime_ns=info.st_ctime_ns,
        inode=info.st_ino,
        device=info.st_dev,
    )


VERIFY_CHUNK = 8 * 1024 * 1024


def part_digest(path: str | os.PathLike[str], offset: int, length: int) -> str | None:
    """The xxh3-64 digest a part's body computes, of the file's bytes ``offset .. offset + length`` as they are
    now; None when the file holds fewer bytes there. Blocking: call it from a worker thread."""
    hasher = xxhash.xxh3_64()
    with open(path, "rb", buffering=0) as f:
        left = length
        while left:
            chunk = os.pread(f.fileno(), min(VERIFY_CHUNK, left), offset + length - left)
            if not chunk:
                return None
            hasher.update(chunk)
            left -= len(chunk)
    return hasher.hexdigest()


def check_source_path(path: Path) -> int:
    """Return the size of a readable, non-empty regular file, or raise SourceError saying what is wrong."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise SourceError(f"{path}: is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise SourceError(f"{path}: is not a regular file (use '-' to read a stream from stdin)")
    if info.st_size == 0:
        raise SourceError(f"{path}: is empty")
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise SourceError(f"{path}: cannot open: {exc.strerror or exc}") from None
    try:
        os.pread(fd, 1, 0)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return info.st_size


_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)
_WILLNEED: int | None = getattr(os, "POSIX_FADV_WILLNEED", None)
READ_AHEAD = 8 * 1024 * 1024
"""How far ahead a part that missed the page cache asks the kernel to read (POSIX_FADV_WILLNEED)."""


def _advise(fd: int, offset: int, length: int) -> None:
    with contextlib.suppress(OSError):  # only a hint: a closed file or a file system without it changes nothing
        os.posix_fadvise(fd, offset, length, _WILLNEED or 0)


def read_cached(fd: int, length: int, offset: int) -> bytearray | None:
    """Read without waiting for the disk: the bytes the page cache holds now, or None when it holds none of them.

    ``preadv`` with ``RWF_NOWAIT`` (Linux) copies from the page cache and answers EAGAIN instead of blocking, so
    the event loop can read a cached slice itself: a thread hop per 1 MiB slice measured here as twice the client's
    CPU per GiB. Elsewhere, and for what is not cached, the read goes to a worker thread.
    """
    if _NOWAIT is None:
        return None
    buffer = bytearray(length)
    try:
        got = os.preadv(fd, [buffer], offset, _NOWAIT)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system that cannot do it
            return None
        raise
    if got <= 0:
        return None
    del buffer[got:]
    return buffer


class Digest(Protocol):
    """What a part body feeds its bytes to: an xxh3-64 hasher, or nothing when no checkpoint keeps digests."""

    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


class _NoDigest:
    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        """Nothing keeps the digest: skip the work."""

    def hexdigest(self) -> str:
        return ""


def _pread(fd: int, length: int, offset: int) -> bytes:
    return os.pread(fd, length, offset)


class PartBody:
    """The body of one part, for one attempt: ``length`` bytes offered as slices; ``digest`` once fully read.

    ``on_sent`` is told the size of every slice handed to the connection (progress), and minus what an earlier
    attempt had reported when the body is sent again.
    """

    def __init__(
        self,
        part: Part,
        read: Callable[[int, Digest], AsyncIterator[bytes | bytearray | memoryview]],
        on_sent: Callable[[int], None] | None = None,
        *,
        digest: bool = True,
    ) -> None:
        self.part = part
        self.length = part.length
        self.digest: str | None = None
        self.sent = 0
        self._read = read
        self._on_sent = on_sent
        self._digest = digest

    def rewind(self) -> int:
        """Forget an attempt's progress before a retry; return the bytes that attempt had reported."""
        sent, self.sent, self.digest = self.sent, 0, None
        return sent

    async def slices(self) -> AsyncIterator[bytes | bytearray | memoryview]:
        hasher: Digest = xxhash.xxh3_64() if self._digest else _NoDigest()
        # aiohttp itself may resend a body (a kept-alive connection closed under it): forget the first try.
        unsent = self.rewind()
        if unsent and self._on_sent is not None:
            self._on_sent(-unsent)
        async for piece in self._read(self.length, hasher):
            yield piece
            self.sent += len(piece)
            if self._on_sent is not None:
                self._on_sent(len(piece))
        self.digest = hasher.hexdigest()


class FileSource:
    """A seekable file, read by offset from a worker thread so the event loop never waits on the disk."""

    def __init__(self, source: Source, path: Path, slice_size: int) -> None:
        self.source = source
        self.path = path
        self.slice_size = slice_size
        self.size = check_source_path(path)
        self._fd = os.open(path, os.O_RDONLY)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _advise(self, start: int, stop: int) -> int:
        """Ask the kernel to start reading [start, stop) into the page cache, without waiting; return ``stop``.

        The hint goes through a worker thread and is not awaited: by the time the connection wants those slices
        they are usually cached, so the event loop copies them itself instead of waiting on a thread per slice.
        """
        if _WILLNEED is not None:
            asyncio.get_running_loop().run_in_executor(None, _advise, self._fd, start, stop - start)
        return stop

    def body(self, part: Part, on_sent: Callable[[int], None] | None = None, *, digest: bool = True) -> PartBody:
        async def read(length: int, hasher: Digest) -> AsyncIterator[bytes | bytearray]:
            offset, end = part.offset, part.offset + length
            advised: int | None = None  # how far read-ahead was asked for, once this part missed the cache
            while offset < end:
                want = min(self.slice_size, end - offset)
                if advised is not None and advised < end and advised - offset < READ_AHEAD // 2:
                    advised = self._advise(advised, min(end, offset + READ_AHEAD))
                data: bytes | bytearray | None = read_cached(self._fd, want, offset)
                if data is None or len(data) < want:  # not all cached: one whole read in a thread, no dribble
                    if advised is None:
                        advised = self._advise(offset + want, min(end, offset + want + READ_AHEAD))
                    data = await anyio.to_thread.run_sync(_pread, self._fd, want, offset)
                    if not data:
                        raise SourceError(f"{self.path}: file shrank while it was uploaded (nothing at byte {offset})")
                hasher.update(data)
                yield data
                offset += len(data)

        return PartBody(part, read, on_sent, digest=digest)


class BufferPool:
    """At most ``count`` part buffers of ``size`` bytes, shared by every stream of an upload."""

    def __init__(self, size: int, count: int) -> None:
        self.size = size
        self._free: list[bytearray] = []
        self._created = 0
        self._count = max(1, count)
        self._available = anyio.Semaphore(self._count)

    async def get(self) -> bytearray:
        await self._available.acquire()
        if self._free:
            return self._free.pop()
        self._created += 1
        return bytearray(self.size)

    def put(self, buffer: bytearray) -> None:
        self._free.append(buffer)
        self._available.release()

    @property
    def allocated(self) -> int:
        return self._created * self.size


def _readinto_full(stream: BinaryIO, view: memoryview) -> int:
    filled = 0
    while filled < len(view):
        got = stream.readinto(view[filled:])  # type: ignore[attr-defined]
        if not got:
            break
        filled += got
    return int(filled)


class StreamSource:
    """A stream that cannot seek, cut into parts in order; each part's bytes live in a pooled buffer."""

    size: int | None = None

    def __init__(self, source: Source, stream: BinaryIO, part_size: int, pool: BufferPool) -> None:
        self.source = source
        self.stream = stream
        self.part_size = part_size
        self.pool = pool
        self.next_number = 1
        self.bytes_read = 0
        self.exhausted = False
        self._lock = anyio.Lock()

    async def next_part(self) -> tuple[Part, bytearray] | None:
        """Read the next part into a pooled buffer; None at the end of the stream. Give the buffer back with
        ``pool.put`` once the part is acknowledged (or the upload ends)."""
        async with self._lock:
            if self.exhausted:
                return None
            buffer = await self.pool.get()
            try:
                # A read of a pipe may block for ever: on cancellation the thread is abandoned (with the buffer it
                # fills, which is never given back), so a stop never waits for the writer at the other end.
                filled = await anyio.to_thread.run_sync(
                    _readinto_full, self.stream, memoryview(buffer)[: self.part_size], abandon_on_cancel=True
                )
            except OSError as exc:
                self.pool.put(buffer)
                raise SourceError(f"{self.source}: reading the stream failed: {exc}") from exc
            if filled < self.part_size:
                self.exhausted = True
            if filled == 0:
                self.pool.put(buffer)
                if self.next_number == 1:
                    raise SourceError(f"{self.source}: the stream is empty")
                return None
            part = Part(self.source, self.next_number, self.bytes_read, filled)
            self.next_number += 1
            self.bytes_read += filled
            return part, buffer

    @staticmethod
    def body(
        part: Part,
        buffer: bytearray,
        slice_size: int,
        on_sent: Callable[[int], None] | None = None,
        *,
        digest: bool = True,
    ) -> PartBody:
        async def read(length: int, hasher: Digest) -> AsyncIterator[memoryview]:
            view = memoryview(buffer)
            for start in range(0, length, slice_size):
                piece = view[start : min(length, start + slice_size)]
                hasher.update(piece)
                yield piece

        return PartBody(part, read, on_sent, digest=digest)

    def close(self) -> None:
        """Streams belong to the caller; nothing to close here."""
