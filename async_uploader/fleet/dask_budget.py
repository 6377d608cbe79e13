"""A request budget kept in a Dask scheduler, shared by every worker of the cluster.

The scheduler is the one process a cluster cannot lose without losing everything: a worker that dies takes
nothing with it, and its replacement draws from the same buckets. ``RateBudgetPlugin`` keeps ``SharedBudget``
objects (one per budget name) and adds the handlers ``upload_rate_configure``, ``upload_rate_reserve``,
``upload_rate_throttle`` and ``upload_rate_state`` to the scheduler, the way distributed's own Semaphore
extension adds its routes; register it once per cluster with ``await install_rate_budget(client, name, rates)``.

``DaskSchedulerLimiter`` is the ``Limiter`` protocol over it: ``acquire`` reserves a start with one scheduler round
trip; concurrent acquires of one process are coalesced into a single round trip that reserves one start for each
of them, so a busy worker pays one trip per burst rather than one per request. Successes are counted locally and
reported with the next reservation (they only matter for the recovery after a throttle); a throttle is reported
at once, and lowers the rate of every worker, since they all draw from the same bucket. A reservation's delay
counts from the scheduler's clock at the moment it was made; the caller waits that long from the moment it gets
the answer, which can only spread starts further apart.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

from distributed import get_client, get_worker
from distributed.diagnostics.plugin import SchedulerPlugin

from ..core.ratelimit import RequestKind
from .budget import SharedBudget

__all__ = ["PLUGIN_NAME", "DaskSchedulerLimiter", "RateBudgetPlugin", "install_rate_budget", "worker_limiter"]

PLUGIN_NAME = "async-uploader-rate-budget"


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


async def install_rate_budget(client: Any, name: str, rates: Mapping[str, float]) -> None:
    """Register the plugin on ``client``'s scheduler (once per cluster) and configure the budget ``name``.

    ``client`` is an asynchronous ``distributed.Client``. A remote scheduler must be able to import
    async_uploader (install the package where the scheduler runs).
    """
    await client.register_plugin(RateBudgetPlugin())
    await client.scheduler.upload_rate_configure(name=name, rates=dict(rates))


def _scheduler_rpc() -> Any:
    """The scheduler rpc of the worker this task runs on, or of the current client elsewhere."""
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
