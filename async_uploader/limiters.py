"""Request budgets shared beyond one process: by the processes of one machine, or by a Dask cluster.

The service's quotas hold for the whole account, so every process uploading into it must draw from one budget.
Two backends of the ``Limiter`` protocol (``ratelimit.py``) live here:

* ``FileBudgetLimiter``: the processes of one machine (Snakemake jobs, Nextflow tasks, several shells) share a
  small state file guarded by ``fcntl.flock``. Per request kind it holds the wall-clock time of the next free
  start and the adaptive rate; a reservation locks the file, reads it, moves the next free start on by
  ``1/rate`` and writes it back. The lock is taken in a worker thread of the limiter's own, never on the event
  loop: a blocking ``flock`` queues waiters in the kernel, in order, with no polling delay, and a process that
  dies holding it releases it. Throttles and successes are noted in memory and folded into the shared rate by
  the next reservation of their kind, so ``on_throttle``/``on_success`` never touch the file from the loop.
* ``DaskSchedulerLimiter``: every worker of a Dask cluster draws from a budget kept in the scheduler, the one
  process a cluster cannot lose without losing everything: a worker that dies takes nothing with it, and its
  replacement draws from the same buckets. ``RateBudgetPlugin`` (in ``async_uploader.distributed``, since it
  subclasses a Dask class) keeps ``SharedBudget`` objects (one per budget name) and adds the handlers
  ``upload_rate_configure``, ``upload_rate_reserve``, ``upload_rate_throttle`` and ``upload_rate_state`` to the
  scheduler, the way distributed's own Semaphore extension adds its routes; register it once per cluster with
  ``await install_rate_budget(client)``. ``acquire`` reserves a start with one scheduler round trip; concurrent
  acquires of one process are coalesced into a single round trip that reserves one start for each of them, so a
  busy worker pays one trip per burst rather than one per request. Successes are counted locally and reported
  with the next reservation (they only matter for the recovery after a throttle); a throttle is reported at
  once, and lowers the rate of every worker, since they all draw from the same bucket.

Timing: a reservation's delay counts from the budget's clock at the moment it was made; the caller waits that
long from the moment it gets the answer, which can only spread starts further apart. Budgets run at
``quota × margin`` (0.9 unless configured), with a burst of one, so no one-second window sees more starts than
the quota even with a few milliseconds of jitter between the budget and the service.

This module imports no Dask: ``distributed`` is imported lazily, inside the functions that talk to a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import math
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .config import RateLimits
from .ratelimit import AdaptiveRate, Clock, RequestKind, TokenBucket

__all__ = [
    "DEFAULT_BUDGET",
    "DaskSchedulerLimiter",
    "FileBudgetLimiter",
    "FileBudgetState",
    "KindRecord",
    "SharedBudget",
    "budget_rates",
    "install_rate_budget",
]

DEFAULT_BUDGET = "async-uploader"
"""The budget every batch draws from unless told otherwise: batches on one cluster share the account's quota."""

PLUGIN_NAME = "async-uploader-rate-budget"
_LIMITED = (RequestKind.PART, RequestKind.CONTROL, RequestKind.LISTING)


def budget_rates(rates: RateLimits, margin: float = 0.9) -> dict[str, float]:
    """The bucket rates for ``rates``: each quota times the smaller of ``margin`` and ``rates.margin``."""
    if not 0 < margin <= 1:
        raise ValueError("margin must be in (0, 1]")
    factor = min(margin, rates.margin)
    limits = {RequestKind.PART: rates.parts, RequestKind.CONTROL: rates.control, RequestKind.LISTING: rates.listings}
    return {kind.value: rate * factor for kind, rate in limits.items() if rate is not None}


@dataclass
class _KindBudget:
    bucket: TokenBucket
    adaptive: AdaptiveRate
    reserved: int = 0
    throttles: int = 0


class SharedBudget:
    """Token buckets with adaptive rates, one per request kind: the state a scheduler keeps for a budget.

    Pure and synchronous; the scheduler's clock (monotonic) is the only clock that matters.
    """

    def __init__(self, rates: Mapping[str, float], clock: Any = time.monotonic) -> None:
        self._clock = clock
        self.kinds: dict[str, _KindBudget] = {}
        self.configure(rates)

    def configure(self, rates: Mapping[str, float]) -> None:
        """Set the top rate of each kind; reservations already made and the throttle history are kept."""
        for kind, rate in rates.items():
            current = self.kinds.get(kind)
            if current is None:
                self.kinds[kind] = _KindBudget(TokenBucket(rate, 1.0, self._clock), AdaptiveRate(rate))
            elif current.adaptive.max_rate != rate:
                current.adaptive = AdaptiveRate(rate)
                current.bucket.set_rate(rate)

    def reserve(self, kind: str, count: int, successes: int = 0) -> tuple[list[float], float | None]:
        """Reserve ``count`` starts; return each one's delay in seconds and the kind's rate now."""
        budget = self.kinds.get(kind)
        if budget is None:
            return [0.0] * count, None
        now = self._clock()
        if successes:
            budget.bucket.set_rate(budget.adaptive.on_success(now))
        budget.reserved += count
        return [budget.bucket.reserve_nowait(now) for _ in range(count)], budget.bucket.rate

    def throttle(self, kind: str) -> float | None:
        """A request of ``kind`` was throttled somewhere in the fleet: cut the rate (once per window)."""
        budget = self.kinds.get(kind)
        if budget is None:
            return None
        budget.throttles += 1
        budget.bucket.set_rate(budget.adaptive.on_throttle(self._clock()))
        return budget.bucket.rate

    def state(self) -> dict[str, dict[str, float]]:
        return {
            kind: {
                "rate": b.bucket.rate,
                "maxRate": b.adaptive.max_rate,
                "reserved": b.reserved,
                "throttles": b.throttles,
                "decreases": b.adaptive.decreases,
            }
            for kind, b in self.kinds.items()
        }


def __getattr__(name: str) -> Any:
    # RateBudgetPlugin subclasses a Dask class, so it lives with the rest of the Dask code; it is found here too.
    if name == "RateBudgetPlugin":
        from .distributed import RateBudgetPlugin

        return RateBudgetPlugin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


async def install_rate_budget(client: Any, name: str, rates: Mapping[str, float]) -> None:
    """Register the plugin on ``client``'s scheduler (once per cluster) and configure the budget ``name``.

    ``client`` is an asynchronous ``distributed.Client``. A remote scheduler must be able to import
    async_uploader (install the package where the scheduler runs).
    """
    from .distributed import RateBudgetPlugin

    await client.register_plugin(RateBudgetPlugin())
    await client.scheduler.upload_rate_configure(name=name, rates=dict(rates))


def _scheduler_rpc() -> Any:
    """The scheduler rpc of the worker this task runs on, or of the current client elsewhere."""
    from distributed import get_client, get_worker

    try:
        return get_worker().scheduler
    except ValueError:
        return get_client().scheduler


class DaskSchedulerLimiter:
    """The ``Limiter`` protocol over the scheduler's shared budget ``name``.

    ``rates`` (bucket rates per kind, as from ``budget_rates``) are sent to the scheduler on first use, so a
    worker can set the budget up itself; kinds without a rate never wait and cost no round trip.
    ``scheduler`` is an rpc handle (``worker.scheduler`` or ``client.scheduler``); found on first use if None.
    """

    def __init__(self, name: str, rates: Mapping[str, float], *, scheduler: Any = None) -> None:
        self.name = name
        self.rates = dict(rates)
        self._scheduler = scheduler
        self._configured = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[str, deque[asyncio.Future[float]]] = {}
        self._flushers: dict[str, asyncio.Task[None]] = {}
        self._successes: dict[str, int] = {}
        self._rates_now: dict[str, float | None] = dict(self.rates)
        self._background: set[asyncio.Task[Any]] = set()
        self.round_trips = 0
        self.reservations = 0

    async def _rpc(self) -> Any:
        if self._scheduler is None:
            self._scheduler = _scheduler_rpc()
        if not self._configured:
            await self._scheduler.upload_rate_configure(name=self.name, rates=self.rates)
            self._configured = True
        return self._scheduler

    async def _reserve_many(self, kind: str, count: int) -> list[float]:
        """One round trip reserving ``count`` starts; each delay counts from the moment the answer arrived."""
        scheduler = await self._rpc()
        successes = self._successes.pop(kind, 0)
        delays, rate = await scheduler.upload_rate_reserve(name=self.name, kind=kind, count=count, successes=successes)
        self.round_trips += 1
        self.reservations += count
        self._rates_now[kind] = rate
        return [float(delay) for delay in delays]

    async def _flush(self, kind: str) -> None:
        """Serve every waiting acquire of ``kind``, a round trip for all who are waiting when it leaves."""
        queue = self._waiting[kind]
        try:
            while queue:
                batch = list(queue)
                queue.clear()
                try:
                    delays = await self._reserve_many(kind, len(batch))
                except Exception as exc:
                    for future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except BaseException:
                    for future in (*batch, *queue):
                        future.cancel()
                    raise
                for future, delay in zip(batch, delays, strict=True):
                    if not future.done():
                        future.set_result(delay)
        finally:
            del self._flushers[kind]

    # -- the Limiter protocol ---------------------------------------------------------------------------------

    def reserve(self, kind: RequestKind) -> float:
        """Blocking reservation for code running outside the event loop (the engine uses ``acquire``)."""
        if kind.value not in self.rates:
            return 0.0
        loop = self._loop
        running = _running_loop()
        if loop is None or running is not None:
            raise RuntimeError(
                "DaskSchedulerLimiter.reserve blocks on a scheduler round trip: call it from a thread while the "
                "limiter's event loop runs, or await acquire() on the loop"
            )
        return asyncio.run_coroutine_threadsafe(self._reserve_many(kind.value, 1), loop).result()[0]

    async def acquire(self, kind: RequestKind) -> None:
        key = kind.value
        if key not in self.rates:
            return
        loop = asyncio.get_running_loop()
        self._loop = loop
        future: asyncio.Future[float] = loop.create_future()
        self._waiting.setdefault(key, deque()).append(future)
        if key not in self._flushers:
            self._flushers[key] = loop.create_task(self._flush(key), name=f"rate-budget-{key}")
        delay = await future
        if delay > 0:
            await asyncio.sleep(delay)

    def on_throttle(self, kind: RequestKind) -> None:
        key = kind.value
        if key not in self.rates or self._scheduler is None:
            return
        scheduler = self._scheduler

        async def report() -> None:
            rate = await scheduler.upload_rate_throttle(name=self.name, kind=key)
            self._rates_now[key] = rate

        task = asyncio.get_running_loop().create_task(report())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def on_success(self, kind: RequestKind) -> None:
        key = kind.value
        if key in self.rates:
            self._successes[key] = self._successes.get(key, 0) + 1

    def current_rate(self, kind: RequestKind) -> float | None:
        return self._rates_now.get(kind.value)

    async def state(self) -> dict[str, dict[str, float]]:
        """The scheduler's view of this budget: rate, max rate, reservations and throttles per kind."""
        scheduler = await self._rpc()
        result: dict[str, dict[str, float]] = await scheduler.upload_rate_state(name=self.name)
        return result


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_per_process: dict[tuple[str, tuple[tuple[str, float], ...], int], DaskSchedulerLimiter] = {}
_per_process_lock = threading.Lock()


def worker_limiter(name: str, rates: Mapping[str, float]) -> DaskSchedulerLimiter:
    """The limiter shared by every task of this process on the current event loop (so acquires coalesce)."""
    loop = asyncio.get_running_loop()
    key = (name, tuple(sorted(rates.items())), id(loop))
    with _per_process_lock:
        limiter = _per_process.get(key)
        if limiter is None:
            limiter = _per_process[key] = DaskSchedulerLimiter(name, rates)
        return limiter


# -- a budget shared by the processes of one machine, kept in a locked file ----------------------------------


@dataclass
class KindRecord:
    """One request kind's shared state: the next free start (wall clock) and the adaptive rate's history."""

    next_free: float = 0.0
    rate: float | None = None  # the adaptive rate now; None until the first throttle (the top rate)
    cut_at: float | None = None
    before_cut: float = 0.0
    after_cut: float = 0.0
    decreases: int = 0
    reserved: int = 0
    throttles: int = 0


class _SharedAdaptive(AdaptiveRate):
    """AdaptiveRate whose history is loaded from and saved to a KindRecord: the math stays AdaptiveRate's."""

    def load(self, record: KindRecord) -> None:
        self._cut_at = record.cut_at
        if record.cut_at is not None:
            self._before_cut = record.before_cut
            self._after_cut = record.after_cut
        if record.rate is not None:
            self._rate = max(self.min_rate, min(self.max_rate, record.rate))
        self.decreases = record.decreases

    def save(self, record: KindRecord) -> None:
        record.rate = self._rate if self._cut_at is not None else None
        record.cut_at = self._cut_at
        record.before_cut = self._before_cut
        record.after_cut = self._after_cut
        record.decreases = self.decreases


class FileBudgetState:
    """The decoded budget file: a KindRecord per request kind. Pure: every time comes in as an argument."""

    VERSION = 1

    def __init__(self, kinds: Mapping[str, KindRecord] | None = None) -> None:
        self.kinds: dict[str, KindRecord] = dict(kinds or {})

    @classmethod
    def decode(cls, raw: bytes) -> FileBudgetState:
        """The state in ``raw``; an empty, torn or foreign file is a fresh state (every kind free now)."""
        try:
            data = json.loads(raw)
            kinds: dict[str, KindRecord] = {}
            if data.get("version") == cls.VERSION:
                for kind, fields in dict(data["kinds"]).items():
                    record = KindRecord(**fields)
                    if not all(math.isfinite(v) for v in (record.next_free, record.before_cut, record.after_cut)):
                        raise ValueError("not a finite time")
                    kinds[str(kind)] = record
        except (ValueError, TypeError, KeyError, AttributeError):
            return cls()
        return cls(kinds)

    def encode(self) -> bytes:
        data = {"version": self.VERSION, "kinds": {kind: asdict(record) for kind, record in self.kinds.items()}}
        return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()

    def reserve(
        self,
        kind: str,
        now: float,
        top: float,
        *,
        adaptive: bool = True,
        successes: int = 0,
        throttled_at: tuple[float, ...] = (),
        min_rate: float = 0.5,
        recover_seconds: float = 10.0,
    ) -> tuple[float, float]:
        """Fold in throttles and successes seen since the last call, reserve one start at ``now``.

        Returns the seconds to wait before starting and the rate the start was spaced at. ``top`` is this
        process's top rate (quota × margin); the adaptive history is shared, the cap is each process's own.
        """
        record = self.kinds.setdefault(kind, KindRecord())
        record.throttles += len(throttled_at)
        rate = top
        if adaptive:
            curve = _SharedAdaptive(top, min_rate=min_rate, recover_seconds=recover_seconds)
            curve.load(record)
            for moment in throttled_at:
                curve.on_throttle(moment)
            if successes:
                curve.on_success(now)
            curve.save(record)
            rate = curve.rate
        wait = max(0.0, record.next_free - now)
        record.next_free = max(now, record.next_free) + 1.0 / rate
        record.reserved += 1
        return wait, rate


class FileBudgetLimiter:
    """The ``Limiter`` protocol over a budget file shared by every process of this machine that names it.

    ``rates`` are the account's quotas (the service's defaults when None); each runs at ``quota × margin``.
    The file is created (mode 0600, parent folders too) on first use; a torn or empty file counts as a fresh
    budget. ``clock`` must be wall-clock time shared by the processes (``time.time``); tests inject a fake one.
    """

    def __init__(
        self,
        path: Path,
        rates: RateLimits | None = None,
        *,
        adaptive: bool = True,
        margin: float = 0.9,
        clock: Clock = time.time,
        min_rate: float = 0.5,
        recover_seconds: float = 10.0,
    ) -> None:
        self.path = Path(path)
        self.rates = budget_rates(RateLimits() if rates is None else rates, margin)
        self.adaptive = adaptive
        self._clock = clock
        self._min_rate = min_rate
        self._recover_seconds = recover_seconds
        self._noted = threading.Lock()  # the loop notes outcomes while the worker thread reserves
        self._successes: dict[str, int] = {}
        self._throttles: dict[str, list[float]] = {}
        self._rates_now: dict[str, float] = dict(self.rates)
        self._worker: ThreadPoolExecutor | None = None
        self.reservations = 0

    def _transact(self, kind: str, top: float, successes: int, throttled_at: tuple[float, ...]) -> tuple[float, float]:
        """Lock the file, read it, reserve, write it back, unlock (closing the descriptor releases the lock)."""
        if not self.path.parent.is_dir():
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, 1 << 16, 0)
            state = FileBudgetState.decode(raw)
            result = state.reserve(
                kind,
                self._clock(),  # read under the lock, so the file's reservations are in clock order
                top,
                adaptive=self.adaptive,
                successes=successes,
                throttled_at=throttled_at,
                min_rate=self._min_rate,
                recover_seconds=self._recover_seconds,
            )
            data = state.encode()
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)
        return result

    # -- the Limiter protocol ---------------------------------------------------------------------------------

    def reserve(self, kind: RequestKind) -> float:
        """Reserve a start in the shared file; blocks while another process holds the lock (microseconds)."""
        key = kind.value
        top = self.rates.get(key)
        if top is None:
            return 0.0
        with self._noted:
            successes = self._successes.pop(key, 0)
            throttled_at = tuple(self._throttles.pop(key, ()))
        try:
            wait, rate = self._transact(key, top, successes, throttled_at)
        except BaseException:
            with self._noted:  # not folded in: keep them for the next reservation
                self._successes[key] = self._successes.get(key, 0) + successes
                self._throttles.setdefault(key, [])[:0] = throttled_at
            raise
        self._rates_now[key] = rate
        self.reservations += 1
        return wait

    async def acquire(self, kind: RequestKind) -> None:
        if kind.value not in self.rates:
            return
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="file-budget")
        delay = await asyncio.get_running_loop().run_in_executor(self._worker, self.reserve, kind)
        if delay > 0:
            await asyncio.sleep(delay)

    def on_throttle(self, kind: RequestKind) -> None:
        if kind.value in self.rates:
            with self._noted:
                self._throttles.setdefault(kind.value, []).append(self._clock())

    def on_success(self, kind: RequestKind) -> None:
        if kind.value in self.rates:
            with self._noted:
                self._successes[kind.value] = self._successes.get(kind.value, 0) + 1

    def current_rate(self, kind: RequestKind) -> float | None:
        return self._rates_now.get(kind.value)

    def state(self) -> FileBudgetState:
        """The budget as the file holds it now (read under the lock)."""
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
                return FileBudgetState.decode(os.pread(fd, 1 << 16, 0))
            finally:
                os.close(fd)
        return FileBudgetState()

    def close(self) -> None:
        """Stop the worker thread (a later acquire starts a new one)."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.shutdown(wait=False)
