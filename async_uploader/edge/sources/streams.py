"""A stream that cannot seek (stdin, a pipe) as a source: cut into parts in order, each read whole into a buffer
borrowed from a pool whose size is the memory budget; the buffer is kept until the store acknowledges the part, so
a retry can resend it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Container
from typing import BinaryIO

import anyio

from ...core.checkpoint import SourceFingerprint
from ...core.config import Source
from ...core.errors import SourceError
from ...core.fastq import FastqSummer
from ...core.plan import Part, Plan
from .body import PartBody, PartBuffer, aligned_buffer
from .item import PartItem

__all__ = ["BufferPool", "StreamSource"]


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

    path = None

    def __init__(
        self, source: Source, stream: BinaryIO, part_size: int, pool: BufferPool, slice_size: int = 1024 * 1024
    ) -> None:
        self.source = source
        self.stream = stream
        self.part_size = part_size
        self.pool = pool
        self.next_number = 1
        self.bytes_read = 0
        self.exhausted = False
        self.summer: FastqSummer | None = None  # fed every byte in order, in the reading thread
        self.size: int | None = None  # known at the end
        self.slice_size = slice_size
        self._first: tuple[Part, PartBuffer] | None = None
        self._read_first = False
        self._lock = anyio.Lock()

    def identity(self) -> SourceFingerprint | None:
        """A stream has no identity to check again: it cannot be read twice."""
        return None

    async def head(self) -> bytes:
        """Read the first part (kept for ``items``); SourceError when the stream is empty."""
        if not self._read_first:
            self._first, self._read_first = await self.next_part(), True
        return b"" if self._first is None else bytes(memoryview(self._first[1])[: min(self._first[0].length, 1 << 20)])

    async def items(self, plan: Plan, done: Container[tuple[Source, int]]) -> AsyncIterator[PartItem]:
        """Every part, read in order (``done`` is always empty: a stream never resumes)."""
        await self.head()
        got, self._first = self._first, None
        while got is not None:
            part, buffer = got
            try:
                yield PartItem(plan.stream_part(self.source, part.number, part.length), buffer)
            except BaseException:
                self.pool.put(buffer)
                raise
            got = await self.next_part()
        self.size = self.bytes_read

    async def hashed_by(self, summer: FastqSummer | None) -> None:
        """``summer`` is fed every byte as it is read, in the reading thread; first the part read already."""
        async with self._lock:
            if summer is not None and self._first is not None:
                part, buffer = self._first
                await anyio.to_thread.run_sync(summer.update, memoryview(buffer)[: part.length])
            self.summer = summer

    def release(self, item: PartItem) -> None:
        if item.buffer is not None:
            self.pool.put(item.buffer)

    def reopen(self) -> None:
        """A stream is read once: nothing to reopen."""

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

    def body(self, item: PartItem, on_sent: Callable[[int], None] | None = None, *, digest: bool = True) -> PartBody:
        part, buffer, slice_size = item.part, item.buffer, self.slice_size
        if buffer is None:
            raise ValueError(f"{part.source} part {part.number} has no bytes")

        async def slices(length: int) -> AsyncIterator[memoryview]:
            view = memoryview(buffer)
            for start in range(0, length, slice_size):
                yield view[start : min(length, start + slice_size)]

        async def views(length: int, scratch: memoryview) -> AsyncIterator[memoryview]:
            # the bytes are in memory already: no copy into the scratch buffer, only pieces of a sender's size
            view, step = memoryview(buffer), max(len(scratch), 1)
            for start in range(0, length, step):
                yield view[start : min(length, start + step)]

        def pieces(position: int, scratch: memoryview) -> memoryview:
            return memoryview(buffer)[position : min(part.length, position + max(len(scratch), 1))]

        return PartBody(part, slices, views, on_sent, digest=digest, pieces=pieces)

    def close(self) -> None:
        """Streams belong to the caller; nothing to close here."""
