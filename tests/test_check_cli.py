"""Checking read sets later, through the real CLI against the local store: ``upload --receipt``, ``verify``,
``status`` and ``ls``."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from async_uploader.core.config import RateLimits, RetryConfig
from async_uploader.core.protocol import ReadSetMetadata
from async_uploader.emulator import LocalStore
from async_uploader.engine.calls import Calls
from async_uploader.engine.check import POLL_INTERVAL, wait_for_store
from async_uploader.engine.limiter import LocalLimiter
from tests.conftest import CliRun, run_cli_process
from tests.helpers import fastq_gz, upload_argv

STORE = "1234567890"
MakeStore = Callable[..., Awaitable[LocalStore]]


@pytest.fixture
def pair(tmp_path: Path) -> list[Path]:
    first, second = tmp_path / "r1.fastq.gz", tmp_path / "r2.fastq.gz"
    first.write_bytes(fastq_gz(120_000, seed=1))
    second.write_bytes(fastq_gz(90_000, seed=2))
    return [first, second]


async def cli(env: dict[str, str], *argv: str) -> CliRun:
    return await run_cli_process(list(argv), env=env, limit=60)


async def upload(store: LocalStore, env: dict[str, str], sources: list[Path], *extra: str, name: str = "n") -> CliRun:
    argv = upload_argv(store.url, *sources, name=name, extra=("--part-size", "64KiB", *extra))
    run = await cli(env, *argv)
    assert run.returncode == 0, run.stderr
    return run


def one_error_line(run: CliRun) -> str:
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert len(run.stderr_lines) == 1, run.stderr
    assert run.stderr_lines[0].startswith("async-uploader: error: ")
    assert "Traceback" not in run.stderr
    return run.stderr_lines[0]


async def test_no_wait_then_verify_the_receipt(
    tmp_path: Path, cli_env: dict[str, str], make_store: MakeStore, pair: list[Path]
) -> None:
    store = await make_store(data_dir=tmp_path / "store")
    receipt = tmp_path / "out" / "r.json"
    run = await upload(store, cli_env, pair, "--no-wait", "--receipt", str(receipt))
    read_set_id = run.stdout.split()[-1]
    assert f"async-uploader verify {receipt}" in run.stderr
    written = json.loads(receipt.read_text())
    assert written["readSetId"] == read_set_id
    assert all(source["etag"] is None for source in written["sources"].values())  # nothing hashed: hashed now
    assert oct(receipt.stat().st_mode & 0o777) == "0o600"

    checked = await cli(cli_env, "verify", str(receipt), "--endpoint-url", store.url)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"{read_set_id}: verified: the store's FASTQ_MD5up of SOURCE1, SOURCE2 equals")
    assert "hashed now: SOURCE1, SOURCE2" in checked.stdout

    as_json = await cli(cli_env, "verify", str(receipt), "--endpoint-url", store.url, "--json")
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)
    assert result["verified"] is True and result["outcome"] == "verified" and result["status"] == "ACTIVE"
    verification = result["verification"]
    assert verification["local"] == verification["remote"] and verification["reads"] == verification["remoteReads"]


async def test_a_tampered_receipt_hash_is_a_mismatch(
    tmp_path: Path, cli_env: dict[str, str], make_store: MakeStore, pair: list[Path]
) -> None:
    store = await make_store(data_dir=tmp_path / "store")
    receipt = tmp_path / "r.json"
    await upload(store, cli_env, pair, "--receipt", str(receipt))  # waited and verified: the receipt has hashes
    data = json.loads(receipt.read_text())
    digest = data["sources"]["SOURCE2"]["etag"]["digest"]
    assert len(digest) == 32
    good = await cli(cli_env, "verify", str(receipt), "--endpoint-url", store.url)
    assert good.returncode == 0, good.stderr
    assert "hashed now" not in good.stdout  # the receipt's own hashes were compared

    data["sources"]["SOURCE2"]["etag"]["digest"] = ("0" if digest[0] != "0" else "1") + digest[1:]
    receipt.write_text(json.dumps(data))
    bad = await cli(cli_env, "verify", str(receipt), "--endpoint-url", store.url)
    assert bad.returncode == 1, bad.stderr
    assert ": mismatch: SOURCE2: FASTQ_MD5up of the receipt is " in bad.stdout
    assert len(bad.stdout.splitlines()) == 1


async def test_still_processing_exits_75_and_a_later_verify_succeeds(
    tmp_path: Path, cli_env: dict[str, str], make_store: MakeStore, pair: list[Path]
) -> None:
    # The store keeps the read set in PROCESSING_UPLOAD for a long while (its processing delay).
    store = await make_store(data_dir=tmp_path / "store", processing_delay=3600.0)
    receipt = tmp_path / "r.json"
    await upload(store, cli_env, pair, "--no-wait", "--receipt", str(receipt))
    looks = sum(1 for r in store.requests if r["operation"] == "GetReadSetMetadata")

    waited = await cli(cli_env, "verify", str(receipt), "--endpoint-url", store.url, "--wait-timeout", "1s")
    assert waited.returncode == 75, waited.stderr
    assert ": processing: the store is still processing it (PROCESSING_UPLOAD)" in waited.stdout
    assert sum(1 for r in store.requests if r["operation"] == "GetReadSetMetadata") - looks >= 2  # looked again

    once = await cli(cli_env, "verify", str(receipt), "--endpoint-url", store.url, "--no-wait", "--json")
    assert once.returncode == 75, once.stderr
    assert json.loads(once.stdout)["outcome"] == "processing"


async def test_a_source_changed_since_the_upload_cannot_be_hashed_now(
    tmp_path: Path, cli_env: dict[str, str], make_store: MakeStore, pair: list[Path]
) -> None:
    store = await make_store(data_dir=tmp_path / "store")
    receipt = tmp_path / "r.json"
    await upload(store, cli_env, pair, "--no-wait", "--receipt", str(receipt))
    info = pair[0].stat()
    os.utime(pair[0], ns=(info.st_atime_ns, info.st_mtime_ns + 5_000_000_000))
    run = await cli(cli_env, "verify", str(receipt), "--endpoint-url", store.url)
    assert run.returncode == 2, run.stderr
    assert f"changed: SOURCE1 {pair[0]} changed since the upload" in run.stdout


async def test_verify_files_named_now_and_a_folder_of_receipts(
    tmp_path: Path, cli_env: dict[str, str], make_store: MakeStore, pair: list[Path]
) -> None:
    store = await make_store(data_dir=tmp_path / "store")
    first = (await upload(store, cli_env, pair, "--no-wait", name="one")).stdout.split()[-1]
    await upload(store, cli_env, pair[:1], "--no-wait", name="two")
    now = ["--store-id", STORE, "--read-set-id", first, "--endpoint-url", store.url]
    same = await cli(cli_env, "verify", *now, *map(str, pair))
    assert same.returncode == 0, same.stderr
    assert same.stdout.startswith(f"{first}: verified:")
    swapped = await cli(cli_env, "verify", *now, str(pair[1]), str(pair[0]))
    assert swapped.returncode == 1, swapped.stderr
    assert f"{first}: mismatch: SOURCE1: 120,000 bytes in the store, 90,000 expected" in swapped.stdout
    other = tmp_path / "other.fastq.gz"
    other.write_bytes(fastq_gz(120_000, seed=3))  # the same size, other reads
    different = await cli(cli_env, "verify", *now, str(other), str(pair[1]))
    assert different.returncode == 1, different.stderr
    assert f"{first}: mismatch: SOURCE1: FASTQ_MD5up of the file is" in different.stdout

    folder = Path(cli_env["ASYNC_UPLOADER_HOME"]) / "receipts"
    both = await cli(cli_env, "verify", str(folder), "--endpoint-url", store.url)
    assert both.returncode == 0, both.stderr
    assert len(both.stdout.splitlines()) == 2 and all(": verified: " in line for line in both.stdout.splitlines())
    assert "2 read sets: 2 verified" in both.stderr


async def test_status_and_ls_list_what_was_uploaded_over_several_pages(
    tmp_path: Path, cli_env: dict[str, str], make_store: MakeStore, pair: list[Path]
) -> None:
    store = await make_store(data_dir=tmp_path / "store")
    ids = [(await upload(store, cli_env, pair[:1], name=f"n{i}")).stdout.split()[-1] for i in range(3)]
    service = ["--store-id", STORE, "--endpoint-url", store.url]

    status = await cli(cli_env, "status", *ids[:2], *service)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert [line.split("\t")[:3] for line in lines] == [[ids[0], "ACTIVE", "n0"], [ids[1], "ACTIVE", "n1"]]
    assert "SOURCE1 120,000 B" in lines[0] and "FASTQ_MD5up SOURCE1=" in lines[0]
    as_json = await cli(cli_env, "status", ids[2], *service, "--json")
    record = json.loads(as_json.stdout)
    assert record["id"] == ids[2] and record["name"] == "n2" and record["sizes"] == {"SOURCE1": 120_000}

    before = sum(1 for r in store.requests if r["operation"] == "ListReadSets")
    listed = await cli(cli_env, "ls", *service, "--page-size", "2", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == ids
    assert sum(1 for r in store.requests if r["operation"] == "ListReadSets") - before == 2  # two pages
    assert "3 read set(s) in store" in listed.stderr

    plain = await cli(cli_env, "ls", *service, "--name", "n1", "--status", "ACTIVE")
    assert plain.returncode == 0, plain.stderr
    assert [line.split("\t")[:4] for line in plain.stdout.splitlines()] == [[ids[1], "ACTIVE", "FASTQ", "n1"]]
    none = await cli(cli_env, "ls", *service, "--created-after", "2999-01-01", "--json")
    assert none.returncode == 0 and none.stdout == ""

    missing = await cli(cli_env, "status", "9" * 18, *service)
    assert missing.returncode == 1
    assert missing.stdout.startswith("9" * 18 + "\tNOT_FOUND")


async def test_a_ubam_is_said_unverifiable_with_what_matched(
    tmp_path: Path, cli_env: dict[str, str], make_store: MakeStore
) -> None:
    pysam = pytest.importorskip("pysam")
    bam = tmp_path / "reads.bam"
    with pysam.AlignmentFile(str(bam), "wb", header={"HD": {"VN": "1.6", "SO": "unsorted"}}) as out:
        for i in range(50):
            read = pysam.AlignedSegment(out.header)
            read.query_name, read.flag = f"u{i}", 4
            read.query_sequence, read.query_qualities = "ACGT" * 10, pysam.qualitystring_to_array("I" * 40)
            out.write(read)
    store = await make_store(data_dir=tmp_path / "store")
    receipt = tmp_path / "r.json"
    argv = upload_argv(store.url, bam, extra=("--receipt", str(receipt)))
    argv[argv.index("FASTQ")] = "UBAM"
    run = await cli(cli_env, *argv)
    assert run.returncode == 0, run.stderr
    checked = await cli(cli_env, "verify", str(receipt), "--endpoint-url", store.url, "--json")
    assert checked.returncode == 0, checked.stderr
    result = json.loads(checked.stdout)
    assert result["outcome"] == "unverifiable" and result["verified"] is False
    assert f"SOURCE1 {bam.stat().st_size:,} bytes" in result["reason"] and "cannot be verified" in result["reason"]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["verify", "{tmp}/nothing.json"], "no such receipt"),
        (["verify", "{tmp}/garbage.json"], "not an async-uploader receipt"),
        (["verify", "{tmp}"], "no receipts"),
        (["verify"], "name a receipt"),
        (["verify", "--read-set-id", "1234567890", "{tmp}/garbage.json"], "--read-set-id needs --store-id"),
        (["verify", "--store-id", STORE, "--read-set-id", "1234567890"], "SOURCE1 [SOURCE2]"),
        (["verify", "--wait-timeout", "soon", "{tmp}/garbage.json"], "--wait-timeout"),
        (["status", "--store-id", STORE, "12"], "read set id"),
        (["ls", "--store-id", STORE, "--created-after", "yesterday"], "ISO-8601"),
        (["ls", "--store-id", STORE, "--page-size", "500"], "more than 100"),
        (["ls", "--store-id", STORE, "--status", "GONE"], "--status"),
    ],
)
async def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, cli_env: dict[str, str], argv: list[str], says: str
) -> None:
    (tmp_path / "garbage.json").write_text("not json")
    (tmp_path / "empty").mkdir()
    args = [a.replace("{tmp}", str(tmp_path / "empty") if a == "{tmp}" else str(tmp_path)) for a in argv]
    run = await cli(cli_env, *args, "--endpoint-url", "http://127.0.0.1:9")
    assert says in one_error_line(run)


# -- the wait's pace, on a fake clock ------------------------------------------------------------------------------


class _Client:
    """GetReadSetMetadata answering PROCESSING_UPLOAD until ``active_after`` looks."""

    def __init__(self, active_after: int) -> None:
        self.looks = 0
        self.active_after = active_after

    async def get_read_set_metadata(self, store_id: str, read_set_id: str) -> ReadSetMetadata:
        self.looks += 1
        return ReadSetMetadata(read_set_id, "ACTIVE" if self.looks > self.active_after else "PROCESSING_UPLOAD")


def _calls(client: Any) -> Calls:
    return Calls(client, LocalLimiter(RateLimits.unlimited()), RetryConfig(), max_concurrency=1, operation_timeout=5)


@pytest.mark.parametrize(("active_after", "deadline", "looks", "status"), [(3, 100.0, 4, "ACTIVE"), (99, 2.5, 4, None)])
async def test_the_wait_looks_at_a_steady_pace_until_active_or_the_deadline(
    active_after: int, deadline: float, looks: int, status: str | None
) -> None:
    now = [0.0]
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds

    client = _Client(active_after)
    metadata = await wait_for_store(_calls(client), STORE, "1" * 18, deadline, clock=lambda: now[0], sleep=sleep)
    assert client.looks == looks
    assert metadata.status == (status or "PROCESSING_UPLOAD")
    assert all(pause <= POLL_INTERVAL for pause in pauses)
    assert pauses[:2] == [POLL_INTERVAL, POLL_INTERVAL]
