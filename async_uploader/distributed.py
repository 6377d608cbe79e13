"""Batch uploads on a Dask cluster: one task per read set, one request budget for the whole fleet.

The entry point, called by ``async-uploader batch MANIFEST --dask ADDRESS|local:N``::

    async def run_batch_on_dask(
        rows: Sequence[ManifestRow], *, address: str, store_id: str, service: ServiceConfig,
        config: UploadConfig, checkpoint_dir: Path, on_result: Callable[[RowOutcome], None],
        restart: bool = False, margin: float = 0.9, budget: str = DEFAULT_BUDGET, lease_ttl: float = 60.0,
    ) -> BatchSummary

``address`` is a scheduler address (``tcp://host:8786``) or ``local:N`` for a local cluster of N worker
processes with one thread each. Rows already recorded as done in ``checkpoint_dir/done.jsonl`` are reported as
skipped; every other row becomes one task whose key derives from the row's key (never from an upload id), and
``on_result`` gets each row's ``RowOutcome`` as its task finishes. The submitting process alone writes the
done-rows record, so the folder layout is the one the single-machine batch uses and either can resume the other.

Inside a worker, the task runs the async engine on the worker's own event loop (file reading and hashing happen
in threads, so heartbeats are never delayed) with:

* a ``DaskSchedulerLimiter`` drawing from the budget kept in the scheduler (``limiters.py``): the fleet never
  starts more requests of a kind per second than the quota × ``margin``, throttles seen anywhere slow everyone,
  and the budget outlives any worker;
* the row's checkpoint ``checkpoint_dir/checkpoints/KEY.jsonl`` on storage every worker sees: a task retried
  after its worker died resumes the same upload (the engine resumes when the checkpoint holds an upload id);
* an ownership lease ``KEY.lease`` next to it (``FileLease``): a worker wrongly presumed dead and its
  replacement never upload the same read set at once. The lease is renewed every ``ttl/3`` seconds; a holder
  that cannot renew stops uploading (the upload stays open and resumable), and a waiter takes over a lease
  only once it has expired, or at once when its holder is a dead process on the same host.

``--restart`` is carried by a marker file the task consumes under the lease, so a task retried after a worker
death resumes the restarted upload rather than restarting it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

from .batch import BatchState, BatchSummary, ManifestRow, RowOutcome
from .config import ServiceConfig, UploadConfig
from .engine import Uploader, UploadHandle
from .errors import UploaderError, UploadInterruptedError
from .limiters import (
    DEFAULT_BUDGET,
    PLUGIN_NAME,
    DaskSchedulerLimiter,
    SharedBudget,
    budget_rates,
    install_rate_budget,
    worker_limiter,
)

__all__ = [
    "DEFAULT_BUDGET",
    "DaskSchedulerLimiter",
    "FileLease",
    "LeaseLostError",
    "RateBudgetPlugin",
    "connect",
    "hold_lease",
    "run_batch_on_dask",
    "task_key",
    "upload_row",
]

log = logging.getLogger("async_uploader")


class LeaseLostError(UploaderError):
    """Another process took over the read set's lease: this one stopped uploading it."""


# -- the request budget in the scheduler ---------------------------------------------------------------


class RateBudgetPlugin(SchedulerPlugin):
    """Keeps the shared budgets in the scheduler and answers the ``upload_rate_*`` handlers."""

    name = PLUGIN_NAME
    idempotent = True

    def __init__(self) -> None:
        self.budgets: dict[str, SharedBudget] = {}

    async def start(self, scheduler: Any) -> None:
        scheduler.handlers.update(
            {
                "upload_rate_configure": self.configure,
                "upload_rate_reserve": self.reserve,
                "upload_rate_throttle": self.throttle,
                "upload_rate_state": self.state,
            }
        )
        scheduler.extensions["upload_rate_budget"] = self

    # The rpc layer calls handlers with the message's keys as keyword arguments.
    def configure(self, *, name: str, rates: dict[str, float]) -> dict[str, dict[str, float]]:
        budget = self.budgets.get(name)
        if budget is None:
            budget = self.budgets[name] = SharedBudget(rates)
        else:
            budget.configure(rates)
        return budget.state()

    def reserve(self, *, name: str, kind: str, count: int = 1, successes: int = 0) -> tuple[list[float], float | None]:
        budget = self.budgets.get(name)
        if budget is None:
            raise RuntimeError(f"no request budget {name!r} on the scheduler; configure it first")
        return budget.reserve(kind, count, successes)

    def throttle(self, *, name: str, kind: str) -> float | None:
        budget = self.budgets.get(name)
        return None if budget is None else budget.throttle(kind)

    def state(self, *, name: str) -> dict[str, dict[str, float]]:
        budget = self.budgets.get(name)
        return {} if budget is None else budget.state()


# -- the ownership lease ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LeaseRecord:
    holder: str
    token: str
    expires: float  # wall-clock seconds: holders on several machines need clocks in step (NTP)

    def encode(self) -> bytes:
        return json.dumps({"holder": self.holder, "token": self.token, "expires": self.expires}).encode()


def _holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_gone(holder: str) -> bool:
    """True when ``holder`` names a process of this host that no longer exists."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class FileLease:
    """A lease on a file path, held for ``ttl`` seconds at a time and renewed by its holder.

    Taking it links a fully written temporary file to ``path`` (``os.link`` fails when the path exists, on local
    disks and NFS alike); breaking an expired one renames it aside first, so of two processes breaking the same
    stale lease only one succeeds, and a process that finds it moved a fresh lease puts it back.
    """

    def __init__(self, path: Path, ttl: float = 60.0, holder: str | None = None) -> None:
        if ttl <= 0:
            raise ValueError("lease ttl must be positive")
        self.path = path
        self.ttl = ttl
        self.holder = holder or _holder_id()
        self.token = uuid.uuid4().hex

    def _record(self) -> _LeaseRecord:
        return _LeaseRecord(self.holder, self.token, time.time() + self.ttl)

    def _temp(self) -> Path:
        temp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, self._record().encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return temp

    def _read(self, path: Path) -> _LeaseRecord | None:
        """The lease at ``path``; None when there is none. An unreadable one expires ttl after its mtime."""
        try:
            raw = path.read_bytes()
            stamp = path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw)
            return _LeaseRecord(str(data["holder"]), str(data["token"]), float(data["expires"]))
        except (ValueError, KeyError, TypeError):
            return _LeaseRecord("?", f"corrupt-{stamp}", stamp + self.ttl)

    def current(self) -> _LeaseRecord | None:
        return self._read(self.path)

    def try_acquire(self) -> bool:
        """Take the lease if it is free, expired, or held by a dead process of this host; never waits."""
        temp = self._temp()
        try:
            for _ in range(2):
                try:
                    os.link(temp, self.path)
                    return True
                except FileExistsError:
                    pass
                seen = self._read(self.path)
                if seen is None:
                    continue
                if seen.expires > time.time() and not _process_gone(seen.holder):
                    return False
                self._break(seen)
            return False
        finally:
            temp.unlink(missing_ok=True)

    def _break(self, stale: _LeaseRecord) -> None:
        aside = self.path.with_name(f".{self.path.name}.broken-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # someone else broke it first
        moved = self._read(aside)
        if moved is not None and moved.token != stale.token:
            # Between our look and our rename someone took the lease afresh: give it back.
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
        aside.unlink(missing_ok=True)

    def renew(self) -> None:
        """Push the expiry ``ttl`` seconds ahead; LeaseLostError when the lease is no longer ours."""
        seen = self._read(self.path)
        if seen is None or seen.token != self.token:
            raise LeaseLostError(f"lease {self.path} was taken over by {seen.holder if seen else 'nobody'}")
        os.replace(self._temp(), self.path)

    def release(self) -> None:
        seen = self._read(self.path)
        if seen is not None and seen.token == self.token:
            self.path.unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def hold_lease(path: Path, *, ttl: float = 60.0, poll: float | None = None) -> AsyncIterator[FileLease]:
    """Wait for the lease on ``path``, hold it (renewing) for the body, release it after.

    When a renewal finds the lease gone, the body is cancelled and LeaseLostError raised in its place.
    """
    lease = FileLease(path, ttl)
    poll = min(1.0, ttl / 10) if poll is None else poll
    while True:
        if await asyncio.to_thread(lease.try_acquire):
            break
        await asyncio.sleep(poll)  # polling: the holder may be on another machine
    body = asyncio.current_task()
    assert body is not None
    lost: list[LeaseLostError] = []

    async def renew() -> None:
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                await asyncio.to_thread(lease.renew)
            except LeaseLostError as exc:
                lost.append(exc)
                body.cancel()
                return
            except OSError as exc:  # storage hiccup: try again before the lease runs out
                log.warning("could not renew lease %s: %s", path, exc)

    renewer = asyncio.get_running_loop().create_task(renew())
    try:
        yield lease
    except asyncio.CancelledError:
        if lost:
            body.uncancel()
            raise lost[0] from None
        raise
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        if not lost:
            await asyncio.to_thread(lease.release)


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
) -> dict[str, Any]:
    """Upload one row inside a Dask worker; returns ``{"status", "readSetId"?, "result"?, "error"?}``."""
    checkpoint, lease_path, marker = _paths(Path(checkpoint_dir), key)
    checkpoint.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    limiter = worker_limiter(budget, rates)
    report = _progress_reporter(row.row)
    try:
        async with hold_lease(lease_path, ttl=lease_ttl):
            restart = await asyncio.to_thread(_consume, marker)
            async with Uploader(config, service=service, limiter=limiter) as uploader:
                handle = uploader.start(
                    row.read_set, store_id=store_id, checkpoint=checkpoint, restart=restart, on_event=report
                )
                ticks = asyncio.create_task(_tick(handle, report))
                try:
                    result = await handle
                finally:
                    ticks.cancel()
                    await asyncio.gather(ticks, return_exceptions=True)
    except UploadInterruptedError as exc:
        return {"status": "interrupted", "error": str(exc)}
    except Exception as exc:  # one row's failure is its own result, never the task's
        return {"status": "failed", "error": str(exc) or type(exc).__name__}
    return {"status": "done", "readSetId": result.read_set_id, "result": result.as_json()}


def _progress_reporter(row: int) -> Callable[[dict[str, object]], None]:
    """Send a row's state changes, retries and progress ticks to the submitting client (Dask's event topics).

    Per-part events stay on the worker: thousands of tiny parts would flood the scheduler.
    """
    import distributed

    worker = distributed.get_worker()

    def report(event: dict[str, object]) -> None:
        if event.get("event") != "part":
            worker.log_event(PROGRESS_TOPIC, {**event, "row": row})

    return report


async def _tick(handle: UploadHandle, report: Callable[[dict[str, object]], None]) -> None:
    """A progress record each second while the row uploads."""
    while True:
        await asyncio.sleep(1.0)
        report({"event": "progress", **handle.statistics().as_json()})


def _consume(marker: Path) -> bool:
    try:
        marker.unlink()
    except FileNotFoundError:
        return False
    return True


PROGRESS_TOPIC = "async-uploader-progress"


# -- the submitting side ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def connect(address: str) -> AsyncIterator[Any]:
    """An asynchronous ``distributed.Client`` for ``address``, or for a new local cluster with ``local:N``."""
    import distributed

    dask: Any = distributed  # untyped constructors
    Client, LocalCluster = dask.Client, dask.LocalCluster

    if address.startswith("local:"):
        count = address.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"--dask {address}: expected local:N with N a positive number of workers")
        async with (
            LocalCluster(
                n_workers=int(count),
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                asynchronous=True,
            ) as cluster,
            Client(cluster, asynchronous=True) as client,
        ):
            yield client
        return
    async with Client(address, asynchronous=True) as client:
        yield client


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
) -> BatchSummary:
    """Run ``rows`` as Dask tasks; ``address`` may also be an asynchronous Client already connected.

    ``on_progress`` receives, in the submitting process, each row's state changes, retries and a progress record
    per second (``{"event": ..., "row": N, ...}``) as the workers send them.
    """
    import distributed

    as_completed: Any = distributed.as_completed

    started = time.monotonic()
    checkpoint_dir = await asyncio.to_thread(checkpoint_dir.resolve)  # workers elsewhere need no relative path
    state = BatchState(checkpoint_dir)
    outcomes: list[RowOutcome] = []
    pending: dict[str, ManifestRow] = {}
    for row in rows:
        key = row.key(store_id)
        if key in state.done:
            outcome = RowOutcome(row, "skipped", read_set_id=state.done[key])
            outcomes.append(outcome)
            on_result(outcome)
        elif key not in pending:
            pending[key] = row
    if pending:
        if restart:
            await asyncio.to_thread(_mark_restart, checkpoint_dir, list(pending))
        rates = budget_rates(config.rates, margin)
        async with contextlib.AsyncExitStack() as stack:
            client = address if not isinstance(address, str) else await stack.enter_async_context(connect(address))
            await install_rate_budget(client, budget, rates)
            if on_progress is not None:
                client.subscribe_topic(PROGRESS_TOPIC, lambda event: on_progress(dict(event[1])))
            futures: dict[Any, tuple[str, ManifestRow]] = {}
            for key, row in pending.items():
                future = client.submit(
                    upload_row,
                    row,
                    key,
                    store_id=store_id,
                    service=service,
                    config=config,
                    checkpoint_dir=str(checkpoint_dir),
                    budget=budget,
                    rates=rates,
                    lease_ttl=lease_ttl,
                    key=task_key(key),
                    pure=False,
                )
                futures[future] = (key, row)
            async for future in as_completed(list(futures)):
                key, row = futures[future]
                outcome = await _outcome(future, row)
                if outcome.status == "done" and outcome.read_set_id is not None:
                    await asyncio.to_thread(state.record, key, outcome.read_set_id, row)
                outcomes.append(outcome)
                on_result(outcome)
    ordered = tuple(sorted(outcomes, key=lambda outcome: outcome.row.row))
    return BatchSummary(ordered, time.monotonic() - started)


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
