"""End-to-end verification through the real CLI against the local store: the read set's ETag and counts against the
user's bytes, for every kind of FASTQ, every family, and when the store's answer is wrong or missing."""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from async_uploader.cli.demo import write_fastq_gz
from async_uploader.emulator import FaultOptions, LocalStore, StoreOptions
from tests.conftest import run_cli_process
from tests.helpers import fastq_text, gzip_members, upload_argv

KIB = 1024


@pytest.fixture
def pair(tmp_path: Path) -> list[Path]:
    first, second = tmp_path / "r1.fastq.gz", tmp_path / "r2.fastq.gz"
    write_fastq_gz(first, 400 * KIB, mate=1, seed=1)
    write_fastq_gz(second, 400 * KIB, mate=2, seed=1)
    return [first, second]


async def upload(store: LocalStore, sources: list[Path], env: dict[str, str], *extra: str) -> Any:
    argv = upload_argv(store.url, *sources, extra=("--part-size", "64KiB", *extra))
    return await run_cli_process(argv, env=env, limit=60)


def md5_of(path: Path) -> str:
    return hashlib.md5(gzip.decompress(path.read_bytes())).hexdigest()


async def test_a_paired_gzip_upload_is_verified(tmp_path: Path, cli_env: dict[str, str], pair: list[Path]) -> None:
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store")) as store:
        run = await upload(store, pair, cli_env, "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["verified"] is True
    verification = result["verification"]
    assert verification["algorithm"] == "FASTQ_MD5up"
    assert verification["local"] == verification["remote"] == {"SOURCE1": md5_of(pair[0]), "SOURCE2": md5_of(pair[1])}
    assert verification["reads"] == verification["remoteReads"] > 0
    assert verification["bases"] == verification["remoteBases"] > 0


@pytest.mark.parametrize("form", ["three gzip members", "plain FASTQ"])
async def test_other_fastq_forms_are_verified(tmp_path: Path, cli_env: dict[str, str], form: str) -> None:
    raw = fastq_text(4000, seed=5)
    source = tmp_path / "r1.fastq.gz"
    source.write_bytes(gzip_members(raw, 3) if form == "three gzip members" else raw)
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store")) as store:
        run = await upload(store, [source], cli_env)
    assert run.returncode == 0, run.stderr
    assert "verified: the store's FASTQ_MD5up of SOURCE1 equals the upload's; 4,000 reads" in run.stderr


async def test_a_stream_is_hashed_as_it_is_read(tmp_path: Path, cli_env: dict[str, str], pair: list[Path]) -> None:
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store")) as store:
        argv = upload_argv(store.url, Path("-"), extra=("--part-size", "64KiB", "--json"))
        run = await run_cli_process(argv, env=cli_env, stdin=pair[0].read_bytes(), limit=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["verification"]["local"] == {"SOURCE1": md5_of(pair[0])}


async def test_the_sha256up_family(tmp_path: Path, cli_env: dict[str, str], pair: list[Path]) -> None:
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store", etag_family="SHA256up")) as store:
        run = await upload(store, pair, cli_env, "--json")
    assert run.returncode == 0, run.stderr
    verification = json.loads(run.stdout)["verification"]
    assert verification["algorithm"] == "FASTQ_SHA256up" and verification["verified"] is True
    assert verification["local"]["SOURCE1"] == hashlib.sha256(gzip.decompress(pair[0].read_bytes())).hexdigest()


async def test_a_wrong_etag_fails_naming_both_hashes_and_keeps_the_read_set(
    tmp_path: Path, cli_env: dict[str, str], pair: list[Path]
) -> None:
    options = StoreOptions(data_dir=tmp_path / "store", faults=FaultOptions(corrupt_etag=True))
    async with LocalStore(options) as store:
        run = await upload(store, pair, cli_env)
        completed = [r for r in store.requests if r["operation"] == "CompleteMultipartReadSetUpload"]
    assert run.returncode == 1, run.stderr
    [line] = run.stderr_lines
    assert line.startswith("async-uploader: error: read set ") and "(kept, for the record) failed verification" in line
    assert f"SOURCE1: FASTQ_MD5up of the upload is {md5_of(pair[0])}, the store reports " in line
    assert run.stdout == ""  # no read set id where a pipeline would take it for a success
    assert len(completed) == 1 and not any(r["operation"] == "AbortMultipartReadSetUpload" for r in store.requests)


async def test_a_store_that_reports_no_etag_is_not_verified_and_says_so(
    tmp_path: Path, cli_env: dict[str, str], pair: list[Path]
) -> None:
    async with LocalStore(StoreOptions(discard=True)) as store:  # keeps no bytes: reports no ETag
        run = await upload(store, pair, cli_env)
    assert run.returncode == 0, run.stderr
    assert "async-uploader: not verified: the store reported no ETag" in run.stderr_lines


async def test_verification_can_be_switched_off_and_the_result_says_so(
    tmp_path: Path, cli_env: dict[str, str], pair: list[Path]
) -> None:
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store")) as store:
        run = await upload(store, pair, cli_env, "--no-verify", "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["verified"] is False and result["verification"]["reason"] == "verification was switched off"


async def test_a_bam_declared_as_fastq_is_refused_in_a_second_before_anything_is_created(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    bam = tmp_path / "aligned.bam"
    bam.write_bytes(gzip.compress(b"BAM\x01" + bytes(1000)) * 50)
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store")) as store:
        started = time.monotonic()
        run = await upload(store, [bam], cli_env)
        requests = [r["operation"] for r in store.requests]
    assert run.returncode == 2
    assert run.stderr_lines == [
        f"async-uploader: error: SOURCE1 {bam} is declared FASTQ but it is a BAM file; check --file-type"
    ]
    assert requests == []  # not even the reachability probe
    assert time.monotonic() - started < 10  # the process's start-up, and the first MiB read


async def test_a_gzip_stream_cut_inside_a_member_is_bad_input_naming_the_source(
    tmp_path: Path, cli_env: dict[str, str], pair: list[Path]
) -> None:
    data = pair[0].read_bytes()
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store")) as store:
        argv = upload_argv(store.url, Path("-"), extra=("--part-size", "64KiB"))
        run = await run_cli_process(argv, env=cli_env, stdin=data[: len(data) // 2 + 7], limit=60)
    assert run.returncode == 2, run.stderr
    assert run.stderr_lines == [
        "async-uploader: error: SOURCE1 (a stream) is truncated: its last gzip member ends early"
    ]


async def test_a_truncated_gzip_file_is_bad_input_naming_the_source(
    tmp_path: Path, cli_env: dict[str, str], pair: list[Path]
) -> None:
    cut = tmp_path / "cut.fastq.gz"
    cut.write_bytes(pair[0].read_bytes()[:-1000])
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store")) as store:
        run = await upload(store, [cut], cli_env)
    assert run.returncode == 2, run.stderr
    assert run.stderr_lines == [f"async-uploader: error: SOURCE1 {cut} is truncated: its last gzip member ends early"]
