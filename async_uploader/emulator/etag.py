"""The read set ETag of a FASTQ source and its read and base counts, computed as the bytes stream by.

FASTQ_MD5up (and the SHA256up, SHA512up variants) is the digest of the uncompressed, full FASTQ source
(HealthOmics developer guide, "HealthOmics ETags and data provenance"). A source starting with the gzip magic
is decompressed member after member (one member, many concatenated members, or BGZF blocks, which are gzip
members too); any other source is hashed as it is. Records are counted as four lines each: the base count is
the length of every second line, and a record whose quality line differs in length from its sequence, or a
source whose lines do not make whole records, is not FASTQ.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

GZIP_MAGIC = b"\x1f\x8b"
# Decompressed output is taken in slices of at most this many bytes, so a small member that expands hugely
# costs no more memory than any other.
SLICE = 8 * 1024 * 1024
FAMILIES = {"MD5up": "md5", "SHA256up": "sha256", "SHA512up": "sha512"}


class NotFastq(Exception):
    """The source is not (gzip-compressed) FASTQ; the message says where it went wrong."""


@dataclass(frozen=True)
class FastqSummary:
    digest: str
    reads: int
    bases: int


class RecordCounter:
    """Counts FASTQ records and bases in uncompressed text fed in arbitrary pieces."""

    def __init__(self) -> None:
        self.lines = 0
        self.bases = 0
        self.qualities = 0
        self._carry = b""

    def update(self, data: bytes) -> None:
        text = self._carry + data
        lines = text.split(b"\n")
        self._carry = lines.pop()
        if b"\r" in text:
            lines = [line.removesuffix(b"\r") for line in lines]
        self._count(lines)

    def _count(self, lines: list[bytes]) -> None:
        at = self.lines  # the number of lines before lines[0]; a record's header is a line number 0 mod 4
        if not all(line.startswith(b"@") for line in lines[-at % 4 :: 4]):
            raise NotFastq(f"a record after line {at} does not start with '@'")
        if not all(line.startswith(b"+") for line in lines[(2 - at) % 4 :: 4]):
            raise NotFastq(f"a record after line {at} has no '+' separator line")
        self.bases += sum(map(len, lines[(1 - at) % 4 :: 4]))
        self.qualities += sum(map(len, lines[(3 - at) % 4 :: 4]))
        self.lines += len(lines)

    def finish(self) -> tuple[int, int]:
        if self._carry:
            self._count([self._carry.removesuffix(b"\r")])
            self._carry = b""
        if self.lines % 4:
            raise NotFastq(f"{self.lines} lines do not make whole four-line records")
        if self.bases != self.qualities:
            raise NotFastq(f"{self.bases} bases but {self.qualities} quality values")
        return self.lines // 4, self.bases


class GzipMembers:
    """Decompresses concatenated gzip members (BGZF included) fed in arbitrary pieces."""

    def __init__(self) -> None:
        self._member = zlib.decompressobj(31)
        self._started = False

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        try:
            while data:
                self._started = True
                piece = self._member.decompress(data, SLICE)
                if piece:
                    out.append(piece)
                if self._member.eof:
                    data = self._member.unused_data
                    self._member = zlib.decompressobj(31)
                    self._started = False
                else:
                    data = self._member.unconsumed_tail
        except zlib.error as exc:
            raise NotFastq(f"not a valid gzip stream ({exc})") from None
        return out

    def finish(self) -> None:
        if self._started:
            raise NotFastq("the gzip stream ends inside a member")


class FastqDigest:
    """``update()`` with the source's bytes in order, then ``finish()`` → :class:`FastqSummary`.

    Raises :class:`NotFastq` (from either call) when the source does not decode as FASTQ.
    """

    def __init__(self, family: str = "MD5up") -> None:
        self._hash = hashlib.new(FAMILIES[family])
        self._counter = RecordCounter()
        self._gzip: GzipMembers | None = None
        self._head: bytes | None = b""

    def update(self, data: bytes) -> None:
        if self._head is not None:
            # gzip or plain text is decided by the first two bytes, whatever size the first pieces have.
            self._head += data
            if len(self._head) < 2:
                return
            data, self._head = self._head, None
            if data.startswith(GZIP_MAGIC):
                self._gzip = GzipMembers()
        for piece in self._gzip.feed(data) if self._gzip is not None else (data,):
            self._hash.update(piece)
            self._counter.update(piece)

    def finish(self) -> FastqSummary:
        if self._head is not None:  # fewer than two bytes in all: plain text
            self._hash.update(self._head)
            self._counter.update(self._head)
        if self._gzip is not None:
            self._gzip.finish()
        reads, bases = self._counter.finish()
        if reads == 0:
            raise NotFastq("the source holds no FASTQ records")
        return FastqSummary(self._hash.hexdigest(), reads, bases)
