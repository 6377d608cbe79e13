"""A plain (uncompressed) FASTQ source, gzip-compressed while it uploads: the service stores FASTQ gzip-only.

The plain input is cut into parts of ``input_part`` bytes (the part size, grown so a file fits in 10,000 parts);
part ``n`` always holds the input bytes ``(n - 1) × input_part`` up to ``n × input_part``, whatever they compress
to. Each part is the concatenation of independent gzip members of ``MEMBER_SIZE`` input bytes, compressed on
several threads (isal's deflate at level 1 where installed, zlib otherwise; the two release the GIL), so a part's
bytes are a whole gzip stream of their own and the parts joined are the gzip of the whole input. Because a part's
input range follows from its number alone, a resume compresses exactly the parts the store has not acknowledged
and skips the rest without reading them; the checkpoint records ``input_part`` for each compressed source.

The compressed length of a source is known only at its end, like a stream's. Memory: at most ``LOOK_AHEAD`` parts
compressed ahead per source, and at most ``memory_budget / (2 × part_size)`` parts held at once by all compressed
sources together (input and output of a part each fit in the part size). A stream (stdin) is read in order; a file
is read by offset, member by member, in the compressing threads. The verification hashes the plain input: the
file by its path, a stream as it is read.
"""

from __future__ import annotations

import asyncio
import os
import zlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Container, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import anyio
import xxhash

from ...core.checkpoint import PartRecord, SourceFingerprint
from ...core.config import MAX_PART_SIZE, MAX_PARTS, FileType, Source
from ...core.errors import SourceError
from ...core.fastq import GZIP_MAGIC, FastqSummer, check_file_type
from ...core.plan import Part, Plan, minimum_part_size
from ..messages import ProgressCall
from .body import PartBody, Pieces, Slices, Views
from .identity import VERIFY_CHUNK, check_source_path, fingerprint_source, read_head
from .item import PartItem

_isal: Callable[..., bytes] | None
try:
    from isal.isal_zlib import compress as _isal
except ImportError:  # pragma: no cover - isal is a dependency; zlib keeps working without it
    _isal = None

__all__ = [
    "CODEC",
    "LOOK_AHEAD",
    "MEMBER_SIZE",
    "CompressedSource",
    "Compressor",
    "deflate_member",
    "input_part_size",
    "is_plain_fastq",
    "plain_fastq_refused",
]

MEMBER_SIZE = 1024 * 1024
"""Plain bytes per gzip member: large enough that the members' headers and fresh dictionaries cost < 1 % of the
ratio, small enough that a part's members keep every thread busy."""
LOOK_AHEAD = 2
"""Parts of one source being compressed ahead of the one handed to the sender."""
CODEC = "isal-1" if _isal is not None else "zlib-1"
"""The deflater and level used: isal level 1 runs at about 5× zlib level 1 for a ratio within a few percent."""


def deflate_member(data: bytes | bytearray | memoryview) -> bytes:
    """One gzip member of ``data`` (header with no name and mtime 0; the GIL is released while it deflates)."""
    if _isal is not None:
        return _isal(data, 1, wbits=31)
    return zlib.compress(data, 1, wbits=31)


def _deflate_file_member(fd: int, offset: int, length: int) -> bytes:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise SourceError(f"the file shrank while it was uploaded (nothing at byte {offset + len(data)})")
    return deflate_member(data)


def _plain_digest(fd: int, offset: int, length: int) -> str:
    """The xxh3-64 of a file's bytes ``offset .. offset + length``: what ``identity.part_digest`` computes of them."""
    hasher = xxhash.xxh3_64()
    end = offset + length
    while offset < end:
        chunk = os.pread(fd, min(VERIFY_CHUNK, end - offset), offset)
        if not chunk:
            break
        hasher.update(chunk)
        offset += len(chunk)
    return hasher.hexdigest()


def input_part_size(part_size: int, plain_size: int | None) -> int:
    """Plain bytes per part: the part size, grown in whole MiB when a file would need more than 10,000 parts."""
    if plain_size is None or -(-plain_size // part_size) <= MAX_PARTS:
        return part_size
    return max(part_size, minimum_part_size(plain_size))


def is_plain_fastq(what: Path | BinaryIO) -> bool:
    """True when ``what`` starts as plain FASTQ text rather than gzip (blocking: a stream is peeked, not read).

    A stream that cannot be peeked counts as not plain (it is sent as it is)."""
    if isinstance(what, Path):
        try:
            head = read_head(what, 64 * 1024)
        except OSError:
            return False
    else:
        peek: Callable[[int], bytes] | None = getattr(what, "peek", None)
        if peek is None:
            return False
        head = peek(64 * 1024)
    return bool(head) and not head.startswith(GZIP_MAGIC) and check_file_type(head, FileType.FASTQ) is None


def plain_fastq_refused(source: Source, what: Path | BinaryIO) -> SourceError:
    """The refusal of a plain FASTQ source when compression is off (``compress=False``, ``--compress never``)."""
    name = str(what) if isinstance(what, Path) else "(a stream)"
    return SourceError(
        f"{source} {name} is plain FASTQ, and the service stores FASTQ gzip-compressed only; "
        "drop --compress never to compress it while it uploads, or gzip it first"
    )


class Compressor:
    """Threads and memory shared by every compressed source of one upload."""

    def __init__(self, threads: int, parts_held: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="deflate")
        self.memory = anyio.Semaphore(max(1, parts_held))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _try_acquire(semaphore: anyio.Semaphore) -> bool:
    try:
        semaphore.acquire_nowait()
    except anyio.WouldBlock:
        return False
    return True


@dataclass
class _Job:
    number: int
    plain: int
    members: list[Future[bytes]]
    digest: Future[str] | None = None  # xxh3-64 of the plain bytes (a file's: a resume may read them again)


@dataclass
class _Cut:
    """How far ``items`` has gone: the last part number started or skipped, the parts being compressed, the
    compressed bytes so far, and whether the input has ended."""

    number: int = 0
    pending: deque[_Job] = field(default_factory=deque)
    total: int = 0
    ended: bool = False


class CompressedSource:
    """A plain FASTQ file or stream, sent as gzip members; ``size`` (compressed) is known at its end."""

    def __init__(
        self, source: Source, what: Path | BinaryIO, part_size: int, compressor: Compressor, slice_size: int
    ) -> None:
        self.source = source
        self.slice_size = slice_size
        self._compressor = compressor
        self.size: int | None = None
        self.part_count: int | None = None  # known at the end, with ``size``; its parts are not cut at the part size
        self.plain_bytes = 0  # plain input read (or skipped as acknowledged) so far; the whole input at the end
        self.summer: FastqSummer | None = None
        self._held: dict[int, bytes] = {}
        self._digests: dict[int, str] = {}
        self._head: bytes | None = None
        self._stream: BinaryIO | None = None
        self._fd = -1
        self._path: Path | None = None
        if isinstance(what, Path):
            self._path = what
            self.plain_size: int | None = check_source_path(what)
            self._fd = os.open(what, os.O_RDONLY)
        else:
            self._stream = what
            self.plain_size = None
        self.input_part = input_part_size(part_size, self.plain_size)

    @property
    def path(self) -> Path | None:
        return self._path

    # -- what it is -------------------------------------------------------------------------------------------------

    def identity(self) -> SourceFingerprint | None:
        if self._path is None:
            return None
        try:
            return fingerprint_source(self.source, self._path)
        except FileNotFoundError:
            raise SourceError(f"{self.source} {self._path} was deleted while it was uploaded") from None
        except OSError as exc:
            raise SourceError(f"{self.source} {self._path} cannot be read any more: {exc.strerror or exc}") from None

    async def head(self) -> bytes:
        """The first plain bytes (up to 1 MiB); a stream keeps them for its first part."""
        if self._path is not None:
            return await anyio.to_thread.run_sync(read_head, self._path)
        if self._head is None:
            stream = self._stream
            assert stream is not None
            self._head = await anyio.to_thread.run_sync(_read_full, stream, 1 << 20, abandon_on_cancel=True)
            if not self._head:
                raise SourceError(f"{self.source}: the stream is empty")
        return self._head

    async def hashed_by(self, summer: FastqSummer | None) -> Path | None:
        """A file is hashed by its path (its plain bytes); a stream feeds ``summer`` the plain bytes as it reads."""
        if self._path is not None:
            return self._path
        self.summer = summer
        return None

    # -- its parts ------------------------------------------------------------------------------------------------

    async def items(self, plan: Plan, done: Container[tuple[Source, int]]) -> AsyncIterator[PartItem]:
        """The parts not in ``done``, compressed ``LOOK_AHEAD`` ahead; a file skips acknowledged parts unread."""
        recorded: Mapping[tuple[Source, int], PartRecord] = done if isinstance(done, Mapping) else {}
        cut = _Cut()
        try:
            while True:
                await self._schedule(cut, recorded)
                if not cut.pending:
                    break
                job = cut.pending.popleft()
                body = await self._finish(job)
                cut.total += len(body)
                yield PartItem(plan.stream_part(self.source, job.number, len(body)))
        finally:
            for job in cut.pending:
                for member in [*job.members, job.digest]:
                    if member is not None:
                        member.cancel()
                self._compressor.memory.release()
        self.size, self.part_count = cut.total, cut.number

    async def _schedule(self, cut: _Cut, recorded: Mapping[tuple[Source, int], PartRecord]) -> None:
        """Start the next parts until ``LOOK_AHEAD`` are pending (waiting for memory only when none is)."""
        memory = self._compressor.memory
        while not cut.ended and len(cut.pending) < LOOK_AHEAD:
            number = cut.number + 1
            record = recorded.get((self.source, number)) if self._path is not None else None
            if record is not None:  # acknowledged before: skipped unread
                cut.number, cut.total = number, cut.total + record.length
                self.plain_bytes += self._plain_length(number)
                cut.ended = number * self.input_part >= (self.plain_size or 0)
                continue
            if not cut.pending:
                await memory.acquire()
            elif not _try_acquire(memory):
                return
            try:
                job = await self._start(number)
            except BaseException:
                memory.release()
                raise
            if job is None:
                memory.release()
                cut.ended = True
                return
            cut.number = number
            cut.pending.append(job)
            cut.ended = self._ended(number, job)

    async def _finish(self, job: _Job) -> bytes:
        """``job``'s part: its members joined, held (with its memory) until ``release``."""
        try:
            pieces: list[bytes] = [await asyncio.wrap_future(member) for member in job.members]
            digest = "" if job.digest is None else await asyncio.wrap_future(job.digest)
            body = b"".join(pieces)
            if len(body) > MAX_PART_SIZE:
                raise SourceError(
                    f"{self.source}: part {job.number} compressed to {len(body):,} bytes, over the service's "
                    f"{MAX_PART_SIZE:,}-byte limit; lower --part-size"
                )
        except BaseException:
            self._compressor.memory.release()
            raise
        self._held[job.number] = body
        self._digests[job.number] = digest
        return body

    def _plain_length(self, number: int) -> int:
        start = (number - 1) * self.input_part
        return max(0, min(self.input_part, (self.plain_size or 0) - start))

    def _ended(self, number: int, job: _Job) -> bool:
        if self._path is not None:
            return number * self.input_part >= (self.plain_size or 0)
        return job.plain < self.input_part

    async def _start(self, number: int) -> _Job | None:
        """Start compressing part ``number``: its members go to the threads; None past the end of a stream."""
        if number > MAX_PARTS:
            raise SourceError(
                f"{self.source}: the plain input is longer than {MAX_PARTS:,} parts of {self.input_part:,} bytes; "
                "raise --part-size"
            )
        pool = self._compressor.pool
        if self._path is not None:
            start, length = (number - 1) * self.input_part, self._plain_length(number)
            members = [
                pool.submit(_deflate_file_member, self._fd, offset, min(MEMBER_SIZE, start + length - offset))
                for offset in range(start, start + length, MEMBER_SIZE)
            ]
            self.plain_bytes += length
            return _Job(number, length, members, pool.submit(_plain_digest, self._fd, start, length))
        data = await self._read_stream_part(number)
        if not data:
            if number == 1:
                raise SourceError(f"{self.source}: the stream is empty")
            return None
        view = memoryview(data)
        members = [pool.submit(deflate_member, view[at : at + MEMBER_SIZE]) for at in range(0, len(data), MEMBER_SIZE)]
        self.plain_bytes += len(data)
        return _Job(number, len(data), members)

    async def _read_stream_part(self, number: int) -> bytearray:
        stream, summer = self._stream, self.summer
        assert stream is not None
        prefix, self._head = (self._head or b""), b""
        try:
            # A read of a pipe may block for ever: on cancellation the thread is abandoned, as for any stream.
            data, self._head = await anyio.to_thread.run_sync(
                _read_part, stream, prefix, self.input_part, summer, abandon_on_cancel=True
            )
        except OSError as exc:
            raise SourceError(f"{self.source}: reading the stream failed: {exc}") from exc
        return data

    def body(self, item: PartItem, on_sent: Callable[[int], None] | None = None, *, digest: bool = True) -> PartBody:
        """The part's gzip members; its digest (for the checkpoint) is that of the plain bytes it was made of, so a
        resume compares what a file holds now with what was compressed without compressing it again."""
        part, slice_size = item.part, self.slice_size
        data = self._held.get(part.number)
        if data is None:
            raise ValueError(f"{part.source} part {part.number} has no bytes")
        view = memoryview(data)

        async def slices(length: int) -> AsyncIterator[memoryview]:
            for start in range(0, length, slice_size):
                yield view[start : min(length, start + slice_size)]

        async def views(length: int, scratch: memoryview) -> AsyncIterator[memoryview]:
            step = max(len(scratch), 1)
            for start in range(0, length, step):
                yield view[start : min(length, start + step)]

        def pieces(position: int, scratch: memoryview) -> memoryview:
            return view[position : min(part.length, position + max(len(scratch), 1))]

        plain = self._digests.get(part.number, "") if digest else ""
        return _PlainDigestBody(part, slices, views, on_sent, plain, pieces)

    def plain_span(self, number: int) -> tuple[int, int]:
        """Where the plain bytes of part ``number`` lie in the file: (offset, length)."""
        return (number - 1) * self.input_part, self._plain_length(number)

    def release(self, item: PartItem) -> None:
        self._digests.pop(item.part.number, None)
        if self._held.pop(item.part.number, None) is not None:
            self._compressor.memory.release()

    def reopen(self) -> None:
        if self._path is not None:
            fd = os.open(self._path, os.O_RDONLY)
            if self._fd >= 0:
                os.close(self._fd)
            self._fd = fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._compressor.close()


class _PlainDigestBody(PartBody):
    """A part body whose digest, once sent, is ``plain`` (that of the plain bytes it was compressed from)."""

    def __init__(
        self,
        part: Part,
        slices: Slices,
        views: Views,
        on_sent: Callable[[int], None] | None,
        plain: str,
        pieces: Pieces | None = None,
    ) -> None:
        super().__init__(part, slices, views, on_sent, digest=False, pieces=pieces)
        self._plain = plain

    async def slices(self) -> AsyncIterator[bytes | bytearray | memoryview]:
        async for piece in super().slices():
            yield piece
        self.digest = self._plain

    async def views(self, scratch: memoryview, call: ProgressCall | None = None) -> AsyncGenerator[memoryview, None]:
        async for view in super().views(scratch, call):
            yield view
        self.digest = self._plain

    def finish(self) -> None:
        self.digest = self._plain


def _read_full(stream: BinaryIO, size: int) -> bytes:
    pieces: list[bytes] = []
    left = size
    while left:
        piece = stream.read(left)
        if not piece:
            break
        pieces.append(piece)
        left -= len(piece)
    return b"".join(pieces)


def _read_part(stream: BinaryIO, prefix: bytes, size: int, summer: FastqSummer | None) -> tuple[bytearray, bytes]:
    """Up to ``size`` plain bytes: ``prefix`` (read before) then the stream, and what is left of ``prefix``;
    ``summer`` is fed the bytes in order."""
    data = bytearray(size)
    filled = min(len(prefix), size)
    data[:filled] = prefix[:filled]
    view = memoryview(data)
    while filled < size:
        got = stream.readinto(view[filled:])  # type: ignore[attr-defined]
        if not got:
            break
        filled += got
    del view
    del data[filled:]
    if summer is not None and filled:
        summer.update(data)
    return data, prefix[size:]
