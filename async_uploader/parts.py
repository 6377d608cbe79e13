"""Sending the parts of one upload: both sources interleaved, at most the Uploader's concurrency at once.

Parts are produced lazily (a plan's iterator, or streams read as they go), each sent by its own task only once a
request slot is free, so 20,000 parts never mean 20,000 tasks or buffers. Acknowledged parts are group-committed to
the checkpoint journal before they count as done.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any

from .checkpoint import Checkpoint, PartRecord
from .config import MAX_PARTS, Source
from .errors import PlanError
from .plan import Part, Plan
from .ratelimit import RequestKind
from .sources import PartBody, StreamSource

if TYPE_CHECKING:
    from .job import UploadJob

__all__ = ["Journal", "PartScheduler", "Stopping"]

PartSender = Callable[[Part], Coroutine[Any, Any, None]]


class Stopping(Exception):
    """Raised by the scheduler when a graceful stop was asked for."""


class Journal:
    """Group commit of acknowledged parts: concurrent records share one append and one fsync."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self._pending: list[PartRecord] = []
        self._queued = 0
        self._durable = 0
        self._lock = asyncio.Lock()

    async def record(self, record: PartRecord) -> None:
        self._pending.append(record)
        self._queued += 1
        mine = self._queued
        async with self._lock:
            if self._durable >= mine:
                return
            batch, self._pending = self._pending, []
            upto = self._queued
            await asyncio.shield(asyncio.to_thread(self.checkpoint.record_parts, batch))
            self._durable = upto


class PartScheduler:
    """Sends the missing parts of ``job``; ``run`` returns once every part is acknowledged and recorded."""

    def __init__(self, job: UploadJob) -> None:
        self.job = job
        self.owner = job.owner
        self.config = job.config
        self.counters = job.counters
        self.journal = Journal(job.checkpoint) if job.checkpoint is not None else None
        self.stream_buffers: dict[tuple[Source, int], bytearray] = {}

    async def run(self, plan: Plan | None) -> None:
        """Send every missing part, at most the Uploader's concurrency at once, without a task per part up front."""
        slots = self.owner.slots
        tasks: set[asyncio.Task[None]] = set()
        failure: list[BaseException] = []
        idle = asyncio.Event()

        def finished(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            slots.release()
            if not task.cancelled() and (exc := task.exception()) is not None:
                failure.append(exc)
                self.job.stop_event.set()
            if failure or not tasks:
                idle.set()

        try:
            work = self._work(plan)
            try:
                async for part, sender in work:
                    if not await self._take_slot(slots):
                        break
                    idle.clear()
                    task = asyncio.ensure_future(sender(part))
                    tasks.add(task)
                    task.add_done_callback(finished)
            finally:
                await work.aclose()
            if tasks and not failure:
                await _first_of(idle.wait(), self.job.stop_event.wait())
            if tasks and not failure and self.job.stop_grace is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(idle.wait(), self.job.stop_grace)
        finally:
            for task in list(tasks):
                task.cancel()
            if tasks:
                await asyncio.wait(set(tasks))
            self._release_stream_buffers()
        if failure:
            raise failure[0]
        if self.job.stop_grace is not None:
            raise Stopping()

    async def _take_slot(self, slots: asyncio.Semaphore) -> bool:
        """Take a request slot; False (and no slot held) when a stop or a failure comes first."""
        if self.job.stop_event.is_set():
            return False
        if not slots.locked():  # a free slot: take it without racing the stop event
            await slots.acquire()
            return True
        acquire = asyncio.ensure_future(slots.acquire())
        stop = asyncio.ensure_future(self.job.stop_event.wait())
        try:
            await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            stop.cancel()
            if _finished_ok(acquire):
                slots.release()
            raise
        stop.cancel()
        held = _finished_ok(acquire)
        if held and self.job.stop_event.is_set():
            slots.release()
            return False
        return held

    async def _work(self, plan: Plan | None) -> AsyncGenerator[tuple[Part, PartSender], None]:
        """Every part still to send, both sources interleaved, each with the coroutine that sends it."""
        if plan is not None:
            for part in plan.parts(done=self.job.acked):
                yield part, self._send_file_part
            return
        async for item in self._mixed_work():
            yield item

    async def _mixed_work(self) -> AsyncGenerator[tuple[Part, PartSender], None]:
        """Parts when at least one source is a stream: alternate sources, reading streams as they go."""
        assert self.job.streams
        part_size = next(iter(self.job.streams.values())).part_size
        file_parts: dict[Source, Iterator[Part]] = {
            source: Plan(part_size, {source: reader.size}).parts() for source, reader in self.job.files.items()
        }
        first = self.job.first_parts
        active = list(self.job.read_set.sources)
        while active:
            for source in list(active):
                if source in file_parts:
                    part = next(file_parts[source], None)
                    if part is None:
                        active.remove(source)
                        continue
                    yield part, self._send_file_part
                    continue
                got = first.pop(source) if source in first else await self.job.streams[source].next_part()
                if got is None:
                    active.remove(source)
                    stream = self.job.streams[source]
                    self.counters.bytes_total[source] = stream.bytes_read
                    self.counters.parts_total[source] = stream.next_number - 1
                    continue
                part, buffer = got
                if part.number > MAX_PARTS:
                    self.job.streams[source].pool.put(buffer)
                    raise PlanError(
                        f"{source}: the stream is longer than {MAX_PARTS} parts of {part_size} bytes; raise --part-size"
                    )
                self.stream_buffers[(source, part.number)] = buffer
                yield part, self._send_stream_part

    def _release_stream_buffers(self) -> None:
        for (source, _n), buffer in self.stream_buffers.items():
            self.job.streams[source].pool.put(buffer)
        self.stream_buffers.clear()

    async def _send_file_part(self, part: Part) -> None:
        body = self.job.files[part.source].body(part, self._sent_counter(part.source), digest=self.journal is not None)
        await self._send_body(part, body)

    async def _send_stream_part(self, part: Part) -> None:
        key = (part.source, part.number)
        buffer = self.stream_buffers[key]
        body = StreamSource.body(
            part, buffer, self.config.slice_size, self._sent_counter(part.source), digest=self.journal is not None
        )
        await self._send_body(part, body)
        del self.stream_buffers[key]
        self.job.streams[part.source].pool.put(buffer)

    def _sent_counter(self, source: Source) -> Callable[[int], None]:
        table = self.counters.bytes_sent

        def sent(n: int) -> None:
            table[source] += n

        return sent

    async def _send_body(self, part: Part, body: PartBody) -> None:
        client = self.owner.client
        c = self.counters
        c.in_flight[part.source] += 1
        started = time.monotonic()
        attempts = 1

        def retried(exc: BaseException, attempt: int, delay: float) -> None:
            nonlocal attempts
            attempts = attempt + 1
            c.bytes_sent[part.source] -= body.rewind()
            self.job.note_retry("UploadReadSetPart", part.source, part.number)(exc, attempt, delay)

        try:
            checksum = await self.owner.call(
                RequestKind.PART,
                "UploadReadSetPart",
                lambda: client.upload_part(self.job.store_id, self.job.upload_id or "", part.source, part.number, body),
                on_retry=retried,
            )
        except BaseException:
            c.bytes_sent[part.source] -= body.rewind()
            raise
        finally:
            c.in_flight[part.source] -= 1
        record = PartRecord(part.source, part.number, part.length, checksum, body.digest or "")
        if self.journal is not None:
            await self.journal.record(record)
        self.job.acked[(part.source, part.number)] = record
        c.parts_done[part.source] += 1
        c.bytes_done[part.source] += part.length
        if self.job.on_event is not None:
            self.job.emit(
                {
                    "event": "part",
                    "source": part.source.value,
                    "partNumber": part.number,
                    "bytes": part.length,
                    "seconds": round(time.monotonic() - started, 4),
                    "attempts": attempts,
                }
            )


def _finished_ok(future: asyncio.Future[Any]) -> bool:
    """Cancel ``future`` unless it already finished; True when it had finished with a result."""
    if future.cancel():
        return False
    return not future.cancelled() and future.exception() is None


async def _first_of(*waits: Coroutine[Any, Any, Any]) -> None:
    """Wait until the first of ``waits`` finishes; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
