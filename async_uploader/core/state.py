"""One upload as a state machine: its phases, the transitions between them, and everything it knows.

The async shell (``engine.upload``) only awaits requests and feeds their outcomes in here; every decision about
what the upload is, what is missing and whether it may complete is a plain function of this state.

The phases and the events that move between them, as one table (``TRANSITIONS``)::

    STARTING   --CREATE-->    CREATING     no upload yet: Create one
    STARTING   --RESUME-->    RESUMING     the checkpoint names an upload: reconcile with the store's parts
    STARTING   --FINISHED-->  VERIFYING    the checkpoint already records Complete's read set
    CREATING   --CREATED-->   UPLOADING    Create answered with an upload id
    RESUMING   --RECONCILED-> UPLOADING    the parts still on the store are known; the rest are missing
    RESUMING   --ADOPTED-->   VERIFYING    the upload is gone because Complete succeeded before an interruption
    UPLOADING  --ALL_SENT-->  COMPLETING   every planned part is acknowledged (and recorded)
    COMPLETING --COMPLETED--> VERIFYING    Complete answered with the read set id
    VERIFYING  --ACTIVE-->    DONE         the store reports the read set ACTIVE (or the caller does not wait)
    any phase not ended --FAIL--> FAILED,  --STOP--> INTERRUPTED

Acknowledged parts are held once, here (``acked``); counts, bytes and the statistics snapshot derive from them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from .checkpoint import PartRecord
from .config import Source
from .plan import Part, Plan
from .protocol import ListedPart
from .retry import Verdict
from .stats import UploadResult, UploadStatistics

__all__ = [
    "ENDED",
    "TRANSITIONS",
    "Event",
    "Phase",
    "StateError",
    "UploadState",
    "abort_on_failure",
    "match_adoption",
    "reconcile",
]


class Phase(enum.StrEnum):
    STARTING = "starting"
    CREATING = "creating"
    RESUMING = "resuming"
    UPLOADING = "uploading"
    COMPLETING = "completing"
    VERIFYING = "verifying"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class Event(enum.Enum):
    CREATE = "create"
    RESUME = "resume"
    FINISHED = "finished"
    CREATED = "created"
    RECONCILED = "reconciled"
    ADOPTED = "adopted"
    ALL_SENT = "all_sent"
    COMPLETED = "completed"
    ACTIVE = "active"
    FAIL = "fail"
    STOP = "stop"


ENDED = frozenset({Phase.DONE, Phase.FAILED, Phase.INTERRUPTED})

TRANSITIONS: Mapping[Phase, Mapping[Event, Phase]] = {
    Phase.STARTING: {Event.CREATE: Phase.CREATING, Event.RESUME: Phase.RESUMING, Event.FINISHED: Phase.VERIFYING},
    Phase.CREATING: {Event.CREATED: Phase.UPLOADING},
    Phase.RESUMING: {Event.RECONCILED: Phase.UPLOADING, Event.ADOPTED: Phase.VERIFYING},
    Phase.UPLOADING: {Event.ALL_SENT: Phase.COMPLETING},
    Phase.COMPLETING: {Event.COMPLETED: Phase.VERIFYING},
    Phase.VERIFYING: {Event.ACTIVE: Phase.DONE},
    Phase.DONE: {},
    Phase.FAILED: {},
    Phase.INTERRUPTED: {},
}
_FROM_ANY_LIVE = {Event.FAIL: Phase.FAILED, Event.STOP: Phase.INTERRUPTED}


class StateError(RuntimeError):
    """An event arrived in a phase that has no transition for it: a bug in the shell, never the user's input."""


@dataclass(frozen=True, slots=True)
class _Totals:
    bytes: int | None = None
    parts: int | None = None


class UploadState:
    """Everything one upload knows: its phase, ids, planned totals, acknowledged parts and activity counters.

    ``on_phase`` is told of every phase entered (the shell turns it into a ``state`` event).
    """

    def __init__(
        self, sources: Sequence[Source], *, started: float, on_phase: Callable[[Phase], None] | None = None
    ) -> None:
        self.sources = tuple(sources)
        self.started = started
        self.phase = Phase.STARTING
        self._on_phase = on_phase
        self.upload_id: str | None = None
        self.read_set_id: str | None = None
        self.status: str | None = None
        self._totals = {source: _Totals() for source in self.sources}
        self._acked: dict[tuple[Source, int], PartRecord] = {}
        self._done_parts = dict.fromkeys(self.sources, 0)
        self._done_bytes = dict.fromkeys(self.sources, 0)
        self._sent = dict.fromkeys(self.sources, 0)
        self._in_flight = dict.fromkeys(self.sources, 0)
        self.retries = 0
        self.throttles = 0
        self.resumed_parts = 0

    # -- transitions --------------------------------------------------------------------------------------------

    def fire(self, event: Event) -> Phase:
        """Move to the phase the table names for ``event``; StateError when it names none."""
        following = TRANSITIONS[self.phase].get(event)
        if following is None and self.phase not in ENDED:
            following = _FROM_ANY_LIVE.get(event)
        if following is None:
            raise StateError(f"internal error: event {event.value} in phase {self.phase.value}")
        self.phase = following
        if self._on_phase is not None:
            self._on_phase(following)
        return following

    def created(self, upload_id: str) -> None:
        self.upload_id = upload_id
        self.fire(Event.CREATED)

    def reconciled(self, kept: Mapping[tuple[Source, int], PartRecord]) -> None:
        """Resume with the parts the store still holds (``reconcile``); the others are missing."""
        self._replace_acked(kept)
        self.fire(Event.RECONCILED)

    def finished(self, read_set_id: str, recorded: Mapping[tuple[Source, int], PartRecord], *, adopted: bool) -> None:
        """A run before this one completed the upload: every recorded part counts as done and resumed."""
        self._replace_acked(recorded)
        self.read_set_id = read_set_id
        self.fire(Event.ADOPTED if adopted else Event.FINISHED)

    def completed(self, read_set_id: str) -> None:
        self.read_set_id = read_set_id
        self.fire(Event.COMPLETED)

    def active(self, status: str) -> None:
        self.status = status
        self.fire(Event.ACTIVE)

    # -- what is planned ---------------------------------------------------------------------------------------

    def plan(self, plan: Plan) -> None:
        for source in plan.sizes:
            self.set_totals(source, plan.sizes[source], plan.part_count(source))

    def set_totals(self, source: Source, size: int, parts: int) -> None:
        """A source's size and part count: from the plan for files, at its end for a stream."""
        self._totals[source] = _Totals(size, parts)

    def total_parts(self, source: Source) -> int | None:
        return self._totals[source].parts

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
        key = (record.source, record.number)
        old = self._acked.get(key)
        if old is not None:
            self._done_parts[record.source] -= 1
            self._done_bytes[record.source] -= old.length
        self._acked[key] = record
        self._done_parts[record.source] += 1
        self._done_bytes[record.source] += record.length

    def forget(self, keys: Iterable[tuple[Source, int]]) -> None:
        """Count these parts as missing again (their source changed: they are sent again)."""
        for key in keys:
            record = self._acked.pop(key, None)
            if record is not None:
                self._done_parts[record.source] -= 1
                self._done_bytes[record.source] -= record.length
                self._sent[record.source] -= record.length

    def _replace_acked(self, records: Mapping[tuple[Source, int], PartRecord]) -> None:
        self._acked = {}
        self._done_parts = dict.fromkeys(self.sources, 0)
        self._done_bytes = dict.fromkeys(self.sources, 0)
        for record in records.values():
            if record.source in self._totals:
                self.acknowledge(record)
        for source in self.sources:
            self._sent[source] = self._done_bytes[source]
        self.resumed_parts = len(self._acked)

    def missing(self, plan: Plan) -> Iterator[Part]:
        """The planned parts not yet acknowledged, both sources interleaved."""
        return plan.parts(done=self._acked)

    def parts_for_complete(self) -> list[PartRecord]:
        """Every part, sorted as Complete lists them; StateError unless every planned part is acknowledged."""
        for source, totals in self._totals.items():
            if totals.parts is None or self._done_parts[source] != totals.parts:
                raise StateError(
                    f"internal error: {self._done_parts[source]} of {totals.parts} parts of {source} acknowledged"
                )
        return sorted(self._acked.values(), key=lambda r: (r.source.value, r.number))

    # -- activity -------------------------------------------------------------------------------------------------

    def sending(self, source: Source, change: int) -> None:
        """A part of ``source`` started (+1) or stopped (-1) being sent."""
        self._in_flight[source] += change

    def sent(self, source: Source, nbytes: int) -> None:
        """Bytes handed to a connection (negative when an attempt is rewound before a retry)."""
        self._sent[source] += nbytes

    def retried(self, verdict: Verdict) -> None:
        self.retries += 1
        self.throttles += verdict is Verdict.THROTTLE

    # -- what it reports ----------------------------------------------------------------------------------------

    def statistics(self, now: float, rate_limit: float | None) -> UploadStatistics:
        return UploadStatistics(
            state=self.phase.value,
            bytes_done=dict(self._done_bytes),
            bytes_sent=dict(self._sent),
            bytes_total={s: t.bytes for s, t in self._totals.items()},
            parts_done=dict(self._done_parts),
            parts_total={s: t.parts for s, t in self._totals.items()},
            parts_in_flight=dict(self._in_flight),
            retries=self.retries,
            throttles=self.throttles,
            rate_limit=rate_limit,
            elapsed=max(0.0, now - self.started),
            resumed_parts=self.resumed_parts,
        )

    def result(self, *, store_id: str, now: float, checkpoint: Path | None) -> UploadResult:
        if self.read_set_id is None or self.status is None:
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
        )


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
