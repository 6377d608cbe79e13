"""What the store does with a read set after Complete, in a worker thread while it is PROCESSING_UPLOAD.

Each source's parts are joined into one stored file (the service keeps one file per source, and serves it in
parts of the size its metadata reports); while the bytes pass, a FASTQ source is hashed and counted
(:mod:`.etag`). BAM and CRAM read sets get an index file. The first bytes decide ACTIVE or UPLOAD_FAILED.
Plain synchronous code: the app runs :func:`ingest` in a thread and only awaits it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from .etag import FastqDigest, NotFastq

CHUNK = 4 * 1024 * 1024
# The index of a BAM or CRAM read set. This store does not parse alignments, so the file it serves as
# ``file=INDEX`` is a marker, not a BAI or CRAI: a tool that reads it as an index fails on its first bytes
# rather than trusting an index that describes nothing.
PLACEHOLDER_INDEX = (
    b"PLACEHOLDER INDEX of the async_uploader local sequence store: not a BAI or CRAI; "
    b"this store does not parse alignments.\n"
)
INDEXED = ("BAM", "CRAM")


class Cancelled(Exception):
    """The store is closing: processing stopped part way."""


@dataclass(frozen=True)
class Job:
    """One read set to process: its type, each source's part files in order, where the results go."""

    file_type: str
    sources: dict[str, list[Path]]
    directory: Path | None  # None with --discard: no bytes were kept
    family: str = "MD5up"
    corrupt_etag: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class Outcome:
    files: dict[str, Path] = field(default_factory=dict)
    index: Path | None = None
    etag: dict[str, str] | None = None
    counts: tuple[int, int] | None = None  # (total reads, total bases) over every source
    problem: str | None = None


def format_problem(file_type: str, head: bytes, source: str) -> str | None:
    """A light check of a source's first bytes; None when it looks right."""
    if file_type == "FASTQ":
        if head[:2] == b"\x1f\x8b" or head[:1] == b"@":
            return None
        return f"{source} is neither gzip-compressed nor plain FASTQ"
    if file_type in ("BAM", "UBAM"):
        return None if head[:2] == b"\x1f\x8b" else f"{source} is not a BGZF-compressed {file_type} file"
    if file_type == "CRAM":
        return None if head[:4] == b"CRAM" else f"{source} is not a CRAM file"
    return f"unknown file type {file_type}"


def corrupted(digest: str) -> str:
    """The digest with its last hex digit changed: what a store that lost a byte would report."""
    return digest[:-1] + ("0" if digest[-1] != "0" else "1")


def assemble(job: Job, name: str, parts: list[Path], digest: FastqDigest | None) -> tuple[Path, bytes, bool]:
    """Join ``parts`` into ``directory/name`` (removing each part once copied), feeding ``digest`` on the way.

    Returns the joined file, its first four bytes and whether ``digest`` saw every byte (a source that is not
    FASTQ stops the hashing, not the joining).
    """
    assert job.directory is not None
    target = job.directory / name.lower()
    head = b""
    hashing = digest is not None
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    if job.cancelled.is_set():
                        raise Cancelled()
                    out.write(chunk)
                    if len(head) < 4:
                        head = (head + chunk)[:4]
                    if hashing:
                        assert digest is not None
                        try:
                            digest.update(chunk)
                        except NotFastq:
                            hashing = False
            part.unlink()
    return target, head, hashing


def ingest(job: Job) -> Outcome:
    if job.directory is None:
        # Nothing kept: sizes are known, contents are not, so no ETag, no counts and no format check.
        return Outcome()
    files: dict[str, Path] = {}
    digests: dict[str, str] = {}
    reads = bases = 0
    problem = None
    decoded = job.file_type == "FASTQ"
    for name, parts in job.sources.items():
        digest = FastqDigest(job.family) if job.file_type == "FASTQ" else None
        files[name], head, hashed = assemble(job, name, parts, digest)
        problem = problem or format_problem(job.file_type, head, name)
        if digest is not None and hashed:
            try:
                summary = digest.finish()
            except NotFastq:
                decoded = False
                continue
            digests[name.lower()] = corrupted(summary.digest) if job.corrupt_etag else summary.digest
            reads, bases = reads + summary.reads, bases + summary.bases
        else:
            decoded = False
    index = None
    if job.file_type in INDEXED and problem is None:
        index = job.directory / "index"
        index.write_bytes(PLACEHOLDER_INDEX)
    if problem is not None or not decoded:
        return Outcome(files, index, problem=problem)
    etag = {"algorithm": f"FASTQ_{job.family}", **digests}
    return Outcome(files, index, etag, (reads, bases))
