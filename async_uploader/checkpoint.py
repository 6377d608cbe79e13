"""The durable record of one upload: what was planned and which parts the store acknowledged.

The file is an append-only journal of JSON lines, each followed by a tab and the CRC32 of its JSON text:

    {"t":"header","v":1,"store_id":...,"sources":[...],...}<TAB>crc32<LF>   written once, atomically
    {"t":"upload","upload_id":"..."}<TAB>crc32<LF>                          the upload Create returned
    {"t":"parts","p":[[source,number,length,checksum,digest],...]}<TAB>crc32<LF>   one line per group commit
    {"t":"complete","read_set_id":"..."}<TAB>crc32<LF>                      Complete succeeded

Recording parts appends one write and one fsync, whatever the number of parts already recorded. A crash can
tear only the last line; loading ignores it and the next append cuts it off. Damage before the last line is an
error.
The file is mode 0600 and holds no credentials: only what ``CheckpointHeader`` names.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import xxhash

from .config import FileType, ReadSet, Source
from .errors import CheckpointError, CheckpointMismatchError

__all__ = [
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointHeader",
    "PartRecord",
    "SourceFingerprint",
    "default_checkpoint_path",
    "fingerprint_file",
    "fingerprint_source",
]

FORMAT_VERSION = 1
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


@dataclass(frozen=True, slots=True)
class SourceFingerprint:
    """What identifies a source file: its absolute path, size, modification time and content fingerprint."""

    source: Source
    path: str
    size: int
    mtime_ns: int
    fingerprint: str


def fingerprint_source(source: Source, path: str | os.PathLike[str]) -> SourceFingerprint:
    """Stat and fingerprint the file ``path`` as ``source``."""
    absolute = os.path.abspath(path)
    stat = os.stat(absolute)
    return SourceFingerprint(source, absolute, stat.st_size, stat.st_mtime_ns, fingerprint_file(absolute, stat.st_size))


@dataclass(frozen=True, slots=True)
class PartRecord:
    """A part the store acknowledged: its exact checksum string and our local digest of its bytes."""

    source: Source
    number: int
    length: int
    checksum: str
    digest: str


@dataclass(frozen=True, kw_only=True)
class CheckpointHeader:
    """Everything needed to recreate the upload and to recognise its sources. No credentials."""

    store_id: str
    file_type: FileType
    subject_id: str
    sample_id: str
    name: str
    part_size: int
    sources: tuple[SourceFingerprint, ...]
    client_token: str
    created: float = field(default_factory=time.time)
    reference_arn: str | None = None
    generated_from: str | None = None
    description: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_read_set(
        cls,
        store_id: str,
        read_set: ReadSet,
        *,
        part_size: int,
        sources: Sequence[SourceFingerprint],
        client_token: str,
    ) -> CheckpointHeader:
        return cls(
            store_id=store_id,
            file_type=read_set.file_type,
            subject_id=read_set.subject_id,
            sample_id=read_set.sample_id,
            name=read_set.name,
            part_size=part_size,
            sources=tuple(sources),
            client_token=client_token,
            reference_arn=read_set.reference_arn,
            generated_from=read_set.generated_from,
            description=read_set.description,
            tags=dict(read_set.tags),
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["tags"] = dict(self.tags)
        return {"t": "header", "v": FORMAT_VERSION, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckpointHeader:
        if data.get("v") != FORMAT_VERSION:
            raise ValueError(f"format version {data.get('v')!r} is not {FORMAT_VERSION}")
        fields = {k: v for k, v in data.items() if k not in ("t", "v")}
        fields["file_type"] = FileType(fields["file_type"])
        fields["sources"] = tuple(
            SourceFingerprint(
                Source(s["source"]), str(s["path"]), int(s["size"]), int(s["mtime_ns"]), str(s["fingerprint"])
            )
            for s in fields["sources"]
        )
        return cls(**fields)


def _encode(record: Mapping[str, Any]) -> bytes:
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return b"%s\t%08x\n" % (text, zlib.crc32(text))


def _decode(line: bytes) -> dict[str, Any] | None:
    """The record on one line (without its newline), or None when the line is damaged."""
    text, tab, crc = line.rpartition(b"\t")
    if not tab or len(crc) != 8:
        return None
    try:
        if int(crc, 16) != zlib.crc32(text):
            return None
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("t"), str) else None


class Checkpoint:
    """An open checkpoint journal. ``parts`` maps (source, number) to the latest record for that part."""

    def __init__(self, path: Path, header: CheckpointHeader, *, valid_length: int | None = None) -> None:
        self.path = path
        self.header = header
        self.upload_id: str | None = None
        self.read_set_id: str | None = None
        self.parts: dict[tuple[Source, int], PartRecord] = {}
        self._valid_length = valid_length  # set when a torn tail must be cut before appending
        self._fd: int | None = None
        self._lock = threading.Lock()

    # ----- creating and loading

    @classmethod
    def create(cls, path: str | os.PathLike[str], header: CheckpointHeader) -> Checkpoint:
        """Write a new checkpoint holding only ``header``, atomically, replacing any file at ``path``."""
        path = Path(path)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _write_all(fd, _encode(header.to_json()))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from exc
        return cls(path, header)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Checkpoint:
        """Read a checkpoint; a torn last line is ignored, any other damage raises CheckpointError."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
        lines = data.split(b"\n")
        tail = lines.pop()  # bytes after the last newline: empty unless the last write was torn
        records: list[dict[str, Any]] = []
        valid_length = 0
        for index, line in enumerate(lines):
            record = _decode(line)
            if record is None:
                if index == len(lines) - 1 and not tail and index > 0:
                    break  # a damaged last line: its write never completed
                raise CheckpointError(f"checkpoint {path} is damaged at line {index + 1}")
            records.append(record)
            valid_length += len(line) + 1
        if not records or records[0]["t"] != "header":
            raise CheckpointError(f"checkpoint {path} has no valid header line")
        try:
            header = CheckpointHeader.from_json(records[0])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {path} has an unreadable header: {exc}") from exc
        checkpoint = cls(path, header, valid_length=valid_length if valid_length < len(data) else None)
        for number, record in enumerate(records[1:], start=2):
            try:
                checkpoint._apply(record)
            except (KeyError, TypeError, ValueError) as exc:
                raise CheckpointError(f"checkpoint {path} has an unreadable record at line {number}") from exc
        return checkpoint

    def _apply(self, record: Mapping[str, Any]) -> None:
        kind = record["t"]
        if kind == "upload":
            upload_id = str(record["upload_id"])
            if upload_id != self.upload_id:
                self.parts.clear()  # parts belong to the upload they were sent to
            self.upload_id = upload_id
        elif kind == "parts":
            for source, number, length, checksum, digest in record["p"]:
                part = PartRecord(Source(source), int(number), int(length), str(checksum), str(digest))
                self.parts[(part.source, part.number)] = part
        elif kind == "complete":
            self.read_set_id = str(record["read_set_id"])
        else:
            raise ValueError(f"unknown record type {kind!r}")

    # ----- appending

    def record_upload(self, upload_id: str) -> None:
        """Remember the upload id Create returned (a new id forgets the parts of the old one)."""
        self._append([{"t": "upload", "upload_id": upload_id}])

    def record_parts(self, records: Sequence[PartRecord]) -> None:
        """Make ``records`` durable with one write and one fsync (a group commit)."""
        if records:
            rows = [[r.source.value, r.number, r.length, r.checksum, r.digest] for r in records]
            self._append([{"t": "parts", "p": rows}])

    def record_complete(self, read_set_id: str) -> None:
        """Remember that Complete succeeded and the read set id it returned."""
        self._append([{"t": "complete", "read_set_id": read_set_id}])

    def _append(self, records: list[dict[str, Any]]) -> None:
        payload = b"".join(_encode(record) for record in records)
        with self._lock:
            try:
                fd = self._open()
                _write_all(fd, payload)
                os.fsync(fd)
            except OSError as exc:
                raise CheckpointError(f"cannot write checkpoint {self.path}: {exc.strerror or exc}") from exc
            for record in records:
                self._apply(record)

    def _open(self) -> int:
        if self._fd is None:
            if self._valid_length is not None:
                os.truncate(self.path, self._valid_length)
                self._valid_length = None
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._fd

    # ----- checking and closing

    def verify_sources(self, fingerprints: Sequence[SourceFingerprint]) -> None:
        """Raise CheckpointMismatchError unless ``fingerprints`` match the checkpoint's sources."""
        recorded = {s.source: s for s in self.header.sources}
        current = {s.source: s for s in fingerprints}
        if set(recorded) != set(current):
            raise CheckpointMismatchError(
                f"checkpoint {self.path} was written for {', '.join(sorted(recorded))}, not "
                f"{', '.join(sorted(current))}; run again with --restart to start a new upload"
            )
        for source, old in recorded.items():
            new = current[source]
            if new.path != old.path:
                raise CheckpointMismatchError(
                    f"{source} is {new.path} but the checkpoint was written for {old.path}; "
                    "run again with --restart to start a new upload"
                )
            if new.size != old.size:
                what = f"size {old.size:,} → {new.size:,} bytes"
            elif new.mtime_ns != old.mtime_ns:
                what = "modification time changed"
            elif new.fingerprint != old.fingerprint:
                what = "contents changed"
            else:
                continue
            raise CheckpointMismatchError(
                f"{source} {new.path} changed since the checkpoint ({what}); "
                "run again with --restart to start a new upload"
            )

    def close(self) -> None:
        """Close the journal; records already written are durable."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def remove(self) -> None:
        """Close and delete the checkpoint (the upload is finished or abandoned)."""
        self.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


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


def default_checkpoint_path(
    store_id: str, sources: Sequence[SourceFingerprint | str], identity: Sequence[str] = ()
) -> Path:
    """The checkpoint path used when none is given, named from a hash of the store id, the source paths and
    ``identity`` (the read set's metadata, so the same files sent as another read set get their own upload).

    The directory is ``$ASYNC_UPLOADER_HOME/checkpoints``, or ``~/.cache/async-uploader/checkpoints``.
    """
    home = os.environ.get("ASYNC_UPLOADER_HOME")
    base = Path(home) / "checkpoints" if home else Path.home() / ".cache" / "async-uploader" / "checkpoints"
    paths = [os.path.abspath(s.path if isinstance(s, SourceFingerprint) else s) for s in sources]
    key = hashlib.sha256("\0".join([store_id, *paths, *identity]).encode("utf-8", "surrogateescape")).hexdigest()
    return base / f"{store_id}-{key[:24]}.jsonl"
