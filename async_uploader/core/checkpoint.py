"""The checkpoint journal's record format: what a line holds, how it is encoded, and how a file is replayed.

A checkpoint is an append-only journal of JSON lines, each followed by a tab and the CRC32 of its JSON text:

    {"t":"header","v":1,"store_id":...,"sources":[...],...}<TAB>crc32<LF>   written once, atomically
    {"t":"upload","upload_id":"..."}<TAB>crc32<LF>                          the upload Create returned
    {"t":"parts","p":[[source,number,length,checksum,digest],...]}<TAB>crc32<LF>   one line per group commit
    {"t":"complete","read_set_id":"..."}<TAB>crc32<LF>                      Complete succeeded

A crash can tear only the last line: replaying ignores it (and reports how many bytes are intact, so the next
append cuts it off). Damage before the last line is an error. The header holds only what ``CheckpointHeader``
names: no credentials. Pure: the file itself is read and written by ``edge.journal``.
"""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .config import FileType, ReadSet, Source
from .errors import CheckpointError, CheckpointMismatchError

__all__ = [
    "FORMAT_VERSION",
    "CheckpointHeader",
    "PartRecord",
    "Replay",
    "SourceFingerprint",
    "checkpoint_name",
    "complete_line",
    "header_line",
    "is_checkpoint",
    "legacy_checkpoint_name",
    "parts_line",
    "read_set_identity",
    "replay",
    "upload_line",
    "verify_resumable",
]

FORMAT_VERSION = 2
"""Version 2 added each source's ctime, inode and device; version 1 checkpoints are still read."""
_READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True, slots=True)
class SourceFingerprint:
    """What identifies a source file: its absolute path, size, times, inode and device, and a content sample.

    ``ctime_ns`` changes with every write to the file, also one whose modification time is set back afterwards;
    ``inode``/``device`` change when the file is replaced or copied. None where the OS (or a version 1
    checkpoint) has no such figure.
    """

    source: Source
    path: str
    size: int
    mtime_ns: int
    fingerprint: str
    ctime_ns: int | None = None
    inode: int | None = None
    device: int | None = None

    def same_file(self, other: SourceFingerprint) -> bool:
        """True when nothing observable distinguishes the two: same path, size, times, inode, device, sample."""
        return (
            self.path == other.path
            and self.size == other.size
            and self.mtime_ns == other.mtime_ns
            and self.fingerprint == other.fingerprint
            and None not in (self.ctime_ns, self.inode, self.device)
            and (self.ctime_ns, self.inode, self.device) == (other.ctime_ns, other.inode, other.device)
        )


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
    compressed: Mapping[Source, int] = field(default_factory=dict)
    """The plain FASTQ sources sent gzip-compressed, each with its plain bytes per part: part ``n`` holds the
    gzip members of plain bytes ``(n - 1) × input_part .. n × input_part``. Written only when not empty, so a
    checkpoint without compressed sources reads as before."""

    @classmethod
    def from_read_set(
        cls,
        store_id: str,
        read_set: ReadSet,
        *,
        part_size: int,
        sources: Sequence[SourceFingerprint],
        client_token: str,
        compressed: Mapping[Source, int] | None = None,
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
            compressed=dict(compressed or {}),
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["tags"] = dict(self.tags)
        data.pop("compressed")
        if self.compressed:
            data["compressed"] = {source.value: size for source, size in self.compressed.items()}
        return {"t": "header", "v": FORMAT_VERSION, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckpointHeader:
        if data.get("v") not in _READABLE_VERSIONS:
            raise ValueError(f"format version {data.get('v')!r} is not one of {_READABLE_VERSIONS}")
        fields = {k: v for k, v in data.items() if k not in ("t", "v")}
        fields["file_type"] = FileType(fields["file_type"])
        fields["sources"] = tuple(
            SourceFingerprint(
                Source(s["source"]),
                str(s["path"]),
                int(s["size"]),
                int(s["mtime_ns"]),
                str(s["fingerprint"]),
                _optional_int(s.get("ctime_ns")),
                _optional_int(s.get("inode")),
                _optional_int(s.get("device")),
            )
            for s in fields["sources"]
        )
        fields["compressed"] = {Source(k): _positive_int(v) for k, v in fields.get("compressed", {}).items()}
        return cls(**fields)


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{value!r} is not a positive integer")
    return value


def _optional_int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not an integer")
    return value


# -- encoding ---------------------------------------------------------------------------------------------------


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


def header_line(header: CheckpointHeader) -> bytes:
    return _encode(header.to_json())


def upload_line(upload_id: str) -> bytes:
    return _encode({"t": "upload", "upload_id": upload_id})


def parts_line(records: Sequence[PartRecord]) -> bytes:
    """One group commit: every record in one line (empty bytes for no records)."""
    if not records:
        return b""
    rows = [[r.source.value, r.number, r.length, r.checksum, r.digest] for r in records]
    return _encode({"t": "parts", "p": rows})


def complete_line(read_set_id: str) -> bytes:
    return _encode({"t": "complete", "read_set_id": read_set_id})


# -- replaying ----------------------------------------------------------------------------------------------------


@dataclass
class Replay:
    """A checkpoint as its lines leave it: the header, the latest upload, its parts, and Complete's read set.

    ``intact`` is the length of the undamaged prefix: shorter than the file when its last line was torn.
    """

    header: CheckpointHeader
    intact: int
    upload_id: str | None = None
    read_set_id: str | None = None
    parts: dict[tuple[Source, int], PartRecord] = field(default_factory=dict)

    def apply(self, record: Mapping[str, Any]) -> None:
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


def is_checkpoint(first_line: bytes) -> bool:
    """True when ``first_line`` is a checkpoint header this version can read: how a file is known to be ours."""
    record = _decode(first_line.rstrip(b"\n"))
    return record is not None and record["t"] == "header" and record.get("v") in _READABLE_VERSIONS


def replay(data: bytes, name: str = "checkpoint") -> Replay:
    """Replay a checkpoint's bytes; a torn last line is ignored, any other damage raises CheckpointError."""
    lines = data.split(b"\n")
    tail = lines.pop()  # bytes after the last newline: empty unless the last write was torn
    records: list[dict[str, Any]] = []
    intact = 0
    for index, line in enumerate(lines):
        record = _decode(line)
        if record is None:
            if index == len(lines) - 1 and not tail and index > 0:
                break  # a damaged last line: its write never completed
            raise CheckpointError(f"checkpoint {name} is damaged at line {index + 1}")
        records.append(record)
        intact += len(line) + 1
    if not records or records[0]["t"] != "header":
        raise CheckpointError(f"checkpoint {name} has no valid header line")
    try:
        header = CheckpointHeader.from_json(records[0])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {name} has an unreadable header: {exc}") from exc
    replayed = Replay(header, intact)
    for number, record in enumerate(records[1:], start=2):
        try:
            replayed.apply(record)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {name} has an unreadable record at line {number}") from exc
    return replayed


# -- whether a checkpoint can resume this read set ----------------------------------------------------------------


def read_set_identity(read_set: ReadSet) -> tuple[str, ...]:
    """What makes a read set this read set: the metadata Create sends."""
    header = CheckpointHeader.from_read_set("", read_set, part_size=0, sources=(), client_token="")
    return _identity(header)


def _identity(header: CheckpointHeader) -> tuple[str, ...]:
    tags = ",".join(f"{k}={v}" for k, v in sorted(header.tags.items()))
    fields = (
        header.file_type,
        header.subject_id,
        header.sample_id,
        header.name,
        header.reference_arn,
        header.generated_from,
        header.description,
        tags,
    )
    return tuple("" if value is None else str(value) for value in fields)


_RESTART = "run again with --restart to start a new upload"


def verify_resumable(
    header: CheckpointHeader,
    *,
    store_id: str,
    read_set: ReadSet,
    sources: Sequence[SourceFingerprint],
    part_size: int,
    name: str = "checkpoint",
    compressed: Mapping[Source, int] | None = None,
) -> frozenset[Source]:
    """Check that the checkpoint ``header`` can resume this upload; return the sources whose parts must be re-read.

    CheckpointMismatchError when it cannot: another store, other sources, a source of another size, another read
    set's metadata, another part size. A source reached through another path (a symlink, a staged copy), or
    whose times, inode, device or sampled bytes differ, can resume, but only once each part recorded for it has
    been read again and found equal to what was sent: those sources are returned.
    """
    if header.store_id != store_id:
        raise CheckpointMismatchError(
            f"checkpoint {name} is for store {header.store_id}, not {store_id}; use another --checkpoint or --restart"
        )
    recorded = {s.source: s for s in header.sources}
    current = {s.source: s for s in sources}
    if set(recorded) != set(current):
        raise CheckpointMismatchError(
            f"checkpoint {name} was written for {', '.join(sorted(recorded))}, not "
            f"{', '.join(sorted(current))}; {_RESTART}"
        )
    for source, old in recorded.items():
        new = current[source]
        if new.size != old.size:
            raise CheckpointMismatchError(
                f"{source} {new.path} is not the file the checkpoint was written for "
                f"(size {old.size:,} → {new.size:,} bytes); {_RESTART}"
            )
    if _identity(header) != read_set_identity(read_set):
        raise CheckpointMismatchError(
            f"checkpoint {name} is for another read set ({header.name!r}, sample {header.sample_id!r}); "
            "use another --checkpoint, or --restart to replace it"
        )
    if header.part_size != part_size:
        raise CheckpointMismatchError(
            f"checkpoint {name} was written with {header.part_size}-byte parts, not {part_size}; "
            "drop --part-size to resume, or --restart"
        )
    if dict(header.compressed) != dict(compressed or {}):
        was = ", ".join(sorted(header.compressed)) or "no source"
        now = ", ".join(sorted(compressed or {})) or "no source"
        raise CheckpointMismatchError(
            f"checkpoint {name} was written with {was} compressed while it uploaded, not {now}; {_RESTART}"
        )
    return frozenset(source for source, old in recorded.items() if not old.same_file(current[source]))


def checkpoint_name(store_id: str, identity: Sequence[str], sizes: Sequence[int]) -> str:
    """The file name of the default checkpoint: the store id and a hash of the read set's metadata and its sources'
    sizes. Not of their paths: the same read set reached through a symlink or a staged copy in a new folder (a
    workflow's retry) finds the same checkpoint, and its parts are read again before they are trusted."""
    text = "\0".join([store_id, *identity, *map(str, sizes)])
    key = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{store_id}-r{key[:24]}.jsonl"


def legacy_checkpoint_name(store_id: str, paths: Sequence[str], identity: Sequence[str] = ()) -> str:
    """The default checkpoint's name before version 2 (a hash of the absolute source paths): still found."""
    key = hashlib.sha256("\0".join([store_id, *paths, *identity]).encode("utf-8", "surrogateescape")).hexdigest()
    return f"{store_id}-{key[:24]}.jsonl"
