"""What the store does with a read set after Complete, in a worker thread while it is PROCESSING_UPLOAD.

Each source's parts are joined into one stored file (the service keeps one file per source, and serves it in
parts of the size its metadata reports) by the kernel (``os.copy_file_range``: the bytes do not pass through
this process a second time); each part is then read once, from the page cache, to hash and count a FASTQ source
(:mod:`.etag`) or index a BAM source (:mod:`.bai`). The sources of a read set are processed in parallel, one
thread each. The first bytes decide ACTIVE or UPLOAD_FAILED. Plain synchronous code: the app runs :func:`ingest`
in a thread and only awaits it.
"""

from __future__ import annotations

import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from .bai import BaiBuilder, NotIndexable
from .etag import FastqDigest, FastqSummary, NotFastq

CHUNK = 4 * 1024 * 1024
READ = 1024 * 1024  # what a reader is fed at a time: an inflater given more copies its unread rest on each call
# The index of a CRAM read set. This store does not parse CRAM, so the file it serves as ``file=INDEX`` is a
# marker, not a CRAI: a tool that reads it as an index fails on its first bytes rather than trusting an index
# that describes nothing. (BAM read sets get a real BAI.)
PLACEHOLDER_INDEX = (
    b"PLACEHOLDER INDEX of the async_uploader local sequence store: not a CRAI; this store does not parse CRAM.\n"
)


class Reader(Protocol):
    """What reads a source as it is joined: ``update`` with its bytes in order; raises when it cannot go on."""

    def update(self, data: bytes) -> None: ...


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
        if head[:2] == b"\x1f\x8b":
            return None
        if head[:1] == b"@":  # as the service: "FASTQ (gzip-only)"
            return f"{source} is plain FASTQ: a FASTQ source must be gzip-compressed"
        return f"{source} is not gzip-compressed FASTQ"
    if file_type in ("BAM", "UBAM"):
        return None if head[:2] == b"\x1f\x8b" else f"{source} is not a BGZF-compressed {file_type} file"
    if file_type == "CRAM":
        return None if head[:4] == b"CRAM" else f"{source} is not a CRAM file"
    return f"unknown file type {file_type}"


def corrupted(digest: str) -> str:
    """The digest with its last hex digit changed: what a store that lost a byte would report."""
    return digest[:-1] + ("0" if digest[-1] != "0" else "1")


def _join(handle: BinaryIO, out: BinaryIO) -> None:
    """Append all of ``handle`` to ``out``, in the kernel where it can (no copy through user space)."""
    size = os.fstat(handle.fileno()).st_size
    done = 0
    try:
        while done < size:
            copied = os.copy_file_range(handle.fileno(), out.fileno(), size - done, done)
            if copied == 0:
                break
            done += copied
        return
    except OSError:  # no copy_file_range across these file systems: copy by hand, from where it stopped
        pass
    handle.seek(done)
    out.seek(0, os.SEEK_END)
    shutil.copyfileobj(handle, out, CHUNK)


def assemble(job: Job, name: str, parts: list[Path], reader: Reader | None) -> tuple[Path, bytes, bool]:
    """Join ``parts`` into ``directory/name`` (removing each part once copied), feeding ``reader`` on the way.

    Returns the joined file, its first four bytes and whether ``reader`` took every byte (a source it cannot
    read stops the reading, not the joining).
    """
    assert job.directory is not None
    target = job.directory / name.lower()
    head = b""
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as handle:
                _join(handle, out)
                handle.seek(0)
                while (reader is not None or len(head) < 4) and (chunk := handle.read(READ)):
                    if job.cancelled.is_set():
                        raise Cancelled()
                    if len(head) < 4:
                        head = (head + chunk)[:4]
                    if reader is not None:
                        try:
                            reader.update(chunk)
                        except (NotFastq, NotIndexable):
                            reader = None
            if job.cancelled.is_set():
                raise Cancelled()
            part.unlink()
    return target, head, reader is not None


def ingest(job: Job) -> Outcome:
    if job.directory is None:
        # Nothing kept: sizes are known, contents are not, so no ETag, no counts, no index, no format check.
        return Outcome()
    if job.file_type == "FASTQ":
        return _fastq(job)
    name, parts = next(iter(job.sources.items()))
    bai = BaiBuilder() if job.file_type == "BAM" else None
    path, head, read = assemble(job, name, parts, bai)
    outcome = Outcome({name: path}, problem=format_problem(job.file_type, head, name))
    index = job.directory / "index"
    if outcome.problem is None and bai is not None and read:
        try:
            index.write_bytes(bai.finish())
        except NotIndexable:
            return outcome
    elif outcome.problem is None and job.file_type == "CRAM":
        index.write_bytes(PLACEHOLDER_INDEX)
    else:
        return outcome
    return Outcome(outcome.files, index)


def _fastq_source(job: Job, name: str, parts: list[Path]) -> tuple[Path, str | None, FastqSummary | None]:
    """One source joined, checked, hashed and counted: its file, what is wrong with it, its summary."""
    digest = FastqDigest(job.family)
    try:
        path, head, hashed = assemble(job, name, parts, digest)
        try:
            summary = digest.finish() if hashed else None
        except NotFastq:
            summary = None
    finally:
        digest.close()
    return path, format_problem(job.file_type, head, name), summary


def _fastq(job: Job) -> Outcome:
    assert job.directory is not None
    files: dict[str, Path] = {}
    digests: dict[str, str] = {}
    reads = bases = 0
    problem = None
    decoded = True
    with ThreadPoolExecutor(max_workers=len(job.sources) or 1, thread_name_prefix="store-source") as pool:
        futures = {name: pool.submit(_fastq_source, job, name, parts) for name, parts in job.sources.items()}
        results = {name: future.result() for name, future in futures.items()}
    for name, (path, why, summary) in results.items():
        files[name] = path
        problem = problem or why
        if summary is None:
            decoded = False
            continue
        digests[name.lower()] = corrupted(summary.digest) if job.corrupt_etag else summary.digest
        reads, bases = reads + summary.reads, bases + summary.bases
    if problem is not None or not decoded:
        return Outcome(files, problem=problem)
    return Outcome(files, etag={"algorithm": f"FASTQ_{job.family}", **digests}, counts=(reads, bases))
