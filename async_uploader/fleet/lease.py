"""An ownership lease on a read set: a worker wrongly presumed dead and its replacement never upload it at once.

The lease is a file next to the read set's checkpoint, on storage every worker sees. It is held ``ttl`` seconds
at a time and renewed every ``ttl/3`` seconds by its holder; a holder that cannot renew stops uploading (the
upload stays open and resumable), and a waiter takes over a lease only once it has expired, or at once when its
holder is a dead process on the same host.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio

from ..core.errors import UploaderError

__all__ = ["FileLease", "LeaseLostError", "hold_lease"]

log = logging.getLogger("async_uploader")


class LeaseLostError(UploaderError):
    """Another process took over the read set's lease: this one stopped uploading it."""


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
    """Wait for the lease on ``path``, hold it (renewing it in a task of its own) for the body, release it after.

    When a renewal finds the lease taken over, the body is cancelled and LeaseLostError raised in its place.
    """
    lease = FileLease(path, ttl)
    poll = min(1.0, ttl / 10) if poll is None else poll
    # Polling, not an event: the holder may be a process on another machine.
    while not await anyio.to_thread.run_sync(lease.try_acquire):  # noqa: ASYNC110
        await anyio.sleep(poll)
    lost: list[LeaseLostError] = []
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(_renew, lease, lost, group.cancel_scope, name=f"lease-{path.name}")
            try:
                yield lease
            finally:
                group.cancel_scope.cancel()  # the body is over: stop renewing
    finally:
        if not lost:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(lease.release)
    if lost:
        raise lost[0]


async def _renew(lease: FileLease, lost: list[LeaseLostError], body: anyio.CancelScope) -> None:
    while True:
        await anyio.sleep(lease.ttl / 3)
        try:
            await anyio.to_thread.run_sync(lease.renew)
        except LeaseLostError as exc:
            lost.append(exc)
            body.cancel()
            return
        except OSError as exc:  # storage hiccup: try again before the lease runs out
            log.warning("could not renew lease %s: %s", lease.path, exc)
