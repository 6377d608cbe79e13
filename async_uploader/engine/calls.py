"""The request machinery every upload of one Uploader shares: request slots, the rate limiter, retries.

``Calls.call(operation, send)`` sends one request the way every request is sent: a start reserved from the
limiter for the operation's quota (``core.protocol.OPERATIONS``), the failure classified once
(``core.retry.classify``), retried with full-jitter backoff while the policy allows, the limiter told of
throttles and successes. An operation that carries no bulk data has an overall deadline, retries included.
``slots`` caps the parts in flight across every upload of the Uploader: at ``max_concurrency``, or (with
``adaptive_concurrency``) at what ``core.concurrency`` learns from the throughput, never above it.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio

from ..core.concurrency import ConcurrencyTuner
from ..core.config import RetryConfig, Source
from ..core.errors import CertificateError, ProxyRefusedError, TransportError, UploaderError
from ..core.plan import Part
from ..core.protocol import OPERATIONS
from ..core.ratelimit import Limiter, RequestKind
from ..core.retry import RetryState, Verdict, classify
from ..edge.client import ATTEMPT, OmicsClient
from ..edge.cores import CoreLoad
from .slots import Slots

__all__ = ["PREFLIGHT_TIMEOUT", "Calls", "Requests", "Retry", "RetryObserver"]

PREFLIGHT_TIMEOUT = 10.0
"""How long the first request of an Uploader waits for any answer from the endpoint."""

log = logging.getLogger("async_uploader")
T = TypeVar("T")
RetryObserver = Callable[[BaseException, Verdict, int, float], None]
"""Told of every retry: the failure, its verdict, the attempt that failed (from 1) and the delay before the next."""


@dataclass(frozen=True, slots=True)
class Retry:
    """One failed attempt that is tried again: of which operation (and part), why, and when the next one goes."""

    operation: str
    source: Source | None
    number: int | None
    error: BaseException
    verdict: Verdict
    attempt: int
    delay: float


class Requests:
    """The one path of every request one upload makes, control calls and parts alike.

    Each goes through ``Calls.call`` (the operation's deadline, the limiter, the retry policy) and every retry of
    every operation is reported once, here, to ``report`` (which counts it in the upload's statistics and result,
    and turns it into a ``retry`` event and the ``-v`` line).
    """

    def __init__(self, calls: Calls, report: Callable[[Retry], None]) -> None:
        self.calls = calls
        self.client = calls.client
        self._report = report

    def observer(self, operation: str, part: Part | None = None, also: RetryObserver | None = None) -> RetryObserver:
        """The observer ``Calls.call`` is given for ``operation``: reports each retry, then tells ``also``."""
        source, number = (part.source, part.number) if part is not None else (None, None)

        def retried(exc: BaseException, verdict: Verdict, attempt: int, delay: float) -> None:
            if also is not None:
                also(exc, verdict, attempt, delay)
            self._report(Retry(operation, source, number, exc, verdict, attempt, delay))

        return retried

    async def __call__(
        self,
        operation: str,
        send: Callable[[], Awaitable[T]],
        *,
        part: Part | None = None,
        on_retry: RetryObserver | None = None,
    ) -> T:
        """Send ``operation`` until it succeeds or fails for good; ``on_retry`` is told of each retry first."""
        return await self.calls.call(operation, send, on_retry=self.observer(operation, part, on_retry))


@dataclass
class _Tries:
    """One operation's history so far: the retry state and the last failure."""

    state: RetryState
    last: BaseException | None = None


def first_level() -> int:
    """Requests in flight the self-tuning starts from: two per core the process may use, 4 to 8. Where the cores are
    the limit (TLS through an efficient terminator on two cores: 4 and 2 fixed ran 1.04-1.13x TransferManager's speed,
    8-32 fixed 0.82-0.86x), fewer requests leave the cores to the bytes; where the distance is, the tuner leaps from
    there within a few tenths of a second."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(4, min(8, 2 * cores))


class Calls:
    """Sends requests for every upload of one Uploader, under one limiter, one retry policy and one set of slots."""

    def __init__(
        self,
        client: OmicsClient,
        limiter: Limiter,
        retry: RetryConfig,
        *,
        max_concurrency: int,
        operation_timeout: float,
        adaptive_concurrency: bool = False,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self.limiter = limiter
        self.retry = retry
        self.operation_timeout = operation_timeout
        tuner = ConcurrencyTuner(max_concurrency, start=first_level()) if adaptive_concurrency else None
        self.slots = Slots(max_concurrency, tuner, load=CoreLoad().sample if tuner is not None else None)
        self._rand = rand
        self._reachable = anyio.Event()
        self._probing = anyio.Lock()

    async def ensure_reachable(self, hint: str) -> None:
        """Once per Calls, before the first request: one unsigned GET of the endpoint, through the same connections
        (proxy, TLS) as every request; any HTTP answer will do. TransportError in seconds, naming the endpoint and
        ``hint`` (the proxy variables when a proxy is used), when there is none: not minutes of retries; an
        untrusted certificate or a proxy's refusal keeps its own class and hint."""
        if self._reachable.is_set():
            return
        async with self._probing:
            if self._reachable.is_set():
                return
            where = self.client.base_url()
            if self.client.proxy_for(where) is not None:  # the failure names the proxy; say where it was chosen
                hint = "check HTTPS_PROXY, HTTP_PROXY and NO_PROXY"
            try:
                with anyio.fail_after(PREFLIGHT_TIMEOUT):
                    await self.client.probe()
            except TimeoutError:
                raise TransportError(f"no answer from {where} within {PREFLIGHT_TIMEOUT:g} s; {hint}") from None
            except (CertificateError, ProxyRefusedError) as exc:  # they say what to set; neither is retried
                raise type(exc)(f"cannot reach {where}: {exc}") from None
            except TransportError as exc:
                raise TransportError(f"cannot reach {where}: {exc}; {hint}") from None
            self._reachable.set()

    async def call(
        self, operation: str, send: Callable[[], Awaitable[T]], *, on_retry: RetryObserver | None = None
    ) -> T:
        """Send ``operation`` (one request per try) until it succeeds, fails for good, or runs out of time."""
        tries = _Tries(RetryState(self.retry))
        if OPERATIONS[operation].moves_data:
            return await self._send(operation, send, on_retry, tries)
        try:
            with anyio.fail_after(self.operation_timeout):
                return await self._send(operation, send, on_retry, tries)
        except TimeoutError:
            raise tries.state.timed_out_error(operation, self.operation_timeout, tries.last) from tries.last

    async def _send(
        self, operation: str, send: Callable[[], Awaitable[T]], on_retry: RetryObserver | None, tries: _Tries
    ) -> T:
        kind = OPERATIONS[operation].kind
        held = self.slots if OPERATIONS[operation].moves_data else None  # a part waiting holds its slot
        while True:
            since = held.hold() if held is not None else 0.0
            try:
                await self.limiter.acquire(kind)
            finally:
                if held is not None:
                    held.unhold(since)
            ATTEMPT.set(tries.state.attempts + 1)
            began = time.monotonic()
            try:
                result = await send()
            except UploaderError as exc:
                verdict = classify(exc)
                if verdict is Verdict.THROTTLE:
                    self.limiter.on_throttle(kind)
                if verdict is Verdict.FATAL:
                    raise
                tries.state, tries.last = tries.state.after(verdict), exc
                if tries.state.exhausted:
                    raise tries.state.exhausted_error(operation, exc) from exc
                delay = tries.state.delay(self._rand())
                if on_retry is not None:
                    on_retry(exc, verdict, tries.state.attempts, delay)
                log.debug("retrying %s in %.2f s after %s", operation, delay, exc)
                since = held.hold() if held is not None else 0.0
                try:
                    await anyio.sleep(delay)
                finally:
                    if held is not None:
                        held.unhold(since)
            else:
                self._answered(kind, time.monotonic() - began, moved_data=held is not None)
                return result

    def _answered(self, kind: RequestKind, seconds: float, *, moved_data: bool) -> None:
        """A request succeeded after ``seconds``: the limiter hears of it, and the self-tuning of how long a small
        one took (how far the store is, before any part)."""
        self.limiter.on_success(kind)
        if not moved_data and self.slots.tuner is not None:
            self.slots.tuner.round_trip(seconds)
