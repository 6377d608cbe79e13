"""A part's body for one attempt, and the page-aligned buffers part bytes are read into.

A body is offered three ways (``edge.messages``): as fresh slices (``slices()``, for aiohttp, which may hold on to
them), read into the sender's own reusable buffer by the event loop (``views()``, for the h11 path over plain HTTP),
or read into that buffer by the sender thread that writes it (``piece()``, for the h11 path over TLS: the thread
reads, hashes and writes the whole part, and the loop collects the progress). Buffers the kernel copies
into are page-aligned (``aligned_buffer``): on some CPUs (measured on AMD EPYC) a copy from the page cache into
memory 16 bytes past a page boundary, where ``malloc`` puts a large block, runs at a fifth of the speed.

Every body computes an xxh3-64 digest of what it sent, for the checkpoint (skipped when the upload keeps none).
"""

from __future__ import annotations

import mmap
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Protocol

import xxhash

from ...core.plan import Part
from ..messages import ProgressCall

__all__ = ["PartBody", "PartBuffer", "Pieces", "Slices", "Views", "aligned_buffer"]


class Digest(Protocol):
    """What a part body feeds its bytes to: an xxh3-64 hasher, or nothing when no checkpoint keeps digests."""

    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


class _NoDigest:
    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        """Nothing keeps the digest: skip the work."""

    def hexdigest(self) -> str:
        return ""


PartBuffer = mmap.mmap
"""A page-aligned, writable buffer (anonymous memory): what part bytes are read into."""


def aligned_buffer(size: int) -> PartBuffer:
    """``size`` bytes of zeroed, page-aligned memory (released when the last reference goes)."""
    return mmap.mmap(-1, max(1, size))


Slices = Callable[[int], AsyncIterator[bytes | bytearray | memoryview]]
"""Fresh pieces of a part's ``length`` bytes, in order."""
Views = Callable[[int, memoryview], AsyncIterator[memoryview]]
"""The part's ``length`` bytes in order, each piece read into the scratch buffer or a view of memory held."""
Pieces = Callable[[int, memoryview], memoryview]
"""Blocking, from any thread: the part's bytes from ``position`` on, read into the scratch buffer (at most its size)
or a view of memory held; SourceError when the source has nothing there any more."""


class PartBody:
    """The body of one part, for one attempt: ``length`` bytes offered as slices; ``digest`` once fully read.

    ``on_sent`` is told the size of every slice handed to the connection (progress), and minus what an earlier
    attempt had reported when the body is sent again. With ``pieces`` a sender thread can read the part itself
    (``start``, then ``piece`` from that one thread, ``advance`` and ``finish`` on the loop).
    """

    def __init__(
        self,
        part: Part,
        slices: Slices,
        views: Views,
        on_sent: Callable[[int], None] | None = None,
        *,
        digest: bool = True,
        pieces: Pieces | None = None,
    ) -> None:
        self.part = part
        self.length = part.length
        self.digest: str | None = None
        self.sent = 0
        self._slices = slices
        self._views = views
        self._pieces = pieces
        self._on_sent = on_sent
        self._digest = digest
        self._hasher: Digest = _NoDigest()

    @property
    def threaded(self) -> bool:
        """Whether a sender thread can read this body itself (``piece``)."""
        return self._pieces is not None

    def rewind(self) -> int:
        """Forget an attempt's progress before a retry; return the bytes that attempt had reported."""
        sent, self.sent, self.digest = self.sent, 0, None
        return sent

    def _report(self, call: ProgressCall | None, nbytes: int) -> None:
        if self._on_sent is not None and nbytes:
            if call is None:
                self._on_sent(nbytes)
            else:
                call(self._on_sent, nbytes)

    async def slices(self) -> AsyncIterator[bytes | bytearray | memoryview]:
        hasher: Digest = xxhash.xxh3_64() if self._digest else _NoDigest()
        # aiohttp itself may resend a body (a kept-alive connection closed under it): forget the first try.
        self._report(None, -self.rewind())
        async for piece in self._slices(self.length):
            hasher.update(piece)
            yield piece
            self.sent += len(piece)
            self._report(None, len(piece))
        self.digest = hasher.hexdigest()

    async def views(self, scratch: memoryview, call: ProgressCall | None = None) -> AsyncGenerator[memoryview, None]:
        hasher: Digest = xxhash.xxh3_64() if self._digest else _NoDigest()
        self._report(call, -self.rewind())
        async for view in self._views(self.length, scratch):
            hasher.update(view)
            yield view
            self.sent += len(view)
            self._report(call, len(view))
        self.digest = hasher.hexdigest()

    def start(self, call: ProgressCall | None = None) -> None:
        """On the loop, before a sender thread reads the body with ``piece``: a new attempt."""
        self._report(call, -self.rewind())
        self._hasher = xxhash.xxh3_64() if self._digest else _NoDigest()

    def piece(self, position: int, scratch: memoryview) -> memoryview:
        """In the one sender thread of this attempt: the bytes from ``position`` on, hashed (sent in order)."""
        assert self._pieces is not None, "the body has no pieces: check threaded first"
        view = self._pieces(position, scratch)
        self._hasher.update(view)
        return view

    def advance(self, nbytes: int, call: ProgressCall | None = None) -> None:
        """On the loop: ``nbytes`` more of this attempt were written (progress)."""
        self.sent += nbytes
        self._report(call, nbytes)

    def finish(self) -> None:
        """On the loop, once a sender thread wrote the whole body: its digest."""
        self.digest = self._hasher.hexdigest()
