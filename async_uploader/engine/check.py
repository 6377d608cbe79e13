"""Checking a read set later: its receipt (``core.receipt``) against what the store reports now.

``verify_receipt(calls, receipt, deadline)`` looks at the read set (GetReadSetMetadata, through the request
machinery every request takes: the limiter, the retries), at a steady pace of about a second while the store is
still processing it, until it is ACTIVE or the deadline has passed. Then it compares the store's ETag and counts
with the receipt's; a FASTQ source whose hash the receipt does not hold (an upload that returned at Complete before
hashing, a changed store family) is hashed now from its path, but only when its size and modification time are
still those of the receipt. The outcome is a ``Check``: one line for people, one JSON object, one exit code.

``read_set_json`` and ``list_read_sets`` serve ``status`` and ``ls``.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import anyio

from ..core.config import FileType, Source
from ..core.errors import ResourceNotFoundError, UnavailableError
from ..core.fastq import ALGORITHMS, FastqSummary, NotFastqError
from ..core.protocol import ReadSetMetadata
from ..core.receipt import Receipt, SourceReceipt
from ..core.stats import Verification
from .calls import Calls
from .hashing import summarize_path

__all__ = [
    "POLL_INTERVAL",
    "SEVERITY",
    "Check",
    "Outcome",
    "list_read_sets",
    "look",
    "read_set_json",
    "receipt_for_files",
    "verify_receipt",
    "wait_for_store",
    "worst",
]

POLL_INTERVAL = 1.0
"""The pause between two looks at a read set the store is still processing (GetReadSetMetadata's quota, 5 a second
per account, is shared through the limiter by everything in the process)."""

WAITING = ("PROCESSING_UPLOAD", "ACTIVATING")
"""Statuses that become ACTIVE by themselves: waited for."""
COMPARABLE = ("ACTIVE", "ARCHIVED")
"""Statuses whose ETag and counts are final."""


class Outcome(StrEnum):
    """What a check found, from best to worst; ``exit_code`` maps it onto the command's exit codes."""

    VERIFIED = "verified"  # every digest and count the store reports equals the receipt's (or the files')
    UNVERIFIABLE = "unverifiable"  # nothing disagrees, but the content could not be compared (BAM, a stream)
    PROCESSING = "processing"  # still not ACTIVE at the deadline
    CHANGED = "changed"  # a source to hash now is not the file the receipt describes any more
    MISMATCH = "mismatch"  # something differs, or the store failed the read set, or it is gone

    @property
    def exit_code(self) -> int:
        return {
            Outcome.VERIFIED: 0,
            Outcome.UNVERIFIABLE: 0,
            Outcome.PROCESSING: 75,
            Outcome.CHANGED: 2,
            Outcome.MISMATCH: 1,
        }[self]


SEVERITY = (Outcome.MISMATCH, Outcome.CHANGED, Outcome.PROCESSING, Outcome.UNVERIFIABLE, Outcome.VERIFIED)
"""The order in which several checks decide one exit code: any mismatch makes it 1, else any changed file 2, else
anything still processing 75, else 0."""


@dataclass(frozen=True)
class Check:
    """The outcome of checking one read set: ``line()`` for people, ``as_json()`` for programs."""

    store_id: str
    read_set_id: str
    outcome: Outcome
    status: str | None
    reason: str
    verification: Verification | None = None
    receipt: str | None = None
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return self.outcome.exit_code

    def line(self) -> str:
        return f"{self.read_set_id}: {self.outcome.value}: {self.reason}"

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "storeId": self.store_id,
            "readSetId": self.read_set_id,
            "outcome": self.outcome.value,
            "verified": self.outcome is Outcome.VERIFIED,
            "status": self.status,
            "reason": self.reason,
            "receipt": self.receipt,
            "seconds": round(self.seconds, 3),
        }
        if self.verification is not None:
            data["verification"] = self.verification.as_json()
        return data


def worst(checks: list[Check]) -> int:
    """The exit code of several checks (``SEVERITY``); 0 for none."""
    outcomes = {check.outcome for check in checks}
    for outcome in SEVERITY:
        if outcome in outcomes:
            return outcome.exit_code
    return 0


def receipt_for_files(store_id: str, read_set_id: str, paths: list[Path]) -> Receipt:
    """A receipt for files named now (``verify --store-id --read-set-id SOURCE1 [SOURCE2]``): their size and time
    as they are, no hash (so they are hashed)."""
    sources = []
    for source, path in zip(Source, paths, strict=False):
        info = path.stat()
        sources.append(SourceReceipt(source, str(path.absolute()), info.st_size, info.st_mtime_ns))
    return Receipt(
        store_id=store_id,
        read_set_id=read_set_id,
        upload_id="",
        name="",
        subject_id="",
        sample_id="",
        file_type="",
        sources=tuple(sources),
    )


async def look(calls: Calls, store_id: str, read_set_id: str) -> ReadSetMetadata:
    """One GetReadSetMetadata, through the limiter and the retries."""
    client = calls.client
    return await calls.call("GetReadSetMetadata", lambda: client.get_read_set_metadata(store_id, read_set_id))


async def wait_for_store(
    calls: Calls,
    store_id: str,
    read_set_id: str,
    deadline: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> ReadSetMetadata:
    """Look at the read set until its status is no longer one that is waited for, or ``deadline`` (on ``clock``)
    has passed: the last metadata seen. The first look is at once, then one about every ``POLL_INTERVAL``."""
    while True:
        metadata = await look(calls, store_id, read_set_id)
        left = deadline - clock()
        if metadata.status not in WAITING or left <= 0:
            return metadata
        await sleep(min(POLL_INTERVAL, left))


async def verify_receipt(
    calls: Calls,
    receipt: Receipt,
    deadline: float,
    *,
    where: str | None = None,
    hashing: anyio.CapacityLimiter | None = None,
) -> Check:
    """Wait (until ``deadline``, on the monotonic clock) for the receipt's read set to be ACTIVE, then compare.

    ``where`` names the receipt in the outcome; ``hashing`` bounds how many files are hashed at once.
    """
    started = time.monotonic()

    def check(outcome: Outcome, status: str | None, reason: str, verification: Verification | None = None) -> Check:
        return Check(
            receipt.store_id,
            receipt.read_set_id,
            outcome,
            status,
            reason,
            verification,
            where,
            time.monotonic() - started,
        )

    try:
        metadata = await wait_for_store(calls, receipt.store_id, receipt.read_set_id, deadline)
    except ResourceNotFoundError:  # ReadSetGoneError included
        return check(Outcome.MISMATCH, None, f"store {receipt.store_id} has no read set {receipt.read_set_id}")
    status = metadata.status
    if status in WAITING:
        waited = time.monotonic() - started
        return check(
            Outcome.PROCESSING,
            status,
            f"the store is still processing it ({status}) after {waited:.0f} s; run the same command again later",
        )
    if status not in COMPARABLE:
        why = f": {metadata.status_message}" if metadata.status_message else ""
        return check(Outcome.MISMATCH, status, f"the read set is {status}{why}")
    sizes = _size_mismatches(receipt, metadata)
    if sizes:
        return check(Outcome.MISMATCH, status, "; ".join(sizes))
    file_type = metadata.file_type or receipt.file_type
    if file_type.upper() != FileType.FASTQ.value:
        matched = ", ".join(f"{s.source.value} {s.size:,} bytes" for s in receipt.sources)
        return check(
            Outcome.UNVERIFIABLE,
            status,
            f"{status}, sizes equal the receipt's ({matched}); a {file_type}'s ETag hashes the aligned records as "
            "SAM, which is not computed here, so its content cannot be verified",
        )
    return await _compare_fastq(receipt, metadata, hashing, check)


def _size_mismatches(receipt: Receipt, metadata: ReadSetMetadata) -> list[str]:
    found = []
    for source in receipt.sources:
        info = metadata.files.get(source.source.value.lower())
        length = info.get("contentLength") if isinstance(info, Mapping) else None
        if isinstance(length, int) and length != source.size:
            found.append(f"{source.source.value}: {length:,} bytes in the store, {source.size:,} expected")
    return found


_Make = Callable[..., Check]


async def _compare_fastq(
    receipt: Receipt, metadata: ReadSetMetadata, hashing: anyio.CapacityLimiter | None, check: _Make
) -> Check:
    status, etag = metadata.status, metadata.etag
    if etag is None:
        return check(Outcome.UNVERIFIABLE, status, "the store reported no ETag: nothing to compare with")
    family = ALGORITHMS.get(etag.algorithm)
    if family is None:
        return check(Outcome.UNVERIFIABLE, status, f"the store's ETag algorithm {etag.algorithm} is not a FASTQ one")
    try:
        summaries, hashed_now = await _summaries(receipt, family, hashing)
    except _CannotCompare as exc:
        return check(exc.outcome, status, exc.reason)
    names = [s.source for s in receipt.sources]
    counted = all(s.source in summaries and (s.digest is None or s.reads is not None) for s in receipt.sources)
    reads = sum(summaries[s].reads for s in names) if counted else None
    bases = sum(summaries[s].bases for s in names) if counted else None
    verification = Verification(
        verified=False,
        algorithm=etag.algorithm,
        local={s.value: summaries[s].digest for s in names},
        remote={s.value: etag.sources.get(s, "") for s in names},
        reads=reads,
        bases=bases,
        remote_reads=metadata.reads,
        remote_bases=metadata.bases,
    )
    mismatches = [
        f"{name}: {etag.algorithm} of the {'file' if name in hashed_now else 'receipt'} is {local}, the store "
        f"reports {verification.remote[name] or 'none'}"
        for name, local in verification.local.items()
        if local != verification.remote[name]
    ]
    if reads is not None and metadata.reads is not None and metadata.reads != reads:
        mismatches.append(f"{reads:,} reads uploaded, the store counts {metadata.reads:,}")
    if bases is not None and metadata.bases is not None and metadata.bases != bases:
        mismatches.append(f"{bases:,} bases uploaded, the store counts {metadata.bases:,}")
    if mismatches:
        reason = "; ".join(mismatches)
        return check(Outcome.MISMATCH, status, reason, verification.with_reason(reason, failed=True))
    where = f" (hashed now: {', '.join(hashed_now)})" if hashed_now else ""
    counts = f"; {reads:,} reads, {bases:,} bases" if reads is not None and bases is not None else ""
    sources = ", ".join(verification.local)
    reason = f"the store's {etag.algorithm} of {sources} equals the upload's{where}{counts}"
    return check(Outcome.VERIFIED, status, reason, verification.with_reason(None, verified=True))


class _CannotCompare(Exception):
    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome, self.reason = outcome, reason


async def _summaries(
    receipt: Receipt, family: str, hashing: anyio.CapacityLimiter | None
) -> tuple[dict[Source, FastqSummary], list[str]]:
    """Each source's summary in ``family``: the receipt's, else hashed now from its unchanged file (the sources
    hashed now are named in the second item). _CannotCompare when a source has neither."""
    summaries: dict[Source, FastqSummary] = {}
    hashed_now: list[str] = []
    for source in receipt.sources:
        name = source.source.value
        if source.digest is not None and source.family == family:
            summaries[source.source] = FastqSummary(family, source.digest, source.reads or 0, source.bases or 0)
            continue
        problem = _unchanged(source)
        if problem is not None:
            raise _CannotCompare(Outcome.UNVERIFIABLE if source.path is None else Outcome.CHANGED, problem)
        assert source.path is not None
        try:
            summaries[source.source] = await anyio.to_thread.run_sync(
                summarize_path, source.path, family, limiter=hashing
            )
        except NotFastqError as exc:
            raise _CannotCompare(Outcome.MISMATCH, f"{name} {source.path} does not decode as FASTQ: {exc}") from None
        except OSError as exc:
            raise _CannotCompare(Outcome.CHANGED, f"{name} {source.path}: {exc.strerror or exc}") from None
        hashed_now.append(name)
    return summaries, hashed_now


def _unchanged(source: SourceReceipt) -> str | None:
    """None when ``source``'s file is still the one the receipt describes (same size and modification time), else
    why it cannot be hashed now."""
    name = source.source.value
    if source.path is None:
        return f"{name} was a stream whose hash the receipt does not hold: its content cannot be verified now"
    try:
        info = os.stat(source.path)
    except OSError as exc:
        return f"{name} {source.path} cannot be hashed now: {exc.strerror or exc}"
    if info.st_size != source.size or (source.mtime_ns is not None and info.st_mtime_ns != source.mtime_ns):
        return (
            f"{name} {source.path} changed since the upload (size or modification time differ from the receipt's): "
            "it cannot be hashed to verify the read set"
        )
    return None


# -- status and ls ---------------------------------------------------------------------------------------------


def read_set_json(metadata: ReadSetMetadata) -> dict[str, Any]:
    """One read set as the ``status`` and ``ls`` commands print it under --json."""
    data: dict[str, Any] = {
        "id": metadata.id,
        "status": metadata.status,
        "name": metadata.name,
        "sampleId": metadata.sample_id,
        "subjectId": metadata.subject_id,
        "fileType": metadata.file_type,
        "creationTime": metadata.creation_time,
    }
    sizes = {
        name.upper(): info.get("contentLength")
        for name, info in sorted(metadata.files.items())
        if isinstance(info, Mapping) and isinstance(info.get("contentLength"), int)
    }
    if sizes:
        data["sizes"] = sizes
    if metadata.etag is not None:
        data["etag"] = {"algorithm": metadata.etag.algorithm, **{s.value: d for s, d in metadata.etag.sources.items()}}
    if metadata.reads is not None:
        data["totalReadCount"] = metadata.reads
    if metadata.bases is not None:
        data["totalBaseCount"] = metadata.bases
    if metadata.status_message:
        data["statusMessage"] = metadata.status_message
    return data


async def list_read_sets(
    calls: Calls, store_id: str, read_set_filter: Mapping[str, str], page_size: int | None = None
) -> AsyncIterator[ReadSetMetadata]:
    """Every read set of the store matching the ListReadSets filter, page by page (each page one request through
    the limiter and the retries), following nextToken to the end."""
    client = calls.client
    token: str | None = None
    seen: set[str] = set()
    while True:
        page, token = await calls.call(
            "ListReadSets",
            lambda token=token: client.list_read_sets_page(  # type: ignore[misc]
                store_id, read_set_filter, page_size, token
            ),
        )
        for item in page:
            yield item
        if token is None:
            return
        if token in seen:
            raise UnavailableError(
                "the listing returned a page token twice", code="InvalidResponse", operation="ListReadSets"
            )
        seen.add(token)
