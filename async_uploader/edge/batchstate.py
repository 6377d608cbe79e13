"""The record of a batch's rows already uploaded: ``done.jsonl`` in the batch folder, one JSON line per row.

Read once when a batch starts; appended (and fsynced) from the batch's coroutine as each row completes, through
aiofiles so the write and the fsync never hold the event loop while other rows upload.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import aiofiles
import aiofiles.os

from ..core.manifest import ManifestRow

__all__ = ["BatchState"]

_fsync = aiofiles.os.wrap(os.fsync)


class BatchState:
    """The rows of a batch already uploaded: an append-only JSON-lines file ``done.jsonl`` in the batch folder."""

    FILE = "done.jsonl"

    def __init__(self, directory: Path) -> None:
        self.path = directory / self.FILE
        self.done: dict[str, str] = {}
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            try:
                record = json.loads(line)
                self.done[str(record["key"])] = str(record["readSetId"])
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line from a crash: that row simply runs again

    async def record(self, key: str, read_set_id: str, row: ManifestRow) -> None:
        """Append the row as done and make it durable before returning."""
        await aiofiles.os.makedirs(self.path.parent, mode=0o700, exist_ok=True)
        line = json.dumps({"key": key, "readSetId": read_set_id, "row": row.row, "name": row.read_set.name})
        async with aiofiles.open(self.path, "a", encoding="utf-8", opener=_private) as out:
            await out.write(line + "\n")
            await out.flush()
            await _fsync(out.fileno())
        self.done[key] = read_set_id


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)
