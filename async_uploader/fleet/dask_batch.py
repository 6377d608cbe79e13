"""Batch uploads on a Dask cluster: one task per read set, one request budget for the whole fleet.

The entry point, called by ``async-uploader batch MANIFEST --dask ADDRESS|local:N``::

    async def run_batch_on_dask(
        rows: Sequence[ManifestRow], *, address: str, store_id: str, service: ServiceConfig,
        config: UploadConfig, checkpoint_dir: Path, on_result: Callable[[RowOutcome], None],
        restart: bool = False, margin: float = 0.9, budget: str = DEFAULT_BUDGET, lease_ttl: float = 60.0,
        on_progress: Callable[[dict[str, object]], None] | None = None, note: Callable[[str], None] | None = None,
        name: str = "manifest", max_parallel: int | None = None, waiting: Waiting | None = None,
    ) -> BatchSummary

``address`` is a scheduler address (``tcp://host:8786``) or ``local:N`` for a local cluster of N worker processes
with one thread each. Rows already recorded as done in ``checkpoint_dir/done.jsonl`` are reported as skipped while
their files are those their read set was made from (``engine.batch.check_done_rows``, as the single-machine batch
does: a row whose files changed runs again through its checkpoint, which refuses it unless its bytes are those
sent, or is refused when no checkpoint is left); every other row becomes one task whose key derives from the row's
key (never from an upload id), and ``on_result`` gets each row's ``RowOutcome`` as the row ends. The submitting
process alone writes the done-rows record, so the folder layout is the one the single-machine batch uses and either
can resume the other.

A batch runs in stages, as on one machine. A row's task uploads up to Complete and ends there (its receipt written
in ``checkpoint_dir/receipts``), freeing its worker thread and its ``max_parallel`` slot for the next row. The
submitting process then waits for the read set to be ACTIVE and verifies it, through one ``Uploader`` drawing from
the same budget: its watcher answers every read set waited for on one store with one ListReadSets sweep. Each wait
is the engine resuming the row's checkpoint, which records Complete (no Create, no part); kept by the submitter, a
wait outlives any worker, and a task that waited would hold a worker thread for as long as the store takes.

Inside a worker, the task runs the async engine on the worker's own event loop (file reading and hashing happen
in threads, so heartbeats are never delayed) with:

* a ``DaskSchedulerLimiter`` drawing from the budget kept in the scheduler (``fleet.dask_budget``): the fleet never
  starts more requests of a kind per second than the quota × ``margin``, throttles seen anywhere slow everyone,
  and the budget outlives any worker;
* the row's checkpoint ``checkpoint_dir/checkpoints/KEY.jsonl`` on storage every worker sees: a task retried
  after its worker died resumes the same upload (the engine resumes when the checkpoint holds an upload id);
* an ownership lease ``KEY.lease`` next to it (``fleet.lease``): a worker wrongly presumed dead and its
  replacement never upload the same read set at once.

``--restart`` is carried by a marker file the task consumes under the lease, so a task retried after a worker
death resumes the restarted upload rather than restarting it again.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import distributed

from ..core.checkpoint import SourceFingerprint
from ..core.config import ServiceConfig, UploadConfig
from ..core.errors import CheckpointMismatchError, UploadInterruptedError
from ..core.events import progress_event
from ..core.manifest import BatchPlan, BatchSummary, ManifestRow, RowOutcome, plan_batch
from ..edge.batchstate import BatchState
from ..engine.batch import (
    RESTART_NEEDED,
    check_done_rows,
    refused_outcome,
    row_checkpoint,
    row_fingerprints,
    unfinished_outcome,
)
from ..engine.monitor import Monitor, Tick
from ..engine.parts import first_error
from ..engine.uploader import Uploader, UploadHandle
from .budget import DEFAULT_BUDGET, budget_rates
from .dask_budget import DaskSchedulerLimiter, install_rate_budget, worker_limiter
from .lease import hold_lease

__all__ = ["PROGRESS_TOPIC", "Waiting", "connect", "run_batch_on_dask", "task_key", "upload_row"]

PROGRESS_TOPIC = "async-uploader-progress"

# -- the task a worker runs ---------------------------------------------------------------------------------


def task_key(row_key: str) -> str:
    """The Dask key of a row's task: derived from the read set, so a retry is the same task."""
    return f"async-uploader-{row_key}"


def _paths(checkpoint_dir: Path, key: str) -> tuple[Path, Path, Path]:
    folder = checkpoint_dir / "checkpoints"
    return folder / f"{key}.jsonl", folder / f"{key}.lease", folder / f"{key}.restart"


async def upload_row(
    row: ManifestRow,
    key: str,
    *,
    store_id: str,
    service: ServiceConfig,
    config: UploadConfig,
    checkpoint_dir: str,
    budget: str,
    rates: dict[str, float],
    lease_ttl: float,
    waited_after: bool = False,
) -> dict[str, Any]:
    """Upload one row inside a Dask worker; returns ``{"status", "readSetId"?, "result"?, "error"?}``.

    The row's receipt goes into the batch folder (``verify BATCH_DIR`` finds it). ``waited_after``: the
    submitting process waits for the read set after this task's Complete, so the task's end is not the row's
    (its ``done`` state is not sent).
    """
    checkpoint, lease_path, marker = _paths(Path(checkpoint_dir), key)
    checkpoint.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    limiter = worker_limiter(budget, rates)
    report = _progress_reporter(row.row, skip_done=waited_after)
    try:
        try:
            async with hold_lease(lease_path, ttl=lease_ttl):
                restart = await anyio.to_thread.run_sync(_consume, marker)
                async with Uploader(config, service=service, limiter=limiter) as uploader:
                    handle = uploader.start(
                        row.read_set,
                        store_id=store_id,
                        checkpoint=checkpoint,
                        restart=restart,
                        on_event=report,
                        receipt=_receipt(Path(checkpoint_dir), key),
                    )
                    async with Monitor(Tick(1.0, lambda: report(progress_event(handle.statistics(), time.time())))):
                        result = await handle
        except BaseExceptionGroup as group:  # the lease's task group wraps the upload's own error: report that one
            error = first_error(group)
            raise error from error.__cause__
    except UploadInterruptedError as exc:
        return {"status": "interrupted", "error": str(exc)}
    except CheckpointMismatchError as exc:  # its files changed since the read set its checkpoint records
        return {"status": "failed", "error": str(exc), "result": {RESTART_NEEDED: True}}
    except Exception as exc:  # one row's failure is its own result, never the task's
        return {"status": "failed", "error": str(exc) or type(exc).__name__}
    return {"status": "done", "readSetId": result.read_set_id, "result": result.as_json()}


def _receipt(checkpoint_dir: Path, key: str) -> Path:
    return checkpoint_dir / "receipts" / f"{key}.json"


def _progress_reporter(row: int, *, skip_done: bool = False) -> Callable[[dict[str, object]], None]:
    """Send a row's state changes, retries and progress ticks to the submitting client (Dask's event topics).

    Per-part events stay on the worker: thousands of tiny parts would flood the scheduler. With ``skip_done``
    the ``done`` state is not sent either: the row goes on waiting in the submitting process.
    """
    worker = distributed.get_worker()

    def report(event: dict[str, object]) -> None:
        if skip_done and event.get("event") == "state" and event.get("state") == "done":
            return
        if event.get("event") != "part":
            worker.log_event(PROGRESS_TOPIC, {**event, "row": row})

    return report


def _as_sent(event: dict[str, Any]) -> dict[str, Any]:
    """An event as the worker's upload made it: without the ``worker`` field Dask's event log adds, so events
    have one shape whether a row ran here or on a cluster."""
    return {key: value for key, value in event.items() if key != "worker"}


def _consume(marker: Path) -> bool:
    try:
        marker.unlink()
    except FileNotFoundError:
        return False
    return True


# -- the submitting side ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def connect(address: str) -> AsyncIterator[Any]:
    """An asynchronous ``distributed.Client`` for ``address``, or for a new local cluster with ``local:N``."""
    dask: Any = distributed  # untyped constructors
    Client, LocalCluster = dask.Client, dask.LocalCluster

    if address.startswith("local:"):
        count = address.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"--dask {address}: expected local:N with N a positive number of workers")
        with _children_deaf_to_ctrl_c():
            cluster = LocalCluster(
                n_workers=int(count),
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=":0",
                asynchronous=True,
            )
            await cluster
        async with cluster, Client(cluster, asynchronous=True) as client:
            yield client
        return
    async with Client(address, asynchronous=True) as client:
        yield client


@dataclass(frozen=True)
class Waiting:
    """What the submitting process does for rows past Complete, which wait for the store and are verified there.

    ``on_start(row, handle)``/``on_finish(row)`` track the waits in flight (to show them, or to stop them on a
    signal); once ``stopped`` is set no row starts, the rows still sending parts on the cluster are let go (their
    checkpoints resume them), and the caller stops the waits through their handles. ``format_error`` words a row's
    error. The waits' events go to ``on_progress`` with the workers'.
    """

    on_start: Callable[[ManifestRow, UploadHandle], None] | None = None
    on_finish: Callable[[ManifestRow], None] | None = None
    stopped: anyio.Event | None = None
    format_error: Callable[[BaseException], str] = str


@contextlib.contextmanager
def _children_deaf_to_ctrl_c() -> Iterator[None]:
    """SIGINT ignored while a local cluster starts its worker processes, which keep it ignored: Ctrl-C at a terminal
    reaches the whole process group, and the submitting process alone should stop the batch (closing the cluster
    stops the workers, their uploads kept by their checkpoints), not every worker with a traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


async def run_batch_on_dask(
    rows: Sequence[ManifestRow],
    *,
    address: str | Any,
    store_id: str,
    service: ServiceConfig,
    config: UploadConfig,
    checkpoint_dir: Path,
    on_result: Callable[[RowOutcome], None],
    restart: bool = False,
    margin: float = 0.9,
    budget: str = DEFAULT_BUDGET,
    lease_ttl: float = 60.0,
    on_progress: Callable[[dict[str, object]], None] | None = None,
    note: Callable[[str], None] | None = None,
    name: str = "manifest",
    max_parallel: int | None = None,
    waiting: Waiting | None = None,
) -> BatchSummary:
    """Run ``rows`` as Dask tasks; ``address`` may also be an asynchronous Client already connected.

    ``on_progress`` receives, in the submitting process, each row's state changes, retries and a progress record
    per second (``{"event": ..., "row": N, ...}``) as the workers send them, then the state changes and retries of
    its wait for the store. ``note`` gets a line for each row
    recorded done that is not skipped as it is (its files changed, or cannot be checked). ``max_parallel`` bounds
    the rows sending parts at once (None: the cluster's threads alone do); ``waiting`` (see ``Waiting``) is how
    the caller follows and stops the rows waiting for the store.
    """
    started = time.monotonic()
    checkpoint_dir = await anyio.to_thread.run_sync(checkpoint_dir.resolve)  # workers elsewhere need no relative path
    state = BatchState(checkpoint_dir)
    checked = await anyio.to_thread.run_sync(
        lambda: check_done_rows(rows, store_id, state, checkpoint_dir, restart=restart, name=name)
    )
    for line in checked.notes:
        if note is not None:
            note(line)
    plan = plan_batch(rows, store_id, checked.done)
    outcomes: list[RowOutcome] = []

    def finish(*done: RowOutcome) -> None:
        for outcome in done:
            outcomes.append(outcome)
            on_result(outcome)

    finish(*plan.skipped)
    for row, key in plan.to_upload:
        if key in checked.refused:
            refused = refused_outcome(row, checked.refused[key])
            finish(refused, *plan.duplicate_outcomes(key, refused))
    pending = {key: row for row, key in plan.to_upload if key not in checked.refused}
    if pending:
        if restart:
            await anyio.to_thread.run_sync(_mark_restart, checkpoint_dir, list(pending))
        submit = _Submission(pending, store_id, service, config, checkpoint_dir, budget, lease_ttl)
        submit.waiting, submit.on_progress = waiting or Waiting(), on_progress
        async with contextlib.AsyncExitStack() as stack:
            client = address if not isinstance(address, str) else await stack.enter_async_context(connect(address))
            rates = budget_rates(config.rates, margin)
            await submit.run(client, rates, _Ending(state, plan, finish), max_parallel)
    ordered = tuple(sorted(outcomes, key=lambda outcome: outcome.row.row))
    return BatchSummary(ordered, time.monotonic() - started)


@dataclass(frozen=True)
class _Ending:
    """Where a row's outcome goes: the done-rows record (a done row), the caller, the rows naming the same read
    set."""

    state: BatchState
    plan: BatchPlan
    finish: Callable[..., None]

    async def __call__(self, key: str, outcome: RowOutcome, prints: tuple[SourceFingerprint, ...] | None) -> None:
        if outcome.status == "done" and outcome.read_set_id is not None:
            await self.state.record(key, outcome.read_set_id, outcome.row, prints)
        self.finish(outcome, *self.plan.duplicate_outcomes(key, outcome))


class _Submission:
    """The rows a run submits as tasks, and what the submitting process does as each reaches Complete.

    A row's task ends at Complete (its config does not wait), which frees its slot: a worker thread, and one of
    ``max_parallel``. The wait for ACTIVE and the verification are done here, through one Uploader whose watcher
    answers the read sets waited for on one store with one ListReadSets sweep, under the fleet's budget. Each
    wait is the engine resuming the row's checkpoint, which records Complete: it sends no part and no Create, and
    no worker's death can lose it. A rerun's task finds Complete in the checkpoint and returns at once: the rerun
    only waits and verifies.
    """

    waiting: Waiting
    on_progress: Callable[[dict[str, object]], None] | None

    def __init__(
        self,
        pending: dict[str, ManifestRow],
        store_id: str,
        service: ServiceConfig,
        config: UploadConfig,
        checkpoint_dir: Path,
        budget: str,
        lease_ttl: float,
    ) -> None:
        self.pending, self.store_id, self.service, self.config = pending, store_id, service, config
        self.checkpoint_dir, self.budget, self.lease_ttl = checkpoint_dir, budget, lease_ttl
        self.waits = config.wait_for_active

    async def run(
        self,
        client: Any,
        rates: dict[str, float],
        ending: _Ending,
        max_parallel: int | None,
    ) -> None:
        await install_rate_budget(client, self.budget, rates)
        on_progress = self.on_progress
        if on_progress is not None:
            client.subscribe_topic(PROGRESS_TOPIC, lambda event: on_progress(_as_sent(event[1])))
        limiter = DaskSchedulerLimiter(self.budget, rates, scheduler=client.scheduler)
        gate = anyio.Semaphore(max_parallel or len(self.pending))
        async with (
            Uploader(self.config, service=self.service, limiter=limiter) as waiter,
            anyio.create_task_group() as group,
        ):
            for key, row in self.pending.items():
                await gate.acquire()
                if self._stopping():
                    gate.release()
                    await ending(key, RowOutcome(row, "interrupted", error="not started: the batch was stopped"), None)
                    continue
                prints = await anyio.to_thread.run_sync(row_fingerprints, row)  # before a byte is read
                future = self._submit(client, key, row, rates)
                group.start_soon(self._row, future, waiter, gate, ending, (key, row, prints), name=f"row-{row.row}")

    def _stopping(self) -> bool:
        return self.waiting.stopped is not None and self.waiting.stopped.is_set()

    def _submit(self, client: Any, key: str, row: ManifestRow, rates: dict[str, float]) -> Any:
        return client.submit(
            upload_row,
            row,
            key,
            store_id=self.store_id,
            service=self.service,
            config=replace(self.config, wait_for_active=False),  # the task ends at Complete: its slot is free
            checkpoint_dir=str(self.checkpoint_dir),
            budget=self.budget,
            rates=rates,
            lease_ttl=self.lease_ttl,
            waited_after=self.waits,
            key=task_key(key),
            pure=False,
        )

    async def _row(
        self,
        future: Any,
        waiter: Uploader,
        gate: anyio.Semaphore,
        ending: _Ending,
        what: tuple[str, ManifestRow, tuple[SourceFingerprint, ...] | None],
    ) -> None:
        key, row, prints = what
        try:
            outcome = await self._until_stopped(_outcome(future, row))
        finally:
            gate.release()  # at Complete (the task's end), or when the row failed or was stopped
        if outcome is None:
            future.release()
            outcome = RowOutcome(row, "interrupted", error=_LET_GO)
        elif outcome.status == "done" and self.waits:
            outcome = await self._wait(waiter, key, outcome)
        await ending(key, outcome, prints)

    async def _until_stopped(self, outcome: Awaitable[RowOutcome]) -> RowOutcome | None:
        """The task's outcome, or None when the batch is stopped first."""
        stopped = self.waiting.stopped
        if stopped is None:
            return await outcome
        result: list[RowOutcome] = []
        async with anyio.create_task_group() as group:

            async def get() -> None:
                result.append(await outcome)
                group.cancel_scope.cancel()

            group.start_soon(get)
            await stopped.wait()
            group.cancel_scope.cancel()
        return result[0] if result else None

    def _events_of(self, row: ManifestRow) -> Callable[[dict[str, object]], None] | None:
        """A wait's events for ``on_progress``, marked with the row as the workers' are."""
        on_progress = self.on_progress
        if on_progress is None:
            return None
        return lambda event: on_progress({**event, "row": row.row}) if event.get("event") != "part" else None

    async def _wait(self, waiter: Uploader, key: str, uploaded: RowOutcome) -> RowOutcome:
        """Wait for the read set of a row past Complete to be ACTIVE, and verify it: the engine resuming the row's
        checkpoint (its slot is free meanwhile)."""
        row, hooks = uploaded.row, self.waiting
        if self._stopping():
            return RowOutcome(row, "interrupted", error="stopped before its read set was ACTIVE: run again to wait")
        handle = waiter.start(
            row.read_set,
            store_id=self.store_id,
            checkpoint=row_checkpoint(self.checkpoint_dir, key),
            on_event=self._events_of(row),
            receipt=_receipt(self.checkpoint_dir, key),
        )
        if hooks.on_start is not None:
            hooks.on_start(row, handle)
        try:
            result = await handle
        except Exception as exc:  # one row's failure never stops the others
            return unfinished_outcome(row, exc, hooks.format_error)
        finally:
            if hooks.on_finish is not None:
                hooks.on_finish(row)
        joined = _joined(uploaded.result, result.as_json())
        return RowOutcome(row, "done", read_set_id=result.read_set_id, result=joined)


_LET_GO = "stopped while it sent parts on the cluster: run the same command again to resume it from its checkpoint"

_TRANSFER = ("bytes", "parts", "transferSeconds", "completeSeconds", "transferMBps", "resumedParts", "compressed")
"""What a row's task measured of its transfer; the wait after it measures the store's time and the check."""


def _joined(uploaded: dict[str, Any], waited: dict[str, Any]) -> dict[str, Any]:
    """One result for a row: the transfer as its task saw it, the rest as the wait after it saw it."""
    joined = {**waited, **{key: uploaded[key] for key in _TRANSFER if key in uploaded}}
    for key in ("seconds", "retries", "throttles"):
        first, then = uploaded.get(key), waited.get(key)
        if isinstance(first, int | float) and isinstance(then, int | float):
            joined[key] = round(first + then, 3) if key == "seconds" else first + then
    return joined


async def _outcome(future: Any, row: ManifestRow) -> RowOutcome:
    try:
        data: dict[str, Any] = await future
    except Exception as exc:  # the task itself failed, e.g. KilledWorker after repeated worker deaths
        return RowOutcome(row, "failed", error=f"{type(exc).__name__}: {exc}")
    status = str(data.get("status", "failed"))
    read_set_id = data.get("readSetId")
    return RowOutcome(
        row,
        status,
        read_set_id=str(read_set_id) if read_set_id is not None else None,
        result=dict(data.get("result") or {}),
        error=data.get("error"),
    )


def _mark_restart(checkpoint_dir: Path, keys: Sequence[str]) -> None:
    for key in keys:
        checkpoint, _lease, marker = _paths(checkpoint_dir, key)
        if checkpoint.exists():
            marker.write_bytes(b"")
