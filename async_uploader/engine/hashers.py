"""Where verification hashes files: a few threads of their own, behind the uploads.

Verifying a FASTQ source inflates and hashes all of it (several CPU seconds a GiB), on the cores that also encrypt
and send the parts and, against a local store, ingest the read sets. None of that hashing is on a batch's critical
path while the read set uploads and waits for ACTIVE, so it must not take the CPU from what is: the event loop that
sends Create, the parts and Complete at the pace of the quotas. Files are therefore hashed here, not in the shared
worker threads:

- at most ``hashing_slots()`` files at a time in the whole process (about one per two cores: each file keeps three
  threads busy, its inflater, hasher and counter), first come first served, so the rows that started first are
  verified first and a batch of many rows does not start dozens of hashing threads at once;
- on Linux each of these threads runs ``NICENESS`` steps nicer than the process (the hashing stages it starts
  inherit that): when the cores are busy the uploads and the event loop go first. Unprivileged, a thread can
  lower its priority but never raise it again, which is why the threads are dedicated to hashing.

A wait for a hash that is cancelled stops its thread at the next chunk read and waits for it to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from typing import TypeVar

import anyio

__all__ = ["NICENESS", "HashingStopped", "hash_in_background", "hashing_slots"]

T = TypeVar("T")

NICENESS = 5
"""How much nicer than the process the hashing threads run (Linux). At 5 a thread weighs a third of an ordinary
one, so the three stages of a file together weigh about one: hashing cannot crowd out the event loop (or, against a
local store, the store's own ingest) by its number of threads, and yet is never starved below one thread's share by
other work of the same session, which would leave the batch waiting for its last verifications at the end."""


class _Hashers:
    """The process's hashing threads, started with the first file hashed."""

    lock = threading.Lock()
    pool: ThreadPoolExecutor | None = None

    @classmethod
    def get(cls) -> ThreadPoolExecutor:
        with cls.lock:
            if cls.pool is None:
                cls.pool = ThreadPoolExecutor(
                    hashing_slots(), thread_name_prefix="verify-hash", initializer=_lower_priority
                )
            return cls.pool

    @classmethod
    def forget(cls) -> None:
        """In a forked child: the parent's threads are not there, so its own start with its first file."""
        cls.lock = threading.Lock()
        cls.pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_Hashers.forget)


class HashingStopped(Exception):
    """Raised in a hashing thread, between two chunks, once the wait for its hash was cancelled."""


def hashing_slots(cpus: int | None = None) -> int:
    """How many files are hashed at once on a machine of ``cpus`` cores (this one's by default)."""
    count = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(1, count // 2)


def _lower_priority() -> None:
    if not sys.platform.startswith("linux"):  # elsewhere a priority is the process's, not a thread's
        return
    thread = threading.get_native_id()
    with contextlib.suppress(OSError):  # a sandbox that forbids it: hash at the process's priority
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + NICENESS))


async def hash_in_background(work: Callable[[Callable[[int], None]], T]) -> T:
    """``work(on_read)`` in a hashing thread, once a slot is free; ``work`` calls ``on_read`` between chunks (it
    raises HashingStopped once this wait is cancelled). A cancelled wait ends only when the thread has stopped."""
    stop = threading.Event()

    def on_read(_nbytes: int) -> None:
        if stop.is_set():
            raise HashingStopped

    future: Future[T] = _Hashers.get().submit(work, on_read)
    try:
        return await asyncio.wrap_future(future)
    except BaseException:
        stop.set()
        if not future.cancel() and not future.done():  # running: it stops at its next chunk
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(wait_for, [future])
        raise
