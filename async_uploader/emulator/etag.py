"""The read set ETag of a FASTQ source and its read and base counts, computed as the bytes stream by.

FASTQ_MD5up (and the SHA256up, SHA512up variants) is the digest of the uncompressed, full FASTQ source
(HealthOmics developer guide, "HealthOmics ETags and data provenance"). A source starting with the gzip magic
is decompressed member after member (one member, many concatenated members, or BGZF blocks, which are gzip
members too); any other source is hashed as it is. Records are counted as four lines each: the base count is
the length of every second line, and a record whose quality line differs in length from its sequence, or a
source whose lines do not make whole records, is not FASTQ.

Fast where it can be: python-isal's inflater when it is installed (zlib's otherwise), numpy to find the lines when
it is installed (``bytes.split`` otherwise), and the hash and the count each in a thread of their own while the
caller inflates (all three release the GIL on large buffers), so a source is digested about as fast as the slowest
of the three. Memory is a few slices per source, whatever its size.
"""

from __future__ import annotations

import functools
import hashlib
import queue
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GZIP_MAGIC = b"\x1f\x8b"
# Decompressed output is taken in slices of at most this many bytes, so a small member that expands hugely
# costs no more memory than any other.
SLICE = 2 * 1024 * 1024
FAMILIES = {"MD5up": "md5", "SHA256up": "sha256", "SHA512up": "sha512"}
WAITING = 4  # slices queued for each of the hashing and the counting threads
BATCH = 1024 * 1024  # smaller pieces are joined up to this size before they go to the threads

_inflate_module: Any
try:
    from isal import isal_zlib as _inflate_module
except ImportError:  # zlib's inflater: about half the speed
    _inflate_module = zlib
_INFLATE_ERRORS = tuple({zlib.error, getattr(_inflate_module, "error", zlib.error)})


@functools.cache
def _numpy() -> Any:
    """numpy when installed (imported on first use: the store starts faster), else None."""
    try:
        import numpy  # noqa: PLC0415
    except ImportError:
        return None
    return numpy


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
        self._np = _numpy()

    def update(self, data: bytes) -> None:
        text = self._carry + data if self._carry else data
        cut = text.rfind(b"\n") + 1
        self._carry = text[cut:]
        if cut:
            self._whole_lines(text[:cut] if cut < len(text) else text)

    def _whole_lines(self, text: bytes) -> None:
        """``text`` ends with a newline."""
        first = -self.lines % 4  # the index, in text's lines, of its first header line
        if self._np is not None:
            heads_ok, pluses_ok, bases, qualities, count = _by_numpy(self._np, text, first)
        else:
            lines = [line.removesuffix(b"\r") for line in text.split(b"\n")[:-1]] if b"\r" in text else None
            lines = lines if lines is not None else text.split(b"\n")[:-1]
            heads_ok = all(line.startswith(b"@") for line in lines[first::4])
            pluses_ok = all(line.startswith(b"+") for line in lines[(first + 2) % 4 :: 4])
            bases = sum(map(len, lines[(first + 1) % 4 :: 4]))
            qualities = sum(map(len, lines[(first + 3) % 4 :: 4]))
            count = len(lines)
        if not heads_ok:
            raise NotFastq(f"a record after line {self.lines} does not start with '@'")
        if not pluses_ok:
            raise NotFastq(f"a record after line {self.lines} has no '+' separator line")
        self.bases += bases
        self.qualities += qualities
        self.lines += count

    def finish(self) -> tuple[int, int]:
        if self._carry:
            self._whole_lines(self._carry + b"\n")
            self._carry = b""
        if self.lines % 4:
            raise NotFastq(f"{self.lines} lines do not make whole four-line records")
        if self.bases != self.qualities:
            raise NotFastq(f"{self.bases} bases but {self.qualities} quality values")
        return self.lines // 4, self.bases


def _by_numpy(np: Any, text: bytes, first: int) -> tuple[bool, bool, int, int, int]:
    """Header and separator checks, base and quality lengths, line count of whole lines, found vectorised."""
    data = np.frombuffer(text, dtype=np.uint8)
    ends = np.flatnonzero(data == 10)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts
    if b"\r" in text:
        lengths -= data[ends - 1] == 13  # an empty first line looks at the last byte, a newline
    leading = data[starts]  # an empty line's is its own newline (or CR): neither '@' nor '+'
    heads_ok = bool((leading[first::4] == 64).all())
    pluses_ok = bool((leading[(first + 2) % 4 :: 4] == 43).all())
    bases = int(lengths[(first + 1) % 4 :: 4].sum())
    qualities = int(lengths[(first + 3) % 4 :: 4].sum())
    return heads_ok, pluses_ok, bases, qualities, len(ends)


class GzipMembers:
    """Decompresses concatenated gzip members (BGZF included) fed in arbitrary pieces."""

    def __init__(self) -> None:
        self._member = _inflate_module.decompressobj(31)
        self._started = False

    def feed(self, data: bytes, out: Callable[[bytes], None]) -> None:
        try:
            while data:
                self._started = True
                piece = self._member.decompress(data, SLICE)
                if piece:
                    out(piece)
                if self._member.eof:
                    data = self._member.unused_data
                    self._member = _inflate_module.decompressobj(31)
                    self._started = False
                else:
                    data = self._member.unconsumed_tail
        except _INFLATE_ERRORS as exc:
            raise NotFastq(f"not a valid gzip stream ({exc})") from None

    def finish(self) -> None:
        if self._started:
            raise NotFastq("the gzip stream ends inside a member")


class _Worker:
    """A thread applying ``work`` to each piece in order; the first NotFastq it raises is kept, the rest skipped."""

    def __init__(self, work: Callable[[bytes], object], name: str) -> None:
        self.error: NotFastq | None = None
        self._work = work
        self._inbox: queue.Queue[bytes | None] = queue.Queue(WAITING)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            piece = self._inbox.get()
            if piece is None:
                return
            if self.error is None:
                try:
                    self._work(piece)
                except NotFastq as exc:
                    self.error = exc

    def send(self, piece: bytes) -> None:
        self._inbox.put(piece)

    def stop(self) -> None:
        self._inbox.put(None)
        self._thread.join()


class FastqDigest:
    """``update()`` with the source's bytes in order, then ``finish()`` → :class:`FastqSummary`.

    Raises :class:`NotFastq` (from either call) when the source does not decode as FASTQ. ``threads`` (the
    default) hashes and counts in threads of their own; ``close()`` ends them when the digest is given up.
    """

    def __init__(self, family: str = "MD5up", *, threads: bool = True) -> None:
        self._hash = hashlib.new(FAMILIES[family])
        self._counter = RecordCounter()
        self._gzip: GzipMembers | None = None
        self._head: bytes | None = b""
        self._threads = threads
        self._workers: tuple[_Worker, _Worker] | None = None
        self._closed = False
        self._pending: list[bytes] = []
        self._pending_size = 0

    def _out(self, piece: bytes) -> None:
        self._pending.append(piece)
        self._pending_size += len(piece)
        if self._pending_size >= BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        piece = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        if not self._threads:
            self._hash.update(piece)
            self._counter.update(piece)
            return
        if self._workers is None:
            self._workers = (_Worker(self._hash.update, "store-hash"), _Worker(self._counter.update, "store-count"))
        hashing, counting = self._workers
        if counting.error is not None:
            raise counting.error
        hashing.send(piece)
        counting.send(piece)

    def update(self, data: bytes) -> None:
        if self._head is not None:
            # gzip or plain text is decided by the first two bytes, whatever size the first pieces have.
            self._head += data
            if len(self._head) < 2:
                return
            data, self._head = self._head, None
            if data.startswith(GZIP_MAGIC):
                self._gzip = GzipMembers()
        if self._gzip is not None:
            self._gzip.feed(data, self._out)
        elif data:
            self._out(data)

    def close(self) -> None:
        if self._workers is not None and not self._closed:
            for worker in self._workers:
                worker.stop()
        self._closed = True

    def finish(self) -> FastqSummary:
        ended_early: NotFastq | None = None
        try:
            if self._head:  # fewer than two bytes in all: plain text
                self._out(self._head)
            self._head = None
            self._flush()
            if self._gzip is not None:
                try:
                    self._gzip.finish()
                except NotFastq as exc:
                    ended_early = exc
        finally:
            self.close()
        if self._workers is not None and self._workers[1].error is not None:
            raise self._workers[1].error  # about text before the end: the first error in the source
        if ended_early is not None:
            raise ended_early
        reads, bases = self._counter.finish()
        if reads == 0:
            raise NotFastq("the source holds no FASTQ records")
        return FastqSummary(self._hash.hexdigest(), reads, bases)
