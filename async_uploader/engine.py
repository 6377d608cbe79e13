"""The upload engine: the only module that starts tasks.

One ``Uploader`` owns a connection pool, a semaphore capping requests in flight and a rate limiter; every upload it
runs shares them. An upload goes: open sources → plan → checkpoint → Create (or resume) → parts of both sources,
interleaved, each under the semaphore and the limiter, retried per part → Complete with every part, sorted.

Decisions live in the pure modules (plan, retry, ratelimit, checkpoint state); this module only waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from .checkpoint import (
    Checkpoint,
    CheckpointHeader,
    PartRecord,
    SourceFingerprint,
    default_checkpoint_path,
    fingerprint_source,
)
from .client import OmicsClient, resolve_region
from .config import DEFAULT_PART_SIZE, MAX_PARTS, ReadSet, ServiceConfig, Source, UploadConfig
from .errors import (
    CheckpointMismatchError,
    PlanError,
    ResourceNotFoundError,
    SourceError,
    UploaderError,
    UploadFailedError,
    UploadInterruptedError,
)
from .plan import Part, Plan, make_plan
from .ratelimit import Limiter, LocalLimiter, RequestKind
from .retry import RetryState, Verdict, classify
from .signing import CredentialSource, Signer
from .sources import BufferPool, FileSource, PartBody, StreamSource
from .transport import Transport

__all__ = ["UploadHandle", "UploadResult", "UploadStatistics", "Uploader", "upload_read_set"]

log = logging.getLogger("async_uploader")
T = TypeVar("T")
EventSink = Callable[[dict[str, object]], None]
PartSender = Callable[[Part], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class UploadResult:
    """What a finished upload produced."""

    read_set_id: str
    upload_id: str
    store_id: str
    bytes: dict[Source, int]
    parts: dict[Source, int]
    seconds: float
    retries: int
    throttles: int
    resumed_parts: int
    checkpoint: Path | None = None
    status: str = "ACTIVE"

    def as_json(self) -> dict[str, object]:
        return {
            "readSetId": self.read_set_id,
            "uploadId": self.upload_id,
            "storeId": self.store_id,
            "bytes": {s.value: n for s, n in self.bytes.items()},
            "parts": {s.value: n for s, n in self.parts.items()},
            "seconds": round(self.seconds, 3),
            "retries": self.retries,
            "throttles": self.throttles,
            "resumedParts": self.resumed_parts,
            "status": self.status,
        }


@dataclass(frozen=True)
class UploadStatistics:
    """A snapshot of one upload, read by the progress bar, the JSON events and the benchmarks alike.

    ``bytes_sent`` counts bytes handed to connections (smooth progress); ``bytes_done`` only acknowledged parts.
    """

    state: str
    bytes_done: dict[Source, int]
    bytes_sent: dict[Source, int]
    bytes_total: dict[Source, int | None]
    parts_done: dict[Source, int]
    parts_total: dict[Source, int | None]
    parts_in_flight: dict[Source, int]
    retries: int
    throttles: int
    rate_limit: float | None
    elapsed: float
    resumed_parts: int

    @property
    def total_bytes_done(self) -> int:
        return sum(self.bytes_done.values())

    @property
    def total_bytes_sent(self) -> int:
        return sum(self.bytes_sent.values())

    @property
    def total_bytes(self) -> int | None:
        totals = list(self.bytes_total.values())
        return None if any(t is None for t in totals) else sum(t or 0 for t in totals)

    @property
    def fraction(self) -> float | None:
        total = self.total_bytes
        return None if not total else min(1.0, self.total_bytes_sent / total)

    @property
    def throughput(self) -> float:
        """Bytes per second sent so far."""
        return self.total_bytes_sent / self.elapsed if self.elapsed > 0 else 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "state": self.state,
            "bytesDone": self.total_bytes_done,
            "bytesSent": self.total_bytes_sent,
            "bytesTotal": self.total_bytes,
            "partsDone": {s.value: n for s, n in self.parts_done.items()},
            "partsTotal": {s.value: n for s, n in self.parts_total.items()},
            "partsInFlight": {s.value: n for s, n in self.parts_in_flight.items()},
            "retries": self.retries,
            "throttles": self.throttles,
            "rateLimit": self.rate_limit,
            "elapsed": round(self.elapsed, 3),
        }


@dataclass
class _Counters:
    """The mutable tallies behind ``UploadStatistics``; only the upload's own tasks change them."""

    sources: tuple[Source, ...]
    state: str = "starting"
    started: float = field(default_factory=time.monotonic)
    bytes_done: dict[Source, int] = field(default_factory=dict)
    bytes_sent: dict[Source, int] = field(default_factory=dict)
    bytes_total: dict[Source, int | None] = field(default_factory=dict)
    parts_done: dict[Source, int] = field(default_factory=dict)
    parts_total: dict[Source, int | None] = field(default_factory=dict)
    in_flight: dict[Source, int] = field(default_factory=dict)
    retries: int = 0
    throttles: int = 0
    resumed_parts: int = 0

    def __post_init__(self) -> None:
        for source in self.sources:
            for table in (self.bytes_done, self.bytes_sent, self.parts_done, self.in_flight):
                table[source] = 0
            self.bytes_total.setdefault(source, None)
            self.parts_total.setdefault(source, None)


class _Journal:
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


class _Stopping(Exception):
    """Raised inside the scheduler when a graceful stop was asked for."""


class Uploader:
    """Uploads read sets into HealthOmics sequence stores; many at once share its connections and limits.

    ``async with Uploader(config, service=ServiceConfig(...)) as up: result = await up.upload(read_set,
    store_id="1234567890")``.
    """

    def __init__(
        self,
        config: UploadConfig | None = None,
        *,
        service: ServiceConfig | None = None,
        limiter: Limiter | None = None,
        transport: Transport | None = None,
        client: OmicsClient | None = None,
    ) -> None:
        self.config = config or UploadConfig()
        self.service = service or ServiceConfig()
        self.limiter: Limiter = limiter or LocalLimiter(self.config.rates, adaptive=self.config.adaptive)
        self._transport = transport
        self._client = client
        self._slots: asyncio.Semaphore | None = None
        self._handles: set[UploadHandle] = set()
        self._random = random.Random()

    @property
    def slots(self) -> asyncio.Semaphore:
        """The semaphore capping requests in flight across every upload of this Uploader."""
        if self._slots is None:
            raise RuntimeError("use the Uploader inside 'async with'")
        return self._slots

    @property
    def client(self) -> OmicsClient:
        if self._client is None:
            raise RuntimeError("use the Uploader inside 'async with'")
        return self._client

    async def __aenter__(self) -> Uploader:
        if self._client is None and self._transport is not None:
            signer = Signer(CredentialSource(self.service.profile), resolve_region(self.service))
            self._client = OmicsClient(self.service, transport=self._transport, signer=signer)
        elif self._client is None:
            self._client = OmicsClient.from_config(self.service, limit=self.config.max_concurrency + 4)
        self._slots = asyncio.Semaphore(self.config.max_concurrency)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for handle in list(self._handles):
            handle.cancel()
        for handle in list(self._handles):
            with contextlib.suppress(BaseException):
                await handle
        if self._client is not None:
            await self._client.aclose()

    def start(
        self,
        read_set: ReadSet,
        *,
        store_id: str,
        checkpoint: Path | bool | None = None,
        restart: bool = False,
        keep_on_failure: bool | None = None,
        on_event: EventSink | None = None,
    ) -> UploadHandle:
        """Start uploading ``read_set``; await the handle for the result."""
        if self._slots is None:
            raise RuntimeError("use the Uploader inside 'async with'")
        job = _Upload(self, read_set, store_id, checkpoint, restart, keep_on_failure, on_event)
        handle = UploadHandle(job)
        self._handles.add(handle)
        handle.task.add_done_callback(lambda _t: self._handles.discard(handle))
        return handle

    async def upload(
        self,
        read_set: ReadSet,
        *,
        store_id: str,
        checkpoint: Path | bool | None = None,
        restart: bool = False,
        keep_on_failure: bool | None = None,
        on_event: EventSink | None = None,
    ) -> UploadResult:
        """Upload ``read_set`` and return its result."""
        return await self.start(
            read_set,
            store_id=store_id,
            checkpoint=checkpoint,
            restart=restart,
            keep_on_failure=keep_on_failure,
            on_event=on_event,
        )

    def statistics(self) -> list[UploadStatistics]:
        """A snapshot of every upload this Uploader is running."""
        return [handle.statistics() for handle in self._handles]

    # -- shared request machinery -------------------------------------------------------------------------

    async def call(
        self,
        kind: RequestKind,
        operation: str,
        send: Callable[[], Awaitable[T]],
        *,
        on_retry: Callable[[BaseException, int, float], None] | None = None,
    ) -> T:
        """Send one request under the limiter, retrying what is retryable with full-jitter backoff."""
        state = RetryState(self.config.retry)
        while True:
            await self.limiter.acquire(kind)
            try:
                result = await send()
            except UploaderError as exc:
                verdict = classify(exc)
                if verdict is Verdict.THROTTLE:
                    self.limiter.on_throttle(kind)
                if verdict is Verdict.FATAL:
                    raise
                state = state.after(exc)
                if state.exhausted:
                    raise state.exhausted_error(operation, exc) from exc
                delay = state.delay(self._random.random())
                if on_retry is not None:
                    on_retry(exc, state.attempts, delay)
                log.debug("retrying %s in %.2fs after %s", operation, delay, exc)
                await asyncio.sleep(delay)
            else:
                self.limiter.on_success(kind)
                return result


class UploadHandle:
    """A running upload: await it for the ``UploadResult``; ``statistics()`` any time; ``stop()`` to pause."""

    def __init__(self, job: _Upload) -> None:
        self._job = job
        self.task: asyncio.Task[UploadResult] = asyncio.get_running_loop().create_task(job.run())

    def __await__(self) -> Generator[Any, None, UploadResult]:
        return self.task.__await__()

    def statistics(self) -> UploadStatistics:
        return self._job.statistics()

    def stop(self, grace: float = 10.0) -> None:
        """Stop gracefully: no new parts, in-flight ones get ``grace`` seconds, the upload stays resumable."""
        self._job.request_stop(grace)

    def cancel(self) -> None:
        self.task.cancel()

    @property
    def upload_id(self) -> str | None:
        return self._job.upload_id

    @property
    def checkpoint_path(self) -> Path | None:
        return self._job.checkpoint_path


class _Upload:
    """One read set's upload, from opening its sources to Complete."""

    def __init__(
        self,
        owner: Uploader,
        read_set: ReadSet,
        store_id: str,
        checkpoint: Path | bool | None,
        restart: bool,
        keep_on_failure: bool | None,
        on_event: EventSink | None,
    ) -> None:
        self.owner = owner
        self.config = owner.config
        self.read_set = read_set
        self.store_id = store_id
        self.restart = restart
        self.keep_on_failure = keep_on_failure
        self.on_event = on_event
        self.counters = _Counters(tuple(read_set.sources))
        self.upload_id: str | None = None
        self.checkpoint_path: Path | None = None
        self._checkpoint_arg = checkpoint
        self._checkpoint: Checkpoint | None = None
        self._journal: _Journal | None = None
        self._acked: dict[tuple[Source, int], PartRecord] = {}
        self._files: dict[Source, FileSource] = {}
        self._streams: dict[Source, StreamSource] = {}
        self._stop_grace: float | None = None
        self._stop_event = asyncio.Event()
        self._stale_upload: str | None = None
        self._completed = False
        self._adopted: str | None = None
        self._first_parts: dict[Source, tuple[Part, bytearray] | None] = {}
        self._stream_buffers: dict[tuple[Source, int], bytearray] = {}

    # -- observation --------------------------------------------------------------------------------------

    def statistics(self) -> UploadStatistics:
        c = self.counters
        return UploadStatistics(
            state=c.state,
            bytes_done=dict(c.bytes_done),
            bytes_sent=dict(c.bytes_sent),
            bytes_total=dict(c.bytes_total),
            parts_done=dict(c.parts_done),
            parts_total=dict(c.parts_total),
            parts_in_flight=dict(c.in_flight),
            retries=c.retries,
            throttles=c.throttles,
            rate_limit=self.owner.limiter.current_rate(RequestKind.PART),
            elapsed=time.monotonic() - c.started,
            resumed_parts=c.resumed_parts,
        )

    def _emit(self, event: dict[str, object]) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # a broken observer must not break the upload
                log.exception("progress observer failed")

    def _set_state(self, state: str) -> None:
        self.counters.state = state
        self._emit({"event": "state", "state": state})

    def request_stop(self, grace: float) -> None:
        self._stop_grace = grace
        self._stop_event.set()

    # -- the whole upload ---------------------------------------------------------------------------------

    async def run(self) -> UploadResult:
        started = time.monotonic()
        try:
            self._open_sources()
            plan = self._plan()
            self._open_checkpoint(plan)
            if self._checkpoint is not None and self._checkpoint.read_set_id is not None:
                read_set_id = self._checkpoint.read_set_id
                self._count_all_done()
                return self._result(read_set_id, started, await self._wait_active(read_set_id))
            await self._create_or_resume(plan)
            if self._adopted is not None:
                self._count_all_done()
                return self._result(self._adopted, started, await self._wait_active(self._adopted))
            self._set_state("uploading")
            await self._send_parts(plan)
            read_set_id = await self._complete()
            status = await self._wait_active(read_set_id)
            self._set_state("done")
            return self._result(read_set_id, started, status)
        except asyncio.CancelledError:
            self._set_state("interrupted")
            await self._on_failure(cancelled=True)
            raise
        except _Stopping:
            self._set_state("interrupted")
            raise UploadInterruptedError(
                "upload interrupted; run the same command again to resume",
                upload_id=self.upload_id,
                checkpoint=str(self.checkpoint_path) if self.checkpoint_path else None,
            ) from None
        except BaseException:
            self._set_state("failed")
            await self._on_failure(cancelled=False)
            raise
        finally:
            self._close()

    def _result(self, read_set_id: str, started: float, status: str) -> UploadResult:
        c = self.counters
        return UploadResult(
            read_set_id=read_set_id,
            upload_id=self.upload_id or "",
            store_id=self.store_id,
            bytes={s: n or 0 for s, n in c.bytes_total.items()},
            parts={s: n or 0 for s, n in c.parts_total.items()},
            seconds=time.monotonic() - started,
            retries=c.retries,
            throttles=c.throttles,
            resumed_parts=c.resumed_parts,
            checkpoint=self.checkpoint_path,
            status=status,
        )

    def _count_all_done(self) -> None:
        """An upload finished by an earlier run: every planned part counts as done and resumed."""
        c = self.counters
        for source, total in c.parts_total.items():
            c.parts_done[source] = total or 0
            c.bytes_done[source] = c.bytes_sent[source] = c.bytes_total[source] or 0
        c.resumed_parts = sum(c.parts_done.values())

    def _close(self) -> None:
        for reader in self._files.values():
            reader.close()
        if self._checkpoint is not None:
            self._checkpoint.close()

    # -- setup --------------------------------------------------------------------------------------------

    def _open_sources(self) -> None:
        self._set_state("starting")
        pool: BufferPool | None = None
        part_size = self.config.part_size
        for source, given in self.read_set.sources.items():
            if isinstance(given, Path):
                self._files[source] = FileSource(source, given, self.config.slice_size)
                continue
            if pool is None:
                size = part_size or DEFAULT_PART_SIZE
                if self.config.memory_budget < size:
                    raise PlanError(
                        f"memory budget {self.config.memory_budget} bytes cannot hold one {size}-byte part of "
                        "a stream; raise the budget or lower the part size"
                    )
                pool = BufferPool(size, self.config.memory_budget // size)
            self._streams[source] = StreamSource(source, given, pool.size, pool)

    def _plan(self) -> Plan | None:
        """The plan for file sources; None when any source is a stream (its size is unknown)."""
        if self._streams:
            part_size = next(iter(self._streams.values())).part_size
            for source, reader in self._files.items():
                if -(-reader.size // part_size) > MAX_PARTS:
                    raise PlanError(f"{source} is too large for {part_size}-byte parts; raise --part-size")
                self.counters.bytes_total[source] = reader.size
                self.counters.parts_total[source] = -(-reader.size // part_size)
            return None
        plan = make_plan({s: r.size for s, r in self._files.items()}, self.config.part_size)
        for source in self._files:
            self.counters.bytes_total[source] = plan.sizes[source]
            self.counters.parts_total[source] = plan.part_count(source)
        return plan

    def _fingerprints(self) -> tuple[SourceFingerprint, ...]:
        return tuple(fingerprint_source(source, reader.path) for source, reader in self._files.items())

    def _open_checkpoint(self, plan: Plan | None) -> None:
        arg = self._checkpoint_arg
        if arg is False or plan is None:
            if isinstance(arg, Path) and plan is None:
                raise SourceError("a stream cannot be resumed, so it cannot have a checkpoint")
            return
        prints = self._fingerprints()
        path = arg if isinstance(arg, Path) else default_checkpoint_path(self.store_id, prints, self._identity())
        self.checkpoint_path = path
        if path.exists() and not self.restart:
            checkpoint = Checkpoint.load(path)
            header = checkpoint.header
            if header.store_id != self.store_id:
                raise CheckpointMismatchError(
                    f"checkpoint {path} is for store {header.store_id}, not {self.store_id}; "
                    "use another --checkpoint or --restart"
                )
            checkpoint.verify_sources(prints)
            recorded = CheckpointHeader.from_read_set(
                self.store_id,
                self.read_set,
                part_size=header.part_size,
                sources=header.sources,
                client_token=header.client_token,
            )
            if _identity_of(recorded) != _identity_of(header):
                raise CheckpointMismatchError(
                    f"checkpoint {path} is for another read set ({header.name!r}, sample {header.sample_id!r}); "
                    "use another --checkpoint, or --restart to replace it"
                )
            if header.part_size != plan.part_size:
                raise CheckpointMismatchError(
                    f"checkpoint {path} was written with {header.part_size}-byte parts, not {plan.part_size}; "
                    "drop --part-size to resume, or --restart"
                )
            self._checkpoint = checkpoint
            self.upload_id = checkpoint.upload_id
            return
        if path.exists() and self.restart:
            self._restart_from(path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        header = CheckpointHeader.from_read_set(
            self.store_id,
            self.read_set,
            part_size=plan.part_size,
            sources=prints,
            client_token=uuid.uuid4().hex,
        )
        self._checkpoint = Checkpoint.create(path, header)

    def _identity(self) -> tuple[str, ...]:
        rs = self.read_set
        return _identity_of(CheckpointHeader.from_read_set(self.store_id, rs, part_size=0, sources=(), client_token=""))

    def _restart_from(self, path: Path) -> None:
        """--restart: remember the old upload so it is aborted once the new one exists, then drop the file."""
        try:
            old = Checkpoint.load(path)
        except UploaderError:
            old = None
        if old is not None and old.upload_id and old.read_set_id is None:
            self._stale_upload = old.upload_id
        if old is not None:
            old.close()
        path.unlink()

    # -- Create, or resume an upload the checkpoint knows -------------------------------------------------

    async def _create_or_resume(self, plan: Plan | None) -> None:
        client = self.owner.client
        if self.upload_id is not None:
            await self._reconcile()
            return
        self._set_state("creating")
        await self._validate_streams_before_create()
        token = self._checkpoint.header.client_token if self._checkpoint else uuid.uuid4().hex
        created = await self.owner.call(
            RequestKind.CONTROL,
            "CreateMultipartReadSetUpload",
            lambda: client.create_upload(self.store_id, self.read_set, token),
            on_retry=self._on_retry("CreateMultipartReadSetUpload", None, None),
        )
        self.upload_id = created.upload_id
        if self._checkpoint is not None:
            await asyncio.to_thread(self._checkpoint.record_upload, created.upload_id)
        if self._stale_upload:
            with contextlib.suppress(UploaderError):
                await self._abort(self._stale_upload)

    async def _validate_streams_before_create(self) -> None:
        """Read the first part of every stream so an empty stream fails before anything is created."""
        for source, stream in self._streams.items():
            self._first_parts[source] = await stream.next_part()

    async def _reconcile(self) -> None:
        """Resume: keep the parts the store holds with the recorded checksum and size; the rest are sent again."""
        assert self._checkpoint is not None and self.upload_id is not None
        self._set_state("resuming")
        client = self.owner.client
        recorded = self._checkpoint.parts
        kept: dict[tuple[Source, int], PartRecord] = {}
        for source in self._files:
            try:
                listed = await self.owner.call(
                    RequestKind.LISTING,
                    "ListReadSetUploadParts",
                    lambda source=source: client.list_parts(  # type: ignore[misc]
                        self.store_id, self.upload_id or "", source
                    ),
                )
            except ResourceNotFoundError as exc:
                if await self._adopt_completed_read_set():
                    return
                raise ResourceNotFoundError(
                    f"upload {self.upload_id} is no longer on the store (aborted or expired); "
                    "run again with --restart to start a new upload",
                    status=exc.status,
                    operation=exc.operation,
                ) from exc
            for item in listed:
                key = (item.source, item.number)
                record = recorded.get(key)
                if record is not None and record.checksum == item.checksum and record.length == item.size:
                    kept[key] = record
        self._acked = kept
        c = self.counters
        for (source, _number), record in kept.items():
            c.parts_done[source] += 1
            c.bytes_done[source] += record.length
            c.bytes_sent[source] += record.length
        c.resumed_parts = len(kept)
        log.info("resuming upload %s: %d parts already on the store", self.upload_id, len(kept))

    async def _adopt_completed_read_set(self) -> bool:
        """The upload is gone but every part was recorded: Complete may have succeeded before a crash.

        Look for the read set it would have made (same name, sample and subject, created after the checkpoint);
        adopt it only when exactly one matches.
        """
        assert self._checkpoint is not None
        header = self._checkpoint.header
        planned = sum(n or 0 for n in self.counters.parts_total.values())
        if len(self._checkpoint.parts) != planned:
            return False
        created_after = datetime.fromtimestamp(header.created - 60, tz=UTC).isoformat()
        wanted = {
            "name": header.name,
            "sampleId": header.sample_id,
            "subjectId": header.subject_id,
            "creationType": "UPLOAD",
            "createdAfter": created_after,
        }
        client = self.owner.client
        found = await self.owner.call(
            RequestKind.LISTING, "ListReadSets", lambda: client.find_read_sets(self.store_id, wanted)
        )
        if len(found) != 1:
            return False
        read_set_id = found[0].id
        log.info("upload %s was completed before the interruption: read set %s", self.upload_id, read_set_id)
        await asyncio.to_thread(self._checkpoint.record_complete, read_set_id)
        self._adopted = read_set_id
        return True

    # -- parts --------------------------------------------------------------------------------------------

    async def _send_parts(self, plan: Plan | None) -> None:
        """Send every missing part, at most the Uploader's concurrency at once, without a task per part up front."""
        if self._checkpoint is not None:
            self._journal = _Journal(self._checkpoint)
        slots = self.owner.slots
        tasks: set[asyncio.Task[None]] = set()
        failure: list[BaseException] = []
        idle = asyncio.Event()

        def finished(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            slots.release()
            if not task.cancelled() and (exc := task.exception()) is not None:
                failure.append(exc)
                self._stop_event.set()
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
                await _first_of(idle.wait(), self._stop_event.wait())
            if tasks and not failure and self._stop_grace is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(idle.wait(), self._stop_grace)
        finally:
            for task in list(tasks):
                task.cancel()
            if tasks:
                await asyncio.wait(set(tasks))
            self._release_stream_buffers()
        if failure:
            raise failure[0]
        if self._stop_grace is not None:
            raise _Stopping()

    async def _take_slot(self, slots: asyncio.Semaphore) -> bool:
        """Take a request slot; False (and no slot held) when a stop or a failure comes first."""
        if self._stop_event.is_set():
            return False
        if not slots.locked():  # a free slot: take it without racing the stop event
            await slots.acquire()
            return True
        acquire = asyncio.ensure_future(slots.acquire())
        stop = asyncio.ensure_future(self._stop_event.wait())
        try:
            await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            stop.cancel()
            if _finished_ok(acquire):
                slots.release()
            raise
        stop.cancel()
        held = _finished_ok(acquire)
        if held and self._stop_event.is_set():
            slots.release()
            return False
        return held

    async def _work(self, plan: Plan | None) -> AsyncGenerator[tuple[Part, PartSender], None]:
        """Every part still to send, both sources interleaved, each with the coroutine that sends it."""
        if plan is not None:
            for part in plan.parts(done=self._acked):
                yield part, self._send_file_part
            return
        async for item in self._mixed_work():
            yield item

    async def _mixed_work(self) -> AsyncGenerator[tuple[Part, PartSender], None]:
        """Parts when at least one source is a stream: alternate sources, reading streams as they go."""
        assert self._streams
        part_size = next(iter(self._streams.values())).part_size
        file_parts: dict[Source, Iterator[Part]] = {
            source: _file_parts(source, reader.size, part_size) for source, reader in self._files.items()
        }
        first = self._first_parts
        active = list(self.read_set.sources)
        while active:
            for source in list(active):
                if source in file_parts:
                    part = next(file_parts[source], None)
                    if part is None:
                        active.remove(source)
                        continue
                    yield part, self._send_file_part
                    continue
                got = first.pop(source) if source in first else await self._streams[source].next_part()
                if got is None:
                    active.remove(source)
                    stream = self._streams[source]
                    self.counters.bytes_total[source] = stream.bytes_read
                    self.counters.parts_total[source] = stream.next_number - 1
                    continue
                part, buffer = got
                if part.number > MAX_PARTS:
                    self._streams[source].pool.put(buffer)
                    raise PlanError(
                        f"{source}: the stream is longer than {MAX_PARTS} parts of {part_size} bytes; raise --part-size"
                    )
                self._stream_buffers[(source, part.number)] = buffer
                yield part, self._send_stream_part

    def _release_stream_buffers(self) -> None:
        for (source, _n), buffer in self._stream_buffers.items():
            self._streams[source].pool.put(buffer)
        self._stream_buffers.clear()

    async def _send_file_part(self, part: Part) -> None:
        body = self._files[part.source].body(part, self._sent_counter(part.source))
        await self._send_body(part, body)

    async def _send_stream_part(self, part: Part) -> None:
        key = (part.source, part.number)
        buffer = self._stream_buffers[key]
        body = StreamSource.body(part, buffer, self.config.slice_size, self._sent_counter(part.source))
        await self._send_body(part, body)
        del self._stream_buffers[key]
        self._streams[part.source].pool.put(buffer)

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
            self._on_retry("UploadReadSetPart", part.source, part.number)(exc, attempt, delay)

        try:
            checksum = await self.owner.call(
                RequestKind.PART,
                "UploadReadSetPart",
                lambda: client.upload_part(self.store_id, self.upload_id or "", part.source, part.number, body),
                on_retry=retried,
            )
        except BaseException:
            c.bytes_sent[part.source] -= body.rewind()
            raise
        finally:
            c.in_flight[part.source] -= 1
        record = PartRecord(part.source, part.number, part.length, checksum, body.digest or "")
        if self._journal is not None:
            await self._journal.record(record)
        self._acked[(part.source, part.number)] = record
        c.parts_done[part.source] += 1
        c.bytes_done[part.source] += part.length
        if self.on_event is not None:
            self._emit(
                {
                    "event": "part",
                    "source": part.source.value,
                    "partNumber": part.number,
                    "bytes": part.length,
                    "seconds": round(time.monotonic() - started, 4),
                    "attempts": attempts,
                }
            )

    def _on_retry(
        self, operation: str, source: Source | None, number: int | None
    ) -> Callable[[BaseException, int, float], None]:
        def note(exc: BaseException, attempt: int, delay: float) -> None:
            c = self.counters
            c.retries += 1
            verdict = classify(exc)
            if verdict is Verdict.THROTTLE:
                c.throttles += 1
            self._emit(
                {
                    "event": "retry",
                    "operation": operation,
                    "source": source.value if source else None,
                    "partNumber": number,
                    "attempt": attempt,
                    "error": getattr(exc, "code", type(exc).__name__),
                    "delay": round(delay, 3),
                }
            )

        return note

    # -- Complete and Abort -------------------------------------------------------------------------------

    async def _complete(self) -> str:
        self._set_state("completing")
        client = self.owner.client
        parts = sorted(self._acked.values(), key=lambda r: (r.source.value, r.number))
        for source, total in self.counters.parts_total.items():
            have = sum(1 for r in parts if r.source is source)
            if total is not None and have != total:
                raise UploaderError(f"internal error: {have} of {total} parts of {source} acknowledged")
        read_set_id = await self.owner.call(
            RequestKind.CONTROL,
            "CompleteMultipartReadSetUpload",
            lambda: client.complete_upload(self.store_id, self.upload_id or "", parts),
            on_retry=self._on_retry("CompleteMultipartReadSetUpload", None, None),
        )
        self._completed = True
        if self._checkpoint is not None:
            await asyncio.to_thread(self._checkpoint.record_complete, read_set_id)
        return read_set_id

    async def _wait_active(self, read_set_id: str) -> str:
        """Poll the read set's status until the store has checked it; UPLOAD_FAILED is an error."""
        if not self.config.wait_for_active:
            return "PROCESSING_UPLOAD"
        self._set_state("verifying")
        client = self.owner.client
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.active_timeout
        pause = 0.05
        while True:
            metadata = await self.owner.call(
                RequestKind.LISTING,
                "GetReadSetMetadata",
                lambda: client.get_read_set_metadata(self.store_id, read_set_id),
            )
            if metadata.status == "ACTIVE":
                return metadata.status
            if metadata.status == "UPLOAD_FAILED":
                reason = metadata.status_message or "no reason given"
                raise UploadFailedError(f"the store rejected read set {read_set_id}: {reason}")
            if loop.time() + pause > deadline:
                log.warning("read set %s is still %s; not waiting any longer", read_set_id, metadata.status)
                return metadata.status
            await asyncio.sleep(pause)
            pause = min(5.0, pause * 2)

    async def _abort(self, upload_id: str) -> None:
        client = self.owner.client
        await self.owner.call(
            RequestKind.CONTROL,
            "AbortMultipartReadSetUpload",
            lambda: client.abort_upload(self.store_id, upload_id),
        )

    async def _on_failure(self, *, cancelled: bool) -> None:
        """Keep the upload open when a checkpoint can resume it (unless told otherwise); abort it otherwise."""
        if self.upload_id is None or self._completed:
            return
        keep = self.keep_on_failure
        if keep is None:
            keep = self._checkpoint is not None
        if keep:
            return
        try:
            await asyncio.shield(asyncio.wait_for(self._abort(self.upload_id), timeout=10.0))
        except (UploaderError, TimeoutError, asyncio.CancelledError) as exc:
            log.warning("could not abort upload %s: %s", self.upload_id, exc)
        else:
            if self._checkpoint is not None and self.checkpoint_path is not None:
                self._checkpoint.close()
                self._checkpoint = None
                self.checkpoint_path.unlink(missing_ok=True)


def _identity_of(header: CheckpointHeader) -> tuple[str, ...]:
    """What makes a read set this read set: the metadata Create sends."""
    tags = ",".join(f"{k}={v}" for k, v in sorted(header.tags.items()))
    fields = (
        header.file_type,
        header.subject_id,
        header.sample_id,
        header.name,
        header.reference_arn,
        header.generated_from,
        header.description,
        tags,
    )
    return tuple("" if value is None else str(value) for value in fields)


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


def _file_parts(source: Source, size: int, part_size: int) -> Iterator[Part]:
    number, offset = 1, 0
    while offset < size:
        length = min(part_size, size - offset)
        yield Part(source, number, offset, length)
        number += 1
        offset += length


async def upload_read_set(
    read_set: ReadSet,
    *,
    store_id: str,
    config: UploadConfig | None = None,
    service: ServiceConfig | None = None,
    checkpoint: Path | bool | None = None,
) -> UploadResult:
    """Upload one read set with a fresh Uploader: the one-call shortcut for scripts."""
    async with Uploader(config, service=service) as uploader:
        return await uploader.upload(read_set, store_id=store_id, checkpoint=checkpoint)
