"""A FASTQ source's ETag, reads and bases at the pace of the slowest of its three stages, not of their sum.

``core.fastq.FastqSummer`` inflates, hashes and counts one piece after the other in one thread. Here the calling
thread reads and inflates while one thread hashes the text and another counts its records: each stage releases
the GIL on large buffers, so the three overlap and a source is summed about as fast as the slowest of them (the
inflater for highly compressed reads, the hash otherwise; ``benchmarks/verify_pipeline.py``). The queues between
the stages are short, so memory stays a few slices of text per source whatever its size. The answer is the same as
``FastqSummer``'s, errors included.
"""

from __future__ import annotations

import os
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any

from ..core.fastq import (
    SLICE,
    VECTOR_AFTER,
    Decoder,
    FastqSummary,
    FastqSummer,
    NotFastqError,
    RecordCounter,
    new_hash,
    summary,
)

__all__ = ["READ_CHUNK", "ThreadedSummer", "summarize_path"]

READ_CHUNK = 1024 * 1024
"""What is read (and handed to the inflater) at a time."""
DEPTH = 4
"""Text slices waiting for each of the hashing and counting threads: memory is at most about 2 x DEPTH x SLICE."""


class _Stage:
    """A thread that applies ``work`` to every piece put to it, in order; after a NotFastqError it only drains."""

    def __init__(self, name: str, work: Callable[[bytes], Any]) -> None:
        self._work = work
        self._queue: queue.Queue[bytes | None] = queue.Queue(DEPTH)
        self.error: NotFastqError | None = None
        # a daemon: a stream whose reading thread is abandoned on a stop leaves this waiting, harmlessly
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, piece: bytes | None) -> None:
        self._queue.put(piece)

    def _run(self) -> None:
        while (piece := self._queue.get()) is not None:
            if self.error is None:
                try:
                    self._work(piece)
                except NotFastqError as exc:
                    self.error = exc

    def join(self) -> None:
        self._queue.put(None)
        self._thread.join()


def _release(stages: tuple[_Stage, ...]) -> None:
    for stage in stages:
        stage.put(None)


class ThreadedSummer(FastqSummer):
    """``FastqSummer`` with its stages overlapped: ``update`` inflates in the caller's thread, a thread of its own
    hashes, another counts. ``finish`` (or ``close``, to give up) ends the threads; ``update`` never raises."""

    def __init__(
        self,
        family: str = "MD5up",
        *,
        inflater: str | None = None,
        vectorized: bool = True,
        vector_after: int = VECTOR_AFTER,
    ) -> None:
        super().__init__(family, inflater=inflater, vectorized=vectorized, vector_after=vector_after)
        self._digest = new_hash(family)
        self._records = RecordCounter(vectorized=vectorized, vector_after=vector_after)
        self._text = Decoder(inflater)
        self._decode_error: NotFastqError | None = None
        self._stages: tuple[_Stage, _Stage] | None = None  # started by the first update: creating one costs nothing
        self._closed = False

    @property
    def failed(self) -> bool:
        stages = self._stages
        return self._decode_error is not None or (stages is not None and stages[1].error is not None)

    def _started(self) -> tuple[_Stage, _Stage]:
        if self._stages is None:
            self._stages = (_Stage("etag-hash", self._digest.update), _Stage("etag-count", self._records.update))
            # a summer dropped unfinished (a stream whose upload stopped) still ends its threads
            self._release = weakref.finalize(self, _release, self._stages)
        return self._stages

    def _send(self, pieces: Any) -> None:
        hashing, counting = self._started()
        try:
            for piece in pieces:
                hashing.put(piece)
                counting.put(piece)
        except NotFastqError as exc:
            self._decode_error = exc

    def update(self, data: bytes | bytearray | memoryview) -> None:
        whole = isinstance(data, bytes)
        view = memoryview(data)  # a caller's buffer is reused once this returns: the stages get copies of it
        for start in range(0, len(view), len(view) if whole else SLICE):
            if self._closed or self.failed:
                return
            self._send(self._text.feed(data if isinstance(data, bytes) else bytes(view[start : start + SLICE])))

    def close(self) -> None:
        """End the threads (whatever was fed); ``finish`` does it too."""
        if self._closed:
            return
        self._closed = True
        if self._stages is not None:
            self._release.detach()
            for stage in self._stages:
                stage.join()

    def finish(self) -> FastqSummary:
        if not self.failed and not self._closed:
            self._send(self._text.finish())
        self.close()
        counted = self._stages[1].error if self._stages is not None else None
        if counted is not None:  # it is about text before any decoding error: the first one in the source
            raise counted
        if self._decode_error is not None:
            raise self._decode_error
        return summary(self.family, self._digest.hexdigest(), self._records)


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
