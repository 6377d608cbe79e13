"""What the store says of the read sets being waited for, asked together.

Every upload of an Uploader that waits for its read set to be ACTIVE asks here. When it is the only one waiting
on its store, it is asked with GetReadSetMetadata. When several wait on one store (a batch whose rows free their
slots at Complete), one ListReadSets sweep (read sets created since the oldest of them, every page) answers all
of them: ListReadSets and GetReadSetMetadata share a quota of 5 requests a second per account, so a hundred read
sets polled one by one would each be seen every 20 s, and seen together they are each seen every second. A read
set the sweep does not show (not listed yet) is asked for alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio

from ..core.errors import RetryExhaustedError, ServiceError
from ..core.protocol import ReadSetMetadata
from .calls import Requests

__all__ = ["ReadSetWatcher"]

log = logging.getLogger("async_uploader")

_MARGIN = 120.0
"""How far before the oldest upload's Create a sweep looks (clocks differ; the read set is made at Complete)."""


@dataclass
class _Store:
    waiting: dict[str, float] = field(default_factory=dict)  # read set id -> its upload's Create (wall clock)
    seen: dict[str, tuple[float, ReadSetMetadata]] = field(default_factory=dict)  # id -> (when swept, what)
    lock: anyio.Lock = field(default_factory=anyio.Lock)


class ReadSetWatcher:
    """Shared by the uploads of one Uploader (``Calls.watcher``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._stores: dict[str, _Store] = {}
        self.sweeps = 0

    def waiting(self, store_id: str) -> int:
        """How many read sets of ``store_id`` are waited for now."""
        store = self._stores.get(store_id)
        return len(store.waiting) if store is not None else 0

    async def look(self, requests: Requests, store_id: str, read_set_id: str, created: float) -> ReadSetMetadata:
        """The read set's metadata as the store reports it now (no older than this call)."""
        store = self._stores.setdefault(store_id, _Store())
        store.waiting[read_set_id] = created
        asked = self._clock()
        metadata: ReadSetMetadata | None = None
        if len(store.waiting) > 1:
            metadata = await self._swept(requests, store_id, store, read_set_id, asked)
        if metadata is None:
            client = requests.client
            metadata = await requests("GetReadSetMetadata", lambda: client.get_read_set_metadata(store_id, read_set_id))
        if metadata.status != "PROCESSING_UPLOAD":
            self.forget(store_id, read_set_id)
        return metadata

    def forget(self, store_id: str, read_set_id: str) -> None:
        """The read set is no longer waited for."""
        store = self._stores.get(store_id)
        if store is not None:
            store.waiting.pop(read_set_id, None)
            store.seen.pop(read_set_id, None)

    async def _swept(
        self, requests: Requests, store_id: str, store: _Store, read_set_id: str, asked: float
    ) -> ReadSetMetadata | None:
        """What a sweep made after ``asked`` saw of the read set: this call's sweep, or one another waiter made
        while this one queued for the lock."""
        async with store.lock:
            seen = store.seen.get(read_set_id)
            if seen is None or seen[0] < asked:
                try:
                    await self._sweep(requests, store_id, store)
                except (ServiceError, RetryExhaustedError) as exc:  # each is asked alone instead
                    log.info("ListReadSets could not answer for the read sets waited for: %s", exc)
                    return None
            seen = store.seen.get(read_set_id)
        return seen[1] if seen is not None and seen[0] >= asked else None

    async def _sweep(self, requests: Requests, store_id: str, store: _Store) -> None:
        oldest = min(store.waiting.values(), default=time.time()) - _MARGIN
        wanted = {"createdAfter": datetime.fromtimestamp(oldest, tz=UTC).isoformat()}
        client = requests.client
        found = await requests("ListReadSets", lambda: client.find_read_sets(store_id, wanted))
        self.sweeps += 1
        now = self._clock()
        for metadata in found:
            if metadata.id in store.waiting:
                store.seen[metadata.id] = (now, metadata)
