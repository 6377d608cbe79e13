"""Everything local an upload checks before its first request: the sources, the plan, the files' identities and
types, and the checkpoint (found, locked, and either replayed or written anew).

``Preparation.run`` returns the ``core.state.Prepared`` the state machine decides from; the preparation keeps what
the upload goes on using (the readers, the journal and its lock) and ``close()`` lets go of all of it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import anyio

from ..core.checkpoint import (
    CheckpointHeader,
    PartRecord,
    Replay,
    SourceFingerprint,
    read_set_identity,
    verify_resumable,
)
from ..core.config import DEFAULT_PART_SIZE, FileType, ReadSet, Source, UploadConfig
from ..core.errors import CheckpointError, ConfigError, SourceError, UploaderError
from ..core.fastq import check_file_type
from ..core.plan import Plan, make_plan
from ..core.state import Prepared
from ..edge.journal import CheckpointLock, Journal, check_checkpoint_path, default_checkpoint_path, load_checkpoint
from ..edge.sources import SourceReader, compressed_of, is_plain_fastq, open_sources, plain_fastq_refused

__all__ = ["Preparation"]


class Preparation:
    """One upload's local side: its sources' readers, its checkpoint's journal and lock."""

    def __init__(
        self, config: UploadConfig, read_set: ReadSet, store_id: str, *, checkpoint: Path | bool | None, restart: bool
    ) -> None:
        self._config = config
        self._read_set = read_set
        self._store_id = store_id
        self._checkpoint_arg = checkpoint
        self._restart = restart
        self.readers: dict[Source, SourceReader] = {}
        self.journal: Journal | None = None
        self.checkpoint_path: Path | None = None
        self.client_token = uuid.uuid4().hex
        self.created_at = time.time()
        self.stale_upload: str | None = None
        self._lock: CheckpointLock | None = None

    async def run(self) -> Prepared:
        """Open, plan, identify and check every source, then find or write the checkpoint; nothing is sent."""
        part_size = self._config.part_size or DEFAULT_PART_SIZE
        plain = await self._plain_fastq()
        self.readers = open_sources(
            self._read_set.sources,
            part_size=part_size,
            slice_size=self._config.slice_size,
            memory_budget=self._config.memory_budget,
            compress=plain,
        )
        sizes = {s: r.size for s, r in self.readers.items() if r.size is not None}
        streams = [s for s, r in self.readers.items() if r.size is None]
        plan = make_plan(sizes, self._config.part_size, streams=streams)
        identities = await anyio.to_thread.run_sync(self._identities)
        await self._check_file_types()
        replayed, suspect = await self._open_checkpoint(plan, identities)
        return Prepared(
            plan=plan,
            identities=identities,
            resumable=self.journal is not None,
            checkpoint=str(self.checkpoint_path) if self.checkpoint_path is not None else None,
            recorded_upload=replayed.upload_id if replayed else None,
            recorded_read_set=replayed.read_set_id if replayed else None,
            recorded_parts=replayed.parts if replayed else {},
            suspect=suspect,
            restart=self._restart,
        )

    async def _plain_fastq(self) -> frozenset[Source]:
        """The FASTQ sources that are plain text: compressed while they upload (the service stores FASTQ
        gzip-compressed only), or, with compression off, refused before anything is created."""
        if self._read_set.file_type is not FileType.FASTQ:
            return frozenset()
        plain = []
        for source, what in self._read_set.sources.items():
            if await anyio.to_thread.run_sync(is_plain_fastq, what, abandon_on_cancel=True):
                plain.append(source)
        if plain and not self._config.compress:
            raise plain_fastq_refused(plain[0], self._read_set.sources[plain[0]])
        return frozenset(plain)

    def compressed(self) -> dict[Source, int]:
        """The sources sent gzip-compressed, with their plain bytes per part (what the checkpoint records)."""
        return {source: reader.input_part for source, reader in compressed_of(self.readers).items()}

    def plain_bytes(self) -> dict[Source, int]:
        """The plain bytes read of every source sent gzip-compressed."""
        return {source: reader.plain_bytes for source, reader in compressed_of(self.readers).items()}

    def resumed_totals(self, recorded: Mapping[tuple[Source, int], PartRecord]) -> dict[Source, tuple[int, int]]:
        """(bytes, parts) of every compressed file source whose parts the checkpoint records all: known before a
        byte is read, so an upload found gone can be matched with the read set its lost Complete made."""
        totals = {}
        for source, reader in compressed_of(self.readers).items():
            if reader.plain_size is not None:
                count = -(-reader.plain_size // reader.input_part)
                records = [recorded.get((source, number)) for number in range(1, count + 1)]
                if all(records):
                    totals[source] = (sum(r.length for r in records if r is not None), count)
        return totals

    def _identities(self) -> dict[Source, SourceFingerprint]:
        found = {source: reader.identity() for source, reader in self.readers.items()}
        return {source: identity for source, identity in found.items() if identity is not None}

    async def _check_file_types(self) -> None:
        """The first bytes of every source must agree with the file type: a BAM declared as FASTQ fails here, in
        well under a second, not when the service rejects it after the whole upload."""
        for source, reader in self.readers.items():
            head = await reader.head()
            why = check_file_type(head, self._read_set.file_type)
            if why is not None:
                what = "(a stream)" if reader.path is None else str(reader.path)
                raise SourceError(
                    f"{source} {what} is declared {self._read_set.file_type.value} but {why}; check --file-type"
                )

    async def _open_checkpoint(
        self, plan: Plan, identities: dict[Source, SourceFingerprint]
    ) -> tuple[Replay | None, frozenset[Source]]:
        """Lock and replay the checkpoint that resumes this upload, or write a new one; (None, none) when none is
        kept. Also the sources whose recorded parts must be read again before they are trusted."""
        arg = self._checkpoint_arg
        if arg is False:
            return None, frozenset()
        if any(reader.path is None for reader in self.readers.values()):  # a stream cannot resume
            if isinstance(arg, Path):
                raise SourceError("a stream cannot be resumed, so it cannot have a checkpoint")
            return None, frozenset()
        prints = list(identities.values())
        path = arg if isinstance(arg, Path) else await self._default_path(prints)
        self.checkpoint_path = path
        sources = [where for reader in self.readers.values() if (where := reader.path) is not None]
        await anyio.to_thread.run_sync(check_checkpoint_path, path, sources)
        self._lock = await anyio.to_thread.run_sync(_lock, path)
        if await anyio.to_thread.run_sync(check_checkpoint_path, path, sources) and not self._restart:
            self.journal, replayed = await anyio.to_thread.run_sync(Journal.open, path)
            header = replayed.header
            suspect = verify_resumable(
                header,
                store_id=self._store_id,
                read_set=self._read_set,
                sources=prints,
                part_size=plan.part_size,
                name=str(path),
                compressed=self.compressed(),
            )
            self.client_token, self.created_at = header.client_token or self.client_token, header.created
            return replayed, suspect
        if path.exists():
            self.stale_upload = await anyio.to_thread.run_sync(_unfinished_upload, path)
        header = CheckpointHeader.from_read_set(
            self._store_id,
            self._read_set,
            part_size=plan.part_size,
            sources=prints,
            client_token=self.client_token,
            compressed=self.compressed(),
        )
        self.journal = await anyio.to_thread.run_sync(Journal.create, path, header)
        return None, frozenset()

    async def _default_path(self, prints: list[SourceFingerprint]) -> Path:
        identity = read_set_identity(self._read_set)
        sizes = [p.size for p in prints]
        return await anyio.to_thread.run_sync(
            default_checkpoint_path, self._store_id, identity, sizes, [p.path for p in prints]
        )

    def retire_checkpoint(self) -> None:
        """The upload was aborted: its checkpoint can resume nothing any more."""
        if self.journal is not None and self.checkpoint_path is not None:
            self.journal.close()
            self.journal = None
            self.checkpoint_path.unlink(missing_ok=True)

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()
        if self.journal is not None:
            self.journal.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _lock(path: Path) -> CheckpointLock:
    """Take the checkpoint's lock, making its folder (mode 0700) if need be."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot make the checkpoint's folder {path.parent}: {exc.strerror or exc}") from None
    lock = CheckpointLock(path)
    try:
        lock.acquire()
    except OSError as exc:
        raise CheckpointError(f"cannot lock checkpoint {path}: {exc.strerror or exc}") from exc
    return lock


def _unfinished_upload(path: Path) -> str | None:
    """--restart: the upload an existing checkpoint left open (aborted once the new one exists), if any."""
    try:
        old = load_checkpoint(path)
    except UploaderError:
        return None
    return old.upload_id if old.read_set_id is None else None
