"""The checkpoint file itself: locked, created atomically, appended with one write and one fsync per record.

The record format and the replay rules are ``core.checkpoint``'s; this module only touches the file system. The
file is mode 0600 in a 0700 folder. One process at a time owns a checkpoint: ``CheckpointLock`` holds an
exclusive ``flock`` on ``NAME.lock`` beside it for the whole upload (the kernel drops it with the process, even
after kill -9). Nothing here removes or overwrites a file that is not one of the tool's own: a checkpoint is
known by its header line, a lock by its first line, and neither is ever reached through a symbolic link (a
checkpoint path that is a link is refused; the lock is opened with O_NOFOLLOW). Every method blocks: the engine
calls them from a worker thread.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import threading
import time
import uuid
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
    is_checkpoint,
    legacy_checkpoint_name,
    parts_line,
    replay,
    upload_line,
)
from ..core.errors import CheckpointBusyError, CheckpointError, ConfigError, UploaderError
from ..core.plan import make_plan

__all__ = [
    "CheckpointLock",
    "CheckpointSummary",
    "Journal",
    "check_checkpoint_path",
    "default_checkpoint_path",
    "find_checkpoints",
    "load_checkpoint",
    "uploader_home",
]


def uploader_home() -> Path:
    """``$ASYNC_UPLOADER_HOME``, or ``~/.cache/async-uploader``: where checkpoints and batch records live."""
    home = os.environ.get("ASYNC_UPLOADER_HOME")
    path = Path(home) if home else Path.home() / ".cache" / "async-uploader"
    if path.exists() and not path.is_dir():
        where = "ASYNC_UPLOADER_HOME" if home else "the uploader home"
        raise ConfigError(f"{where} {path} is a file, not a folder; point ASYNC_UPLOADER_HOME at a folder")
    return path


def default_checkpoint_path(store_id: str, identity: Sequence[str], sizes: Sequence[int], paths: Sequence[str]) -> Path:
    """The checkpoint used when none is named: under the uploader home, named from the store, the read set's
    metadata and its sources' sizes (``core.checkpoint.checkpoint_name``); one an earlier version named from the
    source paths is used while it exists."""
    folder = uploader_home() / "checkpoints"
    legacy = folder / legacy_checkpoint_name(store_id, [os.path.abspath(path) for path in paths], identity)
    current = folder / checkpoint_name(store_id, identity, sizes)
    return legacy if legacy.exists() and not current.exists() else current


def _first_line(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.readline(1 << 20)


def check_checkpoint_path(path: Path, sources: Sequence[Path]) -> bool:
    """Raise ConfigError unless ``path`` can be this upload's checkpoint; True when a checkpoint is there already.

    Refused, with nothing changed: a symbolic link (whatever it points to, itself or nothing included: a
    checkpoint is replaced by renaming a new file over it, which would replace the link); a path through a loop of
    links or a dangling link; a folder; a path under a file; one of the sources; an existing file that is not a
    checkpoint (its first line is no checkpoint header), whatever the flags, --restart included.
    """
    _refuse_links(path)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"checkpoint {path}: {parent} is a file, not a folder")
            break
    if path.is_dir():
        raise ConfigError(f"checkpoint {path} is a folder; name a file")
    if not path.exists():
        return False
    for source in sources:
        if source.exists() and path.samefile(source):
            raise ConfigError(f"checkpoint {path} is the source {source} itself; name another file")
    try:
        ours = is_checkpoint(_first_line(path))
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    if not ours:
        raise ConfigError(
            f"{path} exists and is not a checkpoint of async-uploader; it is left as it is: name another --checkpoint"
        )
    return True


def _refuse_links(path: Path) -> None:
    """ConfigError when ``path`` is a symbolic link, or its folders loop or lead through a dangling link."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(
                f"checkpoint {path}: its folders loop (a symbolic link leads back to itself); "
                "name a checkpoint in a real folder"
            ) from None
        if exc.errno == errno.ENOENT:
            _refuse_dangling_folders(path)
        return  # anything else is reported where the file is used
    if stat.S_ISLNK(info.st_mode):
        target = os.readlink(path)
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigError(
                    f"checkpoint {path} is a symbolic link that loops (to {target}); it is left as it is: "
                    "name a checkpoint file, not a link"
                ) from None
        raise ConfigError(
            f"checkpoint {path} is a symbolic link (to {target}); it is left as it is: a checkpoint is never reached "
            "through a link, name the file itself"
        )


def _refuse_dangling_folders(path: Path) -> None:
    for parent in path.parents:
        try:
            info = os.lstat(parent)
        except OSError:
            continue
        if stat.S_ISLNK(info.st_mode) and not parent.exists():
            raise ConfigError(
                f"checkpoint {path}: its folder {parent} is a symbolic link to {os.readlink(parent)}, which does not "
                "exist; name a checkpoint in a real folder"
            )
        return


_LOCK_MAGIC = b"async-uploader checkpoint lock\n"


class CheckpointLock:
    """One owner per checkpoint: an exclusive ``flock`` on ``NAME.lock`` beside it, for as long as it is held.

    ``acquire`` never waits: CheckpointBusyError names the process holding it. ``release`` removes the lock file
    while still holding it; a process that locked a file just removed sees that it is no longer the path's and
    tries again, so two processes never both believe they own one checkpoint.
    """

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.path = checkpoint.with_name(checkpoint.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                raise ConfigError(
                    f"{self.path} is a symbolic link, not a lock of async-uploader; it is left as it is: "
                    "name another --checkpoint"
                ) from None
            try:
                held = self._try(fd)
            except BaseException:
                os.close(fd)
                raise
            if held:
                self._fd = fd
                return
            os.close(fd)
        raise CheckpointError(f"cannot lock checkpoint {self.checkpoint}: its lock file keeps changing")

    def _try(self, fd: int) -> bool:
        head = os.pread(fd, 4096, 0)
        if head and not head.startswith(_LOCK_MAGIC):
            raise ConfigError(f"{self.path} exists and is not a lock of async-uploader; name another --checkpoint")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CheckpointBusyError(
                f"{self.checkpoint} is already being uploaded by {self._holder(fd)}; wait for it to finish, "
                "or stop it first"
            ) from None
        try:
            if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                return False  # removed and made again since we opened it: ours is not the path's lock
        except FileNotFoundError:
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, _LOCK_MAGIC + f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        return True

    @staticmethod
    def _holder(fd: int) -> str:
        """Who holds the lock, as its holder wrote it (a moment after taking it: read again for up to 0.2 s)."""
        for _ in range(10):
            holder = os.pread(fd, 4096, 0)[len(_LOCK_MAGIC) :].decode("utf-8", "replace").split()
            if len(holder) >= 2:
                return f"PID {holder[0]} on {holder[1]}"
            time.sleep(0.02)
        return "another process"

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)


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
        """Write a new checkpoint holding only ``header``: a temporary file, fsynced, renamed into place.

        The caller holds the checkpoint's lock and has checked (``check_checkpoint_path``) that whatever is at
        ``path`` is a checkpoint; the temporary file is a new one (never a file that was there).
        """
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
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
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
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
