"""One read set's upload: the async shell around ``core.state.UploadState``.

It opens the sources, plans, opens or creates the checkpoint, then walks the phases of the state machine:
Create (or resume: reconcile with the store's listing, or adopt a read set completed before an interruption),
the parts (``parts.PartSender``), Complete, the wait for ACTIVE. Every request goes through the Uploader's
``Calls``. The whole upload runs in one cancel scope: ``stop(grace)`` starts no new work and gives what is in
flight ``grace`` seconds, then the scope's deadline cancels it; a failure or a cancellation from outside ends it
at once. Either way, an upload nothing can resume is aborted, within a bounded time.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import anyio

from ..core.checkpoint import (
    CheckpointHeader,
    PartRecord,
    Replay,
    SourceFingerprint,
    read_set_identity,
    verify_resumable,
)
from ..core.config import DEFAULT_PART_SIZE, MAX_PARTS, ReadSet, Source, UploadConfig
from ..core.errors import (
    CheckpointError,
    CheckpointMismatchError,
    ConfigError,
    PlanError,
    ResourceNotFoundError,
    SourceError,
    UploaderError,
    UploadFailedError,
    UploadInterruptedError,
    VerificationError,
)
from ..core.events import retry_event, state_event
from ..core.fastq import check_file_type
from ..core.plan import Part, Plan, make_plan
from ..core.protocol import ReadSetMetadata
from ..core.ratelimit import RequestKind
from ..core.retry import Verdict
from ..core.state import Event, Phase, UploadState, abort_on_failure, match_adoption, reconcile
from ..core.stats import UploadResult, UploadStatistics
from ..edge.journal import CheckpointLock, Journal, check_checkpoint_path, default_checkpoint_path, load_checkpoint
from ..edge.sources import BufferPool, FileSource, PartBuffer, StreamSource, fingerprint_source, read_head
from .calls import Calls, RetryObserver
from .etag import Verifier
from .parts import EventSink, GroupCommit, PartSender, first_error
from .reread import changed_parts

__all__ = ["ABORT_TIMEOUT", "CONFIRM_ROUNDS", "Upload"]

log = logging.getLogger("async_uploader")

ABORT_TIMEOUT = 10.0
"""The longest a failed or interrupted upload waits for its Abort."""
CONFIRM_ROUNDS = 3
"""How many times a source that changes while it is uploaded has its changed parts sent again before giving up."""


class Upload:
    """One read set's upload, from opening its sources to ACTIVE."""

    def __init__(
        self,
        calls: Calls,
        config: UploadConfig,
        read_set: ReadSet,
        store_id: str,
        *,
        checkpoint: Path | bool | None,
        restart: bool,
        keep_on_failure: bool | None,
        on_event: EventSink | None,
    ) -> None:
        self._calls = calls
        self._config = config
        self.read_set = read_set
        self.store_id = store_id
        self._checkpoint_arg = checkpoint
        self._restart = restart
        self._keep_on_failure = keep_on_failure
        self._on_event = on_event
        self.state = UploadState(list(read_set.sources), started=time.monotonic(), on_phase=self._entered)
        self.checkpoint_path: Path | None = None
        self._journal: Journal | None = None
        self._lock: CheckpointLock | None = None
        self._prints: dict[Source, SourceFingerprint] = {}
        self._reread: frozenset[Source] = frozenset()
        self._created_at = time.time()
        self._client_token: str | None = None
        self._stale_upload: str | None = None
        self._files: dict[Source, FileSource] = {}
        self._streams: dict[Source, StreamSource] = {}
        self._first_parts: dict[Source, tuple[Part, PartBuffer] | None] = {}
        self._scope: anyio.CancelScope | None = None
        self._sender: PartSender | None = None
        self._stop_at: float | None = None
        self._stopped = anyio.Event()
        verify = config.verify and config.wait_for_active  # the ETag comes with the read set ACTIVE
        self._verifier = Verifier(calls, store_id, read_set.file_type) if verify else None

    # -- observation and control ------------------------------------------------------------------------------

    @property
    def upload_id(self) -> str | None:
        return self.state.upload_id

    def statistics(self) -> UploadStatistics:
        return self.state.statistics(time.monotonic(), self._calls.limiter.current_rate(RequestKind.PART))

    def stop(self, grace: float) -> None:
        """Stop gracefully: start nothing new; what is in flight gets ``grace`` seconds, then it is cancelled."""
        deadline = asyncio.get_running_loop().time() + max(0.0, grace)
        self._stop_at = deadline if self._stop_at is None else min(self._stop_at, deadline)
        self._stopped.set()
        if self._scope is not None:
            self._scope.deadline = min(self._scope.deadline, self._stop_at)
        if self._sender is not None:
            self._sender.stop()

    def _emit(self, event: dict[str, object]) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:  # a broken observer must not break the upload
                log.exception("progress observer failed")

    def _entered(self, phase: Phase) -> None:
        self._emit(state_event(phase.value, time.time()))

    def _observer(self, operation: str) -> RetryObserver:
        def retried(exc: BaseException, verdict: Verdict, attempt: int, delay: float) -> None:
            self.state.retried(verdict)
            error = getattr(exc, "code", type(exc).__name__)
            self._emit(retry_event(operation, None, None, attempt, error, delay, time.time()))

        return retried

    # -- the whole upload -----------------------------------------------------------------------------------------

    async def run(self) -> UploadResult:
        try:
            result = await self._scoped()
        except BaseException as exc:
            cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
            self.state.fire(Event.STOP if cancelled else Event.FAIL)
            await self._abort_unresumable(ABORT_TIMEOUT)
            raise
        finally:
            self._close()
        if result is not None:
            return result
        self.state.fire(Event.STOP)
        aborted = await self._abort_unresumable(self._grace_left())
        if self.state.read_set_id is not None:
            why = f"interrupted after Complete made read set {self.state.read_set_id}, before it was ACTIVE"
        elif self._journal is not None:
            why = "upload interrupted; run the same command again to resume"
        else:
            why = "upload interrupted; without a checkpoint it cannot resume" + ("; it was aborted" if aborted else "")
        raise UploadInterruptedError(
            why,
            upload_id=self.state.upload_id,
            checkpoint=str(self.checkpoint_path) if self._journal is not None else None,
        )

    async def _scoped(self) -> UploadResult | None:
        """The phases in the upload's cancel scope; None when a stop ended them (or its deadline did)."""
        with anyio.CancelScope() as self._scope:
            if self._stop_at is not None:
                self._scope.deadline = self._stop_at
            try:
                return await self._phases()
            except BaseExceptionGroup as group:
                error = first_error(group)
                raise error from error.__cause__
        return None

    async def _phases(self) -> UploadResult | None:
        self._open_sources()
        plan = self._plan()
        self._prints = await anyio.to_thread.run_sync(self._fingerprints)
        await self._check_file_types()
        replayed = await self._open_checkpoint(plan)
        # Everything local is checked (sources, plan, file types, checkpoint, its lock): only now does a byte go out.
        await self._calls.ensure_reachable(self._hint())
        verifier = self._verifier
        if verifier is not None:
            await verifier.learn_family(self._observer("GetSequenceStore"))
            for source, stream in self._streams.items():
                stream.summer = verifier.stream_summer(source)
        async with anyio.create_task_group() as hashing:
            if verifier is not None:
                verifier.start(hashing, {source: reader.path for source, reader in self._files.items()})
            metadata = await self._until_active(plan, replayed)
            if metadata is None:
                hashing.cancel_scope.cancel()
                return None
        assert metadata is not None
        verification = None
        if verifier is not None:
            verification = await verifier.compare(metadata, self.state.sources)
            if verification.failed:
                raise VerificationError(
                    f"read set {self.state.read_set_id} (kept, for the record) failed verification: "
                    f"{verification.reason}",
                    read_set_id=self.state.read_set_id or "",
                )
        self.state.active(metadata.status)
        return self.state.result(
            store_id=self.store_id, now=time.monotonic(), checkpoint=self.checkpoint_path, verification=verification
        )

    async def _until_active(self, plan: Plan | None, replayed: Replay | None) -> ReadSetMetadata | None:
        """Every phase up to the read set ACTIVE: its last metadata; None when a stop ended them first."""
        if replayed is not None and replayed.read_set_id is not None:
            assert plan is not None
            await self._check_finished(plan, replayed, replayed.read_set_id)
            self.state.finished(replayed.read_set_id, replayed.parts, adopted=False)
        elif replayed is not None and replayed.upload_id is not None:
            assert plan is not None
            self.state.fire(Event.RESUME)
            await self._resume(plan, replayed)
        else:
            self.state.fire(Event.CREATE)
            await self._create()
        if self.state.phase is Phase.UPLOADING:
            if self._stop_at is not None:
                return None
            if not await self._send_until_confirmed(plan):
                return None
            self.state.fire(Event.ALL_SENT)
            await self._complete()
        if self._stop_at is not None:
            return None
        return await self._wait_active()

    async def _check_file_types(self) -> None:
        """The first bytes of every file source must agree with the file type: a BAM declared as FASTQ fails here,
        in well under a second, not when the service rejects it after the whole upload."""
        for source, reader in self._files.items():
            head = await anyio.to_thread.run_sync(read_head, reader.path)
            self._check_head(source, str(reader.path), head)

    def _check_head(self, source: Source, what: str, head: bytes) -> None:
        why = check_file_type(head, self.read_set.file_type)
        if why is not None:
            raise SourceError(
                f"{source} {what} is declared {self.read_set.file_type.value} but {why}; check --file-type"
            )

    def _close(self) -> None:
        for reader in self._files.values():
            reader.close()
        if self._journal is not None:
            self._journal.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _grace_left(self) -> float:
        if self._stop_at is None:
            return ABORT_TIMEOUT
        return min(ABORT_TIMEOUT, self._stop_at - asyncio.get_running_loop().time())

    # -- setup ----------------------------------------------------------------------------------------------------

    def _open_sources(self) -> None:
        pool: BufferPool | None = None
        for source, given in self.read_set.sources.items():
            if isinstance(given, Path):
                self._files[source] = FileSource(source, given, self._config.slice_size)
                continue
            if pool is None:
                size = self._config.part_size or DEFAULT_PART_SIZE
                if self._config.memory_budget < size:
                    raise PlanError(
                        f"memory budget {self._config.memory_budget} bytes cannot hold one {size}-byte part of "
                        "a stream; raise the budget or lower the part size"
                    )
                pool = BufferPool(size, self._config.memory_budget // size)
            self._streams[source] = StreamSource(source, given, pool.size, pool)

    def _plan(self) -> Plan | None:
        """The plan for file sources; None when any source is a stream (its size is unknown until its end)."""
        if not self._streams:
            plan = make_plan({s: r.size for s, r in self._files.items()}, self._config.part_size)
            self.state.plan(plan)
            return plan
        part_size = next(iter(self._streams.values())).part_size
        for source, reader in self._files.items():
            parts = -(-reader.size // part_size)
            if parts > MAX_PARTS:
                raise PlanError(f"{source} is too large for {part_size}-byte parts; raise --part-size")
            self.state.set_totals(source, reader.size, parts)
        return None

    def _hint(self) -> str:
        if self._calls.client.service.endpoint_url:
            return "check --endpoint-url and that the store is running"
        return "check --region and the network path to AWS"

    def _fingerprints(self) -> dict[Source, SourceFingerprint]:
        return {source: fingerprint_source(source, reader.path) for source, reader in self._files.items()}

    async def _open_checkpoint(self, plan: Plan | None) -> Replay | None:
        """Lock and open the checkpoint that resumes this upload, or create a new one; None when none is kept."""
        arg = self._checkpoint_arg
        if arg is False:
            return None
        if plan is None:
            if isinstance(arg, Path):
                raise SourceError("a stream cannot be resumed, so it cannot have a checkpoint")
            return None
        prints = list(self._prints.values())
        if isinstance(arg, Path):
            path = arg
        else:
            identity = read_set_identity(self.read_set)
            sizes = [p.size for p in prints]
            path = await anyio.to_thread.run_sync(
                default_checkpoint_path, self.store_id, identity, sizes, [p.path for p in prints]
            )
        self.checkpoint_path = path
        sources = [reader.path for reader in self._files.values()]
        await anyio.to_thread.run_sync(check_checkpoint_path, path, sources)
        self._lock = await anyio.to_thread.run_sync(_lock, path)
        if await anyio.to_thread.run_sync(check_checkpoint_path, path, sources) and not self._restart:
            self._journal, replayed = await anyio.to_thread.run_sync(Journal.open, path)
            header = replayed.header
            self._reread = verify_resumable(
                header,
                store_id=self.store_id,
                read_set=self.read_set,
                sources=prints,
                part_size=plan.part_size,
                name=str(path),
            )
            self._client_token = header.client_token
            self._created_at = header.created
            return replayed
        if path.exists():
            self._stale_upload = await anyio.to_thread.run_sync(_unfinished_upload, path)
        header = CheckpointHeader.from_read_set(
            self.store_id, self.read_set, part_size=plan.part_size, sources=prints, client_token=uuid.uuid4().hex
        )
        self._journal = await anyio.to_thread.run_sync(Journal.create, path, header)
        self._client_token = header.client_token
        return None

    async def _changed(
        self, plan: Plan, records: list[PartRecord], sources: frozenset[Source]
    ) -> set[tuple[Source, int]]:
        """The recorded parts of ``sources`` that no longer hold the bytes sent (each part read again)."""
        if not sources or not records:
            return set()
        paths = {source: self._files[source].path for source in sources}
        changed = await changed_parts(paths, plan.part_size, records)
        checked = sum(1 for record in records if record.source in sources)
        log.info("read %d recorded parts again: %d changed since they were sent", checked, len(changed))
        return changed

    async def _check_finished(self, plan: Plan, replayed: Replay, read_set_id: str) -> None:
        """A checkpoint that records Complete proves nothing of files that are not those it was written for, unless
        every part reads back as it was sent."""
        if not self._reread:
            return
        records = list(replayed.parts.values())
        changed = await self._changed(plan, records, self._reread)
        if changed or len(records) != plan.total_parts:
            raise CheckpointMismatchError(
                f"{self.checkpoint_path} records read set {read_set_id}, made from other bytes than these files "
                f"hold now ({len(changed)} part(s) differ); run again with --restart to upload them as a new read set"
            )

    # -- Create, or resume an upload the checkpoint knows ---------------------------------------------------------

    async def _create(self) -> None:
        for source, stream in self._streams.items():  # an empty stream fails before anything is created
            first = self._first_parts[source] = await stream.next_part()
            if first is not None:
                self._check_head(source, "(a stream)", bytes(first[1][: min(len(first[1]), 1 << 20)]))
        token = self._client_token or uuid.uuid4().hex
        operation = "CreateMultipartReadSetUpload"
        client = self._calls.client
        created = await self._calls.call(
            operation,
            lambda: client.create_upload(self.store_id, self.read_set, token),
            on_retry=self._observer(operation),
        )
        self.state.created(created.upload_id)
        if self._journal is not None:
            await anyio.to_thread.run_sync(self._journal.record_upload, created.upload_id)
        if self._stale_upload is not None:
            try:
                await self._abort(self._stale_upload)
            except UploaderError as exc:
                log.warning("could not abort the replaced upload %s: %s", self._stale_upload, exc)

    async def _resume(self, plan: Plan, replayed: Replay) -> None:
        """Keep the parts the store holds with the recorded checksum and size, and (unless the files are provably
        the same) the same bytes as the file holds now; the rest are sent again."""
        upload_id = replayed.upload_id
        assert upload_id is not None
        self.state.upload_id = upload_id
        client = self._calls.client
        kept: dict[tuple[Source, int], PartRecord] = {}
        for source in self._files:
            try:
                listed = await self._calls.call(
                    "ListReadSetUploadParts",
                    lambda source=source: client.list_parts(self.store_id, upload_id, source),  # type: ignore[misc]
                )
            except ResourceNotFoundError as exc:
                read_set_id = await self._find_completed(len(replayed.parts))
                if read_set_id is None:
                    raise ResourceNotFoundError(
                        f"upload {upload_id} is no longer on the store (aborted or expired); "
                        "run again with --restart to start a new upload",
                        status=exc.status,
                        operation=exc.operation,
                    ) from exc
                await self._check_finished(plan, replayed, read_set_id)
                if self._journal is not None:
                    await anyio.to_thread.run_sync(self._journal.record_complete, read_set_id)
                self.state.finished(read_set_id, replayed.parts, adopted=True)
                return
            kept.update(reconcile(replayed.parts, listed))
        for key in await self._changed(plan, list(kept.values()), self._reread):
            del kept[key]
        self.state.reconciled(kept)
        log.info("resuming upload %s: %d parts already on the store", upload_id, len(kept))

    async def _find_completed(self, parts_acknowledged: int) -> str | None:
        """The upload is gone but every part was acknowledged: Complete may have succeeded, its reply lost.

        Look for the read set it would have made (same name, sample and subject, created after the upload);
        adopt it only when exactly one has the same size and part count per source (``match_adoption``).
        """
        planned = sum(self.state.total_parts(source) or 0 for source in self.state.sources)
        if parts_acknowledged != planned:
            return None
        wanted = {
            "name": self.read_set.name,
            "sampleId": self.read_set.sample_id,
            "subjectId": self.read_set.subject_id,
            "creationType": "UPLOAD",
            "createdAfter": datetime.fromtimestamp(self._created_at - 60, tz=UTC).isoformat(),
        }
        client = self._calls.client
        found = await self._calls.call("ListReadSets", lambda: client.find_read_sets(self.store_id, wanted))
        candidates = []
        for candidate in found[:20]:
            metadata = await self._calls.call(
                "GetReadSetMetadata",
                lambda rid=candidate.id: client.get_read_set_metadata(self.store_id, rid),  # type: ignore[misc]
            )
            candidates.append((candidate.id, metadata.files))
        read_set_id = match_adoption(self.state.shape(), candidates)
        if read_set_id is not None:
            log.info("upload %s was completed already: read set %s", self.state.upload_id, read_set_id)
        return read_set_id

    # -- parts, Complete, ACTIVE --------------------------------------------------------------------------------

    async def _send_until_confirmed(self, plan: Plan | None) -> bool:
        """Send every missing part; then, before Complete, make sure no source changed while it was read: a source
        that did has each part read again and the changed ones sent again. False when a stop came first."""
        for _ in range(CONFIRM_ROUNDS + 1):
            await self._send_parts(plan)
            if self._sender is not None and self._sender.stopped:
                return False
            now = await anyio.to_thread.run_sync(self._fingerprints)
            moved = frozenset(s for s, p in now.items() if not p.same_file(self._prints[s]))
            if not moved:
                return True
            what = ", ".join(f"{s} {self._files[s].path}" for s in sorted(moved))
            if plan is None or self._journal is None:
                raise SourceError(f"{what} changed while it was uploaded; run again to upload it as it is now")
            self._prints = now
            changed = await self._changed(plan, list(self.state.acked.values()), moved)
            log.warning("%s changed while it was uploaded: %d part(s) are sent again", what, len(changed))
            self.state.forget(changed)
        raise SourceError(f"{what} keeps changing while it is uploaded; run again once nothing writes to it")

    async def _send_parts(self, plan: Plan | None) -> None:
        upload_id = self.state.upload_id
        assert upload_id is not None
        self._sender = PartSender(
            self._calls,
            self.state,
            store_id=self.store_id,
            upload_id=upload_id,
            files=self._files,
            streams=self._streams,
            first_parts=self._first_parts,
            commit=GroupCommit(self._journal) if self._journal is not None else None,
            slice_size=self._config.slice_size,
            emit=self._emit if self._on_event is not None else None,
        )
        await self._sender.run(plan)

    async def _complete(self) -> None:
        parts = self.state.parts_for_complete()
        upload_id = self.state.upload_id or ""
        operation = "CompleteMultipartReadSetUpload"
        client = self._calls.client
        try:
            read_set_id = await self._calls.call(
                operation,
                lambda: client.complete_upload(self.store_id, upload_id, parts),
                on_retry=self._observer(operation),
            )
        except ResourceNotFoundError as exc:
            # An earlier try may have completed the upload with its reply lost: the upload is then gone and its
            # read set exists.
            found = await self._find_completed(len(parts))
            if found is None:
                raise ResourceNotFoundError(
                    f"upload {upload_id} is no longer on the store and no read set made from it was found "
                    "(aborted or expired before Complete); run again with --restart to start a new upload",
                    status=exc.status,
                    operation=exc.operation,
                ) from exc
            read_set_id = found
        self.state.completed(read_set_id)
        if self._journal is not None:
            await anyio.to_thread.run_sync(self._journal.record_complete, read_set_id)

    async def _wait_active(self) -> ReadSetMetadata | None:
        """Poll the read set until the store has checked it: its last metadata; None when a stop came first."""
        read_set_id = self.state.read_set_id
        assert read_set_id is not None
        if not self._config.wait_for_active:
            return ReadSetMetadata(read_set_id, "PROCESSING_UPLOAD")
        client = self._calls.client
        metadata = ReadSetMetadata(read_set_id, "PROCESSING_UPLOAD")
        pause = 0.05
        with anyio.move_on_after(self._config.active_timeout):
            while True:
                metadata = await self._calls.call(
                    "GetReadSetMetadata", lambda: client.get_read_set_metadata(self.store_id, read_set_id)
                )
                if metadata.status == "ACTIVE":
                    break
                if metadata.status == "UPLOAD_FAILED":
                    reason = metadata.status_message or "no reason given"
                    raise UploadFailedError(f"the store rejected read set {read_set_id}: {reason}")
                with anyio.move_on_after(pause):
                    await self._stopped.wait()
                if self._stop_at is not None:
                    return None
                pause = min(5.0, pause * 2)
        if metadata.status != "ACTIVE":
            log.warning("read set %s is still %s; not waiting any longer", read_set_id, metadata.status)
        return metadata

    # -- Abort -------------------------------------------------------------------------------------------------

    async def _abort(self, upload_id: str) -> None:
        client = self._calls.client
        await self._calls.call("AbortMultipartReadSetUpload", lambda: client.abort_upload(self.store_id, upload_id))

    async def _abort_unresumable(self, budget: float) -> bool:
        """Abort an upload nothing will resume (``abort_on_failure``), waiting at most ``budget`` seconds."""
        upload_id = self.state.upload_id
        if upload_id is None or self.state.read_set_id is not None:
            return False
        if not abort_on_failure(self._keep_on_failure, resumable=self._journal is not None):
            return False
        if budget <= 0:
            log.warning("upload %s was left open (stopped at once); remove it with: abort --upload-id", upload_id)
            return False
        with anyio.move_on_after(budget, shield=True) as scope:
            try:
                await self._abort(upload_id)
            except UploaderError as exc:
                log.warning("could not abort upload %s: %s", upload_id, exc)
                return False
        if scope.cancelled_caught:
            log.warning("could not abort upload %s within %.0f s", upload_id, budget)
            return False
        if self._journal is not None and self.checkpoint_path is not None:
            self._journal.close()
            self._journal = None
            self.checkpoint_path.unlink(missing_ok=True)
        return True


def _lock(path: Path) -> CheckpointLock:
    """Take the checkpoint's lock, making its folder (mode 0700) if need be."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot make the checkpoint's folder {path.parent}: {exc.strerror or exc}") from None
    lock = CheckpointLock(path)
    try:
        lock.acquire()
    except OSError as exc:
        raise CheckpointError(f"cannot lock checkpoint {path}: {exc.strerror or exc}") from exc
    return lock


def _unfinished_upload(path: Path) -> str | None:
    """--restart: the upload an existing checkpoint left open (aborted once the new one exists), if any."""
    try:
        old = load_checkpoint(path)
    except UploaderError:
        return None
    return old.upload_id if old.read_set_id is None else None
