"""Reading parts again: which recorded parts no longer hold, in the file as it is now, the bytes that were sent.

A resume trusts a recorded part only while its source is, observably, the very file it was read from (same path,
size, times, inode, device and sampled bytes: ``SourceFingerprint.same_file``). Otherwise each recorded part of
that source is read again and its xxh3-64 digest compared with the one recorded when it was sent; the parts that
differ are sent again (the store replaces a part sent again with the same number).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import anyio

from ..core.checkpoint import PartRecord
from ..core.config import Source
from ..edge.sources import part_digest

__all__ = ["REREAD_THREADS", "changed_parts"]

REREAD_THREADS = 2
"""Parts read again at once: enough to keep a disk busy and both cores hashing, not to thrash a spinning disk."""


async def changed_parts(
    paths: Mapping[Source, Path],
    part_size: int,
    records: Iterable[PartRecord],
    span: Callable[[PartRecord], tuple[int, int]] | None = None,
) -> set[tuple[Source, int]]:
    """The (source, number) of every record whose bytes in the file now differ from what was sent; ``span`` says
    where a record's bytes lie in its file (by default part ``number`` of ``part_size`` bytes, ``length`` long)."""
    pending = iter([record for record in records if record.source in paths])
    changed: set[tuple[Source, int]] = set()

    async def reader() -> None:
        for record in pending:  # shared by the readers: each takes the next record
            offset, length = span(record) if span is not None else ((record.number - 1) * part_size, record.length)
            now = await anyio.to_thread.run_sync(part_digest, paths[record.source], offset, length)
            if now is None or now != record.digest:
                changed.add((record.source, record.number))

    async with anyio.create_task_group() as group:
        for _ in range(REREAD_THREADS):
            group.start_soon(reader)
    return changed
