"""Sending the parts of one upload: both sources interleaved, under one task group, at most ``slots`` at once.

Parts come lazily (the state's missing parts of a plan, or streams read as they go), and a part's task starts
only once a request slot is free, so 20,000 parts never mean 20,000 tasks or buffers. An acknowledged part is
group-committed to the checkpoint journal before the state counts it as done. ``stop()`` ends the feeding; parts
in flight finish (or are cancelled by the upload's deadline); a failed part cancels the rest.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import anyio

from ..core.checkpoint import PartRecord
from ..core.config import MAX_PARTS, Source
from ..core.errors import CheckpointError, PlanError
from ..core.events import part_event, retry_event
from ..core.plan import Part, Plan
from ..core.retry import Verdict
from ..core.state import UploadState
from ..edge.journal import Journal
from ..edge.sources import FileSource, PartBody, PartBuffer, StreamSource
from .calls import Calls

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


@dataclass
class _Item:
    part: Part
    buffer: PartBuffer | None = None  # a stream part's bytes; None for a file part, read as it is sent


class PartSender:
    """Sends the missing parts of one upload; ``run`` returns once every part is acknowledged, or after a stop."""

    def __init__(
        self,
        calls: Calls,
        state: UploadState,
        *,
        store_id: str,
        upload_id: str,
        files: Mapping[Source, FileSource],
        streams: Mapping[Source, StreamSource],
        first_parts: Mapping[Source, tuple[Part, PartBuffer] | None],
        commit: GroupCommit | None,
        slice_size: int,
        emit: EventSink | None,
    ) -> None:
        self._calls = calls
        self._state = state
        self._store_id = store_id
        self._upload_id = upload_id
        self._files = files
        self._streams = streams
        self._first_parts = dict(first_parts)
        self._commit = commit
        self._slice_size = slice_size
        self._emit = emit
        self._feed: anyio.CancelScope | None = None
        self.stopped = False

    def stop(self) -> None:
        """Start no more parts; those in flight go on."""
        self.stopped = True
        if self._feed is not None:
            self._feed.cancel()

    async def run(self, plan: Plan | None) -> None:
        """Send every missing part, at most ``calls.slots`` at once, a task per part only once its slot is free."""
        slots = self._calls.slots
        async with anyio.create_task_group() as group:
            with anyio.CancelScope() as self._feed:
                if self.stopped:
                    self._feed.cancel()
                async with aclosing(self._work(plan)) as work:
                    async for item in work:
                        try:
                            await slots.acquire()
                        except BaseException:
                            if item.buffer is not None:
                                self._streams[item.part.source].pool.put(item.buffer)
                            raise
                        group.start_soon(self._send, item, name=f"part-{item.part.source}-{item.part.number}")

    async def _work(self, plan: Plan | None) -> AsyncGenerator[_Item, None]:
        """Every part still to send, both sources interleaved."""
        if plan is not None:
            for part in self._state.missing(plan):
                yield _Item(part)
            return
        async for item in self._mixed_work():
            yield item

    async def _mixed_work(self) -> AsyncIterator[_Item]:
        """Parts when at least one source is a stream: alternate sources, reading streams as they go."""
        part_size = next(iter(self._streams.values())).part_size
        file_parts: dict[Source, Iterator[Part]] = {
            source: Plan(part_size, {source: reader.size}).parts() for source, reader in self._files.items()
        }
        active = list(self._state.sources)
        while active:
            for source in list(active):
                if source in file_parts:
                    part = next(file_parts[source], None)
                    if part is None:
                        active.remove(source)
                    else:
                        yield _Item(part)
                    continue
                stream = self._streams[source]
                got = self._first_parts.pop(source) if source in self._first_parts else await stream.next_part()
                if got is None:
                    active.remove(source)
                    self._state.set_totals(source, stream.bytes_read, stream.next_number - 1)
                    continue
                part, buffer = got
                if part.number > MAX_PARTS:
                    stream.pool.put(buffer)
                    raise PlanError(
                        f"{source}: the stream is longer than {MAX_PARTS} parts of {part_size} bytes; raise --part-size"
                    )
                yield _Item(part, buffer)

    def _body(self, item: _Item) -> PartBody:
        source = item.part.source
        state = self._state

        slots = self._calls.slots

        def sent(nbytes: int) -> None:
            state.sent(source, nbytes)
            slots.sent(nbytes)

        digest = self._commit is not None
        if item.buffer is None:
            return self._files[source].body(item.part, sent, digest=digest)
        return StreamSource.body(item.part, item.buffer, self._slice_size, sent, digest=digest)

    async def _send(self, item: _Item) -> None:
        part, state = item.part, self._state
        try:
            body = self._body(item)
            started = time.monotonic()
            attempts = 1

            def retried(exc: BaseException, verdict: Verdict, attempt: int, delay: float) -> None:
                nonlocal attempts
                attempts = attempt + 1
                state.sent(part.source, -body.rewind())
                state.retried(verdict)
                if self._emit is not None:
                    error = getattr(exc, "code", type(exc).__name__)
                    self._emit(
                        retry_event("UploadReadSetPart", part.source, part.number, attempt, error, delay, time.time())
                    )

            state.sending(part.source, 1)
            try:
                checksum = await self._calls.call(
                    "UploadReadSetPart",
                    lambda: self._calls.client.upload_part(
                        self._store_id, self._upload_id, part.source, part.number, body
                    ),
                    on_retry=retried,
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
            if item.buffer is not None:
                self._streams[part.source].pool.put(item.buffer)
            self._calls.slots.release()
