"""The upload's state machine, walked without an event loop: every transition, every refusal, every path the
decisions take (fresh, resume, adoption, a changed source, a stop in each phase, the abort policy), and the plain
functions the async shell calls (what is missing, reconcile, adoption, completeness, statistics)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from async_uploader.core.checkpoint import PartRecord, SourceFingerprint
from async_uploader.core.config import Source
from async_uploader.core.errors import (
    CheckpointMismatchError,
    ResourceNotFoundError,
    SourceError,
    StillProcessingError,
    UploadFailedError,
    VerificationError,
)
from async_uploader.core.plan import Plan
from async_uploader.core.protocol import ListedPart, ReadSetMetadata
from async_uploader.core.retry import Verdict
from async_uploader.core.state import (
    CONFIRM_ROUNDS,
    ENDED,
    TRANSITIONS,
    Action,
    Event,
    Phase,
    Prepared,
    StateError,
    UploadState,
    abort_on_failure,
    match_adoption,
    reconcile,
)
from async_uploader.core.stats import Verification

S1, S2 = Source.SOURCE1, Source.SOURCE2
PLAN = Plan(10, {S1: 25, S2: 10})  # S1: 10 + 10 + 5, S2: 10


def record(source: Source, number: int, length: int = 10, checksum: str = "c") -> PartRecord:
    return PartRecord(source, number, length, f"{checksum}{source.value}{number}", "d")


def every_part() -> dict[tuple[Source, int], PartRecord]:
    parts = [record(S1, 1), record(S1, 2), record(S1, 3, 5), record(S2, 1)]
    return {(p.source, p.number): p for p in parts}


def listed(records: dict[tuple[Source, int], PartRecord]) -> list[ListedPart]:
    return [ListedPart(r.source, r.number, r.length, r.checksum) for r in records.values()]


def ident(source: Source, size: int, inode: int = 1) -> SourceFingerprint:
    return SourceFingerprint(source, f"/data/{source.value}", size, 1, "f", ctime_ns=1, inode=inode, device=1)


IDENTITIES = {S1: ident(S1, 25), S2: ident(S2, 10)}


def prepared(**changes: object) -> Prepared:
    values: dict[str, object] = {"plan": PLAN, "identities": IDENTITIES, "resumable": True, "checkpoint": "c.jsonl"}
    values.update(changes)
    return Prepared(**values)  # type: ignore[arg-type]


def metadata(status: str, read_set_id: str = "2222222222") -> ReadSetMetadata:
    return ReadSetMetadata(read_set_id, status)


def new_state(**options: object) -> tuple[UploadState, list[Phase]]:
    seen: list[Phase] = []
    state = UploadState([S1, S2], started=0.0, on_phase=seen.append, verify=True, **options)  # type: ignore[arg-type]
    return state, seen


def send_all(state: UploadState) -> None:
    for part in list(state.missing()):
        state.acknowledge(record(part.source, part.number, part.length))
    state.all_sent()


# What the shell would answer to each action on an upload where nothing goes wrong.
Script = dict[Action, Callable[[UploadState], object]]
HAPPY: Script = {
    Action.PREPARE: lambda s: s.prepared(prepared()),
    Action.CREATE: lambda s: s.created("1111111111"),
    Action.LIST_PARTS: lambda s: s.listed(listed(every_part())),
    Action.REREAD: lambda s: s.reread(set()),
    Action.SEND: send_all,
    Action.CHECK_SOURCES: lambda s: s.sources_checked(IDENTITIES),
    Action.COMPLETE: lambda s: s.completed("2222222222"),
    Action.FIND_COMPLETED: lambda s: s.found("2222222222"),
    Action.RECORD_COMPLETE: lambda s: s.recorded(),
    Action.WAIT: lambda s: s.polled(metadata("ACTIVE"), 1.0),
    Action.VERIFY: lambda s: s.verified(Verification(verified=True)),
    Action.ABORT: lambda s: s.abort_done(True),
}


def walk(state: UploadState, script: Script | None = None, limit: int = 50) -> list[Action]:
    """Perform actions as the shell does, with ``script`` over ``HAPPY``, until END; the actions taken."""
    answers = {**HAPPY, **(script or {})}
    taken = []
    for _ in range(limit):
        action = state.next_action()
        taken.append(action)
        if action is Action.END:
            return taken
        answers[action](state)
    raise AssertionError(f"no end after {limit} actions: {taken}")


# -- the table ---------------------------------------------------------------------------------------------------

PATHS_TO = {
    Phase.STARTING: [],
    Phase.CREATING: [Event.CREATE],
    Phase.RESUMING: [Event.RESUME],
    Phase.FINDING: [Event.RESUME, Event.GONE],
    Phase.CHECKING: [Event.SUSPECT],
    Phase.UPLOADING: [Event.CREATE, Event.CREATED],
    Phase.CONFIRMING: [Event.CREATE, Event.CREATED, Event.ALL_SENT],
    Phase.COMPLETING: [Event.CREATE, Event.CREATED, Event.ALL_SENT, Event.CONFIRMED],
    Phase.WAITING: [Event.FINISHED],
    Phase.VERIFYING: [Event.FINISHED, Event.ACTIVE],
    Phase.DONE: [Event.FINISHED, Event.SETTLED],
    Phase.FAILED: [Event.FAIL],
    Phase.INTERRUPTED: [Event.STOP],
}


def state_in(phase: Phase) -> UploadState:
    """A fresh state moved to ``phase`` along the table."""
    state = UploadState([S1, S2], started=0.0)
    for event in PATHS_TO[phase]:
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


# -- the paths ---------------------------------------------------------------------------------------------------


def test_a_fresh_upload_creates_sends_confirms_completes_records_waits_and_verifies() -> None:
    state, seen = new_state()
    actions = walk(state)
    assert actions == [
        Action.PREPARE,
        Action.CREATE,
        Action.SEND,
        Action.CHECK_SOURCES,
        Action.COMPLETE,
        Action.RECORD_COMPLETE,
        Action.WAIT,
        Action.VERIFY,
        Action.END,
    ]
    assert seen == [
        Phase.CREATING,
        Phase.UPLOADING,
        Phase.CONFIRMING,
        Phase.COMPLETING,
        Phase.WAITING,
        Phase.VERIFYING,
        Phase.DONE,
    ]
    result = state.result(store_id="1234567890", now=2.0, checkpoint=None)
    assert (result.upload_id, result.read_set_id, result.status) == ("1111111111", "2222222222", "ACTIVE")
    assert result.verification == Verification(verified=True)


def test_without_verification_nothing_is_verified_and_a_receipt_is_written_all_the_same() -> None:
    state = UploadState([S1, S2], started=0.0, verify=False)
    actions = walk(state, {Action.PREPARE: lambda s: s.prepared(prepared(resumable=False, checkpoint=None))})
    assert Action.RECORD_COMPLETE in actions and Action.VERIFY not in actions
    assert state.phase is Phase.DONE


def test_not_waiting_ends_at_complete_once_the_checkpoint_records_it() -> None:
    state, _ = new_state(wait=False)
    actions = walk(state)
    assert actions[-3:] == [Action.COMPLETE, Action.RECORD_COMPLETE, Action.END]
    assert (state.phase, state.status, state.verification) == (Phase.DONE, "PROCESSING_UPLOAD", None)


def test_the_wait_polls_at_a_growing_pace_until_active() -> None:
    state, _ = new_state()
    polls = iter(["PROCESSING_UPLOAD"] * 4 + ["ACTIVE"])
    delays: list[float] = []

    def poll(s: UploadState) -> None:
        delays.append(s.poll_delay)
        s.polled(metadata(next(polls)), 1.0)

    walk(state, {Action.WAIT: poll})
    assert delays == [0.0, 0.1, 0.2, 0.4, 0.8] and state.status == "ACTIVE"


def test_a_wait_past_its_timeout_is_transient_and_names_how_to_go_on_waiting() -> None:
    state, _ = new_state(wait_timeout=1800.0)
    clock = iter([0.0, 900.0, 1800.0])
    with pytest.raises(StillProcessingError, match=r"still PROCESSING_UPLOAD after 30 min .* go on waiting") as info:
        walk(state, {Action.WAIT: lambda s: s.polled(metadata("PROCESSING_UPLOAD"), next(clock))})
    assert info.value.retryable and info.value.read_set_id == "2222222222"
    state.failed(cancelled=False)
    assert state.next_action() is Action.END  # the read set exists and the checkpoint records it: nothing to abort


def test_each_phase_is_timed_on_its_own() -> None:
    now = [0.0]
    state = UploadState([S1, S2], started=0.0, verify=True, clock=lambda: now[0])

    def at(seconds: float, answer: Callable[[UploadState], object]) -> Callable[[UploadState], None]:
        def step(s: UploadState) -> None:
            now[0] = seconds
            answer(s)

        return step

    def send(s: UploadState) -> None:
        for part in list(s.missing()):
            s.sending(part.source, 1)
            now[0] += 1.0
            s.acknowledge(record(part.source, part.number, part.length))
            s.sending(part.source, -1)
        s.all_sent()

    polls = iter(["PROCESSING_UPLOAD", "ACTIVE"])

    def wait(s: UploadState) -> None:
        now[0] += 10.0
        s.polled(metadata(next(polls)), now[0])

    walk(
        state,
        {
            Action.CREATE: at(1.0, HAPPY[Action.CREATE]),
            Action.SEND: send,
            Action.COMPLETE: at(7.0, HAPPY[Action.COMPLETE]),
            Action.WAIT: wait,
            Action.VERIFY: at(30.0, HAPPY[Action.VERIFY]),
        },
    )
    timings = state.result(store_id="1", now=30.0, checkpoint=None).timings
    assert timings.transfer == 4.0  # four parts, each a second: the first sent at 1, the last acknowledged at 5
    assert (timings.complete, timings.store, timings.verify, timings.total) == (2.0, 20.0, 3.0, 30.0)
    assert timings.transferred == 35 and timings.transfer_rate == 8.75


def test_upload_failed_and_a_verification_mismatch_fail_the_upload_and_abort_nothing() -> None:
    state, _ = new_state()
    with pytest.raises(UploadFailedError, match="rejected read set 2222222222: bad gzip"):
        walk(state, {Action.WAIT: lambda s: s.polled(ReadSetMetadata("2222222222", "UPLOAD_FAILED", "bad gzip"), 0)})
    state.failed(cancelled=False)
    assert state.next_action() is Action.END  # a read set exists: nothing to abort

    state, _ = new_state()
    with pytest.raises(VerificationError, match="failed verification: md5 differs"):
        walk(state, {Action.VERIFY: lambda s: s.verified(Verification(False, "md5 differs", failed=True))})


def test_a_resume_lists_reconciles_and_sends_only_what_is_missing() -> None:
    state, seen = new_state()
    recorded = every_part()
    sent: list[tuple[Source, int]] = []

    def send(s: UploadState) -> None:
        sent.extend((p.source, p.number) for p in s.missing())
        send_all(s)

    store_holds = {k: v for k, v in recorded.items() if k != (S1, 2)}
    actions = walk(
        state,
        {
            Action.PREPARE: lambda s: s.prepared(prepared(recorded_upload="1111111111", recorded_parts=recorded)),
            Action.LIST_PARTS: lambda s: s.listed(listed(store_holds)),
            Action.SEND: send,
        },
    )
    assert actions[:3] == [Action.PREPARE, Action.LIST_PARTS, Action.SEND]
    assert sent == [(S1, 2)] and state.resumed_parts == 3
    assert seen[:2] == [Phase.RESUMING, Phase.UPLOADING]


def test_a_resume_of_suspect_files_rereads_the_kept_parts_and_sends_the_changed_ones() -> None:
    state, _ = new_state()
    recorded = every_part()
    asked: list[tuple[frozenset[Source], list[PartRecord]]] = []
    sent: list[tuple[Source, int]] = []

    def reread(s: UploadState) -> None:
        asked.append(s.reread_request())
        s.reread({(S1, 3)})

    def send(s: UploadState) -> None:
        sent.extend((p.source, p.number) for p in s.missing())
        send_all(s)

    prep = prepared(recorded_upload="1111111111", recorded_parts=recorded, suspect=frozenset({S1}))
    actions = walk(state, {Action.PREPARE: lambda s: s.prepared(prep), Action.REREAD: reread, Action.SEND: send})
    assert actions[:4] == [Action.PREPARE, Action.LIST_PARTS, Action.REREAD, Action.SEND]
    sources, records = asked[0]
    assert sources == {S1} and {(r.source, r.number) for r in records} == {(S1, 1), (S1, 2), (S1, 3)}
    assert sent == [(S1, 3)]


def test_a_vanished_upload_with_every_part_acknowledged_adopts_the_read_set_it_made() -> None:
    state, seen = new_state()
    gone = ResourceNotFoundError("no upload", status=404, operation="ListReadSetUploadParts")

    def vanish(s: UploadState) -> None:
        s.upload_gone(gone)

    prep = prepared(recorded_upload="1111111111", recorded_parts=every_part())
    actions = walk(state, {Action.PREPARE: lambda s: s.prepared(prep), Action.LIST_PARTS: vanish})
    assert actions[:4] == [Action.PREPARE, Action.LIST_PARTS, Action.FIND_COMPLETED, Action.RECORD_COMPLETE]
    assert Action.SEND not in actions and Action.COMPLETE not in actions
    assert seen[:3] == [Phase.RESUMING, Phase.FINDING, Phase.WAITING]
    assert state.statistics(now=1.0, rate_limit=None).parts_done == {S1: 3, S2: 1}


def test_a_vanished_upload_is_a_clear_error_when_it_cannot_have_completed_or_nothing_is_found() -> None:
    gone = ResourceNotFoundError("no upload", status=404, operation="ListReadSetUploadParts")
    state, _ = new_state()
    state.prepared(prepared(recorded_upload="1111111111", recorded_parts={(S1, 1): record(S1, 1)}))
    with pytest.raises(ResourceNotFoundError, match=r"upload 1111111111 is no longer on the store .*--restart"):
        state.upload_gone(gone)

    state, _ = new_state()
    state.prepared(prepared(recorded_upload="1111111111", recorded_parts=every_part()))
    state.upload_gone(gone)
    with pytest.raises(ResourceNotFoundError, match=r"no longer on the store \(aborted or expired\)"):
        state.found(None)


def test_a_complete_that_finds_no_upload_looks_for_the_read_set_an_earlier_try_made() -> None:
    state, _ = new_state()
    lost = ResourceNotFoundError("no upload", status=404, operation="CompleteMultipartReadSetUpload")
    actions = walk(state, {Action.COMPLETE: lambda s: s.complete_lost(lost)})
    assert actions[4:7] == [Action.COMPLETE, Action.FIND_COMPLETED, Action.RECORD_COMPLETE]
    assert state.phase is Phase.DONE

    state, _ = new_state()
    with pytest.raises(ResourceNotFoundError, match="expired before Complete"):
        walk(state, {Action.COMPLETE: lambda s: s.complete_lost(lost), Action.FIND_COMPLETED: lambda s: s.found(None)})


def test_a_finished_checkpoint_waits_without_a_request_of_its_own_unless_its_files_are_suspect() -> None:
    state, seen = new_state()
    prep = prepared(recorded_upload="1111111111", recorded_read_set="2222222222", recorded_parts=every_part())
    actions = walk(state, {Action.PREPARE: lambda s: s.prepared(prep)})
    assert actions == [Action.PREPARE, Action.WAIT, Action.VERIFY, Action.END]
    assert seen == [Phase.WAITING, Phase.VERIFYING, Phase.DONE] and state.resumed_parts == 4

    state, seen = new_state()
    suspect = prepared(
        recorded_upload="1111111111",
        recorded_read_set="2222222222",
        recorded_parts=every_part(),
        suspect=frozenset({S2}),
    )
    actions = walk(state, {Action.PREPARE: lambda s: s.prepared(suspect)})
    assert actions[:3] == [Action.PREPARE, Action.REREAD, Action.WAIT]
    assert seen[:2] == [Phase.CHECKING, Phase.WAITING]

    state, _ = new_state()
    state.prepared(suspect)
    with pytest.raises(CheckpointMismatchError, match=r"made from other bytes .* \(1 part"):
        state.reread({(S2, 1)})


def test_a_source_that_changes_while_it_uploads_is_read_again_and_its_changed_parts_sent_again() -> None:
    state, seen = new_state()
    moved = {**IDENTITIES, S1: ident(S1, 25, inode=2)}
    checks = iter([moved, moved])
    sends: list[list[tuple[Source, int]]] = []

    def send(s: UploadState) -> None:
        sends.append([(p.source, p.number) for p in s.missing()])
        send_all(s)

    def check(s: UploadState) -> None:
        s.sources_checked(next(checks))

    actions = walk(
        state, {Action.SEND: send, Action.CHECK_SOURCES: check, Action.REREAD: lambda s: s.reread({(S1, 2)})}
    )
    assert actions[:7] == [
        Action.PREPARE,
        Action.CREATE,
        Action.SEND,
        Action.CHECK_SOURCES,
        Action.REREAD,
        Action.SEND,
        Action.CHECK_SOURCES,
    ]
    assert sends[1] == [(S1, 2)]
    assert seen[1:5] == [Phase.UPLOADING, Phase.CONFIRMING, Phase.UPLOADING, Phase.CONFIRMING]
    assert state.phase is Phase.DONE


@pytest.mark.parametrize(
    ("now", "resumable", "message"),
    [
        ({**IDENTITIES, S1: ident(S1, 26, inode=2)}, True, r"SOURCE1 /data/SOURCE1 changed size .* \(25 → 26 bytes\)"),
        ({**IDENTITIES, S2: ident(S2, 10, inode=2)}, False, "changed while it was uploaded; run again"),
    ],
)
def test_a_changed_source_that_cannot_be_sent_again_ends_the_upload(
    now: dict[Source, SourceFingerprint], resumable: bool, message: str
) -> None:
    state, _ = new_state()
    with pytest.raises(SourceError, match=message):
        walk(
            state,
            {
                Action.PREPARE: lambda s: s.prepared(prepared(resumable=resumable)),
                Action.CHECK_SOURCES: lambda s: s.sources_checked(now),
            },
        )


def test_a_source_that_keeps_changing_is_given_up_after_the_rounds() -> None:
    state, _ = new_state()
    inodes = itertools.count(2)
    with pytest.raises(SourceError, match="keeps changing"):
        walk(
            state,
            {
                Action.CHECK_SOURCES: lambda s: s.sources_checked({**IDENTITIES, S1: ident(S1, 25, next(inodes))}),
                Action.REREAD: lambda s: s.reread(set()),
            },
        )
    assert next(inodes) == CONFIRM_ROUNDS + 3


STOPPABLE = [
    Action.PREPARE,
    Action.CREATE,
    Action.SEND,
    Action.CHECK_SOURCES,
    Action.COMPLETE,
    Action.RECORD_COMPLETE,
    Action.WAIT,
    Action.VERIFY,
]


@pytest.mark.parametrize(
    ("during", "resumable"),
    [(a, r) for a in STOPPABLE for r in (True, False)],
    ids=lambda x: x.value if isinstance(x, Action) else ("checkpoint" if x else "no-checkpoint"),
)
def test_a_stop_during_any_action_starts_nothing_new_and_aborts_only_what_nothing_can_resume(
    during: Action, resumable: bool
) -> None:
    state, _ = new_state()
    script: Script = {Action.PREPARE: lambda s: s.prepared(prepared(resumable=resumable))}
    answer = script.get(during, HAPPY[during])

    def then_stop(s: UploadState) -> None:
        answer(s)
        s.stop()

    script[during] = then_stop
    actions = walk(state, script)
    aborted = during in (Action.CREATE, Action.SEND, Action.CHECK_SOURCES) and not resumable
    assert actions[actions.index(during) + 1 :] == [*([Action.ABORT] if aborted else []), Action.END]
    assert state.phase is (Phase.DONE if during is Action.VERIFY else Phase.INTERRUPTED)  # done is done


def test_a_stop_at_once_still_asks_the_core_and_an_abort_is_asked_for_once() -> None:
    state, _ = new_state(keep_on_failure=False)
    state.prepared(prepared())
    state.created("1111111111")
    state.stop(at_once=True)
    assert state.next_action() is Action.ABORT and state.at_once
    state.abort_done(False)
    assert state.next_action() is Action.END


def test_a_failure_aborts_by_the_policy() -> None:
    state, _ = new_state()
    state.prepared(prepared(resumable=False, checkpoint=None))
    state.created("1111111111")
    state.failed(cancelled=False)
    assert state.phase is Phase.FAILED and state.next_action() is Action.ABORT
    state.failed(cancelled=True)  # already ended: no second transition
    assert state.phase is Phase.FAILED


# -- what it knows -----------------------------------------------------------------------------------------------


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
    state.forget([(S1, 1)])
    assert state.statistics(now=2.0, rate_limit=10.0).parts_done == {S1: 0, S2: 1}
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
    found = [
        ListedPart(S1, 1, 10, "cSOURCE11"),  # as recorded: kept
        ListedPart(S1, 2, 10, "other"),  # another checksum: sent again
        ListedPart(S1, 3, 9, "cSOURCE13"),  # another size: sent again
        ListedPart(S2, 2, 10, "cSOURCE22"),  # not recorded: sent again
    ]
    assert set(reconcile(recorded, found)) == {(S1, 1)}


def test_no_result_before_the_upload_is_done() -> None:
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
