"""The public front of the engine: ``Uploader``, the handles of running uploads, ``upload_read_set``.

One ``Uploader`` owns a connection pool and the request machinery (``calls.Calls``: request slots, the rate
limiter, retries); every upload it runs shares them. Each upload (``upload.Upload``) runs as a task the handle
holds; leaving the Uploader's ``async with`` cancels and awaits every upload still running.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator
from pathlib import Path
from typing import Any

import anyio

from ..core.config import ReadSet, ServiceConfig, UploadConfig
from ..core.ratelimit import Limiter
from ..core.stats import UploadResult, UploadStatistics
from ..edge.client import OmicsClient, resolve_region, resolve_service_and_credentials
from ..edge.signing import Signer
from ..edge.transport import Transport
from .calls import Calls
from .limiter import LocalLimiter
from .parts import EventSink
from .upload import Upload
from .watch import ReadSetWatcher

__all__ = ["UploadHandle", "Uploader", "upload_read_set"]


class Uploader:
    """Uploads read sets into HealthOmics sequence stores; many at once share its connections and limits.

    ``async with Uploader(config, service=ServiceConfig(...)) as up: result = await up.upload(read_set,
    store_id="1234567890")``. ``transport`` replaces the HTTP transport (a test seam: ``MockTransport``).
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
        self._calls: Calls | None = None
        self._handles: set[UploadHandle] = set()
        self.watcher = ReadSetWatcher()
        """Read sets waited for by this Uploader's uploads, asked for together."""

    @property
    def calls(self) -> Calls:
        """The request machinery every upload of this Uploader shares."""
        if self._calls is None:
            raise RuntimeError("use the Uploader inside 'async with'")
        return self._calls

    @property
    def client(self) -> OmicsClient:
        return self.calls.client

    async def __aenter__(self) -> Uploader:
        client = self._client
        if client is None and self._transport is not None:
            resolve = resolve_service_and_credentials
            service, credentials = await anyio.to_thread.run_sync(resolve, self.service, abandon_on_cancel=True)
            signer = Signer(credentials, resolve_region(service))
            client = OmicsClient(service, transport=self._transport, signer=signer)
        elif client is None:
            client = await OmicsClient.open(
                self.service, limit=self.config.max_concurrency + 4, workers=self.config.workers
            )
        self._calls = Calls(
            client,
            self.limiter,
            self.config.retry,
            max_concurrency=self.config.max_concurrency,
            operation_timeout=self.service.operation_timeout,
            adaptive_concurrency=self.config.adaptive_concurrency,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for handle in list(self._handles):
            handle.cancel()
        for handle in list(self._handles):
            with contextlib.suppress(BaseException):
                await handle
        if self._calls is not None:
            await self._calls.client.aclose()

    def start(
        self,
        read_set: ReadSet,
        *,
        store_id: str,
        checkpoint: Path | bool | None = None,
        restart: bool = False,
        keep_on_failure: bool | None = None,
        on_event: EventSink | None = None,
        receipt: Path | None = None,
    ) -> UploadHandle:
        """Start uploading ``read_set``; await the handle for the result.

        ``checkpoint``: a path, True or None for the default path, False for none (streams never have one).
        ``keep_on_failure``: leave a failed upload open (default when a checkpoint can resume it) or abort it.
        ``on_event`` receives every event (``core.events``) of this upload. ``receipt``: where the upload's receipt
        goes once Complete has made the read set (default ``$ASYNC_UPLOADER_HOME/receipts/READSETID.json``).
        """
        upload = Upload(
            self.calls,
            self.config,
            read_set,
            store_id,
            checkpoint=checkpoint,
            restart=restart,
            keep_on_failure=keep_on_failure,
            on_event=on_event,
            receipt=receipt,
            watcher=self.watcher,
        )
        handle = UploadHandle(upload)
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
        receipt: Path | None = None,
    ) -> UploadResult:
        """Upload ``read_set`` and return its result."""
        return await self.start(
            read_set,
            store_id=store_id,
            checkpoint=checkpoint,
            restart=restart,
            keep_on_failure=keep_on_failure,
            on_event=on_event,
            receipt=receipt,
        )

    def statistics(self) -> list[UploadStatistics]:
        """A snapshot of every upload this Uploader is running."""
        return [handle.statistics() for handle in self._handles]


class UploadHandle:
    """A running upload: await it for the ``UploadResult``; ``statistics()`` any time; ``stop()`` to pause."""

    def __init__(self, upload: Upload) -> None:
        self._upload = upload
        self.task: asyncio.Task[UploadResult] = asyncio.get_running_loop().create_task(upload.run())

    def __await__(self) -> Generator[Any, None, UploadResult]:
        return self.task.__await__()

    def done(self) -> bool:
        return self.task.done()

    def statistics(self) -> UploadStatistics:
        return self._upload.statistics()

    def stop(self, grace: float = 10.0) -> None:
        """Stop gracefully: nothing new starts, work in flight gets ``grace`` seconds, the upload stays resumable.

        Reaches every phase (Create, listings, parts, Complete, the wait for ACTIVE); ``stop(0)`` stops at once.
        """
        self._upload.stop(grace)

    def cancel(self) -> None:
        self.task.cancel()

    @property
    def upload_id(self) -> str | None:
        return self._upload.upload_id

    @property
    def checkpoint_path(self) -> Path | None:
        return self._upload.checkpoint_path


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
