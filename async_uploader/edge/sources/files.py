"""A seekable file as a source: each part read by offset, slice by slice as the connection takes them.

Memory in flight is concurrency × slice, whatever the part size. A slice the page cache holds is copied by the
event loop itself (RWF_NOWAIT never waits for the disk); anything else is read by a worker thread. The file is
opened by its path; ``reopen`` opens whatever the path names now (a file replaced while it was uploaded).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
from collections.abc import AsyncIterator, Callable, Container
from pathlib import Path

import anyio

from ...core.checkpoint import SourceFingerprint
from ...core.config import Source
from ...core.errors import SourceError
from ...core.fastq import FastqSummer
from ...core.plan import Part, Plan
from .body import PartBody
from .identity import check_source_path, fingerprint_source, read_head
from .item import PartItem

__all__ = ["READ_AHEAD", "FileSource", "read_cached", "read_cached_into"]

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


def _pread(fd: int, length: int, offset: int) -> bytes:
    return os.pread(fd, length, offset)


def _preadv(fd: int, view: memoryview, offset: int) -> int:
    return os.preadv(fd, [view], offset)


class FileSource:
    """A seekable file, read by offset from a worker thread so the event loop never waits on the disk."""

    def __init__(self, source: Source, path: Path, slice_size: int) -> None:
        self.source = source
        self.path: Path = path
        self.slice_size = slice_size
        self.size: int = check_source_path(path)
        self._fd = os.open(path, os.O_RDONLY)

    def identity(self) -> SourceFingerprint:
        """The file as it is now (blocking). SourceError when the path no longer names a readable file."""
        try:
            return fingerprint_source(self.source, self.path)
        except FileNotFoundError:
            raise SourceError(f"{self.source} {self.path} was deleted while it was uploaded") from None
        except IsADirectoryError:
            raise SourceError(f"{self.source} {self.path} was replaced by a directory while it was uploaded") from None
        except OSError as exc:
            raise SourceError(f"{self.source} {self.path} cannot be read any more: {exc.strerror or exc}") from None

    async def head(self) -> bytes:
        return await anyio.to_thread.run_sync(read_head, self.path)

    async def items(self, plan: Plan, done: Container[tuple[Source, int]]) -> AsyncIterator[PartItem]:
        for part in plan.parts_of(self.source, done):
            yield PartItem(part)

    def release(self, item: PartItem) -> None:
        """A file part holds no memory of its own."""

    async def hashed_by(self, summer: FastqSummer | None) -> Path:
        """A hashing thread reads the file by its path."""
        return self.path

    def reopen(self) -> None:
        """Read what the path names now: a file replaced (renamed over) while it was uploaded is read from then on."""
        fd = os.open(self.path, os.O_RDONLY)
        self.close()
        self._fd = fd

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

    def body(self, item: PartItem, on_sent: Callable[[int], None] | None = None, *, digest: bool = True) -> PartBody:
        part = item.part

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

        pieces = functools.partial(self._piece, part, _ThreadReadAhead(self, part.offset + part.length))
        return PartBody(part, slices, views, on_sent, digest=digest, pieces=pieces)

    def _piece(self, part: Part, ahead: _ThreadReadAhead, position: int, scratch: memoryview) -> memoryview:
        """In a sender thread: a cached slice in one call; anything else waits on the disk here, not on the loop."""
        offset = part.offset + position
        view = scratch[: min(len(scratch), part.length - position)]
        ahead.before(offset)
        got = read_cached_into(self._fd, view, offset)
        if got < len(view):
            ahead.missed(offset + len(view))
            more = _preadv(self._fd, view[got:], offset + got)
            if not more and not got:
                raise self._shrank(offset)
            got += more
        return view[:got]


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


class _ThreadReadAhead(_ReadAhead):
    """``_ReadAhead`` for a part read by a sender thread: the hint is given there, at once."""

    def before(self, offset: int) -> None:
        advised = self._advised
        if advised is not None and advised < self._end and advised - offset < READ_AHEAD // 2:
            self._advised = self._advise_now(advised, min(self._end, offset + READ_AHEAD))

    def missed(self, next_offset: int) -> None:
        if self._advised is None:
            self._advised = self._advise_now(next_offset, min(self._end, next_offset + READ_AHEAD))

    def _advise_now(self, start: int, stop: int) -> int:
        if _WILLNEED is not None and stop > start:
            _advise(self._source._fd, start, stop - start)
        return stop
