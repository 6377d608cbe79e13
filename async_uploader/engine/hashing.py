"""A FASTQ source's ETag, reads and bases at the pace of the slowest of its stages, not of their sum.

``core.fastq.FastqSummer`` inflates, hashes and counts one piece after the other in one thread. Here two threads
share the work: the calling thread reads and inflates, a thread of its own hashes, in order. Counting records, the
cheapest stage, goes to whichever of the two has time to spare: a piece's lines are scanned by the inflating thread
when the hashing thread is behind (its queue is half full or more), by the hashing thread otherwise, and the scans
are added up in the text's order (``RecordCounter.scan`` needs nothing of the pieces before). Inflating, hashing
and scanning release the GIL on large buffers, so the two threads run at once and a source is summed about as fast
as its slowest stage alone: the inflater for some data, the hash for others, whatever the split of the counting
(``benchmarks/verify_pipeline.py``). A thread for each of the three stages, as before, reached 0.47 to 0.76 of the
slowest stage on two cores: three threads for two cores, every piece handed off twice (and copied twice by the
counter). With one core to run on there is nothing to overlap: everything is done in the calling thread, as
``FastqSummer`` does. The queue is short, so memory stays a few slices of text per source whatever its
size. The answer is ``FastqSummer``'s, errors included.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from ..core.fastq import SLICE, VECTOR_AFTER, FastqSummary, FastqSummer, Lines, NotFastqError, RecordCounter, summary

__all__ = ["READ_CHUNK", "ThreadedSummer", "overlapping", "summarize_path"]

READ_CHUNK = 1024 * 1024
"""What is read (and handed to the inflater) at a time."""
DEPTH = 6
"""Text slices waiting for the hashing thread: memory is at most about (DEPTH + 2) x SLICE per source."""


def overlapping() -> bool:
    """Whether this process may run on two cores or more: otherwise a second thread only adds hand-offs."""
    try:
        return len(os.sched_getaffinity(0)) > 1
    except AttributeError:  # where the platform cannot say
        return (os.cpu_count() or 1) > 1


class _Tally:
    """The scans of a source's pieces, added to its RecordCounter in the text's order whichever thread made them;
    after a NotFastqError it keeps the error and adds nothing more."""

    def __init__(self, counter: RecordCounter) -> None:
        self.counter = counter
        self.error: NotFastqError | None = None
        self._lock = threading.Lock()
        self._waiting: dict[int, Lines] = {}
        self._next = 0

    def add(self, index: int, lines: Lines) -> None:
        with self._lock:
            if self.error is not None:
                return
            self._waiting[index] = lines
            while (ready := self._waiting.pop(self._next, None)) is not None:
                self._next += 1
                try:
                    self.counter.add(ready)
                except NotFastqError as exc:
                    self.error = exc
                    self._waiting.clear()
                    return


class _Hasher:
    """The thread that hashes every piece put to it, in order, and scans the pieces it is asked to."""

    def __init__(self, digest: Any, tally: _Tally) -> None:
        self._digest = digest
        self._tally = tally
        self.queue: queue.Queue[tuple[int, bytes, bool] | None] = queue.Queue(DEPTH)
        self.cpu = 0.0  # the CPU seconds this thread used, once it has ended
        # a daemon: a stream whose reading thread is abandoned on a stop leaves this waiting, harmlessly
        self._thread = threading.Thread(target=self._run, name="etag-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.thread_time()
        update, scan, add = self._digest.update, self._tally.counter.scan, self._tally.add
        while (item := self.queue.get()) is not None:
            index, piece, scanning = item
            update(piece)
            if scanning and self._tally.error is None:
                add(index, scan(piece))
        self.cpu = time.thread_time() - started

    def join(self) -> None:
        self.queue.put(None)
        self._thread.join()


def _release(hasher: _Hasher) -> None:
    hasher.queue.put(None)


class ThreadedSummer(FastqSummer):
    """``FastqSummer`` with its stages overlapped: ``update`` inflates in the caller's thread, a thread of its own
    hashes, and either counts. ``finish`` (or ``close``, to give up) ends the thread; ``update`` never raises.
    ``overlap=False`` (the default where the process has a single core) does it all in the caller's thread."""

    def __init__(
        self,
        family: str = "MD5up",
        *,
        inflater: str | None = None,
        vectorized: bool = True,
        vector_after: int = VECTOR_AFTER,
        overlap: bool | None = None,
    ) -> None:
        super().__init__(family, inflater=inflater, vectorized=vectorized, vector_after=vector_after)
        self._overlap = overlapping() if overlap is None else overlap
        self._tally = _Tally(self._counter)
        self._pieces = 0
        self._hasher: _Hasher | None = None  # started by the first piece: creating a summer costs nothing
        self._closed = False

    @property
    def failed(self) -> bool:
        return self._error is not None or self._tally.error is not None

    @property
    def hasher_cpu(self) -> float:
        """The CPU seconds the hashing thread used, once ended by ``finish`` or ``close`` (0 without one)."""
        return self._hasher.cpu if self._hasher is not None else 0.0

    def _started(self) -> _Hasher:
        if self._hasher is None:
            self._hasher = _Hasher(self._hash, self._tally)
            # a summer dropped unfinished (a stream whose upload stopped) still ends its thread
            self._release = weakref.finalize(self, _release, self._hasher)
        return self._hasher

    @staticmethod
    def _scan_here(hasher: _Hasher) -> bool:
        """Whether the next piece's lines are scanned in this thread: when the hasher is behind (half a queue)."""
        return hasher.queue.qsize() * 2 >= DEPTH

    def _send(self, pieces: Iterable[bytes]) -> None:
        """Each piece to the hasher; its lines scanned here when the hasher is behind, there otherwise."""
        try:
            for piece in pieces:
                index, self._pieces = self._pieces, self._pieces + 1
                if not self._overlap:
                    self._hash.update(piece)
                    self._tally.add(index, self._counter.scan(piece))
                    continue
                hasher = self._started()
                here = self._scan_here(hasher)
                hasher.queue.put((index, piece, not here))
                if here:
                    self._tally.add(index, self._counter.scan(piece))
        except NotFastqError as exc:
            self._error = exc

    def update(self, data: bytes | bytearray | memoryview) -> None:
        whole = isinstance(data, bytes)
        view = memoryview(data)  # a caller's buffer is reused once this returns: the thread gets copies of it
        for start in range(0, len(view), len(view) if whole else SLICE):
            if self._closed or self.failed:
                return
            self._send(self._decoder.feed(data if isinstance(data, bytes) else bytes(view[start : start + SLICE])))

    def close(self) -> None:
        """End the thread (whatever was fed); ``finish`` does it too."""
        if self._closed:
            return
        self._closed = True
        if self._hasher is not None:
            self._release.detach()
            self._hasher.join()

    def finish(self) -> FastqSummary:
        if not self.failed and not self._closed:
            self._send(self._decoder.finish())
        self.close()
        if self._tally.error is not None:  # it is about text before any decoding error: the first one in the source
            raise self._tally.error
        if self._error is not None:
            raise self._error
        return summary(self.family, self._hash.hexdigest(), self._counter)


def summarize_path(
    path: str | os.PathLike[str], family: str, on_read: Callable[[int], None] | None = None, *, threaded: bool = True
) -> FastqSummary:
    """A FASTQ file's ETag digest, reads and bases, read front to back. Blocking: call it from a worker thread;
    ``on_read`` is told of every chunk read (and may raise to stop). NotFastqError when it does not decode."""
    summer = ThreadedSummer(family) if threaded else FastqSummer(family)
    try:
        with open(path, "rb", buffering=0) as f:
            offset = 0
            while not summer.failed and (chunk := os.pread(f.fileno(), READ_CHUNK, offset)):
                summer.update(chunk)
                offset += len(chunk)
                if on_read is not None:
                    on_read(len(chunk))
        return summer.finish()
    finally:
        if isinstance(summer, ThreadedSummer):
            summer.close()
