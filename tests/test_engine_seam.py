"""The engine through the transport seam: throttles, failures, hangs and stops scripted in a few lines, no server.

The real-store tests (test_engine.py) prove the same engine against HTTP; these pin its decisions exactly. Nothing
here waits a guessed time or measures one: a test waits for a condition (a count of requests, a gate it opens
itself), and what must end ends within ``LIMIT`` seconds, far beyond what it takes on a busy machine, and far short
of what it would take had the engine not acted (a hanging request never ends; a grace of a minute).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path

import anyio
import anyio.lowlevel
import jsonschema
import pytest

from async_uploader import (
    AccessDeniedError,
    CheckpointError,
    FileType,
    RateLimits,
    ReadSet,
    RequestKind,
    RetryConfig,
    RetryExhaustedError,
    ServiceConfig,
    Uploader,
    UploadInterruptedError,
)
from async_uploader.core.checkpoint import PartRecord
from async_uploader.core.config import Source
from async_uploader.core.events import EVENT_SCHEMA
from async_uploader.edge.transport import MockTransport, Response
from async_uploader.engine.limiter import LocalLimiter
from async_uploader.engine.parts import GroupCommit
from tests.helpers import (
    HANG,
    READ_SET_ID,
    Gate,
    LostReply,
    ScriptedStore,
    error,
    fast_config,
    fastq_text,
    operation_of,
    paired,
    throttled,
)

pytestmark = pytest.mark.usefixtures("test_credentials")
STORE_ID = "1234567890"
KIB = 1024
LOCAL = ServiceConfig(endpoint_url="http://127.0.0.1:9")  # never dialled: the mock transport answers
LIMIT = 30.0  # the bound of every wait in this file


def uploader(store: ScriptedStore, config: object = None, service: ServiceConfig = LOCAL) -> Uploader:
    return Uploader(config or fast_config(64 * KIB), service=service, transport=MockTransport(store))  # type: ignore[arg-type]


class LimiterClock:
    """The rate limiter's time: it passes only when the limiter waits, so what it decides is the same on any machine."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await anyio.lowlevel.checkpoint()


async def wait_for(condition: object, limit: float = LIMIT) -> None:
    with anyio.fail_after(limit):
        while not condition():  # type: ignore[operator]
            await anyio.sleep(0.005)


async def test_throttled_parts_are_retried_counted_and_slow_the_part_rate(tmp_path: Path) -> None:
    store = ScriptedStore()
    store.script("UploadReadSetPart", throttled(), throttled(), throttled())
    events: list[dict[str, object]] = []
    config = fast_config(64 * KIB, rates=RateLimits(parts=1000.0, control=None, listings=None))
    clock = LimiterClock()
    limiter = LocalLimiter(config.rates, clock=clock, sleep=clock.sleep)
    async with Uploader(config, service=LOCAL, transport=MockTransport(store), limiter=limiter) as up:
        result = await up.upload(
            paired(tmp_path, 200 * KIB), store_id=STORE_ID, checkpoint=False, on_event=events.append
        )
        rate = up.limiter.current_rate(RequestKind.PART)
    assert (result.retries, result.throttles, result.read_set_id) == (3, 3, READ_SET_ID)
    assert len(store.parts) == 8 and store.counts["UploadReadSetPart"] == 11
    assert rate is not None and rate < 1000.0  # the adaptive rate was cut (and did not recover: no 10 s passed)
    assert 0 < clock.now < 1  # the parts waited for the limiter's tokens, on its clock
    retries = [e for e in events if e["event"] == "retry"]
    assert len(retries) == 3 and all(e["error"] == "ThrottlingException" for e in retries)
    for event in events:
        jsonschema.validate(event, EVENT_SCHEMA)


async def test_a_denied_part_fails_at_once_and_an_unresumable_upload_is_aborted(tmp_path: Path) -> None:
    store = ScriptedStore()
    store.script("UploadReadSetPart", error(403, "AccessDeniedException", "no permission"))
    async with uploader(store) as up:
        handle = up.start(paired(tmp_path, 200 * KIB), store_id=STORE_ID, checkpoint=False)
        with pytest.raises(AccessDeniedError, match="no permission"):
            await handle
        assert handle.statistics().state == "failed"
    assert store.counts["AbortMultipartReadSetUpload"] == 1
    assert store.counts["CompleteMultipartReadSetUpload"] == 0


async def test_retries_stop_at_the_attempt_limit_with_the_last_error(tmp_path: Path) -> None:
    store = ScriptedStore()
    store.script("UploadReadSetPart", *[error(500, "InternalServerException", "boom")] * 3)
    retry = RetryConfig(max_attempts=3, base_delay=0.001, max_delay=0.001)
    config = fast_config(1024 * KIB, retry=retry, max_concurrency=1)  # the first part meets all three errors
    async with uploader(store, config) as up:
        with pytest.raises(RetryExhaustedError, match=r"UploadReadSetPart failed 3 times.*boom") as info:
            await up.upload(paired(tmp_path, 4 * KIB), store_id=STORE_ID, checkpoint=False)
    assert isinstance(info.value.__cause__, Exception)


async def test_a_create_that_never_answers_fails_at_the_operation_deadline(tmp_path: Path) -> None:
    store = ScriptedStore()
    store.script("CreateMultipartReadSetUpload", HANG)
    service = ServiceConfig(endpoint_url=LOCAL.endpoint_url, operation_timeout=0.3)
    async with uploader(store, service=service) as up:
        with (
            anyio.fail_after(LIMIT),  # the Create never answers: only the deadline ends the upload
            pytest.raises(RetryExhaustedError, match=r"CreateMultipartReadSetUpload: no answer within 0\.3 s"),
        ):
            await up.upload(paired(tmp_path, 4 * KIB), store_id=STORE_ID, checkpoint=False)


async def test_a_graceful_stop_reaches_a_create_in_flight(tmp_path: Path) -> None:
    store = ScriptedStore()
    store.script("CreateMultipartReadSetUpload", HANG)
    async with uploader(store) as up:
        handle = up.start(paired(tmp_path, 4 * KIB), store_id=STORE_ID)
        await wait_for(lambda: store.counts["CreateMultipartReadSetUpload"] == 1)
        handle.stop(0.2)
        with anyio.fail_after(LIMIT), pytest.raises(UploadInterruptedError):  # the Create never answers
            await handle
        assert handle.statistics().state == "interrupted"


async def test_parts_in_flight_finish_within_the_grace_and_no_new_part_starts(tmp_path: Path) -> None:
    store = ScriptedStore()
    gate = Gate()
    store.script("UploadReadSetPart", *[gate] * 4)
    config = fast_config(64 * KIB, max_concurrency=4)
    async with uploader(store, config) as up:
        handle = up.start(paired(tmp_path, 1024 * KIB), store_id=STORE_ID)
        await wait_for(lambda: store.counts["UploadReadSetPart"] == 4)  # all four held at the gate
        handle.stop(60.0)
        gate.open()  # the parts in flight are answered during the grace
        with anyio.fail_after(LIMIT), pytest.raises(UploadInterruptedError, match="run the same command again"):
            await handle
    assert store.counts["UploadReadSetPart"] == 4 and len(store.parts) == 4  # the four finished, none started
    assert handle.statistics().parts_done == {Source.SOURCE1: 2, Source.SOURCE2: 2}


async def test_a_second_stop_cancels_hanging_parts_at_once(tmp_path: Path) -> None:
    store = ScriptedStore()
    store.script("UploadReadSetPart", *[HANG] * 8)
    async with uploader(store, fast_config(64 * KIB, max_concurrency=8, adaptive_concurrency=False)) as up:
        handle = up.start(paired(tmp_path, 1024 * KIB), store_id=STORE_ID)
        await wait_for(lambda: store.counts["UploadReadSetPart"] == 8)
        handle.stop(60.0)
        for _ in range(10):  # let every task act on the first stop (turns of the loop, not a time)
            await anyio.lowlevel.checkpoint()
        handle.stop(0.0)
        with anyio.fail_after(LIMIT), pytest.raises(UploadInterruptedError):  # LIMIT is well within the 60 s grace
            await handle


async def test_rerunning_a_finished_checkpoint_ends_done(tmp_path: Path) -> None:
    store = ScriptedStore()
    read_set = paired(tmp_path, 100 * KIB)
    checkpoint = tmp_path / "ck.jsonl"
    async with uploader(store) as up:
        await up.upload(read_set, store_id=STORE_ID, checkpoint=checkpoint)
    before = len(store.seen)
    async with uploader(store) as up:
        handle = up.start(read_set, store_id=STORE_ID, checkpoint=checkpoint)
        result = await handle
        assert handle.statistics().state == "done"
    # The reachability probe, the store's ETag family, GetReadSetMetadata: nothing is uploaded again.
    assert [operation_of(r) for r in store.seen[before:]] == ["probe", "GetSequenceStore", "GetReadSetMetadata"]
    assert result.read_set_id == READ_SET_ID and result.resumed_parts == 4


async def test_a_checkpoint_that_cannot_be_written_is_one_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ScriptedStore()
    checkpoint = tmp_path / "ck.jsonl"

    created = Gate()

    async def fill_the_disk() -> None:
        await wait_for(lambda: store.counts["CreateMultipartReadSetUpload"] == 1)
        checkpoint.unlink()
        checkpoint.symlink_to("/dev/full")  # the journal's first append opens this path: ENOSPC
        created.open()  # only now does the Create return and the upload go on to record parts

    store.script("CreateMultipartReadSetUpload", created)
    async with uploader(store) as up, anyio.create_task_group() as group:
        group.start_soon(fill_the_disk)
        with caplog.at_level(logging.ERROR), pytest.raises(CheckpointError, match="cannot write checkpoint"):
            await up.upload(paired(tmp_path, 100 * KIB), store_id=STORE_ID, checkpoint=checkpoint)
    assert "never retrieved" not in caplog.text
    assert store.counts["AbortMultipartReadSetUpload"] == 0  # a checkpoint exists: the upload stays resumable


class FailingJournal:
    """A journal whose every write fails, standing in for a full disk."""

    def __init__(self) -> None:
        self.calls = 0
        self.writing = threading.Event()
        self.fail_now = threading.Event()

    def record_parts(self, records: list[PartRecord]) -> None:
        self.calls += 1
        self.writing.set()
        assert self.fail_now.wait(LIMIT), "the test never let the write fail"
        raise CheckpointError("cannot write checkpoint x: No space left on device")


async def test_a_failed_group_commit_fails_every_record_it_held_and_every_later_one() -> None:
    journal = FailingJournal()
    commit = GroupCommit(journal)  # type: ignore[arg-type]
    failures: list[BaseException] = []

    async def record(number: int) -> None:
        try:
            await commit.record(PartRecord(Source.SOURCE1, number, 1, "c", "d"))
        except CheckpointError as exc:
            failures.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(record, 1)
        await wait_for(journal.writing.is_set)  # the first record's write is under way (in a worker thread)
        for number in range(2, 6):
            group.start_soon(record, number)  # these queue behind it
        for _ in range(10):
            await anyio.lowlevel.checkpoint()
        journal.fail_now.set()
    await record(6)
    assert len(failures) == 6 and journal.calls == 1  # one write was tried; nobody was told it succeeded
    assert all("No space left" in str(f) for f in failures)


async def test_a_complete_whose_reply_was_lost_finds_its_read_set_instead_of_failing(tmp_path: Path) -> None:
    """The first Complete did its work and the connection broke; the retry is answered 404 (the upload is gone):
    the read set it made is found and reported, not a 404."""
    store = ScriptedStore()
    store.script("CompleteMultipartReadSetUpload", LostReply())
    async with uploader(store) as up:
        result = await up.upload(paired(tmp_path, 100 * KIB), store_id=STORE_ID, checkpoint=False)
    assert result.read_set_id == READ_SET_ID and result.retries == 1
    # ListReadSets: once before Create (the files are not in the store yet), once to find what Complete made
    assert store.counts["CompleteMultipartReadSetUpload"] == 2 and store.counts["ListReadSets"] == 2


async def test_a_family_that_cannot_be_asked_is_assumed_and_the_files_are_hashed_again_when_it_was_another(
    tmp_path: Path,
) -> None:
    """No permission for GetSequenceStore: MD5up is assumed; the read set says SHA256up: the files are hashed again
    with it, and the read set is verified."""
    raw = fastq_text(300, seed=2)
    source = tmp_path / "r1.fq"
    source.write_bytes(raw)
    bases = sum(len(line) for line in raw.split(b"\n")[1::4])
    store = ScriptedStore()
    store.script("GetSequenceStore", error(403, "AccessDeniedException", "not allowed"))
    store.script(
        "GetReadSetMetadata",
        Response(
            200,
            {},
            json.dumps(
                {
                    "id": READ_SET_ID,
                    "status": "ACTIVE",
                    "etag": {"algorithm": "FASTQ_SHA256up", "source1": hashlib.sha256(raw).hexdigest()},
                    "sequenceInformation": {"totalReadCount": 300, "totalBaseCount": bases},
                }
            ).encode(),
        ),
    )
    read_set = ReadSet(source, FileType.FASTQ, "s", "x", "n")
    async with uploader(store) as up:
        result = await up.upload(read_set, store_id=STORE_ID, checkpoint=False)
    assert result.verified and result.verification is not None
    assert result.verification.algorithm == "FASTQ_SHA256up" and result.verification.reads == 300
