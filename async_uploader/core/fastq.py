"""What the service will say a FASTQ source holds, computed here from the user's bytes: its ETag, reads and bases.

The service computes, on ingestion, an ETag of each source's semantic content: FASTQ_MD5up is the MD5 of the
uncompressed, full FASTQ source (FASTQ_SHA256up and FASTQ_SHA512up the same with SHA-256 and SHA-512, for stores
created with those families), and ``sequenceInformation`` counts the reads and bases. ``FastqSummer`` computes the
same from the source's bytes fed in order: a source that starts with gzip's magic is decompressed member after
member (one member, many concatenated, or BGZF blocks, which are gzip members too); any other source is hashed as
it is. Records are four lines; the bases of a record are its sequence line.

Pure computation. Decompression, hashing and counting release the GIL on large buffers, so a worker thread runs
this beside the event loop; ``FastqSummer`` runs the three stages in series, and the pieces it is built of
(``Decoder``, ``RecordCounter``, ``summary``) let a caller run them in threads of their own, overlapped
(``engine.hashing``). The inflater is python-isal's where it is installed (about twice zlib's speed here;
``benchmarks/verify_cost.py``), zlib's otherwise; counting uses numpy where installed, ``bytes.split`` otherwise.
Both are in the ``fast`` extra.
"""

from __future__ import annotations

import functools
import hashlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from .config import FileType

_isal_zlib: Any
try:  # the fast extra: optional accelerators, each with a plain fallback below
    from isal import isal_zlib as _isal_zlib
except ImportError:  # where isal is not installed
    _isal_zlib = None


@functools.cache
def _numpy() -> Any:
    """numpy, imported once a source's text passes ``VECTOR_AFTER`` (None where it is not installed). Importing it
    costs 0.1-0.2 s of CPU, which an upload that verifies nothing, or only small files, does not pay."""
    try:
        import numpy  # noqa: PLC0415
    except ImportError:
        return None
    return numpy


__all__ = [
    "ALGORITHMS",
    "FAMILIES",
    "VECTOR_AFTER",
    "Decoder",
    "FastqSummary",
    "FastqSummer",
    "Lines",
    "NotFastqError",
    "RecordCounter",
    "TruncatedError",
    "check_file_type",
    "inflater_name",
    "new_hash",
    "summary",
]

FAMILIES = {"MD5up": "md5", "SHA256up": "sha256", "SHA512up": "sha512"}
"""A sequence store's ETag algorithm family → the hash its FASTQ ETag uses."""
ALGORITHMS = {f"FASTQ_{family}": family for family in FAMILIES}
"""The ETag algorithm a read set reports → its family."""
GZIP_MAGIC = b"\x1f\x8b"
SLICE = 2 * 1024 * 1024
"""Decompressed output is taken in slices of at most this size: a member that expands hugely costs no more."""


class NotFastqError(Exception):
    """The bytes do not decode as (gzip-compressed) FASTQ; the message says where."""


class TruncatedError(NotFastqError):
    """The source ends inside a gzip member: it was cut short (a copy or a download that stopped)."""

    def __init__(self) -> None:
        super().__init__("its last gzip member ends early")


@dataclass(frozen=True, slots=True)
class FastqSummary:
    """A FASTQ source as the service will describe it: the ETag's hex digest, and its reads and bases."""

    family: str
    digest: str
    reads: int
    bases: int

    @property
    def algorithm(self) -> str:
        return f"FASTQ_{self.family}"


class _Inflate(Protocol):
    eof: bool
    unused_data: bytes
    unconsumed_tail: bytes

    def decompress(self, data: bytes, max_length: int = ..., /) -> bytes: ...


_INFLATE_ERRORS: tuple[type[Exception], ...] = (zlib.error,) if _isal_zlib is None else (zlib.error, _isal_zlib.error)


def inflater_name() -> str:
    """The inflater used unless one is asked for: ``isal`` where installed, else ``zlib``."""
    return "isal" if _isal_zlib is not None else "zlib"


def _inflater(name: str) -> _Inflate:
    module: Any = _isal_zlib if name == "isal" and _isal_zlib is not None else zlib
    inflate: _Inflate = module.decompressobj(31)
    return inflate


class _Members:
    """Concatenated gzip members (BGZF included) fed in arbitrary pieces."""

    def __init__(self, inflater: str | None = None) -> None:
        self._name = inflater or inflater_name()
        self._member = _inflater(self._name)
        self._inside = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The uncompressed pieces ``data`` completes, each at most SLICE bytes, as they come."""
        while data:
            self._inside = True
            try:
                piece = self._member.decompress(data, SLICE)
            except _INFLATE_ERRORS as exc:
                raise NotFastqError(f"not a valid gzip stream ({exc})") from None
            if piece:
                yield piece
            if self._member.eof:
                data = self._member.unused_data
                self._member = _inflater(self._name)
                self._inside = False
            else:
                data = self._member.unconsumed_tail

    def finish(self) -> None:
        if self._inside:
            raise TruncatedError()


class Decoder:
    """A source's bytes in order → its uncompressed text: gzip (any members) is inflated, anything else passed on.

    ``feed`` yields the text pieces each chunk completes (each at most SLICE bytes when inflated); ``finish`` the
    last ones, and raises NotFastqError (TruncatedError when the last member ends early).
    """

    def __init__(self, inflater: str | None = None) -> None:
        self._inflater = inflater
        self._members: _Members | None = None
        self._head: bytes | None = b""

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        if self._head is not None:
            self._head += chunk  # gzip or plain text is decided by the first two bytes
            if len(self._head) < 2:
                return
            chunk, self._head = self._head, None
            if chunk.startswith(GZIP_MAGIC):
                self._members = _Members(self._inflater)
        if self._members is not None:
            yield from self._members.feed(chunk)
        elif chunk:
            yield chunk

    def finish(self) -> Iterator[bytes]:
        if self._head:  # fewer than two bytes in all
            yield self._head
        self._head = None
        if self._members is not None:
            self._members.finish()


@dataclass(frozen=True, slots=True)
class Lines:
    """What one piece of text holds, found without knowing what came before it (``RecordCounter.scan``).

    ``head`` is the piece up to its first newline, included: the end of a line an earlier piece began (all of the
    piece when it holds no newline: ``closed`` is then False). Then ``count`` whole lines, described by their
    position in fours (``[r]`` is about the lines at positions r, r + 4, ...): whether they all start with '@',
    with '+', and their summed length without the line ending. ``tail`` is what follows the last newline.
    ``piece`` is the piece itself, looked at again only to say which line is wrong.
    """

    head: bytes
    closed: bool = False
    count: int = 0
    ats: tuple[bool, ...] = (True,) * 4
    pluses: tuple[bool, ...] = (True,) * 4
    lengths: tuple[int, ...] = (0,) * 4
    tail: bytes = b""
    piece: bytes = b""

    def first_not(self, start: bytes, position: int) -> int:
        """The index, among the whole lines, of the first at ``position`` in fours not starting with ``start``."""
        lines = self.piece[len(self.head) : len(self.piece) - len(self.tail)].split(b"\n")[:-1]
        wrong = (n for n in range(position, len(lines), 4) if lines[n].removesuffix(b"\r")[:1] != start)
        return next(wrong, position)


VECTOR_AFTER = 16 * 2**20
"""Bytes of text counted by ``bytes.split`` before numpy takes over: importing numpy costs what counting about 60 MiB
without it does (0.13 s of CPU against 2.2 ms saved per MiB of 100-150 bp reads, measured 2026-12-06), so a small
source never imports it and a large one pays at most 35 ms for waiting."""


class RecordCounter:
    """FASTQ records and bases of uncompressed text fed in arbitrary pieces; checks the four-line shape.

    ``update(piece)`` is ``add(scan(piece))``. ``scan``, nearly all of the work, needs nothing of the pieces before
    and changes nothing: any thread may scan any piece, at any time. ``add`` takes the scans in the text's order.
    """

    def __init__(self, *, vectorized: bool = True, vector_after: int = VECTOR_AFTER) -> None:
        self.lines = 0
        self.bases = 0
        self.qualities = 0
        self._carry = b""
        self._numpy: Any = None
        self._vector_after: int | None = vector_after if vectorized else None
        self._scanned = 0  # bytes scanned; two threads may race on it: the two ways of counting agree

    def update(self, data: bytes) -> None:
        self.add(self.scan(data))

    def scan(self, data: bytes) -> Lines:
        """The lines of ``data``, one piece of the text; the piece is read where it lies, not copied."""
        first = data.find(b"\n") + 1
        if not first:
            return Lines(data)
        last = data.rfind(b"\n") + 1
        head, tail = data[:first], data[last:]
        if first == last:
            return Lines(head, True, tail=tail)
        if self._vector_after is not None and self._scanned >= self._vector_after:
            self._numpy, self._vector_after = _numpy(), None
        self._scanned += last - first
        if self._numpy is not None:
            return self._vector(self._numpy, data, first, last, head, tail)
        lines = data[first:last].split(b"\n")[:-1]
        if data.find(b"\r", first, last) >= 0:
            lines = [line.removesuffix(b"\r") for line in lines]
        return Lines(
            head,
            True,
            len(lines),
            tuple(all(line[:1] == b"@" for line in lines[r::4]) for r in range(4)),
            tuple(all(line[:1] == b"+" for line in lines[r::4]) for r in range(4)),
            tuple(sum(map(len, lines[r::4])) for r in range(4)),
            tail,
            data,
        )

    @staticmethod
    def _vector(numpy: Any, data: bytes, first: int, last: int, head: bytes, tail: bytes) -> Lines:
        text = numpy.frombuffer(data, numpy.uint8, last - first, first)  # a view of the whole lines
        ends = numpy.flatnonzero(text == 10)
        starts = numpy.empty_like(ends)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        lengths = ends - starts
        if data.find(b"\r", first, last) >= 0:
            lengths -= text[numpy.maximum(ends - 1, 0)] == 13
        starting = text[starts]  # an empty line's first byte is its own newline: neither '@' nor '+'
        whole = len(ends) // 4 * 4
        sums = [int(lengths[r:whole:4].sum()) for r in range(4)]
        ats, pluses = [True] * 4, [True] * 4
        if whole:  # the first bytes of four lines in a row as one number: AND and OR show where all agree
            packed = starting[:whole].view(numpy.uint32)
            low = numpy.bitwise_and.reduce(packed).tobytes()
            high = numpy.bitwise_or.reduce(packed).tobytes()
            ats = [low[r] == high[r] == 64 for r in range(4)]
            pluses = [low[r] == high[r] == 43 for r in range(4)]
        for r, (length, byte) in enumerate(zip(lengths[whole:].tolist(), starting[whole:].tolist(), strict=True)):
            sums[r] += length
            ats[r] = ats[r] and byte == 64
            pluses[r] = pluses[r] and byte == 43
        return Lines(head, True, len(ends), tuple(ats), tuple(pluses), tuple(sums), tail, data)

    def add(self, lines: Lines) -> None:
        """Count a piece's lines, scanned by ``scan``, after those of the pieces before it."""
        if not lines.closed:  # all of it belongs to the line an earlier piece began
            self._carry += lines.head
            return
        self._line(self._carry + lines.head if self._carry else lines.head)
        self._carry = lines.tail
        if not lines.count:
            return
        at = self.lines % 4  # which line of a record the whole lines start with
        if not lines.ats[-at % 4] or not lines.pluses[(2 - at) % 4]:
            # the first wrong line: the one whose record starts first
            wrong = [
                (lines.first_not(b"@", -at % 4), "does not start with '@'") if not lines.ats[-at % 4] else None,
                (lines.first_not(b"+", (2 - at) % 4) - 2, "has no '+' separator line")
                if not lines.pluses[(2 - at) % 4]
                else None,
            ]
            record, why = min(w for w in wrong if w is not None)
            raise NotFastqError(f"a record after line {self.lines + record} {why}")
        self.bases += lines.lengths[(1 - at) % 4]
        self.qualities += lines.lengths[(3 - at) % 4]
        self.lines += lines.count

    def _line(self, line: bytes) -> None:
        """One line, with its newline."""
        at = self.lines % 4
        if at == 0 and line[:1] != b"@":
            raise NotFastqError(f"a record after line {self.lines} does not start with '@'")
        if at == 2 and line[:1] != b"+":
            raise NotFastqError(f"a record after line {self.lines - 2} has no '+' separator line")
        if at % 2:
            length = len(line.removesuffix(b"\n").removesuffix(b"\r"))
            if at == 1:
                self.bases += length
            else:
                self.qualities += length
        self.lines += 1

    def finish(self) -> tuple[int, int]:
        if self._carry:
            line, self._carry = self._carry + b"\n", b""
            self._line(line)
        if self.lines % 4:
            raise NotFastqError(f"{self.lines} lines do not make whole four-line records")
        if self.bases != self.qualities:
            raise NotFastqError(f"{self.bases} bases but {self.qualities} quality values")
        return self.lines // 4, self.bases


def new_hash(family: str) -> Any:
    """The hash object of an ETag family (ValueError for an unknown one)."""
    if family not in FAMILIES:
        raise ValueError(f"ETag family {family!r} is not one of {', '.join(FAMILIES)}")
    return hashlib.new(FAMILIES[family])


def summary(family: str, digest: str, counter: RecordCounter) -> FastqSummary:
    """The summary of a source whose whole text went through ``counter`` (NotFastqError if it is not FASTQ)."""
    reads, bases = counter.finish()
    if reads == 0:
        raise NotFastqError("no FASTQ records")
    return FastqSummary(family, digest, reads, bases)


class FastqSummer:
    """``update()`` with a source's bytes in order, then ``finish()`` → ``FastqSummary``.

    ``finish()`` raises NotFastqError when the bytes do not decode as FASTQ; ``update()`` never raises (it notes the
    first error, sets ``failed`` and ignores what follows), so a reader can feed it without a second way to fail.
    """

    def __init__(
        self,
        family: str = "MD5up",
        *,
        inflater: str | None = None,
        vectorized: bool = True,
        vector_after: int = VECTOR_AFTER,
    ) -> None:
        self._hash = new_hash(family)
        self.family = family
        self._counter = RecordCounter(vectorized=vectorized, vector_after=vector_after)
        self._decoder = Decoder(inflater)
        self._error: NotFastqError | None = None

    @property
    def failed(self) -> bool:
        return self._error is not None

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._error is not None:
            return
        try:
            self._update(bytes(data))
        except NotFastqError as exc:
            self._error = exc

    def _update(self, chunk: bytes) -> None:
        for piece in self._decoder.feed(chunk):
            self._hash.update(piece)
            self._counter.update(piece)

    def finish(self) -> FastqSummary:
        if self._error is not None:
            raise self._error
        for piece in self._decoder.finish():
            self._hash.update(piece)
            self._counter.update(piece)
        return summary(self.family, self._hash.hexdigest(), self._counter)


# -- the file type a source's first bytes show ------------------------------------------------------------------

_BAM_MAGIC = b"BAM\x01"
_CRAM_MAGIC = b"CRAM"
_HEAD_RECORDS = 256  # records judged from a head: the type shows in the first; the verification reads them all
_HEAD_TEXT = 1 << 18  # text inflated from a head: 256 records of reads up to about 500 bases


def check_file_type(head: bytes, file_type: FileType) -> str | None:
    """Why the first bytes of a source (up to about 1 MiB) are not ``file_type``; None when they agree.

    FASTQ: gzip (BGZF included) or plain text whose first records parse; BAM and uBAM: BGZF whose first block
    holds the BAM magic; CRAM: the CRAM magic.
    """
    is_gzip = head.startswith(GZIP_MAGIC)
    if file_type is FileType.CRAM:
        return None if head.startswith(_CRAM_MAGIC) else f"it does not start with the CRAM magic ({_show(head)})"
    if file_type in (FileType.BAM, FileType.UBAM):
        if not is_gzip:
            return f"it is not BGZF-compressed like every BAM ({_show(head)})"
        return None if _inflate_head(head).startswith(_BAM_MAGIC) else "its first block does not hold the BAM magic"
    if head.startswith(_CRAM_MAGIC):
        return "it is a CRAM file"
    text = _inflate_head(head) if is_gzip else head
    if is_gzip and text.startswith(_BAM_MAGIC):
        return "it is a BAM file"
    return _first_records(text)


def _inflate_head(head: bytes) -> bytes:
    """Up to _HEAD_TEXT bytes of the decompressed stream ``head`` begins: it usually ends inside a member, and what
    follows is judged by the whole-source verification, not here."""
    pieces: list[bytes] = []
    size, data = 0, head
    while data and size < _HEAD_TEXT:
        member = _inflater(inflater_name())
        try:
            piece = member.decompress(data, _HEAD_TEXT - size)
        except _INFLATE_ERRORS:
            break
        pieces.append(piece)
        size += len(piece)
        if not member.eof:
            break
        data = member.unused_data
    return b"".join(pieces)


def _first_records(text: bytes) -> str | None:
    """Why the first whole records of ``text`` are not FASTQ; None when they are (or the text holds none yet)."""
    if not text:
        return "it holds no text"
    if not text.startswith(b"@"):
        return f"its first line does not start with '@' ({_show(text)})"
    pieces = text.split(b"\n", 4 * _HEAD_RECORDS)
    lines = pieces[: 4 * _HEAD_RECORDS] if len(pieces) > 4 * _HEAD_RECORDS else pieces[:-1]  # whole lines only
    for at in range(0, len(lines) - len(lines) % 4, 4):
        head, sequence, plus, quality = (line.removesuffix(b"\r") for line in lines[at : at + 4])
        if not head.startswith(b"@") or not plus.startswith(b"+") or len(sequence) != len(quality):
            return f"record {at // 4 + 1} is not a FASTQ record"
    return None


def _show(data: bytes) -> str:
    return repr(data[:8])
