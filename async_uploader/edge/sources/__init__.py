"""Sources: where a read set's bytes come from, behind one interface (``SourceReader``).

A source says what it is (``identity()``: a file's path, size, times, inode and sampled bytes; None for a stream),
hands out its parts lazily (``items(plan, done)``), gives each part's body for one attempt (``body``), and takes a
part's memory back (``release``). A file (``files.FileSource``) is read by offset, as the connection takes the
bytes; a stream (``streams.StreamSource``) is read in order into pooled buffers. The engine never asks which one it
holds. The modules: ``identity`` (what a file is, blocking checks), ``body`` (a part's body, aligned buffers),
``files``, ``streams``, ``compressed`` (a plain FASTQ file or stream sent gzip-compressed).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Collection, Container, Mapping
from pathlib import Path
from typing import BinaryIO, Protocol

from ...core.checkpoint import PartRecord, SourceFingerprint
from ...core.config import Source
from ...core.errors import PlanError
from ...core.fastq import FastqSummer
from ...core.plan import Plan
from .body import PartBody, PartBuffer, aligned_buffer
from .compressed import CODEC, CompressedSource, Compressor, is_plain_fastq, plain_fastq_refused
from .files import FileSource, read_cached, read_cached_into
from .identity import check_source_path, fingerprint_file, fingerprint_source, part_digest, read_head
from .item import PartItem
from .streams import BufferPool, StreamSource

__all__ = [
    "CODEC",
    "BufferPool",
    "CompressedSource",
    "FileSource",
    "PartBody",
    "PartBuffer",
    "PartItem",
    "SourceReader",
    "StreamSource",
    "aligned_buffer",
    "check_source_path",
    "compressed_of",
    "fingerprint_file",
    "fingerprint_source",
    "is_plain_fastq",
    "open_sources",
    "part_digest",
    "plain_fastq_refused",
    "read_cached",
    "read_cached_into",
    "read_head",
    "recorded_span",
    "stream_part_count",
]


class SourceReader(Protocol):
    """What the engine knows of a source. ``path`` is None for a stream; ``size`` is None until a stream's end."""

    source: Source

    @property
    def path(self) -> Path | None: ...

    @property
    def size(self) -> int | None: ...

    def identity(self) -> SourceFingerprint | None:
        """The source as it is now (blocking: from a worker thread); None for what has no identity (a stream)."""
        ...

    async def head(self) -> bytes:
        """The first bytes (up to 1 MiB), for the file-type check; a stream keeps what it read for ``items``."""
        ...

    def items(self, plan: Plan, done: Container[tuple[Source, int]]) -> AsyncIterator[PartItem]:
        """The parts still to send, in order, read lazily."""
        ...

    def body(self, item: PartItem, on_sent: Callable[[int], None] | None = None, *, digest: bool = True) -> PartBody:
        """``item``'s bytes for one attempt."""
        ...

    def release(self, item: PartItem) -> None:
        """``item`` is acknowledged or given up: its memory goes back."""
        ...

    async def hashed_by(self, summer: FastqSummer | None) -> Path | None:
        """How the source is hashed: a stream feeds ``summer`` every byte as it reads it (it cannot be read twice),
        what it read already first; a file returns the path a hashing thread reads."""
        ...

    def reopen(self) -> None:
        """Read whatever the path names now (the file may have been replaced); nothing for a stream."""
        ...

    def close(self) -> None: ...


def compressed_of(readers: Mapping[Source, SourceReader]) -> dict[Source, CompressedSource]:
    """The readers that gzip-compress a plain FASTQ source as they read it."""
    return {source: reader for source, reader in readers.items() if isinstance(reader, CompressedSource)}


def recorded_span(reader: SourceReader, record: PartRecord, part_size: int) -> tuple[int, int]:
    """Where in its file the bytes a recorded part was made of lie, (offset, length): a part of the file itself,
    or the plain range a compressed part was made of (its record's digest is theirs)."""
    if isinstance(reader, CompressedSource):
        return reader.plain_span(record.number)
    return (record.number - 1) * part_size, record.length


def stream_part_count(reader: SourceReader, part_size: int) -> int | None:
    """How many parts a source of unknown length had, once it has ended (None before)."""
    if reader.size is None:
        return None
    if isinstance(reader, CompressedSource):
        return reader.part_count
    return -(-reader.size // part_size)


def open_sources(
    given: Mapping[Source, Path | BinaryIO],
    *,
    part_size: int,
    slice_size: int,
    memory_budget: int,
    compress: Collection[Source] = (),
) -> dict[Source, SourceReader]:
    """A reader for every source: files opened by path, streams sharing one pool of part buffers that fits in
    ``memory_budget`` (PlanError when not even one part does), the sources in ``compress`` (plain FASTQ)
    gzip-compressed as they are read, on threads and memory they share. SourceError for a path that is not a
    readable file."""
    readers: dict[Source, SourceReader] = {}
    pool: BufferPool | None = None
    compressor: Compressor | None = None
    try:
        for source, what in given.items():
            if source in compress:
                if compressor is None:
                    compressor = Compressor(os.cpu_count() or 1, memory_budget // (2 * part_size))
                readers[source] = CompressedSource(source, what, part_size, compressor, slice_size)
                continue
            if isinstance(what, Path):
                readers[source] = FileSource(source, what, slice_size)
                continue
            if pool is None:
                if memory_budget < part_size:
                    raise PlanError(
                        f"memory budget {memory_budget} bytes cannot hold one {part_size}-byte part of a stream; "
                        "raise the budget or lower the part size"
                    )
                pool = BufferPool(part_size, memory_budget // part_size)
            readers[source] = StreamSource(source, what, part_size, pool, slice_size)
    except BaseException:
        for reader in readers.values():
            reader.close()
        if compressor is not None:
            compressor.close()
        raise
    return readers
