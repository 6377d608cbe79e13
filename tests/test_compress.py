"""Plain FASTQ gzip-compressed on the fly: through the real CLI against the local store (paired files, stdin, a
refusal with --compress never, kill -9 and resume), and the pieces (the source's parts, the checkpoint's record)."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from async_uploader.core.checkpoint import CheckpointHeader, PartRecord, header_line, replay, verify_resumable
from async_uploader.core.config import FileType, ReadSet, ServiceConfig, Source
from async_uploader.core.errors import CheckpointMismatchError
from async_uploader.core.events import EVENT_SCHEMA
from async_uploader.core.plan import Plan
from async_uploader.edge.client import OmicsClient
from async_uploader.edge.sources import open_sources, recorded_span
from async_uploader.edge.sources.compressed import MEMBER_SIZE, CompressedSource, is_plain_fastq
from async_uploader.emulator import LocalStore, StoreOptions
from tests.conftest import closed_port, run_cli_process
from tests.helpers import fastq_plain, upload_argv
from tests.test_resume import (
    CONCURRENCY,
    PART_OP,
    TOTAL_PARTS,
    Harness,
    _acked,
    checkpoint_records,
    harness,  # noqa: F401 (the fixture)
)

KIB = 1024
STORE = "1234567890"


async def read_back(store: LocalStore, read_set_id: str, source: Source) -> bytes:
    """A read set's source as the store holds it, through GetReadSet, part after part until there is none."""
    chunks: list[bytes] = []
    async with OmicsClient.from_config(ServiceConfig(endpoint_url=store.url, region="us-east-1"), limit=2) as client:
        number = 1
        while True:
            try:
                chunks.append(await client.download_part(STORE, read_set_id, source, number))
            except Exception:
                break
            number += 1
    return b"".join(chunks)


@pytest.fixture
def plain_pair(tmp_path: Path) -> list[Path]:
    first, second = tmp_path / "r1.fastq", tmp_path / "r2.fastq"
    first.write_bytes(fastq_plain(700 * KIB, seed=11))
    second.write_bytes(fastq_plain(650 * KIB + 3, seed=12))
    return [first, second]


async def test_a_plain_pair_uploads_gzip_compressed_and_verifies(
    tmp_path: Path, cli_env: dict[str, str], plain_pair: list[Path], test_credentials: None
) -> None:
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store")) as store:
        argv = upload_argv(store.url, *plain_pair, extra=("--part-size", "128KiB", "--json"))
        run = await run_cli_process(argv, env=cli_env, limit=60)
        assert run.returncode == 0, run.stderr
        result = json.loads(run.stdout)
        held = {s: await read_back(store, result["readSetId"], s) for s in (Source.SOURCE1, Source.SOURCE2)}
    assert result["verified"] is True, result
    for source, path in zip((Source.SOURCE1, Source.SOURCE2), plain_pair, strict=True):
        assert held[source].startswith(b"\x1f\x8b"), "the store holds plain bytes"
        assert gzip.decompress(held[source]) == path.read_bytes()
        assert result["bytes"][source.value] == len(held[source])
        compressed = result["compressed"][source.value]
        assert compressed["plainBytes"] == path.stat().st_size
        assert compressed["ratio"] == pytest.approx(path.stat().st_size / len(held[source]), abs=1e-3)
        assert compressed["ratio"] > 1.5
    # part n holds plain bytes (n - 1) × 128 KiB .. n × 128 KiB, whatever they compress to
    assert result["parts"] == {"SOURCE1": 6, "SOURCE2": 6}


async def test_the_summary_line_says_it_was_compressed_with_the_ratio(
    tmp_path: Path, cli_env: dict[str, str], plain_pair: list[Path]
) -> None:
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store")) as store:
        run = await run_cli_process(upload_argv(store.url, plain_pair[0]), env=cli_env, limit=60)
    assert run.returncode == 0, run.stderr
    [summary] = [line for line in run.stderr_lines if line.startswith("async-uploader: uploaded ")]
    assert "gzip-compressed on the fly from 0.7 MB of plain FASTQ (ratio " in summary
    assert any(line.startswith("async-uploader: verified: ") for line in run.stderr_lines), run.stderr


async def test_plain_fastq_from_stdin_uploads_compressed_and_verifies(
    tmp_path: Path, cli_env: dict[str, str], plain_pair: list[Path], test_credentials: None
) -> None:
    plain = plain_pair[0].read_bytes()
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store")) as store:
        argv = upload_argv(store.url, Path("-"), extra=("--part-size", "100KiB", "--json"))
        run = await run_cli_process(argv, env=cli_env, stdin=plain, limit=60)
        assert run.returncode == 0, run.stderr
        result = json.loads(run.stdout)
        held = await read_back(store, result["readSetId"], Source.SOURCE1)
    assert result["verified"] is True, result
    assert held.startswith(b"\x1f\x8b") and gzip.decompress(held) == plain
    assert result["parts"] == {"SOURCE1": 7}
    assert result["compressed"]["SOURCE1"]["plainBytes"] == len(plain)


async def test_compress_never_refuses_plain_fastq_before_anything_is_created(
    tmp_path: Path, cli_env: dict[str, str], plain_pair: list[Path]
) -> None:
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store")) as store:
        for sources, stdin in ((plain_pair, None), ([Path("-")], plain_pair[0].read_bytes())):
            argv = upload_argv(store.url, *sources, extra=("--compress", "never"))
            run = await run_cli_process(argv, env=cli_env, stdin=stdin, limit=60)
            assert run.returncode == 2, run.stderr
            [line] = run.stderr_lines
            assert line.startswith("async-uploader: error: SOURCE1 ")
            assert "is plain FASTQ, and the service stores FASTQ gzip-compressed only" in line
            assert "drop --compress never" in line
        assert not any(r["operation"] == "CreateMultipartReadSetUpload" for r in store.requests)
    assert not (tmp_path / "uploader-home").exists() or not list((tmp_path / "uploader-home").rglob("*.jsonl"))


async def test_dry_run_says_plain_fastq_is_compressed_on_the_fly_or_refused_with_compress_never(
    tmp_path: Path, cli_env: dict[str, str], plain_pair: list[Path]
) -> None:
    gzipped = tmp_path / "r3.fastq.gz"
    gzipped.write_bytes(gzip.compress(fastq_plain(100 * KIB, seed=5), mtime=0))
    nowhere = f"http://127.0.0.1:{closed_port()}"  # a request would fail: the dry run makes none
    dry = ("--dry-run", "--part-size", "128KiB")
    text, data, refused, as_is = await asyncio.gather(
        run_cli_process(upload_argv(nowhere, *plain_pair, extra=dry), env=cli_env, limit=60),
        run_cli_process(upload_argv(nowhere, plain_pair[0], gzipped, extra=(*dry, "--json")), env=cli_env, limit=60),
        run_cli_process(upload_argv(nowhere, *plain_pair, extra=(*dry, "--compress", "never")), env=cli_env, limit=60),
        run_cli_process(upload_argv(nowhere, gzipped, extra=(*dry, "--compress", "never")), env=cli_env, limit=60),
    )
    assert text.returncode == 0, text.stderr
    [line] = [line for line in text.stdout.splitlines() if "on the fly" in line]
    assert line.startswith("SOURCE1 and SOURCE2: plain FASTQ, gzip-compressed on the fly as they upload (")
    assert "SOURCE1: 716,800 bytes in 6 parts of 131,072 bytes" in text.stdout  # parts of plain input
    assert data.returncode == 0, data.stderr
    plan = json.loads(data.stdout)
    assert plan["compressOnTheFly"] == ["SOURCE1"] and plan["codec"] in {"isal-1", "zlib-1"}
    assert refused.returncode == 2 and refused.stdout == ""
    [error] = refused.stderr_lines  # the real run's refusal, one line
    assert error.startswith(f"async-uploader: error: SOURCE1 {plain_pair[0]} is plain FASTQ, and the service")
    assert "drop --compress never" in error
    assert as_is.returncode == 0 and "on the fly" not in as_is.stdout, as_is.stderr


async def test_gzip_sources_are_sent_as_they_are(tmp_path: Path, cli_env: dict[str, str]) -> None:
    source = tmp_path / "r1.fastq.gz"
    source.write_bytes(gzip.compress(fastq_plain(200 * KIB, seed=3), compresslevel=1, mtime=0))
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store")) as store:
        argv = upload_argv(store.url, source, extra=("--compress", "never", "--json"))
        run = await run_cli_process(argv, env=cli_env, limit=60)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert "compressed" not in result and result["bytes"] == {"SOURCE1": source.stat().st_size}


# -- kill -9 and resume -------------------------------------------------------------------------------------------


def test_kill_9_then_resume_compresses_only_the_parts_not_acknowledged(harness: Harness) -> None:  # noqa: F811
    """The resume tests' sources are plain FASTQ; here the checkpoint and the parts each run sent are looked at."""
    store = harness.start_store("--latency-ms", "5", "--connection-mbps", "2")
    first = harness.start_upload()
    harness.wait_until(first, _acked(TOTAL_PARTS // 2), "half the parts to be acknowledged")
    first.kill()
    assert harness.wait_exit(first) == -signal.SIGKILL
    acked_at_kill = store.log.acked_parts()
    assert harness.checkpoint is not None
    [header] = [r for r in checkpoint_records(harness.checkpoint) if r.get("t") == "header"]
    assert header["compressed"] == {"SOURCE1": 64 * KIB, "SOURCE2": 64 * KIB}

    code, out, err = harness.run_upload()
    harness.check_success(code, out, err)
    assert "gzip-compressed on the fly" in err
    sent = Counter((r["source"], r["part_number"]) for r in store.log.ops(PART_OP))
    assert len(sent) == TOTAL_PARTS
    resent = {key: n for key, n in sent.items() if n > 1}
    assert len(resent) <= CONCURRENCY and all(n == 2 for n in resent.values()), resent
    # the rerun sent the parts the first run had not finished, and again at most those in flight at the kill
    assert acked_at_kill < TOTAL_PARTS and sum(sent.values()) <= TOTAL_PARTS + CONCURRENCY


# -- the pieces ---------------------------------------------------------------------------------------------------


def test_plain_fastq_is_told_from_gzip_and_from_other_bytes(tmp_path: Path) -> None:
    plain = tmp_path / "a.fastq"
    plain.write_bytes(fastq_plain(5000, seed=1))
    packed = tmp_path / "a.fastq.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    other = tmp_path / "a.txt"
    other.write_bytes(b"hello\n" * 100)
    assert is_plain_fastq(plain) and not is_plain_fastq(packed) and not is_plain_fastq(other)
    assert is_plain_fastq(io.BufferedReader(io.BytesIO(plain.read_bytes())))
    assert not is_plain_fastq(io.BytesIO(plain.read_bytes()))  # cannot be peeked: sent as it is


@pytest.mark.parametrize("part_size", [MEMBER_SIZE // 2, MEMBER_SIZE + 12345, 3 * MEMBER_SIZE])
async def test_parts_are_whole_gzip_streams_of_fixed_plain_ranges(tmp_path: Path, part_size: int) -> None:
    data = fastq_plain(4 * MEMBER_SIZE + 777, seed=4)
    path = tmp_path / "r.fastq"
    path.write_bytes(data)
    readers = open_sources(
        {Source.SOURCE1: path}, part_size=part_size, slice_size=64 * KIB, memory_budget=64 * MEMBER_SIZE,
        compress={Source.SOURCE1},
    )  # fmt: skip
    reader = readers[Source.SOURCE1]
    assert isinstance(reader, CompressedSource)
    plan = Plan(part_size, streams=frozenset({Source.SOURCE1}))
    pieces: dict[int, bytes] = {}
    try:
        async for item in reader.items(plan, {}):
            body = reader.body(item)
            pieces[item.part.number] = b"".join([bytes(piece) async for piece in body.slices()])
            offset, length = reader.plain_span(item.part.number)
            assert gzip.decompress(pieces[item.part.number]) == data[offset : offset + length]
            record = PartRecord(Source.SOURCE1, item.part.number, item.part.length, "c", body.digest or "")
            assert recorded_span(reader, record, part_size) == (offset, length)
            reader.release(item)
    finally:
        reader.close()
    assert sorted(pieces) == list(range(1, -(-len(data) // part_size) + 1))
    assert gzip.decompress(b"".join(pieces[n] for n in sorted(pieces))) == data
    assert reader.size == sum(map(len, pieces.values())) and reader.part_count == len(pieces)
    assert reader.plain_bytes == len(data)


async def test_a_resume_skips_acknowledged_parts_without_reading_them(tmp_path: Path) -> None:
    data = fastq_plain(5 * 100 * KIB, seed=5)
    path = tmp_path / "r.fastq"
    path.write_bytes(data)
    part_size = 100 * KIB
    readers = open_sources(
        {Source.SOURCE1: path}, part_size=part_size, slice_size=64 * KIB, memory_budget=64 * MEMBER_SIZE,
        compress={Source.SOURCE1},
    )  # fmt: skip
    reader = readers[Source.SOURCE1]
    assert isinstance(reader, CompressedSource)
    done = {(Source.SOURCE1, n): PartRecord(Source.SOURCE1, n, 1000 + n, "c", "d") for n in (1, 2, 4)}
    numbers = []
    try:
        async for item in reader.items(Plan(part_size, streams=frozenset({Source.SOURCE1})), done):
            numbers.append(item.part.number)
            reader.release(item)
    finally:
        reader.close()
    assert numbers == [3, 5]
    assert reader.part_count == 5 and reader.plain_bytes == len(data)
    assert reader.size is not None and reader.size > 1001 + 1002 + 1004


def _header(**extra: Any) -> CheckpointHeader:
    read_set = ReadSet(Path("/a.fastq"), FileType.FASTQ, "s", "x", "n")
    return CheckpointHeader.from_read_set(STORE, read_set, part_size=1024, sources=(), client_token="t", **extra)


def test_the_checkpoint_records_the_compressed_sources_and_old_ones_read_as_before() -> None:
    plain = _header()
    line = header_line(plain)
    assert b"compressed" not in line  # a checkpoint without compressed sources is written as before
    assert replay(line).header.compressed == {}
    packed = _header(compressed={Source.SOURCE1: 1024})
    assert replay(header_line(packed)).header.compressed == {Source.SOURCE1: 1024}
    read_set = ReadSet(Path("/a.fastq"), FileType.FASTQ, "s", "x", "n")
    common: dict[str, Any] = {"store_id": STORE, "read_set": read_set, "sources": (), "part_size": 1024}
    assert verify_resumable(packed, compressed={Source.SOURCE1: 1024}, **common) == frozenset()
    with pytest.raises(CheckpointMismatchError, match="compressed while it uploaded"):
        verify_resumable(plain, compressed={Source.SOURCE1: 1024}, **common)  # parts sent plain, by an older version
    with pytest.raises(CheckpointMismatchError, match="--restart"):
        verify_resumable(packed, compressed={}, **common)


async def test_the_result_event_says_it_was_compressed_and_fits_the_schema(
    tmp_path: Path, cli_env: dict[str, str], plain_pair: list[Path]
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store")) as store:
        argv = upload_argv(store.url, *plain_pair, extra=("--events", "--part-size", "256KiB"))
        run = await run_cli_process(argv, env=cli_env, limit=60)
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    [result] = [event for event in events if event["event"] == "result"]
    jsonschema.validate(result, EVENT_SCHEMA)
    assert set(result["compressed"]) == {"SOURCE1", "SOURCE2"}
    assert result["compressed"]["SOURCE1"]["plainBytes"] == plain_pair[0].stat().st_size
