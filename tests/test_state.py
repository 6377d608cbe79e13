"""The upload's state machine, walked without an event loop: every transition, every refusal, and the plain
functions the async shell calls (what is missing, reconcile, adoption, completeness, abort policy, statistics)."""

from __future__ import annotations

import itertools

import pytest

from async_uploader.core.checkpoint import PartRecord
from async_uploader.core.config import Source
from async_uploader.core.plan import Plan
from async_uploader.core.protocol import ListedPart
from async_uploader.core.retry import Verdict
from async_uploader.core.state import (
    ENDED,
    TRANSITIONS,
    Event,
    Phase,
    StateError,
    UploadState,
    abort_on_failure,
    match_adoption,
    reconcile,
)

S1, S2 = Source.SOURCE1, Source.SOURCE2
PLAN = Plan(10, {S1: 25, S2: 10})  # S1: 10 + 10 + 5, S2: 10


def record(source: Source, number: int, length: int = 10, checksum: str = "c") -> PartRecord:
    return PartRecord(source, number, length, f"{checksum}{source.value}{number}", "d")


def every_part() -> dict[tuple[Source, int], PartRecord]:
    parts = [record(S1, 1), record(S1, 2), record(S1, 3, 5), record(S2, 1)]
    return {(p.source, p.number): p for p in parts}


def state_in(phase: Phase) -> UploadState:
    """A fresh state moved to ``phase`` along the table."""
    state = UploadState([S1, S2], started=0.0)
    path = {
        Phase.STARTING: [],
        Phase.CREATING: [Event.CREATE],
        Phase.RESUMING: [Event.RESUME],
        Phase.UPLOADING: [Event.CREATE, Event.CREATED],
        Phase.COMPLETING: [Event.CREATE, Event.CREATED, Event.ALL_SENT],
        Phase.VERIFYING: [Event.CREATE, Event.CREATED, Event.ALL_SENT, Event.COMPLETED],
        Phase.DONE: [Event.CREATE, Event.CREATED, Event.ALL_SENT, Event.COMPLETED, Event.ACTIVE],
        Phase.FAILED: [Event.FAIL],
        Phase.INTERRUPTED: [Event.STOP],
    }[phase]
    for event in path:
        state.fire(event)
    assert state.phase is phase
    return state


@pytest.mark.parametrize(
    ("phase", "event"), [(p, e) for p, row in TRANSITIONS.items() for e in row], ids=lambda x: str(x)
)
def test_every_transition_of_the_table(phase: Phase, event: Event) -> None:
    state = state_in(phase)
    assert state.fire(event) is TRANSITIONS[phase][event]


@pytest.mark.parametrize("phase", [p for p in Phase if p not in ENDED])
@pytest.mark.parametrize(("event", "ends_in"), [(Event.FAIL, Phase.FAILED), (Event.STOP, Phase.INTERRUPTED)])
def test_fail_and_stop_end_every_live_phase(phase: Phase, event: Event, ends_in: Phase) -> None:
    assert state_in(phase).fire(event) is ends_in


@pytest.mark.parametrize(
    ("phase", "event"),
    [
        (p, e)
        for p, e in itertools.product(Phase, Event)
        if e not in TRANSITIONS[p] and (p in ENDED or e not in (Event.FAIL, Event.STOP))
    ],
    ids=lambda x: str(x),
)
def test_every_other_event_is_refused_and_changes_nothing(phase: Phase, event: Event) -> None:
    state = state_in(phase)
    with pytest.raises(StateError, match=f"event {event.value} in phase {phase.value}"):
        state.fire(event)
    assert state.phase is phase


def test_every_phase_is_reachable_and_ended_phases_lead_nowhere() -> None:
    reached = {Phase.STARTING} | {target for row in TRANSITIONS.values() for target in row.values()}
    assert reached | {Phase.FAILED, Phase.INTERRUPTED} == set(Phase)
    assert all(not TRANSITIONS[phase] for phase in ENDED)


def test_the_phase_observer_sees_every_phase_entered() -> None:
    seen: list[Phase] = []
    state = UploadState([S1], started=0.0, on_phase=seen.append)
    state.fire(Event.CREATE)
    state.created("1111111111")
    state.fire(Event.ALL_SENT)
    state.completed("2222222222")
    state.active("ACTIVE")
    assert seen == [Phase.CREATING, Phase.UPLOADING, Phase.COMPLETING, Phase.VERIFYING, Phase.DONE]
    assert (state.upload_id, state.read_set_id, state.status) == ("1111111111", "2222222222", "ACTIVE")


def test_acknowledgements_are_held_once_and_everything_derives_from_them() -> None:
    state = state_in(Phase.UPLOADING)
    state.plan(PLAN)
    assert [(p.source, p.number) for p in state.missing(PLAN)] == [(S1, 1), (S2, 1), (S1, 2), (S1, 3)]
    state.acknowledge(record(S1, 1))
    state.acknowledge(record(S1, 1, checksum="again"))  # sent twice: the later one counts, once
    state.acknowledge(record(S2, 1))
    assert [(p.source, p.number) for p in state.missing(PLAN)] == [(S1, 2), (S1, 3)]
    stats = state.statistics(now=2.0, rate_limit=10.0)
    assert stats.parts_done == {S1: 1, S2: 1} and stats.bytes_done == {S1: 10, S2: 10}
    assert stats.parts_total == {S1: 3, S2: 1} and stats.bytes_total == {S1: 25, S2: 10}
    assert state.acked[(S1, 1)].checksum == "againSOURCE11"
    with pytest.raises(TypeError):
        state.acked[(S1, 2)] = record(S1, 2)  # type: ignore[index]


def test_complete_needs_every_planned_part_and_lists_them_sorted() -> None:
    state = state_in(Phase.UPLOADING)
    state.plan(PLAN)
    for part in [record(S2, 1), record(S1, 3, 5), record(S1, 1)]:
        state.acknowledge(part)
    with pytest.raises(StateError, match="2 of 3 parts of SOURCE1"):
        state.parts_for_complete()
    state.acknowledge(record(S1, 2))
    assert [(r.source, r.number) for r in state.parts_for_complete()] == [(S1, 1), (S1, 2), (S1, 3), (S2, 1)]


def test_a_stream_has_no_total_until_its_end() -> None:
    state = UploadState([S1], started=0.0)
    with pytest.raises(StateError, match="of None parts"):
        state.parts_for_complete()
    assert state.statistics(now=1.0, rate_limit=None).total_bytes is None
    state.set_totals(S1, 25, 3)
    assert state.statistics(now=1.0, rate_limit=None).total_bytes == 25


def test_progress_counters_follow_sending_and_rewinds() -> None:
    state = state_in(Phase.UPLOADING)
    state.sending(S1, 1)
    state.sent(S1, 7)
    state.sent(S1, -7)  # a retry rewinds what the attempt had sent
    state.sent(S1, 10)
    state.retried(Verdict.THROTTLE)
    state.retried(Verdict.RETRY)
    stats = state.statistics(now=3.0, rate_limit=None)
    assert stats.parts_in_flight[S1] == 1 and stats.bytes_sent[S1] == 10
    assert (stats.retries, stats.throttles, stats.elapsed) == (2, 1, 3.0)


def test_reconcile_keeps_only_parts_the_store_holds_as_recorded() -> None:
    recorded = every_part()
    listed = [
        ListedPart(S1, 1, 10, "cSOURCE11"),  # as recorded: kept
        ListedPart(S1, 2, 10, "other"),  # another checksum: sent again
        ListedPart(S1, 3, 9, "cSOURCE13"),  # another size: sent again
        ListedPart(S2, 2, 10, "cSOURCE22"),  # not recorded: sent again
    ]
    assert set(reconcile(recorded, listed)) == {(S1, 1)}


def test_a_resumed_state_counts_what_was_kept() -> None:
    state = state_in(Phase.RESUMING)
    state.plan(PLAN)
    state.reconciled({(S1, 1): record(S1, 1)})
    stats = state.statistics(now=1.0, rate_limit=None)
    assert state.phase is Phase.UPLOADING and stats.resumed_parts == 1 and stats.bytes_sent[S1] == 10


@pytest.mark.parametrize("adopted", [True, False])
def test_a_finished_upload_counts_every_part_as_done_and_ends_done(adopted: bool) -> None:
    state = state_in(Phase.RESUMING if adopted else Phase.STARTING)
    state.plan(PLAN)
    state.finished("3333333333", every_part(), adopted=adopted)
    assert state.phase is Phase.VERIFYING
    state.active("ACTIVE")
    stats = state.statistics(now=1.0, rate_limit=None)
    assert stats.state == "done" and stats.parts_done == {S1: 3, S2: 1} and stats.resumed_parts == 4
    result = state.result(store_id="1234567890", now=1.0, checkpoint=None)
    assert result.read_set_id == "3333333333" and result.parts == {S1: 3, S2: 1}


def test_no_result_before_the_read_set_is_active() -> None:
    with pytest.raises(StateError, match="no result in phase completing"):
        state_in(Phase.COMPLETING).result(store_id="1", now=0.0, checkpoint=None)


def test_adoption_takes_exactly_one_read_set_of_the_same_shape() -> None:
    shape = {"source1": (25, 3), "source2": (10, 1)}
    same = {"source1": {"contentLength": 25, "totalParts": 3}, "source2": {"contentLength": 10, "totalParts": 1}}
    other = {"source1": {"contentLength": 26, "totalParts": 3}, "source2": {"contentLength": 10, "totalParts": 1}}
    with_index = {**same, "index": {"contentLength": 99, "totalParts": 1}}
    assert match_adoption(shape, [("1", other), ("2", with_index)]) == "2"
    assert match_adoption(shape, [("1", same), ("2", same)]) is None  # two could be it: neither is adopted
    assert match_adoption(shape, [("1", other)]) is None
    assert match_adoption(shape, []) is None


@pytest.mark.parametrize(
    ("keep", "resumable", "aborted"),
    [(None, True, False), (None, False, True), (True, False, False), (False, True, True)],
)
def test_the_abort_policy(keep: bool | None, resumable: bool, aborted: bool) -> None:
    assert abort_on_failure(keep, resumable=resumable) is aborted
