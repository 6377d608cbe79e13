"""The request machinery every upload of one Uploader shares: request slots, the rate limiter, retries.

``Calls.call(operation, send)`` sends one request the way every request is sent: a start reserved from the
limiter for the operation's quota (``core.protocol.OPERATIONS``), the failure classified once
(``core.retry.classify``), retried with full-jitter backoff while the policy allows, the limiter told of
throttles and successes. An operation that carries no bulk data has an overall deadline, retries included.
``slots`` caps the parts in flight across every upload of the Uploader.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio

from ..core.config import RetryConfig
from ..core.errors import UploaderError
from ..core.protocol import OPERATIONS
from ..core.ratelimit import Limiter
from ..core.retry import RetryState, Verdict, classify
from ..edge.client import ATTEMPT, OmicsClient

__all__ = ["Calls", "RetryObserver"]

log = logging.getLogger("async_uploader")
T = TypeVar("T")
RetryObserver = Callable[[BaseException, Verdict, int, float], None]
"""Told of every retry: the failure, its verdict, the attempt that failed (from 1) and the delay before the next."""


@dataclass
class _Tries:
    """One operation's history so far: the retry state and the last failure."""

    state: RetryState
    last: BaseException | None = None


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
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self.limiter = limiter
        self.retry = retry
        self.operation_timeout = operation_timeout
        self.slots = anyio.Semaphore(max_concurrency, fast_acquire=True)
        self._rand = rand

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
        while True:
            await self.limiter.acquire(kind)
            ATTEMPT.set(tries.state.attempts + 1)
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
                await anyio.sleep(delay)
            else:
                self.limiter.on_success(kind)
                return result
