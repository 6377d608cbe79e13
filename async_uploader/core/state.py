"""One upload as a state machine: its phases, the transitions between them, what it knows, and what to do next.

The async shell (``engine.upload``) asks ``next_action()``, performs that one action (a request, a re-read, a
journal write, a wait) and feeds the outcome back through one of the methods below; every decision (create or
resume, adopt, re-read, send again, complete, wait, verify, stop, abort) is taken here, by plain code that tests
walk without an event loop.

The phases and the events that move between them, as one table (``TRANSITIONS``)::

    STARTING   --CREATE-->    CREATING     no upload yet: Create one
    STARTING   --RESUME-->    RESUMING     the checkpoint names an upload: list what the store holds of it
    STARTING   --FINISHED-->  WAITING      the checkpoint records Complete's read set, for these very files
    STARTING   --SUSPECT-->   CHECKING     ... for files that may have changed since: read every part again first
    CREATING   --CREATED-->   UPLOADING    Create answered with an upload id
    CREATING   --EXISTS-->    DONE         the store holds a read set of these very files already: not sent again
    RESUMING   --RECONCILED-> UPLOADING    the parts still on the store (and still in the files) are kept
    RESUMING   --GONE-->      FINDING      the upload is gone, every part was acknowledged: Complete may have run
    FINDING    --FOUND-->     WAITING      the read set that upload made is found
    FINDING    --SUSPECT-->   CHECKING     ... for files that may have changed since: read every part again first
    CHECKING   --CHECKED-->   WAITING      every part reads back as it was sent
    UPLOADING  --ALL_SENT-->  CONFIRMING   every planned part is acknowledged (and recorded)
    CONFIRMING --CHANGED-->   UPLOADING    a source changed while it was read: its changed parts are sent again
    CONFIRMING --CONFIRMED--> COMPLETING   no source changed: the parts are the files' bytes
    COMPLETING --COMPLETED--> WAITING      Complete answered with the read set id
    COMPLETING --LOST-->      FINDING      Complete found no upload: an earlier try may have completed it
    WAITING    --ACTIVE-->    VERIFYING    the store has processed the read set; its ETag is compared
    WAITING    --SETTLED-->   DONE         ACTIVE with nothing to verify, or not waited for (any longer)
    VERIFYING  --VERIFIED-->  DONE         the ETag and counts are the files'
    any phase not ended --FAIL--> FAILED,  --STOP--> INTERRUPTED

Acknowledged parts are held once, here (``acked``); the counts and bytes done derive from them.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import NoReturn

from .checkpoint import PartRecord, SourceFingerprint
from .config import Source
from .errors import (
    AlreadyInStoreError,
    CheckpointMismatchError,
    ReadSetGoneError,
    ResourceNotFoundError,
    SourceError,
    StillProcessingError,
    UploadFailedError,
    VerificationError,
)
from .plan import Part, Plan
from .protocol import ListedPart, ReadSetMetadata
from .retry import Verdict
from .stats import Timings, UploadResult, UploadStatistics, Verification

__all__ = [
    "CONFIRM_ROUNDS",
    "ENDED",
    "TRANSITIONS",
    "Action",
    "Event",
    "Phase",
    "Prepared",
    "StateError",
    "UploadState",
    "abort_on_failure",
    "match_adoption",
    "reconcile",
]

CONFIRM_ROUNDS = 3
"""How many times a source that changes while it is uploaded has its changed parts sent again before giving up."""
FIRST_POLL = 0.1
LAST_POLL = 1.0
"""The pause between two looks at a read set the store is processing: doubling from the first to the last, then
steady, so the store's time is seen within a second (GetReadSetMetadata's quota is 5 a second per account, shared
through the limiter by everything in the process)."""


class Phase(enum.StrEnum):
    STARTING = "starting"
    CREATING = "creating"
    RESUMING = "resuming"
    FINDING = "finding"
    CHECKING = "checking"
    UPLOADING = "uploading"
    CONFIRMING = "confirming"
    COMPLETING = "completing"
    WAITING = "waiting"
    VERIFYING = "verifying"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class Event(enum.Enum):
    CREATE = "create"
    RESUME = "resume"
    FINISHED = "finished"
    SUSPECT = "suspect"
    CREATED = "created"
    EXISTS = "exists"
    RECONCILED = "reconciled"
    GONE = "gone"
    FOUND = "found"
    CHECKED = "checked"
    ALL_SENT = "all_sent"
    CHANGED = "changed"
    CONFIRMED = "confirmed"
    COMPLETED = "completed"
    LOST = "lost"
    ACTIVE = "active"
    SETTLED = "settled"
    VERIFIED = "verified"
    FAIL = "fail"
    STOP = "stop"


class Action(enum.Enum):
    """What the shell does next; each is one await, its outcome fed back to the state."""

    PREPARE = "prepare"  # open the sources, plan, lock and read the checkpoint: ``prepared``
    FIND_EXISTING = "find_existing"  # ListReadSets for a read set of these files: ``existing``
    CREATE = "create"  # CreateMultipartReadSetUpload: ``created``
    LIST_PARTS = "list_parts"  # ListReadSetUploadParts for every source: ``listed`` or ``upload_gone``
    REREAD = "reread"  # read ``reread_request()`` again from the files: ``reread``
    SEND = "send"  # send every ``missing`` part: ``acknowledge`` each, then ``all_sent``
    CHECK_SOURCES = "check_sources"  # identify every file source again: ``sources_checked``
    COMPLETE = "complete"  # CompleteMultipartReadSetUpload: ``completed`` or ``complete_lost``
    FIND_COMPLETED = "find_completed"  # ListReadSets + GetReadSetMetadata: ``found``
    RECORD_COMPLETE = "record_complete"  # the read set id into the checkpoint and a receipt: ``recorded``
    WAIT = "wait"  # pause ``poll_delay`` seconds, then GetReadSetMetadata: ``polled``
    VERIFY = "verify"  # compare the ETag and counts with the local hash: ``verified``
    ABORT = "abort"  # AbortMultipartReadSetUpload of an upload nothing will resume: ``aborted``
    END = "end"  # nothing left: the upload is done, failed or interrupted


ENDED = frozenset({Phase.DONE, Phase.FAILED, Phase.INTERRUPTED})

TRANSITIONS: Mapping[Phase, Mapping[Event, Phase]] = {
    Phase.STARTING: {
        Event.CREATE: Phase.CREATING,
        Event.RESUME: Phase.RESUMING,
        Event.FINISHED: Phase.WAITING,
        Event.SUSPECT: Phase.CHECKING,
    },
    Phase.CREATING: {Event.CREATED: Phase.UPLOADING, Event.EXISTS: Phase.DONE},
    Phase.RESUMING: {Event.RECONCILED: Phase.UPLOADING, Event.GONE: Phase.FINDING},
    Phase.FINDING: {Event.FOUND: Phase.WAITING, Event.SUSPECT: Phase.CHECKING},
    Phase.CHECKING: {Event.CHECKED: Phase.WAITING},
    Phase.UPLOADING: {Event.ALL_SENT: Phase.CONFIRMING},
    Phase.CONFIRMING: {Event.CHANGED: Phase.UPLOADING, Event.CONFIRMED: Phase.COMPLETING},
    Phase.COMPLETING: {Event.COMPLETED: Phase.WAITING, Event.LOST: Phase.FINDING},
    Phase.WAITING: {Event.ACTIVE: Phase.VERIFYING, Event.SETTLED: Phase.DONE},
    Phase.VERIFYING: {Event.VERIFIED: Phase.DONE},
    Phase.DONE: {},
    Phase.FAILED: {},
    Phase.INTERRUPTED: {},
}
_FROM_ANY_LIVE = {Event.FAIL: Phase.FAILED, Event.STOP: Phase.INTERRUPTED}

_ACTIONS: Mapping[Phase, Action] = {
    Phase.STARTING: Action.PREPARE,
    Phase.CREATING: Action.CREATE,
    Phase.FINDING: Action.FIND_COMPLETED,
    Phase.CHECKING: Action.REREAD,
    Phase.UPLOADING: Action.SEND,
    Phase.COMPLETING: Action.COMPLETE,
    Phase.VERIFYING: Action.VERIFY,
}


class StateError(RuntimeError):
    """An event arrived in a phase that has no transition for it: a bug in the shell, never the user's input."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """What the local checks found before any request: the plan, the files' identities, and the checkpoint.

    ``recorded_upload`` / ``recorded_read_set`` / ``recorded_parts`` come from a checkpoint that resumes this
    upload; ``suspect`` names the sources whose recorded parts must be read again before they are trusted;
    ``resumable`` says a checkpoint keeps the upload (and every source can be read again).
    """

    plan: Plan
    identities: Mapping[Source, SourceFingerprint]
    resumable: bool
    checkpoint: str | None = None
    recorded_upload: str | None = None
    recorded_read_set: str | None = None
    recorded_parts: Mapping[tuple[Source, int], PartRecord] = field(default_factory=dict)
    suspect: frozenset[Source] = frozenset()
    restart: bool = False  # --restart: a new upload, whatever the store holds


@dataclass(frozen=True, slots=True)
class _Totals:
    bytes: int | None = None
    parts: int | None = None


class UploadState:
    """Everything one upload knows, and what it does next.

    ``wait`` and ``verify`` say whether the upload waits for the read set to be ACTIVE and compares its ETag;
    ``wait_timeout`` is the longest that wait lasts; ``keep_on_failure`` the caller's abort policy
    (``abort_on_failure``). ``on_phase`` is told of every phase entered (the shell turns it into a ``state`` event).
    """

    def __init__(
        self,
        sources: Sequence[Source],
        *,
        started: float,
        on_phase: Callable[[Phase], None] | None = None,
        wait: bool = True,
        verify: bool = False,
        wait_timeout: float = 600.0,
        keep_on_failure: bool | None = None,
        if_exists: str = "upload",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sources = tuple(sources)
        self.started = started
        self._clock = clock
        self._since = started
        self._spent = dict.fromkeys(Phase, 0.0)
        self._first_send: float | None = None
        self._last_ack: float | None = None
        self._transferred = 0
        self.phase = Phase.STARTING
        self._on_phase = on_phase
        self.wait = wait
        self.verify = verify and wait
        self.wait_timeout = wait_timeout
        self.keep_on_failure = keep_on_failure
        self.if_exists = if_exists
        self._look_for_existing = False
        self.existing = False
        self.upload_id: str | None = None
        self.read_set_id: str | None = None
        self.status: str | None = None
        self.metadata: ReadSetMetadata | None = None
        self.verification: Verification | None = None
        self.planned: Plan | None = None
        self.identities: dict[Source, SourceFingerprint] = {}
        self.resumable = False
        self.checkpoint: str | None = None
        self._totals = {source: _Totals() for source in self.sources}
        self._acked: dict[tuple[Source, int], PartRecord] = {}
        self._sent = dict.fromkeys(self.sources, 0)
        self._in_flight = dict.fromkeys(self.sources, 0)
        self.retries = 0
        self.throttles = 0
        self.resumed_parts = 0
        self._recorded: Mapping[tuple[Source, int], PartRecord] = {}
        self._recorded_read_set: str | None = None
        self._listed: dict[tuple[Source, int], PartRecord] | None = None
        self._gone: ResourceNotFoundError | None = None
        self._lost_at_complete = False
        self._reread: frozenset[Source] = frozenset()
        self._rounds = 0
        self._read_set_recorded = True
        self._wait_until: float | None = None
        self.poll_delay = 0.0  # the pause before the next look at the read set's status
        self.stopping = False
        self.at_once = False
        self.aborted: bool | None = None

    # -- what next ----------------------------------------------------------------------------------------------

    def next_action(self) -> Action:
        """The one thing to do now. A stop asked for since the last action is applied here: no new work starts."""
        if self.stopping and self.phase not in ENDED:
            self.fire(Event.STOP)
        if self.phase in ENDED:
            return Action.ABORT if self._abort_wanted() else Action.END
        if self.phase is Phase.RESUMING:
            return Action.LIST_PARTS if self._listed is None else Action.REREAD
        if self.phase is Phase.CONFIRMING:
            return Action.REREAD if self._reread else Action.CHECK_SOURCES
        if self.phase is Phase.WAITING:
            return Action.WAIT if self._read_set_recorded else Action.RECORD_COMPLETE
        if self.phase is Phase.CREATING and self._look_for_existing:
            return Action.FIND_EXISTING
        return _ACTIONS[self.phase]

    def stop(self, *, at_once: bool = False) -> None:
        """Start nothing new; ``at_once``: nor wait for an Abort."""
        self.stopping = True
        self.at_once = self.at_once or at_once

    def failed(self, *, cancelled: bool) -> None:
        """The action in progress raised (or was cancelled): the upload ends failed (or interrupted)."""
        if self.phase not in ENDED:
            self.fire(Event.STOP if cancelled else Event.FAIL)

    def _abort_wanted(self) -> bool:
        if self.aborted is not None or self.phase is Phase.DONE:
            return False
        if self.upload_id is None or self.read_set_id is not None:
            return False
        return abort_on_failure(self.keep_on_failure, resumable=self.resumable)

    def abort_done(self, ok: bool) -> None:
        """The Abort asked for by ``next_action`` is over (``ok``: the upload is gone)."""
        self.aborted = ok

    # -- transitions --------------------------------------------------------------------------------------------

    def fire(self, event: Event) -> Phase:
        """Move to the phase the table names for ``event``; StateError when it names none."""
        following = TRANSITIONS[self.phase].get(event)
        if following is None and self.phase not in ENDED:
            following = _FROM_ANY_LIVE.get(event)
        if following is None:
            raise StateError(f"internal error: event {event.value} in phase {self.phase.value}")
        now = self._clock()
        self._spent[self.phase] += max(0.0, now - self._since)
        self._since = now
        self.phase = following
        if self._on_phase is not None:
            self._on_phase(following)
        return following

    def prepared(self, prepared: Prepared) -> None:
        """The local checks passed: create, resume, or wait for the read set the checkpoint records."""
        self.plan(prepared.plan)
        self.identities = dict(prepared.identities)
        self.resumable = prepared.resumable
        self.checkpoint = prepared.checkpoint
        self._recorded = prepared.recorded_parts
        self._reread = prepared.suspect
        if prepared.recorded_read_set is not None:
            self._recorded_read_set = prepared.recorded_read_set
            self._found(prepared.recorded_read_set, recorded=True)
        elif prepared.recorded_upload is not None:
            self.upload_id = prepared.recorded_upload
            self.fire(Event.RESUME)
        else:
            self._look_for_existing = self.if_exists != "upload" and not prepared.plan.streams and not prepared.restart
            self.fire(Event.CREATE)

    def existing_found(self, read_set_id: str | None, status: str | None, verification: Verification | None) -> None:
        """What the store holds already: a read set of the same name, subject, sample, type and sizes whose ETag
        is the files' hash (``verification``: verified, or not computable), or None (upload them)."""
        self._look_for_existing = False
        if read_set_id is None:
            return
        if self.if_exists == "fail":
            raise AlreadyInStoreError(
                f"the store already holds these files as read set {read_set_id} (--if-exists fail)",
                read_set_id=read_set_id,
            )
        self.read_set_id, self.status, self.verification = read_set_id, status, verification
        self.existing = True
        self.fire(Event.EXISTS)

    def created(self, upload_id: str) -> None:
        self.upload_id = upload_id
        self.fire(Event.CREATED)

    def listed(self, listed: Iterable[ListedPart]) -> None:
        """What the store holds of the upload: the recorded parts it holds as recorded are kept; unless a source is
        suspect, the upload goes on with them."""
        self._listed = reconcile(self._recorded, listed)
        if not self._reread:
            self._reconciled(self._listed)

    def upload_gone(self, error: ResourceNotFoundError) -> None:
        """The checkpoint's upload is no longer on the store. Complete may have made a read set of it before an
        interruption: worth looking for only when every planned part was acknowledged."""
        if len(self._recorded) != self.total_planned():
            raise ResourceNotFoundError(
                f"upload {self.upload_id} is no longer on the store (aborted or expired); "
                "run again with --restart to start a new upload",
                status=error.status,
                operation=error.operation,
            )
        self._gone = error
        self._replace_acked(self._recorded)
        self.fire(Event.GONE)

    def reread_request(self) -> tuple[frozenset[Source], list[PartRecord]]:
        """The sources to read again and their parts to compare, for ``Action.REREAD``."""
        if self.phase is Phase.RESUMING:
            kept = self._listed or {}
            return self._reread, [r for r in kept.values() if r.source in self._reread]
        return self._reread, [r for r in self._acked.values() if r.source in self._reread]

    def reread(self, changed: Iterable[tuple[Source, int]]) -> None:
        """The recorded parts that no longer hold what was sent: sent again, or proof of other files."""
        changed = set(changed)
        suspects, self._reread = self._reread, frozenset()
        if self.phase is Phase.RESUMING:
            kept = {key: record for key, record in (self._listed or {}).items() if key not in changed}
            self._reconciled(kept)
        elif self.phase is Phase.CHECKING:
            if changed or len(self._acked) != self.total_planned():
                raise CheckpointMismatchError(
                    f"{self.checkpoint} records read set {self.read_set_id}, made from other bytes than these files "
                    f"hold now ({len(changed)} part(s) differ); run again with --restart to upload them as a new "
                    "read set"
                )
            self.fire(Event.CHECKED)
            self._settle_unless_waiting()
        elif self.phase is Phase.CONFIRMING:
            self.forget(changed)
            self._rounds += 1
            self.fire(Event.CHANGED)
        else:
            raise StateError(f"internal error: re-read of {sorted(suspects)} in phase {self.phase.value}")

    def all_sent(self) -> None:
        self.fire(Event.ALL_SENT)

    def sources_checked(self, now: Mapping[Source, SourceFingerprint]) -> frozenset[Source]:
        """Before Complete: the sources identified again. The moved ones (any observable change) are returned and
        read again; one whose size changed, or that cannot be read again, ends the upload with a SourceError."""
        moved = frozenset(s for s, p in now.items() if not p.same_file(self.identities[s]))
        if not moved:
            self.fire(Event.CONFIRMED)
            return moved
        what = ", ".join(f"{s} {now[s].path}" for s in sorted(moved))
        for source in sorted(moved):
            old, new = self.identities[source], now[source]
            if old.size != new.size:
                raise SourceError(
                    f"{source} {new.path} changed size while it was uploaded ({old.size:,} → {new.size:,} bytes); "
                    "run again with --restart to upload it as it is now"
                )
        if not self.resumable:
            raise SourceError(f"{what} changed while it was uploaded; run again to upload it as it is now")
        if self._rounds >= CONFIRM_ROUNDS:
            raise SourceError(f"{what} keeps changing while it is uploaded; run again once nothing writes to it")
        self.identities.update(now)
        self._reread = moved
        return moved

    def completed(self, read_set_id: str) -> None:
        self.read_set_id = read_set_id
        self._read_set_recorded = False
        self.fire(Event.COMPLETED)
        self._settle_unless_waiting()

    def complete_lost(self, error: ResourceNotFoundError) -> None:
        self._gone, self._lost_at_complete = error, True
        self.fire(Event.LOST)

    def found(self, read_set_id: str | None) -> None:
        """The read set a vanished upload made (None: none, or more than one could be it)."""
        if read_set_id is not None:
            self._found(read_set_id, recorded=False)
            return
        gone = self._gone
        status, operation = (gone.status, gone.operation) if gone is not None else (404, "")
        if self._lost_at_complete:
            raise ResourceNotFoundError(
                f"upload {self.upload_id} is no longer on the store and no read set made from it was found "
                "(aborted or expired before Complete); run again with --restart to start a new upload",
                status=status,
                operation=operation,
            )
        raise ResourceNotFoundError(
            f"upload {self.upload_id} is no longer on the store (aborted or expired); "
            "run again with --restart to start a new upload",
            status=status,
            operation=operation,
        )

    def _found(self, read_set_id: str, *, recorded: bool) -> None:
        if self.phase is Phase.STARTING:
            self._replace_acked(self._recorded)
        self.read_set_id = read_set_id
        self._read_set_recorded = recorded
        if self._reread:
            self.fire(Event.SUSPECT)
            return
        self.fire(Event.FOUND if self.phase is Phase.FINDING else Event.FINISHED)
        self._settle_unless_waiting()

    def recorded(self) -> None:
        """The read set id is recorded: in the checkpoint (if one is kept) and in the upload's receipt."""
        self._read_set_recorded = True
        self._settle_unless_waiting()

    def _settle_unless_waiting(self) -> None:
        """In WAITING, once the read set is recorded: done at once when the caller does not wait for ACTIVE."""
        if self.phase is Phase.WAITING and self._read_set_recorded and not self.wait:
            self.status = "PROCESSING_UPLOAD"
            self.fire(Event.SETTLED)

    def polled(self, metadata: ReadSetMetadata, now: float) -> None:
        """The read set's metadata at ``now``: ACTIVE moves on, UPLOAD_FAILED fails, anything else is looked at
        again after ``poll_delay`` seconds, until ``wait_timeout`` has passed since the first look."""
        self.metadata = metadata
        self.status = metadata.status
        if self._wait_until is None:
            self._wait_until = now + self.wait_timeout
        if metadata.status == "ACTIVE":
            self.fire(Event.ACTIVE if self.verify else Event.SETTLED)
        elif metadata.status == "UPLOAD_FAILED":
            reason = metadata.status_message or "no reason given"
            raise UploadFailedError(f"the store rejected read set {metadata.id}: {reason}")
        elif now >= self._wait_until:
            raise StillProcessingError(
                f"read set {metadata.id} is still {metadata.status} after {_duration(self.wait_timeout)} "
                "(--wait-timeout); run the same command again to go on waiting (nothing is sent again)",
                read_set_id=metadata.id,
            )
        else:
            self.poll_delay = min(LAST_POLL, max(FIRST_POLL, self.poll_delay * 2))

    def check_unchanged_since_complete(self, now: Mapping[Source, SourceFingerprint | None]) -> None:
        """A verification that failed proves a difference only if the files still are what Complete sent:
        SourceError (the read set holds the files as they were then) when one has changed since."""
        moved = sorted(s for s, p in now.items() if p is not None and not p.same_file(self.identities[s]))
        if moved:
            what = ", ".join(f"{s} {self.identities[s].path}" for s in moved)
            raise SourceError(
                f"{what} changed after Complete made read set {self.read_set_id}, before it was hashed: the read set "
                "holds the file as it was then, which can no longer be verified"
            )

    def read_set_gone(self, error: ResourceNotFoundError) -> NoReturn:
        """GetReadSetMetadata answered 404: the read set was deleted (or the store made anew) since it was made."""
        where = f"the checkpoint {self.checkpoint}" if self._recorded_read_set else "Complete"
        raise ReadSetGoneError(
            f"read set {self.read_set_id}, made by {where}, is no longer in the store (deleted, or the store was "
            "made anew); run again with --restart to upload the files as a new read set",
            status=error.status,
            operation=error.operation,
        ) from error

    def verified(self, verification: Verification) -> None:
        self.verification = verification
        if verification.failed:
            raise VerificationError(
                f"read set {self.read_set_id} (kept, for the record) failed verification: {verification.reason}",
                read_set_id=self.read_set_id or "",
            )
        self.fire(Event.VERIFIED)

    # -- what is planned ---------------------------------------------------------------------------------------

    def plan(self, plan: Plan) -> None:
        self.planned = plan
        for source in plan.sizes:
            self.set_totals(source, plan.sizes[source], plan.part_count(source))

    def set_totals(self, source: Source, size: int, parts: int) -> None:
        """A source's size and part count: from the plan for files, at its end for a stream."""
        self._totals[source] = _Totals(size, parts)

    def total_parts(self, source: Source) -> int | None:
        return self._totals[source].parts

    def total_planned(self) -> int:
        """Every part of every source, as far as known now (a stream counts once it has ended)."""
        return sum(t.parts or 0 for t in self._totals.values())

    def shape(self) -> dict[str, tuple[int | None, int | None]]:
        """``{"source1": (bytes, parts), ...}``: what a completed read set of these sources must report."""
        return {f"source{int(s.value[-1])}": (t.bytes, t.parts) for s, t in self._totals.items()}

    # -- acknowledgements ---------------------------------------------------------------------------------------

    @property
    def acked(self) -> Mapping[tuple[Source, int], PartRecord]:
        """Every acknowledged part, by (source, number): read-only, changed through ``acknowledge``."""
        return MappingProxyType(self._acked)

    def acknowledge(self, record: PartRecord) -> None:
        """The store acknowledged a part and the checkpoint (if any) recorded it."""
        self._acked[(record.source, record.number)] = record
        self._last_ack = self._clock()
        self._transferred += record.length

    def forget(self, keys: Iterable[tuple[Source, int]]) -> None:
        """Count these parts as missing again (their source changed: they are sent again)."""
        for key in keys:
            record = self._acked.pop(key, None)
            if record is not None:
                self._sent[record.source] -= record.length

    def _reconciled(self, kept: Mapping[tuple[Source, int], PartRecord]) -> None:
        self._replace_acked(kept)
        self.fire(Event.RECONCILED)

    def _replace_acked(self, records: Mapping[tuple[Source, int], PartRecord]) -> None:
        self._acked = {key: record for key, record in records.items() if record.source in self._totals}
        done = self._done()
        for source in self.sources:
            self._sent[source] = done[source][1]
        self.resumed_parts = len(self._acked)

    def _done(self) -> dict[Source, tuple[int, int]]:
        """Parts and bytes acknowledged, per source: derived from the acknowledgements each time."""
        done = dict.fromkeys(self.sources, (0, 0))
        for record in self._acked.values():
            parts, nbytes = done[record.source]
            done[record.source] = (parts + 1, nbytes + record.length)
        return done

    def current_plan(self) -> Plan:
        if self.planned is None:
            raise StateError(f"internal error: no plan in phase {self.phase.value}")
        return self.planned

    def missing(self, plan: Plan | None = None) -> Iterator[Part]:
        """The planned parts not yet acknowledged, both sources interleaved."""
        return (plan or self.current_plan()).parts(done=self._acked)

    def parts_for_complete(self) -> list[PartRecord]:
        """Every part, sorted as Complete lists them; StateError unless every planned part is acknowledged."""
        done = self._done()
        for source, totals in self._totals.items():
            if totals.parts is None or done[source][0] != totals.parts:
                raise StateError(f"internal error: {done[source][0]} of {totals.parts} parts of {source} acknowledged")
        return sorted(self._acked.values(), key=lambda r: (r.source.value, r.number))

    # -- activity -------------------------------------------------------------------------------------------------

    def sending(self, source: Source, change: int) -> None:
        """A part of ``source`` started (+1) or stopped (-1) being sent."""
        self._in_flight[source] += change
        if self._first_send is None and change > 0:
            self._first_send = self._clock()

    def sent(self, source: Source, nbytes: int) -> None:
        """Bytes handed to a connection (negative when an attempt is rewound before a retry)."""
        self._sent[source] += nbytes

    def retried(self, verdict: Verdict) -> None:
        self.retries += 1
        self.throttles += verdict is Verdict.THROTTLE

    # -- what it reports ----------------------------------------------------------------------------------------

    def timings(self, now: float | None = None) -> Timings:
        """Seconds in each phase so far (the one in progress counted up to ``now``)."""
        now = self._clock() if now is None else now
        spent = dict(self._spent)
        spent[self.phase] += max(0.0, now - self._since)
        first, last = self._first_send, self._last_ack
        return Timings(
            transfer=max(0.0, last - first) if first is not None and last is not None else 0.0,
            complete=spent[Phase.COMPLETING],
            store=spent[Phase.WAITING],
            verify=spent[Phase.VERIFYING],
            total=max(0.0, now - self.started),
            transferred=self._transferred,
        )

    def statistics(self, now: float, rate_limit: float | None) -> UploadStatistics:
        done = self._done()
        return UploadStatistics(
            state=self.phase.value,
            bytes_done={s: d[1] for s, d in done.items()},
            bytes_sent=dict(self._sent),
            bytes_total={s: t.bytes for s, t in self._totals.items()},
            parts_done={s: d[0] for s, d in done.items()},
            parts_total={s: t.parts for s, t in self._totals.items()},
            parts_in_flight=dict(self._in_flight),
            retries=self.retries,
            throttles=self.throttles,
            rate_limit=rate_limit,
            elapsed=max(0.0, now - self.started),
            resumed_parts=self.resumed_parts,
            phase_elapsed=max(0.0, now - self._since),
            timings=self.timings(now),
        )

    def result(self, *, store_id: str, now: float, checkpoint: Path | None) -> UploadResult:
        if self.read_set_id is None or self.status is None or self.phase is not Phase.DONE:
            raise StateError(f"internal error: no result in phase {self.phase.value}")
        return UploadResult(
            read_set_id=self.read_set_id,
            upload_id=self.upload_id or "",
            store_id=store_id,
            bytes={s: t.bytes or 0 for s, t in self._totals.items()},
            parts={s: t.parts or 0 for s, t in self._totals.items()},
            seconds=max(0.0, now - self.started),
            retries=self.retries,
            throttles=self.throttles,
            resumed_parts=self.resumed_parts,
            checkpoint=checkpoint,
            status=self.status,
            verification=self.verification,
            timings=self.timings(now),
        )


def _duration(seconds: float) -> str:
    """``90 s``, ``30 min``, ``6 h``: a wait timeout as people write it."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


# -- plain functions of what the store and the checkpoint say ------------------------------------------------------


def reconcile(
    recorded: Mapping[tuple[Source, int], PartRecord], listed: Iterable[ListedPart]
) -> dict[tuple[Source, int], PartRecord]:
    """The recorded parts the store still holds with the same checksum and size; every other part is missing."""
    kept: dict[tuple[Source, int], PartRecord] = {}
    for item in listed:
        key = (item.source, item.number)
        record = recorded.get(key)
        if record is not None and record.checksum == item.checksum and record.length == item.size:
            kept[key] = record
    return kept


def match_adoption(
    shape: Mapping[str, tuple[int | None, int | None]],
    candidates: Iterable[tuple[str, Mapping[str, object]]],
) -> str | None:
    """The one candidate read set (id, its metadata ``files``) whose sources have ``shape``; None unless exactly one.

    A read set Complete made before a crash has the same size and part count per source as the upload; any
    other read set with the same name is somebody else's.
    """
    matching = []
    for read_set_id, files in candidates:
        found = {
            name: (info.get("contentLength"), info.get("totalParts"))
            for name, info in files.items()
            if name.startswith("source") and isinstance(info, Mapping)
        }
        if found == dict(shape):
            matching.append(read_set_id)
    return matching[0] if len(matching) == 1 else None


def abort_on_failure(keep_on_failure: bool | None, *, resumable: bool) -> bool:
    """Whether a failed or interrupted upload is aborted: kept open when something can resume it, unless the
    caller said otherwise; aborted when nothing can (a stream, or no checkpoint)."""
    if keep_on_failure is None:
        return not resumable
    return not keep_on_failure
