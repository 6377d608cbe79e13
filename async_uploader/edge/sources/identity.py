"""What a source file is: its identity (stat and sampled bytes), its first bytes, a part's digest as it is now,
and the checks that make a path an acceptable source. Blocking: the engine calls these from worker threads."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import xxhash

from ...core.checkpoint import SourceFingerprint
from ...core.config import Source
from ...core.errors import SourceError

__all__ = [
    "SUMMARY_CHUNK",
    "VERIFY_CHUNK",
    "check_source_path",
    "fingerprint_file",
    "fingerprint_source",
    "part_digest",
    "read_head",
]

_SAMPLE = 64 * 1024


def fingerprint_file(path: str | os.PathLike[str], size: int) -> str:
    """A cheap content fingerprint: xxh3-64 of the size and the first, middle and last 64 KiB."""
    digest = xxhash.xxh3_64()
    digest.update(size.to_bytes(8, "little"))
    with open(path, "rb") as f:
        if size <= 3 * _SAMPLE:
            digest.update(f.read(size))
        else:
            for offset in (0, (size - _SAMPLE) // 2, size - _SAMPLE):
                f.seek(offset)
                digest.update(f.read(_SAMPLE))
    return digest.hexdigest()


def fingerprint_source(source: Source, path: str | os.PathLike[str]) -> SourceFingerprint:
    """Stat and fingerprint the file ``path`` as ``source`` (a symlink is followed: the file is what counts)."""
    absolute = os.path.abspath(path)
    info = os.stat(absolute)
    return SourceFingerprint(
        source,
        absolute,
        info.st_size,
        info.st_mtime_ns,
        fingerprint_file(absolute, info.st_size),
        ctime_ns=info.st_ctime_ns,
        inode=info.st_ino,
        device=info.st_dev,
    )


VERIFY_CHUNK = 8 * 1024 * 1024
SUMMARY_CHUNK = 1024 * 1024
"""What a verification thread reads at a time: a few MiB of memory per source, decompressed."""


def read_head(path: str | os.PathLike[str], size: int = 1024 * 1024) -> bytes:
    """The first ``size`` bytes of a file (for the file-type check before Create)."""
    with open(path, "rb") as f:
        return f.read(size)


def part_digest(path: str | os.PathLike[str], offset: int, length: int) -> str | None:
    """The xxh3-64 digest a part's body computes, of the file's bytes ``offset .. offset + length`` as they are
    now; None when the file holds fewer bytes there. Blocking: call it from a worker thread."""
    hasher = xxhash.xxh3_64()
    with open(path, "rb", buffering=0) as f:
        left = length
        while left:
            chunk = os.pread(f.fileno(), min(VERIFY_CHUNK, left), offset + length - left)
            if not chunk:
                return None
            hasher.update(chunk)
            left -= len(chunk)
    return hasher.hexdigest()


def check_source_path(path: Path) -> int:
    """Return the size of a readable, non-empty regular file, or raise SourceError saying what is wrong."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise SourceError(f"{path}: is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise SourceError(f"{path}: is not a regular file (use '-' to read a stream from stdin)")
    if info.st_size == 0:
        raise SourceError(f"{path}: is empty")
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise SourceError(f"{path}: cannot open: {exc.strerror or exc}") from None
    try:
        os.pread(fd, 1, 0)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return info.st_size
