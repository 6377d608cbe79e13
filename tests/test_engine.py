"""The engine against the local store over real HTTP on 127.0.0.1, with signatures verified."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

from async_uploader import (
    AccessDeniedError,
    FileType,
    PlanError,
    RateLimits,
    ReadSet,
    RetryConfig,
    ServiceConfig,
    Source,
    SourceError,
    UploadConfig,
    Uploader,
    UploadInterruptedError,
    UploadResult,
)
from async_uploader.core.ratelimit import RequestKind
from async_uploader.emulator import FaultOptions, LocalStore, StoreOptions
from async_uploader.engine.limiter import LocalLimiter
from tests.helpers import fast_config, gzip_like

STORE_ID = "1234567890"
KIB = 1024

pytestmark = pytest.mark.usefixtures("test_credentials")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LocalStore]:
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store")) as running:
        yield running


def fastq(tmp_path: Path, *sizes: int) -> list[Path]:
    return [gzip_like(tmp_path / f"r{i + 1}.fq", size) for i, size in enumerate(sizes)]


def read_set(paths: list[Path]) -> ReadSet:
    return ReadSet(
        paths[0],
        FileType.FASTQ,
        "subject-1",
        "sample-1",
        "read set",
        source2=paths[1] if len(paths) > 1 else None,
    )


def config(part_size: int, **extra: object) -> UploadConfig:
    return fast_config(part_size, **{"retry": RetryConfig(max_attempts=8, base_delay=0.005, max_delay=0.05), **extra})


def service(store: LocalStore) -> ServiceConfig:
    return ServiceConfig(endpoint_url=store.url, region="us-east-1", connect_timeout=5, read_timeout=30)


async def downloaded(up: Uploader, result: UploadResult, source: Source) -> bytes:
    """A source's bytes back through GetReadSet, retried like any request (the store may inject faults)."""
    chunks = []
    for number in range(1, result.parts[source] + 1):

        async def get(n: int = number) -> bytes:
            return await up.client.download_part(STORE_ID, result.read_set_id, source, n)

        chunks.append(await up.calls.call("GetReadSet", get))
    return b"".join(chunks)


async def assert_round_trip(up: Uploader, result: UploadResult, paths: list[Path]) -> None:
    for source, path in zip((Source.SOURCE1, Source.SOURCE2), paths, strict=False):
        assert result.bytes[source] == path.stat().st_size
        assert await downloaded(up, result, source) == path.read_bytes()


def operations(store: LocalStore, name: str) -> list[dict[str, object]]:
    return [r for r in store.requests if r["operation"] == name]


@pytest.mark.parametrize(
    ("sizes", "part_size", "expected_parts"),
    [
        pytest.param((300 * KIB + 17, 200 * KIB + 5), 64 * KIB, (5, 4), id="paired-uneven"),
        pytest.param((3 * 64 * KIB + 1,), 64 * KIB, (4,), id="one-byte-last-part"),
        pytest.param((10 * KIB,), 64 * KIB, (1,), id="one-part"),
        pytest.param((128 * KIB, 128 * KIB), 64 * KIB, (2, 2), id="exact-multiple"),
    ],
)
async def test_upload_round_trips(
    store: LocalStore, tmp_path: Path, sizes: tuple[int, ...], part_size: int, expected_parts: tuple[int, ...]
) -> None:
    paths = fastq(tmp_path, *sizes)
    async with Uploader(config(part_size), service=service(store)) as up:
        result = await up.upload(read_set(paths), store_id=STORE_ID, checkpoint=False)
        assert tuple(result.parts.values()) == expected_parts
        await assert_round_trip(up, result, paths)
    assert len(operations(store, "CreateMultipartReadSetUpload")) == 1
    assert len(operations(store, "CompleteMultipartReadSetUpload")) == 1


async def test_parts_of_both_sources_are_interleaved(store: LocalStore, tmp_path: Path) -> None:
    paths = fastq(tmp_path, 8 * 16 * KIB, 8 * 16 * KIB)
    async with Uploader(config(16 * KIB, max_concurrency=1), service=service(store)) as up:
        await up.upload(read_set(paths), store_id=STORE_ID, checkpoint=False)
    order = [(r["source"], r["part_number"]) for r in operations(store, "UploadReadSetPart")]
    assert order[:4] == [("SOURCE1", 1), ("SOURCE2", 1), ("SOURCE1", 2), ("SOURCE2", 2)]


async def test_stdin_like_streams_round_trip(store: LocalStore, tmp_path: Path) -> None:
    paths = fastq(tmp_path, 200 * KIB + 3, 100 * KIB)
    pipes = []
    writers = []
    for path in paths:
        read_fd, write_fd = os.pipe()
        pipes.append(open(read_fd, "rb", buffering=0))  # noqa: SIM115 - closed below

        def feed(fd: int = write_fd, data: bytes = path.read_bytes()) -> None:
            with open(fd, "wb") as out:
                out.write(data)

        writers.append(threading.Thread(target=feed, daemon=True))
    for thread in writers:
        thread.start()
    rs = ReadSet(pipes[0], FileType.FASTQ, "s", "x", "streamed", source2=pipes[1])
    try:
        async with Uploader(config(32 * KIB, memory_budget=1024 * KIB), service=service(store)) as up:
            result = await up.upload(rs, store_id=STORE_ID)
            assert result.parts == {Source.SOURCE1: 7, Source.SOURCE2: 4}
            await assert_round_trip(up, result, paths)
    finally:
        for pipe in pipes:
            pipe.close()
        for thread in writers:
            thread.join(5)


async def test_empty_stream_fails_before_create(store: LocalStore) -> None:
    read_fd, write_fd = os.pipe()
    os.close(write_fd)
    with open(read_fd, "rb", buffering=0) as stream:
        rs = ReadSet(stream, FileType.FASTQ, "s", "x", "empty")
        async with Uploader(config(32 * KIB), service=service(store)) as up:
            with pytest.raises(SourceError, match="empty"):
                await up.upload(rs, store_id=STORE_ID)
    assert not operations(store, "CreateMultipartReadSetUpload")


async def test_bad_sources_fail_before_create(store: LocalStore, tmp_path: Path) -> None:
    empty = tmp_path / "empty.fq"
    empty.touch()
    cases = [tmp_path / "missing.fq", empty, tmp_path]
    async with Uploader(config(32 * KIB), service=service(store)) as up:
        for path in cases:
            with pytest.raises(SourceError):
                await up.upload(read_set([path]), store_id=STORE_ID)
    assert not store.requests


async def test_too_many_parts_is_refused_before_create(store: LocalStore, tmp_path: Path) -> None:
    paths = fastq(tmp_path, 10_001)
    async with Uploader(config(1), service=service(store)) as up:
        with pytest.raises(PlanError, match="part size"):
            await up.upload(read_set(paths), store_id=STORE_ID)
    assert not store.requests


async def test_faults_are_survived_byte_for_byte(tmp_path: Path) -> None:
    faults = FaultOptions(seed=7, throttle_rate=0.05, error_rate=0.03, reset_rate=0.01)
    paths = fastq(tmp_path, 120 * 8 * KIB + 5, 100 * 8 * KIB)
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store", faults=faults)) as store:
        async with Uploader(config(8 * KIB, max_concurrency=8), service=service(store)) as up:
            result = await up.upload(read_set(paths), store_id=STORE_ID, checkpoint=False)
            await assert_round_trip(up, result, paths)
        injected = [r for r in store.requests if r.get("fault")]
    assert injected, "the store injected no fault; the test proves nothing"
    # The connection pool resends a PUT once by itself when a kept-alive connection drops, so a reset may cost no
    # retry.
    answered = [r for r in injected if r["operation"] == "UploadReadSetPart" and r["fault"] != "reset"]
    assert result.retries >= len(answered)
    assert result.throttles > 0


@pytest.mark.slow
async def test_quota_lowers_the_rate_and_it_recovers(tmp_path: Path) -> None:
    paths = fastq(tmp_path, 120 * 2 * KIB, 120 * 2 * KIB)
    options = StoreOptions(data_dir=tmp_path / "store", quotas={"parts": 40.0})
    patient = RetryConfig(max_attempts=30, base_delay=0.02, max_delay=0.5)
    samples: list[float] = []
    async with LocalStore(options) as store:
        cfg = config(
            2 * KIB, rates=RateLimits(parts=100.0, control=None, listings=None), max_concurrency=8, retry=patient
        )
        limiter = LocalLimiter(cfg.rates, recover_seconds=2.0)
        async with Uploader(cfg, service=service(store), limiter=limiter) as up:

            def sample(event: dict[str, object]) -> None:
                rate = up.limiter.current_rate(RequestKind.PART)
                if event["event"] == "part" and rate is not None:
                    samples.append(rate)

            result = await up.upload(read_set(paths), store_id=STORE_ID, checkpoint=False, on_event=sample)
    assert result.throttles > 0
    first_cut = next((i for i, rate in enumerate(samples) if rate < 100.0 * 0.75), None)
    assert first_cut is not None, "throttles did not lower the part rate"
    later = samples[first_cut:]
    assert any(b > a for a, b in itertools.pairwise(later)), "the part rate never recovered after a cut"


async def test_wrong_credentials_fail_fast_without_retries(
    store: LocalStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    paths = fastq(tmp_path, 10 * KIB)
    async with Uploader(config(4 * KIB), service=service(store)) as up:
        with pytest.raises(AccessDeniedError):
            await up.upload(read_set(paths), store_id=STORE_ID)
    operations = [r["operation"] for r in store.requests]
    # the probe, the store's family, the look for these files in the store (the first request that must succeed)
    assert operations == ["Unknown", "GetSequenceStore", "ListReadSets"]
    assert [r["status"] for r in store.requests[1:]] == [403, 403]  # and no retry


async def test_stop_leaves_a_resumable_upload(store: LocalStore, tmp_path: Path) -> None:
    paths = fastq(tmp_path, 64 * 4 * KIB, 64 * 4 * KIB)
    checkpoint = tmp_path / "upload.ckpt"
    async with Uploader(config(4 * KIB, max_concurrency=2), service=service(store)) as up:
        handle = up.start(read_set(paths), store_id=STORE_ID, checkpoint=checkpoint)
        while handle.statistics().total_bytes_done < 32 * 4 * KIB:
            await asyncio.sleep(0.005)
        handle.stop(grace=5.0)
        with pytest.raises(UploadInterruptedError):
            await handle
        assert handle.upload_id is not None
        sent_before = len(operations(store, "UploadReadSetPart"))
        assert sent_before < 128
        result = await up.upload(read_set(paths), store_id=STORE_ID, checkpoint=checkpoint)
        await assert_round_trip(up, result, paths)
    assert result.upload_id == handle.upload_id
    assert len(operations(store, "CreateMultipartReadSetUpload")) == 1
    assert result.resumed_parts == sent_before
    assert len(operations(store, "UploadReadSetPart")) == 128


async def test_cancel_leaves_no_task_behind(store: LocalStore, tmp_path: Path) -> None:
    paths = fastq(tmp_path, 256 * KIB)
    before = asyncio.all_tasks()
    async with Uploader(config(4 * KIB, max_concurrency=4), service=service(store)) as up:
        handle = up.start(read_set(paths), store_id=STORE_ID, checkpoint=False)
        while handle.statistics().total_bytes_done < 16 * KIB:
            await asyncio.sleep(0.002)
        handle.cancel()
        with pytest.raises(asyncio.CancelledError):
            await handle
    await asyncio.sleep(0)
    # the store's own tasks may remain a moment: its server's, and its handlers of the connections just closed
    stores = {t for t in asyncio.all_tasks() if "LocalStore" in repr(t) or "RequestHandler.start" in repr(t)}
    assert asyncio.all_tasks() - before <= stores
    # Without a checkpoint the open upload is aborted, so nothing is left on the store.
    assert len(operations(store, "AbortMultipartReadSetUpload")) == 1


@contextlib.contextmanager
def store_process(*args: str) -> Iterator[str]:
    """The local store in its own process, so the test process holds the client alone; yields its URL."""
    command = [sys.executable, "-m", "async_uploader.emulator", "--port", "0", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        yield url
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


@pytest.mark.slow
async def test_twenty_thousand_tiny_parts_stay_bounded(tmp_path: Path) -> None:
    part = 256
    paths = fastq(tmp_path, 10_000 * part, 10_000 * part)
    concurrency = 32
    live_tasks: list[int] = []
    process = psutil.Process()
    with store_process("--discard") as url:
        baseline_tasks = len(asyncio.all_tasks())
        rss_before = process.memory_info().rss
        endpoint = ServiceConfig(endpoint_url=url, region="us-east-1")
        async with Uploader(config(part, max_concurrency=concurrency), service=endpoint) as up:
            handle = up.start(read_set(paths), store_id=STORE_ID, checkpoint=tmp_path / "tiny.ckpt")
            while not handle.task.done():
                live_tasks.append(len(asyncio.all_tasks()) - baseline_tasks)
                await asyncio.sleep(0.05)
            result = await handle
        rss_growth = process.memory_info().rss - rss_before
    assert result.parts == {Source.SOURCE1: 10_000, Source.SOURCE2: 10_000}
    # Per part in flight: its own task and at most one more for its body; plus a few helpers. Never one per part.
    assert max(live_tasks) <= 2 * concurrency + 8, max(live_tasks)
    assert rss_growth < 100 * 1024 * 1024, rss_growth


async def test_a_crash_after_complete_is_recognised_on_resume(store: LocalStore, tmp_path: Path) -> None:
    paths = fastq(tmp_path, 40 * KIB, 30 * KIB)
    checkpoint = tmp_path / "done.ckpt"
    async with Uploader(config(16 * KIB), service=service(store)) as up:
        first = await up.upload(read_set(paths), store_id=STORE_ID, checkpoint=checkpoint)
        # The process died after the store completed the upload but before the checkpoint heard of it.
        lines = checkpoint.read_bytes().splitlines(keepends=True)
        assert b'"complete"' in lines[-1]
        checkpoint.write_bytes(b"".join(lines[:-1]))
        again = await up.upload(read_set(paths), store_id=STORE_ID, checkpoint=checkpoint)
        await assert_round_trip(up, again, paths)
    assert again.read_set_id == first.read_set_id
    assert again.resumed_parts == 5
    assert len(operations(store, "CreateMultipartReadSetUpload")) == 1
    assert len(operations(store, "CompleteMultipartReadSetUpload")) == 1


async def test_a_finished_checkpoint_returns_the_read_set_without_requests(store: LocalStore, tmp_path: Path) -> None:
    paths = fastq(tmp_path, 20 * KIB)
    checkpoint = tmp_path / "done.ckpt"
    async with Uploader(config(16 * KIB), service=service(store)) as up:
        first = await up.upload(read_set(paths), store_id=STORE_ID, checkpoint=checkpoint)
        before = len(store.requests)
        again = await up.upload(read_set(paths), store_id=STORE_ID, checkpoint=checkpoint)
    assert again.read_set_id == first.read_set_id
    # Its status alone: no part, no Create, and not the family of the store's ETags again (this Uploader's first
    # upload asked for it already).
    assert [r["operation"] for r in store.requests[:before]].count("GetSequenceStore") == 1
    assert [r["operation"] for r in store.requests[before:]] == ["GetReadSetMetadata"]
    assert first.verified and again.verified


async def test_the_adopted_read_set_is_the_one_with_the_same_sources(store: LocalStore, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    other = fastq(tmp_path / "other", 50 * KIB)
    mine = fastq(tmp_path, 40 * KIB)
    checkpoint = tmp_path / "mine.ckpt"
    async with Uploader(config(16 * KIB), service=service(store)) as up:
        decoy = await up.upload(read_set(other), store_id=STORE_ID, checkpoint=False)
        first = await up.upload(read_set(mine), store_id=STORE_ID, checkpoint=checkpoint)
        lines = checkpoint.read_bytes().splitlines(keepends=True)
        checkpoint.write_bytes(b"".join(lines[:-1]))  # the crash again: Complete done, not recorded
        again = await up.upload(read_set(mine), store_id=STORE_ID, checkpoint=checkpoint)
    assert decoy.read_set_id != first.read_set_id == again.read_set_id
    assert len(operations(store, "CompleteMultipartReadSetUpload")) == 2


async def test_a_file_and_a_stream_together_round_trip(store: LocalStore, tmp_path: Path) -> None:
    paths = fastq(tmp_path, 100 * KIB + 7, 70 * KIB)
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with open(write_fd, "wb") as out:
            out.write(paths[1].read_bytes())

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    with open(read_fd, "rb", buffering=0) as stream:
        rs = ReadSet(paths[0], FileType.FASTQ, "s", "x", "mixed", source2=stream)
        async with Uploader(config(32 * KIB, memory_budget=1024 * KIB), service=service(store)) as up:
            result = await up.upload(rs, store_id=STORE_ID)
            assert result.parts == {Source.SOURCE1: 4, Source.SOURCE2: 3}
            await assert_round_trip(up, result, paths)
    writer.join(5)
    order = [(r["source"], r["part_number"]) for r in operations(store, "UploadReadSetPart")]
    assert sorted(order) == [("SOURCE1", n) for n in range(1, 5)] + [("SOURCE2", n) for n in range(1, 4)]
