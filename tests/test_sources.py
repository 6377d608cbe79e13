"""Reading part bytes: files by offset in whole slices, streams through a bounded buffer pool."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import pytest
import xxhash

from async_uploader.core.config import Source
from async_uploader.core.errors import SourceError
from async_uploader.core.plan import Part
from async_uploader.edge.sources import (
    BufferPool,
    FileSource,
    PartItem,
    StreamSource,
    check_source_path,
    read_cached,
)

KIB = 1024


def random_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


async def collect(body: object) -> list[bytes]:
    return [bytes(piece) async for piece in body.slices()]  # type: ignore[attr-defined]


def evict(path: Path) -> None:
    """Drop the file from the page cache, so reads must go to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_check_source_path_names_the_problem(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.touch()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases = {tmp_path / "missing": "no such file", empty: "is empty", tmp_path: "is a directory", fifo: "regular file"}
    for path, message in cases.items():
        with pytest.raises(SourceError, match=message):
            check_source_path(path)
    assert check_source_path(Path(__file__)) == Path(__file__).stat().st_size


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "evicted"])
async def test_file_part_comes_in_whole_slices_with_its_digest(tmp_path: Path, cached: bool) -> None:
    path = tmp_path / "r1"
    data = random_file(path, 1024 * KIB + 5)
    if not cached:
        evict(path)
    reader = FileSource(Source.SOURCE1, path, 64 * KIB)
    try:
        part = Part(Source.SOURCE1, 2, 100 * KIB, 300 * KIB + 5)
        sent: list[int] = []
        body = reader.body(PartItem(part), sent.append)
        pieces = await collect(body)
    finally:
        reader.close()
    expected = data[100 * KIB : 400 * KIB + 5]
    assert b"".join(pieces) == expected
    # Whole slices, never a dribble of whatever pages happened to be cached.
    assert [len(p) for p in pieces] == [64 * KIB] * 4 + [44 * KIB + 5]
    assert sum(sent) == len(expected)
    assert body.digest == xxhash.xxh3_64(expected).hexdigest()


async def test_a_resent_body_reports_its_progress_once(tmp_path: Path) -> None:
    path = tmp_path / "r1"
    random_file(path, 256 * KIB)
    reader = FileSource(Source.SOURCE1, path, 64 * KIB)
    sent: list[int] = []
    try:
        body = reader.body(PartItem(Part(Source.SOURCE1, 1, 0, 256 * KIB)), sent.append)
        await collect(body)
        await collect(body)  # aiohttp may send a body again on a fresh connection
    finally:
        reader.close()
    assert sum(sent) == 256 * KIB


async def test_a_file_that_shrinks_while_read_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "r1"
    random_file(path, 128 * KIB)
    reader = FileSource(Source.SOURCE1, path, 64 * KIB)
    try:
        os.truncate(path, 64 * KIB)
        with pytest.raises(SourceError, match="shrank"):
            await collect(reader.body(PartItem(Part(Source.SOURCE1, 1, 0, 128 * KIB))))
    finally:
        reader.close()


def test_read_cached_reads_what_the_page_cache_holds(tmp_path: Path) -> None:
    path = tmp_path / "r1"
    data = random_file(path, 64 * KIB)
    fd = os.open(path, os.O_RDONLY)
    try:
        got = read_cached(fd, 64 * KIB, 0)
        if got is None:
            pytest.skip("this platform or file system cannot read without waiting (RWF_NOWAIT)")
        assert bytes(got) == data
    finally:
        os.close(fd)


async def test_stream_parts_are_read_in_order_into_pooled_buffers() -> None:
    data = os.urandom(100 * KIB + 1)
    pool = BufferPool(32 * KIB, 2)
    stream = StreamSource(Source.SOURCE2, io.BufferedReader(io.BytesIO(data)), 32 * KIB, pool, 8 * KIB)
    got = []
    while (item := await stream.next_part()) is not None:
        part, buffer = item
        pieces = await collect(stream.body(PartItem(part, buffer)))
        got.append((part.number, part.offset, part.length, b"".join(pieces)))
        pool.put(buffer)
    assert [(n, o, ln) for n, o, ln, _ in got] == [
        (1, 0, 32768),
        (2, 32768, 32768),
        (3, 65536, 32768),
        (4, 98304, 4097),
    ]
    assert b"".join(chunk for *_, chunk in got) == data
    assert pool.allocated <= 2 * 32 * KIB


async def test_stream_reading_waits_for_a_free_buffer() -> None:
    pool = BufferPool(16 * KIB, 1)
    stream = StreamSource(Source.SOURCE1, io.BufferedReader(io.BytesIO(os.urandom(64 * KIB))), 16 * KIB, pool)
    first = await stream.next_part()
    assert first is not None
    waiting = asyncio.ensure_future(stream.next_part())
    await asyncio.sleep(0.01)
    assert not waiting.done(), "a second part was read with no buffer free: memory is not bounded"
    pool.put(first[1])
    second = await asyncio.wait_for(waiting, 5)
    assert second is not None and second[0].number == 2
    pool.put(second[1])


async def test_an_empty_stream_is_an_error() -> None:
    stream = StreamSource(Source.SOURCE1, io.BufferedReader(io.BytesIO(b"")), 16 * KIB, BufferPool(16 * KIB, 1))
    with pytest.raises(SourceError, match="empty"):
        await stream.next_part()
