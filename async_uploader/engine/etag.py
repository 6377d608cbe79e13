"""End-to-end verification: the read set's ETag and counts, as the service reports them, against the user's bytes.

While an upload runs, each FASTQ file source is read front to back and hashed with the store's ETag family, in the
threads that hash behind the uploads (``engine.hashers``: a few files at a time, at a lower priority), its
inflating, hashing and counting overlapped (``engine.hashing``); a stream is hashed as it is read. A gzip source
whose last member ends early is cut short: the upload stops with SourceError (bad input) as soon as that is known,
before Complete for a file that is hashed before its last part is sent.
After the read set is ACTIVE its ETag (``algorithm``, ``source1``, ``source2``) and ``sequenceInformation`` are
compared with what was computed here: equal means the service holds exactly these reads. The outcome is a
``Verification`` in the upload's result, whatever it is: verified, not verified (and why), or a mismatch, which the
upload raises as ``VerificationError``.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from anyio.abc import TaskGroup

from ..core.config import FileType, Source
from ..core.errors import ClockSkewError, RetryExhaustedError, ServiceError, SourceError, TransportError
from ..core.fastq import ALGORITHMS, FastqSummary, FastqSummer, NotFastqError, TruncatedError
from ..core.protocol import ReadSetMetadata
from ..core.stats import Verification
from .calls import Calls, RetryObserver
from .hashers import hash_in_background
from .hashing import ThreadedSummer, summarize_path

__all__ = ["DEFAULT_FAMILY", "Verifier"]

log = logging.getLogger("async_uploader")

DEFAULT_FAMILY = "MD5up"
"""A sequence store's ETag family unless it was created with another (and what is assumed when it cannot be asked)."""


@dataclass
class _Family:
    """A store's ETag family as one Uploader asked for it: None until (or unless) the store said."""

    answered: anyio.Event = field(default_factory=anyio.Event)
    family: str | None = None


_ASKED: weakref.WeakKeyDictionary[Calls, dict[str, _Family]] = weakref.WeakKeyDictionary()
"""Per Uploader (its ``Calls``), per store id: the family asked for."""


class Verifier:
    """The local side of one upload's verification: the store's family, and each source's summary."""

    def __init__(self, calls: Calls, store_id: str, file_type: FileType) -> None:
        self._calls = calls
        self._store_id = store_id
        self.applies = file_type is FileType.FASTQ
        self.family = DEFAULT_FAMILY
        self.family_known = False
        self._summaries: dict[Source, FastqSummary] = {}
        self._failures: dict[Source, str] = {}
        self._files: dict[Source, Path] = {}
        self._streams: dict[Source, FastqSummer] = {}
        self._group: TaskGroup | None = None
        self._hashing: dict[Source, anyio.CancelScope] = {}
        self._hashed: dict[Source, anyio.Event] = {}

    async def learn_family(self, on_retry: RetryObserver | None = None) -> None:
        """Ask the store which ETag family it uses (GetSequenceStore); MD5up, the default, when it cannot say.

        A store's family is fixed when it is made: the uploads of one Uploader ask once per store (those that
        start meanwhile wait for that answer), so a batch's rows do not each spend a request of the listing quota
        before their Create. Only an answer is kept: after a failure the next upload asks again."""
        if not self.applies:
            return
        asked = _ASKED.setdefault(self._calls, {})
        pending = asked.get(self._store_id)
        if pending is not None:  # another upload is asking, or has been answered
            await pending.answered.wait()
            if pending.family is not None:
                self.family, self.family_known = pending.family, True
                return
        pending = asked[self._store_id] = _Family()
        try:
            pending.family = await self._ask_family(on_retry)
        finally:
            if pending.family is None:
                if asked.get(self._store_id) is pending:
                    del asked[self._store_id]
            else:
                self.family, self.family_known = pending.family, True
            pending.answered.set()

    async def _ask_family(self, on_retry: RetryObserver | None) -> str | None:
        client = self._calls.client
        try:
            family = await self._calls.call(
                "GetSequenceStore", lambda: client.get_etag_family(self._store_id), on_retry=on_retry
            )
        except ClockSkewError:
            raise  # every request would be refused alike
        except (ServiceError, RetryExhaustedError, TransportError) as exc:
            # only a guess to hash once instead of twice: the read set's own ETag names its algorithm at the end
            log.info("the store's ETag family is not known (%s): hashing with %s", exc, DEFAULT_FAMILY)
            return None
        return family if family in ("MD5up", "SHA256up", "SHA512up") else None

    def stream_summer(self, source: Source) -> FastqSummer | None:
        """A summer a stream feeds as it is read (in its reading thread), or None when nothing is verified."""
        if not self.applies:
            return None
        summer = self._streams[source] = ThreadedSummer(self.family)
        return summer

    def start(self, group: TaskGroup, files: Mapping[Source, Path]) -> None:
        """Start hashing each file source front to back, one worker thread each, in ``group``."""
        if not self.applies:
            return
        self._group = group
        for source, path in files.items():
            self.restart(source, path)

    def restart(self, source: Source, path: Path) -> None:
        """Hash ``source`` from its start, as ``path`` holds it now (the file changed while it was uploaded): the
        hash of what it held before is dropped, and its thread stopped."""
        if not self.applies or self._group is None:
            return
        old = self._hashing.pop(source, None)
        if old is not None:
            old.cancel()
        self._summaries.pop(source, None)
        self._failures.pop(source, None)
        self._files[source] = path
        scope = self._hashing[source] = anyio.CancelScope()
        done = self._hashed[source] = anyio.Event()
        self._group.start_soon(self._hash_file, source, path, self.family, scope, done, name=f"verify-{source}")

    def summaries(self) -> dict[Source, FastqSummary]:
        """What has been computed so far, per source (a stream's once it has been read to its end)."""
        self._finish_streams()
        return dict(self._summaries)

    async def hashed(self) -> None:
        """Wait until every file source started with ``start`` (or ``restart``) has been hashed."""
        for done in list(self._hashed.values()):
            await done.wait()

    async def _hash_file(
        self, source: Source, path: Path, family: str, scope: anyio.CancelScope, done: anyio.Event | None = None
    ) -> None:
        with scope:
            try:
                summary = await hash_in_background(lambda on_read: summarize_path(path, family, on_read))
            except TruncatedError as exc:
                raise SourceError(f"{source} {path} is truncated: {exc}") from None
            except NotFastqError as exc:
                self._failures[source] = f"{source} {path} does not decode as FASTQ: {exc}"
            except OSError as exc:
                self._failures[source] = f"{source} {path} could not be read to verify it: {exc.strerror or exc}"
            else:
                self._summaries[source] = summary
            if done is not None:
                done.set()

    def _finish_streams(self) -> None:
        """Each stream's summary; SourceError for one cut short."""
        for source, summer in self._streams.items():
            if source in self._summaries or source in self._failures:
                continue
            try:
                self._summaries[source] = summer.finish()
            except TruncatedError as exc:
                raise SourceError(f"{source} (a stream) is truncated: {exc}") from None
            except NotFastqError as exc:
                self._failures[source] = f"{source} (a stream) does not decode as FASTQ: {exc}"

    async def compare(self, metadata: ReadSetMetadata, sources: tuple[Source, ...]) -> Verification:
        """The outcome, once the read set is ACTIVE and every source has been hashed (``start`` was awaited)."""
        etag = metadata.etag
        if not self.applies:
            return Verification(
                verified=False,
                reason=f"{metadata.file_type or 'this file type'}: the service's ETag hashes the aligned records "
                "as SAM, which is not computed here",
                algorithm=etag.algorithm if etag else None,
                remote={s.value: d for s, d in etag.sources.items()} if etag else {},
            )
        self._finish_streams()
        if self._failures:  # what the sources hold decides before what the store reports
            return Verification(verified=False, reason="; ".join(self._failures.values()), failed=True)
        if etag is None:  # nothing to compare with
            return Verification(verified=False, reason="the store reported no ETag")
        family = ALGORITHMS.get(etag.algorithm)
        if family is None:
            return Verification(
                verified=False, reason=f"the store's ETag algorithm {etag.algorithm} is not a FASTQ one"
            )
        if family != self.family:
            await self._rehash(family)
        local = {s.value: self._summaries[s].digest for s in sources if s in self._summaries}
        remote = {s.value: etag.sources.get(s, "") for s in sources}
        reads = sum(self._summaries[s].reads for s in sources if s in self._summaries)
        bases = sum(self._summaries[s].bases for s in sources if s in self._summaries)
        outcome = Verification(
            verified=False,
            algorithm=etag.algorithm,
            local=local,
            remote=remote,
            reads=reads,
            bases=bases,
            remote_reads=metadata.reads,
            remote_bases=metadata.bases,
        )
        if len(local) != len(sources):
            return outcome.with_reason(f"the store uses {family} and a stream cannot be hashed twice")
        mismatches = [
            f"{name}: {etag.algorithm} of the upload is {local[name]}, the store reports {remote[name] or 'none'}"
            for name in local
            if local[name] != remote[name]
        ]
        if metadata.reads is not None and metadata.reads != reads:
            mismatches.append(f"{reads:,} reads uploaded, the store counts {metadata.reads:,}")
        if metadata.bases is not None and metadata.bases != bases:
            mismatches.append(f"{bases:,} bases uploaded, the store counts {metadata.bases:,}")
        if mismatches:
            return outcome.with_reason("; ".join(mismatches), failed=True)
        return outcome.with_reason(None, verified=True)

    async def _rehash(self, family: str) -> None:
        """The store reports another family than was assumed: hash the files again with it."""
        log.info("the store's ETags are %s, not %s: hashing the files again", family, self.family)
        self.family = family
        async with anyio.create_task_group() as group:
            for source, path in self._files.items():
                group.start_soon(self._hash_file, source, path, family, anyio.CancelScope())
