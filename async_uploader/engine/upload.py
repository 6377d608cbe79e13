"""One read set's upload: the async shell around ``core.state.UploadState``.

The shell is a loop: ask the state for ``next_action()``, perform that one action (each a method of a few lines
below), feed its outcome back, until the action is ``END``. What to do (create or resume, adopt a read set made
before a crash, re-read a changed source, send, complete, wait, verify, stop, abort) is decided in the core.

Every request goes through one path (``calls.Requests``), which counts and reports every retry. The whole upload
runs in one cancel scope: ``stop(grace)`` starts no new work and gives what is in flight ``grace`` seconds, then
the scope's deadline cancels it; a failure or a cancellation from outside ends it at once. Either way the core
says whether the upload is aborted (one nothing can resume), within a bounded time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import anyio
from anyio.abc import TaskGroup

from ..core.config import ReadSet, Source, UploadConfig
from ..core.errors import ResourceNotFoundError, UploaderError, UploadInterruptedError
from ..core.events import retry_event, state_event
from ..core.ratelimit import RequestKind
from ..core.state import Action, Phase, UploadState, match_adoption
from ..core.stats import UploadResult, UploadStatistics
from ..edge.receipts import default_receipt_path, write_receipt
from ..edge.sources import recorded_span
from .calls import Calls, Requests, Retry
from .etag import Verifier
from .existing import find_existing
from .parts import EventSink, GroupCommit, PartSender, first_error
from .prepare import Preparation
from .receipt import build_receipt
from .reread import changed_parts
from .watch import ReadSetWatcher

__all__ = ["ABORT_TIMEOUT", "Upload"]

log = logging.getLogger("async_uploader")

ABORT_TIMEOUT = 10.0
"""The longest a failed or interrupted upload waits for its Abort."""


class Upload:
    """One read set's upload, from opening its sources to ACTIVE (and verified)."""

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
        receipt: Path | None = None,
        watcher: ReadSetWatcher | None = None,
    ) -> None:
        self._calls = calls
        self._receipt_arg = receipt
        self._watcher = watcher or ReadSetWatcher()
        self.receipt_path: Path | None = None
        self._requests = Requests(calls, self._retried)
        self._config = config
        self.read_set = read_set
        self.store_id = store_id
        self._on_event = on_event
        self.state = UploadState(
            list(read_set.sources),
            started=time.monotonic(),
            on_phase=self._entered,
            wait=config.wait_for_active,
            verify=config.verify,
            wait_timeout=config.active_timeout,
            keep_on_failure=keep_on_failure,
            if_exists=config.if_exists,
        )
        self._local = Preparation(config, read_set, store_id, checkpoint=checkpoint, restart=restart)
        self._scope: anyio.CancelScope | None = None
        self._sender: PartSender | None = None
        self._stop_at: float | None = None
        self._stopped = anyio.Event()
        verify = config.verify and config.wait_for_active  # the ETag comes with the read set ACTIVE
        self._verifier = Verifier(calls, store_id, read_set.file_type) if verify else None
        self._hashing: TaskGroup | None = None
        self._perform: dict[Action, Callable[[], Awaitable[None]]] = {
            Action.PREPARE: self._prepare,
            Action.FIND_EXISTING: self._find_existing,
            Action.CREATE: self._create,
            Action.LIST_PARTS: self._list_parts,
            Action.REREAD: self._reread,
            Action.SEND: self._send,
            Action.CHECK_SOURCES: self._check_sources,
            Action.COMPLETE: self._complete,
            Action.FIND_COMPLETED: self._find_completed,
            Action.RECORD_COMPLETE: self._record_complete,
            Action.WAIT: self._wait,
            Action.VERIFY: self._verify,
        }

    # -- observation and control ------------------------------------------------------------------------------

    @property
    def upload_id(self) -> str | None:
        return self.state.upload_id

    @property
    def checkpoint_path(self) -> Path | None:
        return self._local.checkpoint_path

    def statistics(self) -> UploadStatistics:
        return self.state.statistics(time.monotonic(), self._calls.limiter.current_rate(RequestKind.PART))

    def stop(self, grace: float) -> None:
        """Stop gracefully: start nothing new; what is in flight gets ``grace`` seconds, then it is cancelled."""
        deadline = asyncio.get_running_loop().time() + max(0.0, grace)
        self._stop_at = deadline if self._stop_at is None else min(self._stop_at, deadline)
        self.state.stop(at_once=grace <= 0)
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

    def _retried(self, retry: Retry) -> None:
        """Every retry of every request of this upload: counted once, and one ``retry`` event."""
        self.state.retried(retry.verdict)
        error = getattr(retry.error, "code", type(retry.error).__name__)
        self._emit(
            retry_event(retry.operation, retry.source, retry.number, retry.attempt, error, retry.delay, time.time())
        )

    # -- the loop -------------------------------------------------------------------------------------------------

    async def run(self) -> UploadResult:
        try:
            await self._scoped()
        except BaseException as exc:
            self.state.failed(cancelled=isinstance(exc, anyio.get_cancelled_exc_class()))
            with anyio.CancelScope(shield=True):
                await self._write_receipt()
            await self._abort_if_wanted(ABORT_TIMEOUT)
            raise
        finally:
            self._local.close()
            if self.state.read_set_id is not None:
                self._watcher.forget(self.store_id, self.state.read_set_id)
        await self._write_receipt()
        if self.state.phase is Phase.DONE:
            result = self.state.result(store_id=self.store_id, now=time.monotonic(), checkpoint=self.checkpoint_path)
            return replace(
                result, receipt=self.receipt_path, existing=self.state.existing, plain_bytes=self._local.plain_bytes()
            )
        self.state.failed(cancelled=True)
        aborted = await self._abort_if_wanted(self._grace_left())
        raise self._interrupted(aborted)

    async def _scoped(self) -> None:
        """The actions, in the upload's cancel scope and beside the verifier's hashing threads."""
        with anyio.CancelScope() as self._scope:
            if self._stop_at is not None:
                self._scope.deadline = self._stop_at
            try:
                async with anyio.create_task_group() as self._hashing:
                    await self._loop()
                    self._hashing.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                error = first_error(group)
                raise error from error.__cause__

    async def _loop(self) -> None:
        while (action := self.state.next_action()) not in (Action.END, Action.ABORT):
            await self._perform[action]()

    def _interrupted(self, aborted: bool) -> UploadInterruptedError:
        journal = self._local.journal
        if self.state.read_set_id is not None:
            why = f"interrupted after Complete made read set {self.state.read_set_id}, before it was ACTIVE"
        elif journal is not None:
            why = "upload interrupted; run the same command again to resume"
        else:
            why = "upload interrupted; without a checkpoint it cannot resume" + ("; it was aborted" if aborted else "")
        checkpoint = str(self.checkpoint_path) if journal is not None else None
        return UploadInterruptedError(why, upload_id=self.state.upload_id, checkpoint=checkpoint)

    def _grace_left(self) -> float:
        if self._stop_at is None:
            return ABORT_TIMEOUT
        return min(ABORT_TIMEOUT, self._stop_at - asyncio.get_running_loop().time())

    # -- the actions ----------------------------------------------------------------------------------------------

    async def _prepare(self) -> None:
        prepared = await self._local.run()
        # Everything local is checked (sources, plan, file types, checkpoint, its lock): only now does a byte go out.
        await self._calls.ensure_reachable(self._hint())
        verifier = self._verifier
        if verifier is not None:
            await verifier.learn_family(self._requests.observer("GetSequenceStore"))
            self.state.verify = verifier.applies
            await self._start_hashing(verifier)
        for source, (size, parts) in self._local.resumed_totals(prepared.recorded_parts).items():
            self.state.set_totals(source, size, parts)  # a compressed source's, when its length is known already
        self.state.prepared(prepared)

    async def _start_hashing(self, verifier: Verifier) -> None:
        files = {}
        for source, reader in self._local.readers.items():
            path = await reader.hashed_by(verifier.stream_summer(source) if reader.path is None else None)
            if path is not None:
                files[source] = path
        assert self._hashing is not None
        verifier.start(self._hashing, files)

    def _hint(self) -> str:
        if self._calls.client.service.endpoint_url:
            return "check --endpoint-url and that the store is running"
        return "check --region and the network path to AWS"

    async def _find_existing(self) -> None:
        """No checkpoint knows this upload: the store may hold these files already (another host, a cleared home)."""
        found = await find_existing(self._requests, self.store_id, self.read_set, self.state.shape(), self._verifier)
        if found[0] is not None:
            log.info("the store holds these files already as read set %s: nothing is sent", found[0])
        self.state.existing_found(*found)

    async def _create(self) -> None:
        client = self._requests.client
        token = self._local.client_token
        created = await self._requests(
            "CreateMultipartReadSetUpload", lambda: client.create_upload(self.store_id, self.read_set, token)
        )
        self.state.created(created.upload_id)
        journal = self._local.journal
        if journal is not None:
            await anyio.to_thread.run_sync(journal.record_upload, created.upload_id)
        stale = self._local.stale_upload
        if stale is not None:
            try:
                await self._abort(stale)
            except UploaderError as exc:
                log.warning("could not abort the replaced upload %s: %s", stale, exc)

    async def _list_parts(self) -> None:
        """What the store holds of the checkpoint's upload, every source."""
        upload_id, client = self.state.upload_id or "", self._requests.client
        listed = []
        try:
            for source in self._local.readers:
                listed += await self._requests(
                    "ListReadSetUploadParts",
                    lambda source=source: client.list_parts(self.store_id, upload_id, source),  # type: ignore[misc]
                )
        except ResourceNotFoundError as exc:
            self.state.upload_gone(exc)
            return
        self.state.listed(listed)
        if self.state.phase is Phase.UPLOADING:
            log.info("resuming upload %s: %d parts already on the store", upload_id, len(self.state.acked))

    async def _reread(self) -> None:
        """Read the state's recorded parts of suspect sources again, from what their paths name now."""
        sources, records = self.state.reread_request()
        changed: set[tuple[Source, int]] = set()
        if records:
            readers = self._local.readers
            paths = {source: path for source in sources if (path := readers[source].path) is not None}
            part_size = self.state.current_plan().part_size
            changed = await changed_parts(
                paths, part_size, records, lambda record: recorded_span(readers[record.source], record, part_size)
            )
            log.info("read %d recorded parts again: %d changed since they were sent", len(records), len(changed))
        self.state.reread(changed)

    async def _send(self) -> None:
        upload_id = self.state.upload_id
        assert upload_id is not None
        journal = self._local.journal
        self._sender = PartSender(
            self._requests,
            self.state,
            store_id=self.store_id,
            upload_id=upload_id,
            readers=self._local.readers,
            commit=GroupCommit(journal) if journal is not None else None,
            emit=self._emit if self._on_event is not None else None,
        )
        await self._sender.run(self.state.current_plan())
        if not self._sender.stopped:
            self.state.all_sent()

    async def _check_sources(self) -> None:
        """Before Complete: has any source changed while it was read? The core decides what follows."""
        readers = self._local.readers
        now = await anyio.to_thread.run_sync(
            lambda: {s: i for s, r in readers.items() if (i := r.identity()) is not None}
        )
        moved = self.state.sources_checked(now)
        if moved:
            what = ", ".join(f"{s} {now[s].path}" for s in sorted(moved))
            log.warning("%s changed while it was uploaded: its parts are read again", what)
        for source in moved:  # from now on, read (and hash) what the path names now
            reader = readers[source]
            await anyio.to_thread.run_sync(reader.reopen)
            if self._verifier is not None and reader.path is not None:
                self._verifier.restart(source, reader.path)

    async def _complete(self) -> None:
        parts = self.state.parts_for_complete()
        upload_id, client = self.state.upload_id or "", self._requests.client
        try:
            read_set_id = await self._requests(
                "CompleteMultipartReadSetUpload", lambda: client.complete_upload(self.store_id, upload_id, parts)
            )
        except ResourceNotFoundError as exc:
            # An earlier try may have completed the upload with its reply lost: the upload is gone, its read set made.
            self.state.complete_lost(exc)
            return
        self.state.completed(read_set_id)

    async def _find_completed(self) -> None:
        """Look for the read set the vanished upload would have made (same name, sample and subject, created after
        the upload); the core adopts it only when exactly one has the same size and part count per source."""
        wanted = {
            "name": self.read_set.name,
            "sampleId": self.read_set.sample_id,
            "subjectId": self.read_set.subject_id,
            "creationType": "UPLOAD",
            "createdAfter": datetime.fromtimestamp(self._local.created_at - 60, tz=UTC).isoformat(),
        }
        client = self._requests.client
        found = await self._requests("ListReadSets", lambda: client.find_read_sets(self.store_id, wanted))
        candidates = []
        for candidate in found[:20]:
            metadata = await self._requests(
                "GetReadSetMetadata",
                lambda rid=candidate.id: client.get_read_set_metadata(self.store_id, rid),  # type: ignore[misc]
            )
            candidates.append((candidate.id, metadata.files))
        read_set_id = match_adoption(self.state.shape(), candidates)
        if read_set_id is not None:
            log.info("upload %s was completed already: read set %s", self.state.upload_id, read_set_id)
        self.state.found(read_set_id)

    async def _record_complete(self) -> None:
        journal, read_set_id = self._local.journal, self.state.read_set_id
        if journal is not None and read_set_id is not None:
            await anyio.to_thread.run_sync(journal.record_complete, read_set_id)
        await self._write_receipt()
        self.state.recorded()

    async def _write_receipt(self) -> None:
        """The receipt of the read set Complete made, as it stands (a write that fails is a warning: the read set
        exists whatever happens to its receipt)."""
        read_set_id = self.state.read_set_id
        if read_set_id is None:
            return
        service = self._calls.client.service
        receipt = build_receipt(
            self.state,
            self.read_set,
            store_id=self.store_id,
            endpoint=service.endpoint_url,
            region=service.region,
            summaries=self._verifier.summaries() if self._verifier is not None else {},
        )
        try:
            path = self._receipt_arg
            if path is None:
                path = await anyio.to_thread.run_sync(default_receipt_path, read_set_id)
            await anyio.to_thread.run_sync(write_receipt, path, receipt)
        except UploaderError as exc:
            log.warning("%s", exc)
            return
        self.receipt_path = path

    async def _wait(self) -> None:
        """Pause as the core says (a stop cuts it short), then look at the read set once."""
        if self.state.poll_delay > 0:
            with anyio.move_on_after(self.state.poll_delay):
                await self._stopped.wait()
            if self.state.stopping:
                return
        read_set_id = self.state.read_set_id or ""
        try:
            metadata = await self._watcher.look(self._requests, self.store_id, read_set_id, self._local.created_at)
        except ResourceNotFoundError as exc:
            self.state.read_set_gone(exc)
        self.state.polled(metadata, time.monotonic())

    async def _verify(self) -> None:
        """Once every source is hashed, compare; a source that changed since Complete was not hashed as it was
        sent, so a mismatch then says that, not that the store holds other bytes."""
        verifier, metadata = self._verifier, self.state.metadata
        assert verifier is not None and metadata is not None
        await verifier.hashed()
        verification = await verifier.compare(metadata, self.state.sources)
        if verification.failed:
            readers = self._local.readers
            now = await anyio.to_thread.run_sync(lambda: {s: r.identity() for s, r in readers.items()})
            self.state.check_unchanged_since_complete(now)
        self.state.verified(verification)

    # -- Abort -------------------------------------------------------------------------------------------------

    async def _abort(self, upload_id: str) -> None:
        client = self._requests.client
        await self._requests("AbortMultipartReadSetUpload", lambda: client.abort_upload(self.store_id, upload_id))

    async def _abort_if_wanted(self, budget: float) -> bool:
        """Abort the upload when the core says so (nothing will resume it), waiting at most ``budget`` seconds."""
        upload_id = self.state.upload_id
        if self.state.next_action() is not Action.ABORT or upload_id is None:
            return False
        if budget <= 0 or self.state.at_once:
            log.warning("upload %s was left open (stopped at once); remove it with: abort --upload-id", upload_id)
            self.state.abort_done(False)
            return False
        ok = False
        with anyio.move_on_after(budget, shield=True) as scope:
            try:
                await self._abort(upload_id)
                ok = True
            except UploaderError as exc:
                log.warning("could not abort upload %s: %s", upload_id, exc)
        if scope.cancelled_caught:
            log.warning("could not abort upload %s within %.0f s", upload_id, budget)
        self.state.abort_done(ok)
        if ok:
            self._local.retire_checkpoint()
        return ok
