"""A request budget shared by the processes of one machine, kept in a small file locked with ``flock``.

Snakemake jobs, Nextflow tasks and several shells on one machine name the same file (``--shared-budget``). Per
request kind it holds the wall-clock time of the next free start and the adaptive rate's state; a reservation
locks the file, reads it, moves the next free start on by ``1/rate`` and writes it back. The lock is taken in a
worker thread of the limiter's own, never on the event loop: a blocking ``flock`` queues waiters in the kernel,
in order, with no polling delay, and a process that dies holding it releases it. Throttles and successes are
noted in memory and folded into the shared rate by the next reservation of their kind, so
``on_throttle``/``on_success`` never touch the file from the loop.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import anyio

from ..core.config import RateLimits
from ..core.errors import ConfigError
from ..core.ratelimit import AdaptiveRate, AdaptiveState, Clock, RequestKind
from .budget import budget_rates

__all__ = ["FileBudgetLimiter", "FileBudgetState", "KindRecord"]


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

    def adaptive(self, top: float) -> AdaptiveState:
        """The adaptive rate's state as this record keeps it (the top rate when never throttled)."""
        rate = self.rate if self.rate is not None else top
        return AdaptiveState(rate, self.cut_at, self.before_cut, self.after_cut, self.decreases)

    def keep(self, state: AdaptiveState) -> None:
        self.rate = state.rate if state.cut_at is not None else None
        self.cut_at = state.cut_at
        self.before_cut = state.before_cut
        self.after_cut = state.after_cut
        self.decreases = state.decreases


class FileBudgetState:
    """The decoded budget file: a KindRecord per request kind. Pure: every time comes in as an argument."""

    VERSION = 1
    _PREFIX = b'{"kinds":'  # what every state this class encodes starts with (its keys are sorted)

    @classmethod
    def is_ours(cls, raw: bytes) -> bool:
        """True for an empty file or one this class wrote (even torn): never overwrite anyone else's file."""
        return not raw or raw.startswith(cls._PREFIX)

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
            curve = AdaptiveRate.from_state(
                record.adaptive(top), top, min_rate=min_rate, recover_seconds=recover_seconds
            )
            for moment in throttled_at:
                curve.on_throttle(moment)
            if successes:
                curve.on_success(now)
            record.keep(curve.state())
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
        self._one_at_a_time = anyio.CapacityLimiter(1)
        self.reservations = 0
        self._check_path()

    def _check_path(self) -> None:
        """ConfigError unless the path can hold the budget: not a folder, not under a file, not another file."""
        for parent in self.path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise ConfigError(f"--shared-budget {self.path}: {parent} is a file, not a folder")
                break
        if self.path.is_dir():
            raise ConfigError(f"--shared-budget {self.path} is a folder; name a file (it is made if need be)")
        if self.path.exists():
            with self.path.open("rb") as f:
                head = f.read(64)
            if not FileBudgetState.is_ours(head):
                raise ConfigError(
                    f"--shared-budget {self.path} exists and is not a request budget of async-uploader; "
                    "it is left as it is: name another file"
                )

    def _transact(self, kind: str, top: float, successes: int, throttled_at: tuple[float, ...]) -> tuple[float, float]:
        """Lock the file, read it, reserve, write it back, unlock (closing the descriptor releases the lock)."""
        if not self.path.parent.is_dir():
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, 1 << 16, 0)
            if not FileBudgetState.is_ours(raw):
                raise ConfigError(f"--shared-budget {self.path} is not a request budget of async-uploader any more")
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
        # One reservation at a time in a worker thread; a stop does not wait for a lock another process holds
        # (the start reserved by an abandoned thread is simply never used).
        delay = await anyio.to_thread.run_sync(self.reserve, kind, limiter=self._one_at_a_time, abandon_on_cancel=True)
        if delay > 0:
            await anyio.sleep(delay)

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
