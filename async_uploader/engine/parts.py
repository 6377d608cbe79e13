"""Sending the parts of one upload: both sources interleaved, under one task group, at most ``slots`` at once.

Parts come lazily from each source (``SourceReader.items``: a file's missing parts, a stream read as it goes),
and a part's task starts only once a request slot is free, so 20,000 parts never mean 20,000 tasks or buffers.
An acknowledged part is group-committed to the checkpoint journal before the state counts it as done. ``stop()``
ends the feeding; parts in flight finish (or are cancelled by the upload's deadline); a failed part cancels the
rest.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from typing import Any

import anyio

from ..core.checkpoint import PartRecord
from ..core.config import Source
from ..core.errors import CheckpointError
from ..core.events import part_event
from ..core.plan import Plan
from ..core.retry import Verdict
from ..core.state import UploadState
from ..edge.journal import Journal
from ..edge.sources import PartBody, PartItem, SourceReader, stream_part_count
from .calls import Requests

__all__ = ["EventSink", "GroupCommit", "PartSender", "first_error"]

EventSink = Callable[[dict[str, Any]], None]


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first failure a task group collected (depth first): the one to report."""
    first = group.exceptions[0]
    return first_error(first) if isinstance(first, BaseExceptionGroup) else first


class GroupCommit:
    """Acknowledgements recorded at the same time share one append and one fsync.

    The write runs in a worker thread under a shielded scope, in the task that asked for it, so its error is
    always raised there; once a write has failed, every later record fails with the same message (the
    journal's tail is no longer known to hold what was acknowledged).
    """

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._pending: list[PartRecord] = []
        self._queued = 0
        self._durable = 0
        self._lock = anyio.Lock(fast_acquire=True)
        self._failed: CheckpointError | None = None

    async def record(self, record: PartRecord) -> None:
        self._pending.append(record)
        self._queued += 1
        mine = self._queued
        async with self._lock:
            if self._failed is not None:
                raise CheckpointError(str(self._failed))
            if self._durable >= mine:
                return
            batch, self._pending = self._pending, []
            upto = self._queued
            try:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._journal.record_parts, batch)
            except CheckpointError as exc:
                self._failed = exc
                raise
            self._durable = upto


class PartSender:
    """Sends the missing parts of one upload; ``run`` returns once every part is acknowledged, or after a stop."""

    def __init__(
        self,
        requests: Requests,
        state: UploadState,
        *,
        store_id: str,
        upload_id: str,
        readers: Mapping[Source, SourceReader],
        commit: GroupCommit | None,
        emit: EventSink | None,
    ) -> None:
        self._requests = requests
        self._slots = requests.calls.slots
        self._state = state
        self._store_id = store_id
        self._upload_id = upload_id
        self._readers = readers
        self._commit = commit
        self._emit = emit
        self._feed: anyio.CancelScope | None = None
        self.stopped = False

    def stop(self) -> None:
        """Start no more parts; those in flight go on."""
        self.stopped = True
        if self._feed is not None:
            self._feed.cancel()

    async def run(self, plan: Plan) -> None:
        """Send every missing part, at most ``slots`` at once, a task per part only once its slot is free."""
        async with anyio.create_task_group() as group:
            with anyio.CancelScope() as self._feed:
                if self.stopped:
                    self._feed.cancel()
                async with aclosing(self._work(plan)) as work:
                    async for reader, item in work:
                        try:
                            await self._slots.acquire()
                        except BaseException:
                            reader.release(item)
                            raise
                        part = item.part
                        group.start_soon(self._send, reader, item, name=f"part-{part.source}-{part.number}")

    async def _work(self, plan: Plan) -> AsyncGenerator[tuple[SourceReader, PartItem], None]:
        """Every part still to send, the sources taken in turn; a stream's totals are known at its end."""
        feeds = {source: reader.items(plan, self._state.acked) for source, reader in self._readers.items()}
        active = list(feeds)
        try:
            while active:
                for source in list(active):
                    item = await anext(feeds[source], None)
                    if item is not None:
                        yield self._readers[source], item
                        continue
                    active.remove(source)
                    reader = self._readers[source]
                    count = stream_part_count(reader, plan.part_size)
                    if source in plan.streams and reader.size is not None and count is not None:
                        self._state.set_totals(source, reader.size, count)
        finally:
            for feed in feeds.values():
                with anyio.CancelScope(shield=True):
                    await feed.aclose()  # type: ignore[attr-defined]

    def _body(self, reader: SourceReader, item: PartItem) -> PartBody:
        source, state, slots = item.part.source, self._state, self._slots

        def sent(nbytes: int) -> None:
            state.sent(source, nbytes)
            slots.sent(nbytes)

        return reader.body(item, sent, digest=self._commit is not None)

    async def _send(self, reader: SourceReader, item: PartItem) -> None:
        part, state = item.part, self._state
        try:
            body = self._body(reader, item)
            started = time.monotonic()
            attempts = 1

            def rewind(_exc: BaseException, _verdict: Verdict, attempt: int, _delay: float) -> None:
                nonlocal attempts
                attempts = attempt + 1
                state.sent(part.source, -body.rewind())

            state.sending(part.source, 1)
            try:
                checksum = await self._requests(
                    "UploadReadSetPart",
                    lambda: self._requests.client.upload_part(
                        self._store_id, self._upload_id, part.source, part.number, body
                    ),
                    part=part,
                    on_retry=rewind,
                )
            except BaseException:
                state.sent(part.source, -body.rewind())
                raise
            finally:
                state.sending(part.source, -1)
            record = PartRecord(part.source, part.number, part.length, checksum, body.digest or "")
            if self._commit is not None:
                await self._commit.record(record)
            state.acknowledge(record)
            if self._emit is not None:
                self._emit(
                    part_event(part.source, part.number, part.length, time.monotonic() - started, attempts, time.time())
                )
        finally:
            reader.release(item)
            self._slots.release()
