"""The checkpoint file itself: created atomically, appended with one write and one fsync per record, replayed.

The record format and the replay rules are ``core.checkpoint``'s; this module only touches the file system. The
file is mode 0600 in a 0700 folder. Every method blocks: the engine calls them from a worker thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core.checkpoint import (
    CheckpointHeader,
    PartRecord,
    Replay,
    checkpoint_name,
    complete_line,
    header_line,
    parts_line,
    replay,
    upload_line,
)
from ..core.errors import CheckpointError, UploaderError
from ..core.plan import make_plan

__all__ = [
    "CheckpointSummary",
    "Journal",
    "default_checkpoint_path",
    "find_checkpoints",
    "load_checkpoint",
    "uploader_home",
]


def uploader_home() -> Path:
    """``$ASYNC_UPLOADER_HOME``, or ``~/.cache/async-uploader``: where checkpoints and batch records live."""
    home = os.environ.get("ASYNC_UPLOADER_HOME")
    return Path(home) if home else Path.home() / ".cache" / "async-uploader"


def default_checkpoint_path(store_id: str, paths: Sequence[str], identity: Sequence[str] = ()) -> Path:
    """The checkpoint used when none is named: under the uploader home, named from the store, the absolute source
    paths and the read set's metadata."""
    absolute = [os.path.abspath(path) for path in paths]
    return uploader_home() / "checkpoints" / checkpoint_name(store_id, absolute, identity)


def _fail(path: Path, what: str, exc: OSError) -> CheckpointError:
    return CheckpointError(f"cannot {what} checkpoint {path}: {exc.strerror or exc}")


def load_checkpoint(path: Path) -> Replay:
    """Read and replay the checkpoint at ``path`` (CheckpointError when it cannot be read or is damaged)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _fail(path, "read", exc) from exc
    return replay(data, str(path))


class Journal:
    """An open checkpoint journal; each ``record_*`` is one append, made durable before it returns."""

    def __init__(self, path: Path, header: CheckpointHeader, *, intact: int | None = None) -> None:
        self.path = path
        self.header = header
        self._intact = intact  # set when a torn tail must be cut before the next append
        self._fd: int | None = None
        self._lock = threading.Lock()

    @classmethod
    def create(cls, path: Path, header: CheckpointHeader) -> Journal:
        """Write a new checkpoint holding only ``header``: a temporary file, fsynced, renamed into place."""
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _write_all(fd, header_line(header))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            raise _fail(path, "write", exc) from exc
        return cls(path, header)

    @classmethod
    def open(cls, path: Path) -> tuple[Journal, Replay]:
        """Open an existing checkpoint for appending, with what its records say so far."""
        replayed = load_checkpoint(path)
        size = path.stat().st_size
        journal = cls(path, replayed.header, intact=replayed.intact if replayed.intact < size else None)
        return journal, replayed

    def record_upload(self, upload_id: str) -> None:
        """Remember the upload id Create returned (a new id forgets the parts of the old one)."""
        self._append(upload_line(upload_id))

    def record_parts(self, records: Sequence[PartRecord]) -> None:
        """Make ``records`` durable with one write and one fsync (a group commit)."""
        if records:
            self._append(parts_line(records))

    def record_complete(self, read_set_id: str) -> None:
        """Remember that Complete succeeded and the read set id it returned."""
        self._append(complete_line(read_set_id))

    def _append(self, payload: bytes) -> None:
        with self._lock:
            try:
                fd = self._open()
                _write_all(fd, payload)
                os.fsync(fd)
            except OSError as exc:
                raise _fail(self.path, "write", exc) from exc

    def _open(self) -> int:
        if self._fd is None:
            if self._intact is not None:
                os.truncate(self.path, self._intact)
                self._intact = None
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._fd

    def close(self) -> None:
        """Close the journal; records already written are durable."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class CheckpointSummary:
    """An unfinished upload a local checkpoint knows: where the checkpoint is and how far it got."""

    path: Path
    upload_id: str
    parts_recorded: int
    parts_planned: int


def find_checkpoints(directory: Path, store_id: str) -> dict[str, CheckpointSummary]:
    """The unfinished uploads of ``store_id`` that checkpoints under ``directory`` know, by upload id."""
    found: dict[str, CheckpointSummary] = {}
    if not directory.is_dir():
        return found
    for path in sorted(directory.rglob("*.jsonl")):
        try:
            replayed = load_checkpoint(path)
        except UploaderError:
            continue  # not a checkpoint (a batch's done-rows record, a foreign file)
        header = replayed.header
        if header.store_id != store_id or replayed.upload_id is None or replayed.read_set_id:
            continue
        try:
            planned = make_plan({fp.source: fp.size for fp in header.sources}, header.part_size).total_parts
        except UploaderError:
            planned = 0
        found[replayed.upload_id] = CheckpointSummary(path, replayed.upload_id, len(replayed.parts), planned)
    return found
