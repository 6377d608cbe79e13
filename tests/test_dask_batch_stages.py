"""batch --dask in stages, through the CLI on a local Dask cluster against the local store: a row's task ends at
Complete and frees its slot, and the submitting process waits for the read sets (together, with ListReadSets
sweeps) and verifies them. The store holds every read set PROCESSING_UPLOAD until the test releases it, so how
many are processed at once is read from the store itself, never from timing."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

pytest.importorskip("distributed")

from async_uploader.cli.demo import write_fastq_gz
from async_uploader.core.events import EVENT_SCHEMA
from async_uploader.emulator import LocalStore, StoreOptions
from tests.conftest import run_cli_process, start_cli
from tests.store_helpers import STORE_ID, omics

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
KIB = 1024
ROWS = 6


def count(store: LocalStore, operation: str) -> int:
    return sum(1 for r in store.requests if r["operation"] == operation)


async def processing(store: LocalStore) -> int:
    """How many read sets the store says are PROCESSING_UPLOAD now (asked from a thread: it serves on this loop)."""
    listed = await asyncio.to_thread(
        omics(store).list_read_sets, sequenceStoreId=STORE_ID, filter={"status": "PROCESSING_UPLOAD"}
    )
    return len(listed["readSets"])


async def until(check: Any, what: str, limit: float = 120.0) -> None:
    """Poll ``await check()`` every 0.2 s until it is true; fail naming ``what`` after ``limit`` seconds."""
    for _ in range(int(limit / 0.2)):
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"not seen within {limit:.0f} s: {what}")


def manifest(folder: Path, rows: int) -> Path:
    """The manifest of ``rows`` FASTQ read sets of 100 KiB in ``folder``, written on first use."""
    path = folder / "manifest.tsv"
    if path.exists():
        return path
    folder.mkdir()
    lines = ["source1\tsourceFileType\tsubjectId\tsampleId\tname"]
    for n in range(rows):
        write_fastq_gz(folder / f"s{n}.fastq.gz", 100 * KIB, seed=n + 31)
        lines.append(f"s{n}.fastq.gz\tFASTQ\tsubject-{n}\tsample-{n}\tstaged-{n}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
async def held_store(tmp_path: Path) -> AsyncIterator[LocalStore]:
    """A store keeping each read set PROCESSING_UPLOAD at least 3 s, and past that until released."""
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store", processing_delay=3.0)) as store:
        store.hold_processing()
        yield store


def batch_argv(store: LocalStore, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "batch",
        str(manifest(tmp_path / "reads", ROWS)),
        "--store-id",
        STORE_ID,
        "--endpoint-url",
        store.url,
        "--part-size",
        "64KiB",
        "--dask",
        "local:2",
        "--max-parallel",
        "2",
        "--checkpoint-dir",
        str(tmp_path / "batch"),
        "--report",
        str(tmp_path / "report.csv"),
        "--json",
        "--no-progress",
        *extra,
    ]


async def all_processing_and_swept(store: LocalStore, process: asyncio.subprocess.Process) -> None:
    """Every row's read set PROCESSING at once (two slots held to ACTIVE could never make more than two), then a
    ListReadSets sweep after the last Complete: the rows are waited for together."""

    async def six() -> bool:
        assert process.returncode is None, "the batch ended while its read sets were held"
        return await processing(store) == ROWS

    await until(six, f"{ROWS} read sets PROCESSING_UPLOAD at once")
    completes = count(store, "CompleteMultipartReadSetUpload")
    assert completes == ROWS
    last = max(i for i, r in enumerate(store.requests) if r["operation"] == "CompleteMultipartReadSetUpload")

    async def swept() -> bool:
        return any(r["operation"] == "ListReadSets" for r in store.requests[last + 1 :])

    await until(swept, "a ListReadSets sweep after the last Complete")


def rows_of(stdout: str) -> list[dict[str, Any]]:
    return [line for line in map(json.loads, stdout.splitlines()) if "row" in line and "summary" not in line]


def assert_every_row_verified(stdout: str, report: Path) -> list[str]:
    rows = rows_of(stdout)
    assert sorted(r["row"] for r in rows) == list(range(1, ROWS + 1))
    assert all(r["status"] == "done" and r["verified"] is True for r in rows), rows
    records = list(csv.DictReader(io.StringIO(report.read_text())))
    assert [(r["row"], r["outcome"], r["verified"]) for r in records] == [
        (str(n), "done", "true") for n in range(1, ROWS + 1)
    ]
    return [str(r["readSetId"]) for r in rows]


async def rerun_only_waits_and_verifies(
    store: LocalStore, argv: list[str], tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """Every row was created and left waiting: once the store lets the read sets go, the same batch again verifies
    every row without a new Create or any part sent again."""
    creates, parts = count(store, "CreateMultipartReadSetUpload"), count(store, "UploadReadSetPart")
    assert creates == ROWS

    store.release_processing()
    rerun = await run_cli_process(argv, env=cli_env, limit=180)
    assert rerun.returncode == 0, rerun.stderr
    assert_every_row_verified(rerun.stdout, tmp_path / "report.csv")
    assert count(store, "CreateMultipartReadSetUpload") == creates  # no new Create
    assert count(store, "UploadReadSetPart") == parts  # no part sent again


async def test_rows_free_their_slots_at_complete_and_are_waited_for_together(
    tmp_path: Path, cli_env: dict[str, str], held_store: LocalStore
) -> None:
    store = held_store
    process = await start_cli(batch_argv(store, tmp_path, "--events"), cli_env)
    try:
        await all_processing_and_swept(store, process)
    finally:
        store.release_processing()
        out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    ids = assert_every_row_verified(out.decode(), tmp_path / "report.csv")
    assert len(set(ids)) == ROWS and count(store, "CreateMultipartReadSetUpload") == ROWS
    receipts = sorted((tmp_path / "batch" / "receipts").glob("*.json"))
    assert sorted(json.loads(p.read_text())["readSetId"] for p in receipts) == sorted(ids)
    # Events of one schema, from the workers (up to Complete) and from this process (the wait): each row is done
    # once, after it waited and was verified (a worker's last events may land after the wait's first).
    events = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    for event in events:
        jsonschema.validate(event, EVENT_SCHEMA)
    for n in range(1, ROWS + 1):
        states = [e["state"] for e in events if e.get("row") == n and e["event"] == "state"]
        assert states.count("done") == 1, (n, states)
        assert states.index("waiting") < states.index("verifying") < states.index("done"), (n, states)


async def test_ctrl_c_while_rows_wait_exits_75_and_the_rerun_only_waits_and_verifies(
    tmp_path: Path, cli_env: dict[str, str], held_store: LocalStore
) -> None:
    store = held_store
    argv = batch_argv(store, tmp_path)
    process = await start_cli(argv, cli_env)
    try:
        await all_processing_and_swept(store, process)
        process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), 120)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 75, err.decode()
    assert sorted(r["status"] for r in rows_of(out.decode())) == ["interrupted"] * ROWS
    await rerun_only_waits_and_verifies(store, argv, tmp_path, cli_env)


async def test_no_wait_ends_at_the_last_complete_with_every_receipt_and_verify_checks_later(
    tmp_path: Path, cli_env: dict[str, str], held_store: LocalStore
) -> None:
    store = held_store
    run = await run_cli_process(batch_argv(store, tmp_path, "--no-wait"), env=cli_env, limit=180)
    assert run.returncode == 0, run.stderr
    rows = rows_of(run.stdout)
    assert len(rows) == ROWS and all(r["status"] == "done" and r["verified"] is None for r in rows)
    assert await processing(store) == ROWS  # ended while the store held every read set
    receipts = sorted((tmp_path / "batch" / "receipts").glob("*.json"))
    assert sorted(json.loads(p.read_text())["readSetId"] for p in receipts) == sorted(r["readSetId"] for r in rows)

    store.release_processing()
    check = await run_cli_process(
        ["verify", str(tmp_path / "batch"), "--endpoint-url", store.url, "--json"], env=cli_env, limit=120
    )
    assert check.returncode == 0, check.stderr
    assert all(json.loads(line)["verified"] for line in check.stdout.splitlines())


async def test_a_wait_timeout_exits_75_and_the_rerun_waits_without_a_create(
    tmp_path: Path, cli_env: dict[str, str], held_store: LocalStore
) -> None:
    store = held_store
    argv = batch_argv(store, tmp_path)
    first = await run_cli_process([*argv, "--wait-timeout", "1s"], env=cli_env, limit=180)
    assert first.returncode == 75, first.stderr
    assert sorted(r["status"] for r in rows_of(first.stdout)) == ["interrupted"] * ROWS
    assert "--wait-timeout" in first.stdout
    await rerun_only_waits_and_verifies(store, argv, tmp_path, cli_env)
