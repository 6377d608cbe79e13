"""After the bytes, through the CLI against a local store that keeps each read set PROCESSING_UPLOAD for a while
(as the service does while it hashes): --no-wait returns at Complete, a wait that times out exits 75 and the
same command goes on waiting without a second Create, the phases' timings add up, receipts are written, and a
batch frees a row's slot at Complete so read sets are processed side by side."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys
from pathlib import Path

import pytest

from async_uploader.cli.demo import write_fastq_gz
from async_uploader.emulator import LocalStore, StoreOptions
from tests.conftest import REPO_ROOT, run_cli_process
from tests.helpers import gzip_like, upload_argv
from tests.store_helpers import STORE_ID, omics

pytestmark = pytest.mark.slow
KIB = 1024


def creates(store: LocalStore) -> int:
    return sum(1 for r in store.requests if r["operation"] == "CreateMultipartReadSetUpload")


async def status_of(store: LocalStore, read_set_id: str) -> str:
    """Asked from a thread: the store serves on this event loop."""
    client = omics(store)
    metadata = await asyncio.to_thread(client.get_read_set_metadata, sequenceStoreId=STORE_ID, id=read_set_id)
    return str(metadata["status"])


async def processing(store: LocalStore) -> int:
    client = omics(store)
    listed = await asyncio.to_thread(
        client.list_read_sets, sequenceStoreId=STORE_ID, filter={"status": "PROCESSING_UPLOAD"}
    )
    return len(listed["readSets"])


@pytest.fixture
def pair(tmp_path: Path) -> list[Path]:
    return [gzip_like(tmp_path / f"r{n}.fq.gz", 300 * KIB) for n in (1, 2)]


async def test_no_wait_returns_at_complete_and_the_same_command_later_waits_and_verifies(
    tmp_path: Path, cli_env: dict[str, str], pair: list[Path]
) -> None:
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store", processing_delay=8.0)) as store:
        argv = upload_argv(store.url, *pair, extra=("--part-size", "64KiB", "--json"))
        early = await run_cli_process([*argv, "--no-wait"], env=cli_env, limit=60)
        assert early.returncode == 0, early.stderr
        result = json.loads(early.stdout)
        assert result["verified"] is None and result["status"] == "PROCESSING_UPLOAD"
        assert await status_of(store, result["readSetId"]) == "PROCESSING_UPLOAD"  # returned before the store was done
        receipt = Path(result["receipt"])
        assert stat.S_IMODE(receipt.stat().st_mode) == 0o600
        written = json.loads(receipt.read_text())
        assert written["readSetId"] == result["readSetId"] and written["status"] == "PROCESSING_UPLOAD"
        assert set(written["sources"]) == {"SOURCE1", "SOURCE2"}
        assert not any(word in receipt.read_text().lower() for word in ("secret", "token", "password", "credential"))

        later = await run_cli_process(argv, env=cli_env, limit=90)
    assert later.returncode == 0, later.stderr
    again = json.loads(later.stdout)
    assert again["readSetId"] == result["readSetId"] and again["verified"] is True
    assert creates(store) == 1


async def test_a_wait_that_times_out_exits_75_and_the_rerun_waits_without_a_second_create(
    tmp_path: Path, cli_env: dict[str, str], pair: list[Path]
) -> None:
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store", processing_delay=8.0)) as store:
        argv = upload_argv(store.url, *pair, extra=("--part-size", "64KiB", "--json"))
        first = await run_cli_process([*argv, "--wait-timeout", "1s"], env=cli_env, limit=60)
        assert first.returncode == 75, first.stderr
        assert "still PROCESSING_UPLOAD after 1 s (--wait-timeout); run the same command again" in first.stderr
        second = await run_cli_process(argv, env=cli_env, limit=90)
    assert second.returncode == 0, second.stderr
    result = json.loads(second.stdout)
    assert result["verified"] is True and creates(store) == 1
    parts = sum(1 for r in store.requests if r["operation"] == "UploadReadSetPart")
    assert parts == sum(result["parts"].values())  # nothing was sent again


async def test_the_phases_are_timed_apart_and_add_up(tmp_path: Path, cli_env: dict[str, str], pair: list[Path]) -> None:
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store", processing_delay=2.0)) as store:
        run = await run_cli_process(
            upload_argv(store.url, *pair, extra=("--part-size", "64KiB", "--json")), env=cli_env, limit=60
        )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    phases = ("transferSeconds", "completeSeconds", "storeSeconds", "verifySeconds")
    assert sum(result[p] for p in phases) <= result["seconds"] + 0.01
    assert result["storeSeconds"] >= 2.0  # the store's processing is counted as the store's, not as the transfer
    assert result["transferSeconds"] < result["storeSeconds"]
    assert result["transferMBps"] > 0


async def test_a_batch_frees_slots_at_complete_and_ctrl_c_while_waiting_resumes_by_waiting(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    folder = tmp_path / "reads"
    folder.mkdir()
    rows = []
    for n in range(8):
        write_fastq_gz(folder / f"s{n}.fastq.gz", 100 * KIB, seed=n + 1)
        rows.append(f"s{n}.fastq.gz\tFASTQ\tsubject-{n}\tsample-{n}\tset-{n}")
    manifest = folder / "manifest.tsv"
    manifest.write_text("source1\tsourceFileType\tsubjectId\tsampleId\tname\n" + "\n".join(rows) + "\n")
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store", processing_delay=20.0)) as store:
        argv = [
            "batch",
            str(manifest),
            "--store-id",
            STORE_ID,
            "--endpoint-url",
            store.url,
            "--part-size",
            "64KiB",
            "--max-parallel",
            "2",
            "--checkpoint-dir",
            str(tmp_path / "batch"),
            "--json",
            "--no-progress",
        ]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "async_uploader",
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=cli_env,
            cwd=REPO_ROOT,
        )
        most = 0
        for _ in range(600):  # until all eight are processing at once, 60 s at most
            most = max(most, await processing(store))
            if most == 8:
                break
            await asyncio.sleep(0.1)
        assert most == 8  # with two slots held until ACTIVE, at most two could ever be processing
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 75, err.decode()
        assert creates(store) == 8

        rerun = await run_cli_process(argv, env=cli_env, limit=120)
    assert rerun.returncode == 0, rerun.stderr
    assert creates(store) == 8  # the rerun only waited and verified
    done = [json.loads(line) for line in rerun.stdout.splitlines() if line.startswith("{")]
    rows_done = [r for r in done if r.get("row")]
    assert len(rows_done) == 8 and all(r.get("readSetId") for r in rows_done)
    assert os.path.isdir(tmp_path / "batch")


async def test_a_batch_with_no_wait_ends_at_the_last_complete_and_verify_checks_its_folder_later(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    folder = tmp_path / "reads"
    folder.mkdir()
    rows = []
    for n in range(3):
        write_fastq_gz(folder / f"s{n}.fastq.gz", 100 * KIB, seed=n + 11)
        rows.append(f"s{n}.fastq.gz\tFASTQ\tsubject-{n}\tsample-{n}\tlater-{n}")
    manifest = folder / "manifest.tsv"
    manifest.write_text("source1\tsourceFileType\tsubjectId\tsampleId\tname\n" + "\n".join(rows) + "\n")
    batch_dir = tmp_path / "batch"
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store", processing_delay=3.0)) as store:
        argv = ["batch", str(manifest), "--store-id", STORE_ID, "--endpoint-url", store.url, "--part-size", "64KiB"]
        run = await run_cli_process(
            [*argv, "--checkpoint-dir", str(batch_dir), "--no-wait", "--json", "--no-progress"], env=cli_env, limit=90
        )
        assert run.returncode == 0, run.stderr
        ids = [json.loads(line)["readSetId"] for line in run.stdout.splitlines() if '"row"' in line]
        assert len(ids) == 3 and all([await status_of(store, i) == "PROCESSING_UPLOAD" for i in ids])
        check = await run_cli_process(
            ["verify", str(batch_dir), "--endpoint-url", store.url, "--json"], env=cli_env, limit=90
        )
    assert check.returncode == 0, check.stderr
    outcomes = [json.loads(line) for line in check.stdout.splitlines()]
    assert sorted(o["readSetId"] for o in outcomes) == sorted(ids) and all(o["verified"] for o in outcomes)


async def test_a_rerun_from_an_empty_home_reports_the_read_set_already_in_the_store_and_creates_nothing(
    tmp_path: Path, cli_env: dict[str, str], pair: list[Path]
) -> None:
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store")) as store:
        argv = upload_argv(store.url, *pair, extra=("--part-size", "64KiB", "--json"))
        first = await run_cli_process(argv, env=cli_env, limit=60)
        assert first.returncode == 0, first.stderr
        elsewhere = {**cli_env, "ASYNC_UPLOADER_HOME": str(tmp_path / "another-home")}  # no checkpoint knows it
        again = await run_cli_process(argv, env=elsewhere, limit=60)
        told = await run_cli_process([a for a in argv if a != "--json"], env=elsewhere, limit=60)
        refused = await run_cli_process([*argv, "--if-exists", "fail"], env=elsewhere, limit=60)
    assert again.returncode == 0, again.stderr
    result, original = json.loads(again.stdout), json.loads(first.stdout)
    assert result["existing"] is True and result["readSetId"] == original["readSetId"] and result["verified"] is True
    assert creates(store) == 1 and told.stdout.strip() == original["readSetId"]
    assert f"already in the store as read set {original['readSetId']}, nothing sent; verified" in told.stderr
    assert refused.returncode == 1 and original["readSetId"] in refused.stderr_lines[-1]


async def test_a_batch_wait_timeout_exits_75_and_the_rerun_waits_without_a_create(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    folder = tmp_path / "reads"
    folder.mkdir()
    rows = []
    for n in range(2):
        write_fastq_gz(folder / f"s{n}.fastq.gz", 100 * KIB, seed=n + 21)
        rows.append(f"s{n}.fastq.gz\tFASTQ\tsubject-{n}\tsample-{n}\ttimed-{n}")
    manifest = folder / "manifest.tsv"
    manifest.write_text("source1\tsourceFileType\tsubjectId\tsampleId\tname\n" + "\n".join(rows) + "\n")
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store", processing_delay=8.0)) as store:
        argv = ["batch", str(manifest), "--store-id", STORE_ID, "--endpoint-url", store.url, "--part-size", "64KiB"]
        argv += ["--checkpoint-dir", str(tmp_path / "batch"), "--json", "--no-progress"]
        first = await run_cli_process([*argv, "--wait-timeout", "1s"], env=cli_env, limit=60)
        assert first.returncode == 75, first.stderr  # still processing: the same command goes on waiting
        outcomes = [json.loads(line) for line in first.stdout.splitlines() if '"row"' in line]
        assert [o["status"] for o in outcomes] == ["interrupted", "interrupted"]
        rerun = await run_cli_process(argv, env=cli_env, limit=90)
    assert rerun.returncode == 0, rerun.stderr
    assert creates(store) == 2
