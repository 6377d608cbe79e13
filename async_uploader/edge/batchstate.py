"""The record of a batch's rows already uploaded: ``done.jsonl`` in the batch folder, one JSON line per row.

Each line names the row's key, the read set id, and the identity of every source file as it was when the upload
began (path, size, times, inode, device and sampled bytes, as a checkpoint records them): a later run skips the
row only while its files are still those. Lines written before identities were recorded have none
(``DoneRow.sources`` is None) and are still read.

Read once when a batch starts; appended (and fsynced) from the batch's coroutine as each row completes, through
aiofiles so the write and the fsync never hold the event loop while other rows upload.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os

from ..core.checkpoint import SourceFingerprint
from ..core.config import Source
from ..core.errors import ConfigError
from ..core.manifest import ManifestRow

__all__ = ["BatchState", "DoneRow"]

_fsync = aiofiles.os.wrap(os.fsync)


@dataclass(frozen=True)
class DoneRow:
    """A row recorded as uploaded: its read set id and, unless an earlier version wrote the line, the identity of
    its source files when the upload began."""

    key: str
    read_set_id: str
    sources: tuple[SourceFingerprint, ...] | None = None


class BatchState:
    """The rows of a batch already uploaded: an append-only JSON-lines file ``done.jsonl`` in the batch folder.

    ``rows`` maps each key to its last record; ``done`` (key -> read set id) is the same, without the identities.
    """

    FILE = "done.jsonl"

    def __init__(self, directory: Path) -> None:
        self.path = directory / self.FILE
        self.rows: dict[str, DoneRow] = {}
        self.done: dict[str, str] = {}
        lines = _read_lines(self.path)
        for line in lines:
            try:
                done = _parse(json.loads(line))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a torn last line from a crash: that row simply runs again
            self.rows[done.key] = done
            self.done[done.key] = done.read_set_id

    async def record(
        self, key: str, read_set_id: str, row: ManifestRow, sources: Sequence[SourceFingerprint] | None = None
    ) -> None:
        """Append the row as done (with its sources' identity when known) and make it durable before returning."""
        await aiofiles.os.makedirs(self.path.parent, mode=0o700, exist_ok=True)
        record: dict[str, Any] = {"key": key, "readSetId": read_set_id, "row": row.row, "name": row.read_set.name}
        if sources is not None:
            record["sources"] = [{**asdict(source), "source": source.source.value} for source in sources]
        async with aiofiles.open(self.path, "a", encoding="utf-8", opener=_private) as out:
            await out.write(json.dumps(record) + "\n")
            await out.flush()
            await _fsync(out.fileno())
        self.rows[key] = DoneRow(key, read_set_id, tuple(sources) if sources is not None else None)
        self.done[key] = read_set_id


def _read_lines(path: Path) -> list[str]:
    """The record's lines; ConfigError when it is a symbolic link (never followed) or cannot be read."""
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise ConfigError(
                f"batch record {path} is a symbolic link; it is left as it is: name another --checkpoint-dir"
            )
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        why = "a symbolic link in its path loops" if getattr(exc, "errno", None) == errno.ELOOP else str(exc)
        raise ConfigError(f"cannot read the batch record {path}: {why}") from None


def _parse(record: dict[str, Any]) -> DoneRow:
    sources = record.get("sources")
    prints = None if sources is None else tuple(_fingerprint(item) for item in sources)
    return DoneRow(str(record["key"]), str(record["readSetId"]), prints)


def _fingerprint(item: dict[str, Any]) -> SourceFingerprint:
    def optional(name: str) -> int | None:
        value = item.get(name)
        return None if value is None else int(value)

    return SourceFingerprint(
        Source(item["source"]),
        str(item["path"]),
        int(item["size"]),
        int(item["mtime_ns"]),
        str(item["fingerprint"]),
        ctime_ns=optional("ctime_ns"),
        inode=optional("inode"),
        device=optional("device"),
    )


def _private(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW, 0o600)
