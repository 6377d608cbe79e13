"""The upload engine's front: ``Uploader``, the handles of running uploads, and the shared retry loop.

One ``Uploader`` owns a connection pool, a semaphore capping requests in flight and a rate limiter; every upload it
runs shares them. An upload (``job.UploadJob``) goes: open sources → plan → checkpoint → Create (or resume) → parts
of both sources, interleaved (``parts.PartScheduler``), each under the semaphore and the limiter, retried per part →
Complete with every part, sorted. Tasks are started here (one per upload) and in ``parts`` (one per part in flight),
nowhere else.

Decisions live in the pure modules (plan, retry, ratelimit, checkpoint state); these modules only wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Generator
from pathlib import Path
from typing import Any, TypeVar

from .client import OmicsClient, resolve_region
from .config import ReadSet, ServiceConfig, UploadConfig
from .errors import (
    UploaderError,
)
from .job import EventSink, UploadJob
from .plan import Part
from .ratelimit import Limiter, LocalLimiter, RequestKind
from .retry import RetryState, Verdict, classify
from .signing import CredentialSource, Signer
from .stats import UploadResult, UploadStatistics
from .transport import Transport

__all__ = ["UploadHandle", "UploadResult", "UploadStatistics", "Uploader", "upload_read_set"]

log = logging.getLogger("async_uploader")
T = TypeVar("T")
PartSender = Callable[[Part], Coroutine[Any, Any, None]]


class Uploader:
    """Uploads read sets into HealthOmics sequence stores; many at once share its connections and limits.

    ``async with Uploader(config, service=ServiceConfig(...)) as up: result = await up.upload(read_set,
    store_id="1234567890")``.
    """

    def __init__(
        self,
        config: UploadConfig | None = None,
        *,
        service: ServiceConfig | None = None,
        limiter: Limiter | None = None,
        transport: Transport | None = None,
        client: OmicsClient | None = None,
    ) -> None:
        self.config = config or UploadConfig()
        self.service = service or ServiceConfig()
        self.limiter: Limiter = limiter or LocalLimiter(self.config.rates, adaptive=self.config.adaptive)
        self._transport = transport
        self._client = client
        self._slots: asyncio.Semaphore | None = None
        self._handles: set[UploadHandle] = set()
        self._random = random.Random()

    @property
    def slots(self) -> asyncio.Semaphore:
        """The semaphore capping requests in flight across every upload of this Uploader."""
        if self._slots is None:
            raise RuntimeError("use the Uploader inside 'async with'")
        return self._slots

    @property
    def client(self) -> OmicsClient:
        if self._client is None:
            raise RuntimeError("use the Uploader inside 'async with'")
        return self._client

    async def __aenter__(self) -> Uploader:
        if self._client is None and self._transport is not None:
            signer = Signer(CredentialSource(self.service.profile), resolve_region(self.service))
            self._client = OmicsClient(self.service, transport=self._transport, signer=signer)
        elif self._client is None:
            self._client = OmicsClient.from_config(self.service, limit=self.config.max_concurrency + 4)
        self._slots = asyncio.Semaphore(self.config.max_concurrency)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for handle in list(self._handles):
            handle.cancel()
        for handle in list(self._handles):
            with contextlib.suppress(BaseException):
                await handle
        if self._client is not None:
            await self._client.aclose()

    def start(
        self,
        read_set: ReadSet,
        *,
        store_id: str,
        checkpoint: Path | bool | None = None,
        restart: bool = False,
        keep_on_failure: bool | None = None,
        on_event: EventSink | None = None,
    ) -> UploadHandle:
        """Start uploading ``read_set``; await the handle for the result."""
        if self._slots is None:
            raise RuntimeError("use the Uploader inside 'async with'")
        job = UploadJob(self, read_set, store_id, checkpoint, restart, keep_on_failure, on_event)
        handle = UploadHandle(job)
        self._handles.add(handle)
        handle.task.add_done_callback(lambda _t: self._handles.discard(handle))
        return handle

    async def upload(
        self,
        read_set: ReadSet,
        *,
        store_id: str,
        checkpoint: Path | bool | None = None,
        restart: bool = False,
        keep_on_failure: bool | None = None,
        on_event: EventSink | None = None,
    ) -> UploadResult:
        """Upload ``read_set`` and return its result."""
        return await self.start(
            read_set,
            store_id=store_id,
            checkpoint=checkpoint,
            restart=restart,
            keep_on_failure=keep_on_failure,
            on_event=on_event,
        )

    def statistics(self) -> list[UploadStatistics]:
        """A snapshot of every upload this Uploader is running."""
        return [handle.statistics() for handle in self._handles]

    # -- shared request machinery -------------------------------------------------------------------------

    async def call(
        self,
        kind: RequestKind,
        operation: str,
        send: Callable[[], Awaitable[T]],
        *,
        on_retry: Callable[[BaseException, int, float], None] | None = None,
    ) -> T:
        """Send one request under the limiter, retrying what is retryable with full-jitter backoff."""
        state = RetryState(self.config.retry)
        while True:
            await self.limiter.acquire(kind)
            try:
                result = await send()
            except UploaderError as exc:
                verdict = classify(exc)
                if verdict is Verdict.THROTTLE:
                    self.limiter.on_throttle(kind)
                if verdict is Verdict.FATAL:
                    raise
                state = state.after(exc)
                if state.exhausted:
                    raise state.exhausted_error(operation, exc) from exc
                delay = state.delay(self._random.random())
                if on_retry is not None:
                    on_retry(exc, state.attempts, delay)
                log.debug("retrying %s in %.2fs after %s", operation, delay, exc)
                await asyncio.sleep(delay)
            else:
                self.limiter.on_success(kind)
                return result


class UploadHandle:
    """A running upload: await it for the ``UploadResult``; ``statistics()`` any time; ``stop()`` to pause."""

    def __init__(self, job: UploadJob) -> None:
        self._job = job
        self.task: asyncio.Task[UploadResult] = asyncio.get_running_loop().create_task(job.run())

    def __await__(self) -> Generator[Any, None, UploadResult]:
        return self.task.__await__()

    def statistics(self) -> UploadStatistics:
        return self._job.statistics()

    def stop(self, grace: float = 10.0) -> None:
        """Stop gracefully: no new parts, in-flight ones get ``grace`` seconds, the upload stays resumable."""
        self._job.request_stop(grace)

    def cancel(self) -> None:
        self.task.cancel()

    @property
    def upload_id(self) -> str | None:
        return self._job.upload_id

    @property
    def checkpoint_path(self) -> Path | None:
        return self._job.checkpoint_path


async def upload_read_set(
    read_set: ReadSet,
    *,
    store_id: str,
    config: UploadConfig | None = None,
    service: ServiceConfig | None = None,
    checkpoint: Path | bool | None = None,
) -> UploadResult:
    """Upload one read set with a fresh Uploader: the one-call shortcut for scripts."""
    async with Uploader(config, service=service) as uploader:
        return await uploader.upload(read_set, store_id=store_id, checkpoint=checkpoint)
