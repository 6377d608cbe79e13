"""One read set's upload, from opening its sources to Complete: setup, checkpoint, Create or resume, Complete.

The parts themselves are sent by ``parts.PartScheduler``; the shared machinery (connections, slots, limiter,
retries) belongs to the ``Uploader`` that started the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .checkpoint import (
    Checkpoint,
    CheckpointHeader,
    PartRecord,
    SourceFingerprint,
    default_checkpoint_path,
    fingerprint_source,
)
from .config import DEFAULT_PART_SIZE, MAX_PARTS, ReadSet, Source
from .errors import (
    CheckpointMismatchError,
    PlanError,
    ResourceNotFoundError,
    SourceError,
    UploaderError,
    UploadFailedError,
    UploadInterruptedError,
)
from .parts import PartScheduler, Stopping
from .plan import Part, Plan, make_plan
from .ratelimit import RequestKind
from .retry import Verdict, classify
from .sources import BufferPool, FileSource, StreamSource
from .stats import Counters, UploadResult, UploadStatistics

if TYPE_CHECKING:
    from .engine import Uploader

__all__ = ["EventSink", "UploadJob"]

log = logging.getLogger("async_uploader")
EventSink = Callable[[dict[str, object]], None]


class UploadJob:
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
        self.counters = Counters(tuple(read_set.sources))
        self.upload_id: str | None = None
        self.checkpoint_path: Path | None = None
        self._checkpoint_arg = checkpoint
        self.checkpoint: Checkpoint | None = None
        self.acked: dict[tuple[Source, int], PartRecord] = {}
        self.files: dict[Source, FileSource] = {}
        self.streams: dict[Source, StreamSource] = {}
        self.stop_grace: float | None = None
        self.stop_event = asyncio.Event()
        self._stale_upload: str | None = None
        self._completed = False
        self._adopted: str | None = None
        self.first_parts: dict[Source, tuple[Part, bytearray] | None] = {}

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

    def emit(self, event: dict[str, object]) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # a broken observer must not break the upload
                log.exception("progress observer failed")

    def _set_state(self, state: str) -> None:
        self.counters.state = state
        self.emit({"event": "state", "state": state})

    def request_stop(self, grace: float) -> None:
        self.stop_grace = grace
        self.stop_event.set()

    # -- the whole upload ---------------------------------------------------------------------------------

    async def run(self) -> UploadResult:
        started = time.monotonic()
        try:
            self._open_sources()
            plan = self._plan()
            self._open_checkpoint(plan)
            if self.checkpoint is not None and self.checkpoint.read_set_id is not None:
                read_set_id = self.checkpoint.read_set_id
                self._count_all_done()
                return self._result(read_set_id, started, await self._wait_active(read_set_id))
            await self._create_or_resume(plan)
            if self._adopted is not None:
                self._count_all_done()
                return self._result(self._adopted, started, await self._wait_active(self._adopted))
            self._set_state("uploading")
            await PartScheduler(self).run(plan)
            read_set_id = await self._complete()
            status = await self._wait_active(read_set_id)
            self._set_state("done")
            return self._result(read_set_id, started, status)
        except asyncio.CancelledError:
            self._set_state("interrupted")
            await self._on_failure(cancelled=True)
            raise
        except Stopping:
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
        for reader in self.files.values():
            reader.close()
        if self.checkpoint is not None:
            self.checkpoint.close()

    # -- setup --------------------------------------------------------------------------------------------

    def _open_sources(self) -> None:
        self._set_state("starting")
        pool: BufferPool | None = None
        part_size = self.config.part_size
        for source, given in self.read_set.sources.items():
            if isinstance(given, Path):
                self.files[source] = FileSource(source, given, self.config.slice_size)
                continue
            if pool is None:
                size = part_size or DEFAULT_PART_SIZE
                if self.config.memory_budget < size:
                    raise PlanError(
                        f"memory budget {self.config.memory_budget} bytes cannot hold one {size}-byte part of "
                        "a stream; raise the budget or lower the part size"
                    )
                pool = BufferPool(size, self.config.memory_budget // size)
            self.streams[source] = StreamSource(source, given, pool.size, pool)

    def _plan(self) -> Plan | None:
        """The plan for file sources; None when any source is a stream (its size is unknown)."""
        if self.streams:
            part_size = next(iter(self.streams.values())).part_size
            for source, reader in self.files.items():
                if -(-reader.size // part_size) > MAX_PARTS:
                    raise PlanError(f"{source} is too large for {part_size}-byte parts; raise --part-size")
                self.counters.bytes_total[source] = reader.size
                self.counters.parts_total[source] = -(-reader.size // part_size)
            return None
        plan = make_plan({s: r.size for s, r in self.files.items()}, self.config.part_size)
        for source in self.files:
            self.counters.bytes_total[source] = plan.sizes[source]
            self.counters.parts_total[source] = plan.part_count(source)
        return plan

    def _fingerprints(self) -> tuple[SourceFingerprint, ...]:
        return tuple(fingerprint_source(source, reader.path) for source, reader in self.files.items())

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
            self.checkpoint = checkpoint
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
        self.checkpoint = Checkpoint.create(path, header)

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
        token = self.checkpoint.header.client_token if self.checkpoint else uuid.uuid4().hex
        created = await self.owner.call(
            RequestKind.CONTROL,
            "CreateMultipartReadSetUpload",
            lambda: client.create_upload(self.store_id, self.read_set, token),
            on_retry=self.note_retry("CreateMultipartReadSetUpload", None, None),
        )
        self.upload_id = created.upload_id
        if self.checkpoint is not None:
            await asyncio.to_thread(self.checkpoint.record_upload, created.upload_id)
        if self._stale_upload:
            with contextlib.suppress(UploaderError):
                await self._abort(self._stale_upload)

    async def _validate_streams_before_create(self) -> None:
        """Read the first part of every stream so an empty stream fails before anything is created."""
        for source, stream in self.streams.items():
            self.first_parts[source] = await stream.next_part()

    async def _reconcile(self) -> None:
        """Resume: keep the parts the store holds with the recorded checksum and size; the rest are sent again."""
        assert self.checkpoint is not None and self.upload_id is not None
        self._set_state("resuming")
        client = self.owner.client
        recorded = self.checkpoint.parts
        kept: dict[tuple[Source, int], PartRecord] = {}
        for source in self.files:
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
        self.acked = kept
        c = self.counters
        for (source, _number), record in kept.items():
            c.parts_done[source] += 1
            c.bytes_done[source] += record.length
            c.bytes_sent[source] += record.length
        c.resumed_parts = len(kept)
        log.info("resuming upload %s: %d parts already on the store", self.upload_id, len(kept))

    async def _adopt_completed_read_set(self) -> bool:
        """The upload is gone but every part was recorded: Complete may have succeeded before a crash.

        Look for the read set it would have made (same name, sample and subject, created after the checkpoint,
        with the same size and number of parts per source); adopt it only when exactly one matches.
        """
        assert self.checkpoint is not None
        header = self.checkpoint.header
        planned = sum(n or 0 for n in self.counters.parts_total.values())
        if len(self.checkpoint.parts) != planned:
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
        shape = {
            f"source{int(source.value[-1])}": (size, self.counters.parts_total[source])
            for source, size in self.counters.bytes_total.items()
        }
        matching = []
        for candidate in found[:20]:
            metadata = await self.owner.call(
                RequestKind.LISTING,
                "GetReadSetMetadata",
                lambda rid=candidate.id: client.get_read_set_metadata(self.store_id, rid),  # type: ignore[misc]
            )
            files = {
                name: (info.get("contentLength"), info.get("totalParts"))
                for name, info in metadata.files.items()
                if name.startswith("source") and isinstance(info, dict)  # not "index"
            }
            if files == shape:
                matching.append(candidate)
        if len(matching) != 1:
            return False
        read_set_id = matching[0].id
        log.info("upload %s was completed before the interruption: read set %s", self.upload_id, read_set_id)
        await asyncio.to_thread(self.checkpoint.record_complete, read_set_id)
        self._adopted = read_set_id
        return True

    # -- parts --------------------------------------------------------------------------------------------

    def note_retry(
        self, operation: str, source: Source | None, number: int | None
    ) -> Callable[[BaseException, int, float], None]:
        def note(exc: BaseException, attempt: int, delay: float) -> None:
            c = self.counters
            c.retries += 1
            verdict = classify(exc)
            if verdict is Verdict.THROTTLE:
                c.throttles += 1
            self.emit(
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
        parts = sorted(self.acked.values(), key=lambda r: (r.source.value, r.number))
        for source, total in self.counters.parts_total.items():
            have = sum(1 for r in parts if r.source is source)
            if total is not None and have != total:
                raise UploaderError(f"internal error: {have} of {total} parts of {source} acknowledged")
        read_set_id = await self.owner.call(
            RequestKind.CONTROL,
            "CompleteMultipartReadSetUpload",
            lambda: client.complete_upload(self.store_id, self.upload_id or "", parts),
            on_retry=self.note_retry("CompleteMultipartReadSetUpload", None, None),
        )
        self._completed = True
        if self.checkpoint is not None:
            await asyncio.to_thread(self.checkpoint.record_complete, read_set_id)
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
            keep = self.checkpoint is not None
        if keep:
            return
        try:
            await asyncio.shield(asyncio.wait_for(self._abort(self.upload_id), timeout=10.0))
        except (UploaderError, TimeoutError, asyncio.CancelledError) as exc:
            log.warning("could not abort upload %s: %s", self.upload_id, exc)
        else:
            if self.checkpoint is not None and self.checkpoint_path is not None:
                self.checkpoint.close()
                self.checkpoint = None
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
