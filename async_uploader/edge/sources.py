"""Reading part bytes: seekable files by offset, and non-seekable streams through a bounded buffer pool.

A file part is read slice by slice as the connection takes them, so memory in flight is concurrency × slice,
whatever the part size. A slice the page cache holds is copied by the event loop itself (RWF_NOWAIT never waits
for the disk); anything else is read by a worker thread. A stream (stdin, a pipe) can only be read once, so each
part is read whole into a buffer borrowed from a pool whose size is the memory budget; the buffer is kept until
the store acknowledges the part, so a retry can resend it.

A body is offered two ways (``edge.messages``): as fresh slices (``slices()``, for aiohttp, which may hold on to
them), or read into the sender's own reusable buffer (``views()``, for ``edge.http11``). Buffers the kernel
copies into are page-aligned (``aligned_buffer``): on some CPUs (measured on AMD EPYC) a copy from the page cache
into memory 16 bytes past a page boundary, where ``malloc`` puts a large block, runs at a fifth of the speed.

Every body computes an xxh3-64 digest of what it sent, for the checkpoint (skipped when the upload keeps none).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import mmap
import os
import stat
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO, Protocol

import anyio
import xxhash

from ..core.checkpoint import SourceFingerprint
from ..core.config import Source
from ..core.errors import SourceError
from ..core.fastq import FastqSummary, FastqSummer
from ..core.plan import Part
from .messages import ProgressCall

__all__ = [
    "BufferPool",
    "FileSource",
    "PartBody",
    "PartBuffer",
    "StreamSource",
    "aligned_buffer",
    "check_source_path",
    "fingerprint_file",
    "fingerprint_source",
    "part_digest",
    "read_head",
    "summarize_file",
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
SUMMARY_CHUNK = 1024 * 1024
"""What a verification thread reads at a time: a few MiB of memory per source, decompressed."""


def summarize_file(
    path: str | os.PathLike[str], family: str, on_read: Callable[[int], None] | None = None
) -> FastqSummary:
    """A FASTQ source's ETag digest, reads and bases, read front to back (``core.fastq``). Blocking: call it from a
    worker thread; ``on_read`` is told of every chunk read. NotFastqError when it does not decode."""
    summer = FastqSummer(family)
    with open(path, "rb", buffering=0) as f:
        offset = 0
        while not summer.failed and (chunk := os.pread(f.fileno(), SUMMARY_CHUNK, offset)):
            summer.update(chunk)
            offset += len(chunk)
            if on_read is not None:
                on_read(len(chunk))
    return summer.finish()


def read_head(path: str | os.PathLike[str], size: int = 1024 * 1024) -> bytes:
    """The first ``size`` bytes of a file (for the file-type check before Create)."""
    with open(path, "rb") as f:
        return f.read(size)


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
    got = read_cached_into(fd, memoryview(buffer), offset)
    if got <= 0:
        return None
    del buffer[got:]
    return buffer


def read_cached_into(fd: int, view: memoryview, offset: int) -> int:
    """``read_cached`` into ``view``: how many bytes the page cache held there (0 when none, or not on Linux)."""
    if _NOWAIT is None:
        return 0
    try:
        got = os.preadv(fd, [view], offset, _NOWAIT)
    except (BlockingIOError, InterruptedError):
        return 0
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system that cannot do it
            return 0
        raise
    return max(0, got)


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


def _preadv(fd: int, view: memoryview, offset: int) -> int:
    return os.preadv(fd, [view], offset)


PartBuffer = mmap.mmap
"""A page-aligned, writable buffer (anonymous memory): what part bytes are read into."""


def aligned_buffer(size: int) -> PartBuffer:
    """``size`` bytes of zeroed, page-aligned memory (released when the last reference goes)."""
    return mmap.mmap(-1, max(1, size))


Slices = Callable[[int], AsyncIterator[bytes | bytearray | memoryview]]
"""Fresh pieces of a part's ``length`` bytes, in order."""
Views = Callable[[int, memoryview], AsyncIterator[memoryview]]
"""The part's ``length`` bytes in order, each piece read into the scratch buffer or a view of memory held."""


class PartBody:
    """The body of one part, for one attempt: ``length`` bytes offered as slices; ``digest`` once fully read.

    ``on_sent`` is told the size of every slice handed to the connection (progress), and minus what an earlier
    attempt had reported when the body is sent again.
    """

    def __init__(
        self,
        part: Part,
        slices: Slices,
        views: Views,
        on_sent: Callable[[int], None] | None = None,
        *,
        digest: bool = True,
    ) -> None:
        self.part = part
        self.length = part.length
        self.digest: str | None = None
        self.sent = 0
        self._slices = slices
        self._views = views
        self._on_sent = on_sent
        self._digest = digest

    def rewind(self) -> int:
        """Forget an attempt's progress before a retry; return the bytes that attempt had reported."""
        sent, self.sent, self.digest = self.sent, 0, None
        return sent

    def _report(self, call: ProgressCall | None, nbytes: int) -> None:
        if self._on_sent is not None and nbytes:
            if call is None:
                self._on_sent(nbytes)
            else:
                call(self._on_sent, nbytes)

    async def slices(self) -> AsyncIterator[bytes | bytearray | memoryview]:
        hasher: Digest = xxhash.xxh3_64() if self._digest else _NoDigest()
        # aiohttp itself may resend a body (a kept-alive connection closed under it): forget the first try.
        self._report(None, -self.rewind())
        async for piece in self._slices(self.length):
            hasher.update(piece)
            yield piece
            self.sent += len(piece)
            self._report(None, len(piece))
        self.digest = hasher.hexdigest()

    async def views(self, scratch: memoryview, call: ProgressCall | None = None) -> AsyncGenerator[memoryview, None]:
        hasher: Digest = xxhash.xxh3_64() if self._digest else _NoDigest()
        self._report(call, -self.rewind())
        async for view in self._views(self.length, scratch):
            hasher.update(view)
            yield view
            self.sent += len(view)
            self._report(call, len(view))
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

    def _shrank(self, offset: int) -> SourceError:
        return SourceError(f"{self.path}: file shrank while it was uploaded (nothing at byte {offset})")

    def body(self, part: Part, on_sent: Callable[[int], None] | None = None, *, digest: bool = True) -> PartBody:
        async def slices(length: int) -> AsyncIterator[bytes | bytearray]:
            offset, end = part.offset, part.offset + length
            ahead = _ReadAhead(self, end)
            while offset < end:
                want = min(self.slice_size, end - offset)
                ahead.before(offset)
                data: bytes | bytearray | None = read_cached(self._fd, want, offset)
                if data is None or len(data) < want:  # not all cached: one whole read in a thread, no dribble
                    ahead.missed(offset + want)
                    data = await anyio.to_thread.run_sync(_pread, self._fd, want, offset)
                    if not data:
                        raise self._shrank(offset)
                yield data
                offset += len(data)

        async def views(length: int, scratch: memoryview) -> AsyncIterator[memoryview]:
            offset, end = part.offset, part.offset + length
            ahead = _ReadAhead(self, end)
            while offset < end:
                view = scratch[: min(len(scratch), end - offset)]
                ahead.before(offset)
                got = read_cached_into(self._fd, view, offset)
                if got < len(view):  # not all cached: one whole read in a thread, no dribble
                    ahead.missed(offset + len(view))
                    got = await anyio.to_thread.run_sync(_preadv, self._fd, view, offset)
                    if not got:
                        raise self._shrank(offset)
                yield view[:got]
                offset += got

        return PartBody(part, slices, views, on_sent, digest=digest)


class _ReadAhead:
    """For one part: once a slice missed the page cache, keep the kernel reading ahead of the connection."""

    def __init__(self, source: FileSource, end: int) -> None:
        self._source = source
        self._end = end
        self._advised: int | None = None  # how far read-ahead was asked for, once this part missed the cache

    def before(self, offset: int) -> None:
        advised = self._advised
        if advised is not None and advised < self._end and advised - offset < READ_AHEAD // 2:
            self._advised = self._source._advise(advised, min(self._end, offset + READ_AHEAD))

    def missed(self, next_offset: int) -> None:
        if self._advised is None:
            self._advised = self._source._advise(next_offset, min(self._end, next_offset + READ_AHEAD))


class BufferPool:
    """At most ``count`` part buffers of ``size`` bytes, shared by every stream of an upload."""

    def __init__(self, size: int, count: int) -> None:
        self.size = size
        self._free: list[PartBuffer] = []
        self._created = 0
        self._count = max(1, count)
        self._available = anyio.Semaphore(self._count)

    async def get(self) -> PartBuffer:
        await self._available.acquire()
        if self._free:
            return self._free.pop()
        self._created += 1
        return aligned_buffer(self.size)

    def put(self, buffer: PartBuffer) -> None:
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


def _read_and_sum(stream: BinaryIO, view: memoryview, summer: FastqSummer | None) -> int:
    filled = _readinto_full(stream, view)
    if summer is not None and filled:
        summer.update(view[:filled])
    return filled


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
        self.summer: FastqSummer | None = None  # fed every byte in order, in the reading thread
        self._lock = anyio.Lock()

    async def next_part(self) -> tuple[Part, PartBuffer] | None:
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
                    _read_and_sum,
                    self.stream,
                    memoryview(buffer)[: self.part_size],
                    self.summer,
                    abandon_on_cancel=True,
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
        buffer: PartBuffer,
        slice_size: int,
        on_sent: Callable[[int], None] | None = None,
        *,
        digest: bool = True,
    ) -> PartBody:
        async def slices(length: int) -> AsyncIterator[memoryview]:
            view = memoryview(buffer)
            for start in range(0, length, slice_size):
                yield view[start : min(length, start + slice_size)]

        async def views(length: int, scratch: memoryview) -> AsyncIterator[memoryview]:
            # the bytes are in memory already: no copy into the scratch buffer, only pieces of a sender's size
            view, step = memoryview(buffer), max(len(scratch), 1)
            for start in range(0, length, step):
                yield view[start : min(length, start + step)]

        return PartBody(part, slices, views, on_sent, digest=digest)

    def close(self) -> None:
        """Streams belong to the caller; nothing to close here."""
