"""A batch run again after a row's files changed: through the real CLI against the local store. A done row is
skipped only while its files are those its read set was made from; otherwise its checkpoint reads them again
(same bytes: the same read set), or the row is refused with exit 2 until --restart uploads it as a new read set."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from async_uploader.emulator import LocalStore, StoreOptions
from tests.conftest import CliRun, run_cli_process
from tests.helpers import fastq_gz

SIZE = 150_000


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store")) as running:
        yield running


def replace_same_size(path: Path, seed: int) -> None:
    """Other bytes of the same size, written to a new file renamed over ``path`` (as an editor or a copy does)."""
    size = path.stat().st_size
    temp = path.with_name(path.name + ".new")
    temp.write_bytes(fastq_gz(size, seed))
    os.replace(temp, path)


def rows_of(run: CliRun) -> dict[int, dict[str, Any]]:
    return {line["row"]: line for line in map(json.loads, run.stdout.splitlines()) if "row" in line}


def creates(store: LocalStore) -> int:
    return sum(1 for r in store.requests if r["operation"] == "CreateMultipartReadSetUpload")


@pytest.fixture
def batch(tmp_path: Path, store: LocalStore, cli_env: dict[str, str]) -> Any:
    (tmp_path / "a.fq.gz").write_bytes(fastq_gz(SIZE, 1))
    (tmp_path / "b.fq.gz").write_bytes(fastq_gz(SIZE, 2))
    manifest = tmp_path / "m.csv"
    manifest.write_text("source1,sourceFileType,subjectId,sampleId,name\na.fq.gz,FASTQ,s,x,a\nb.fq.gz,FASTQ,s,x,b\n")
    argv = ["batch", str(manifest), "--store-id", "1234567890", "--endpoint-url", store.url, "--no-progress", "--json"]
    argv += ["--part-size", "64KiB", "--checkpoint-dir", str(tmp_path / "ck")]

    async def run(*extra: str) -> CliRun:
        return await run_cli_process([*argv, *extra], env=cli_env, limit=60)

    return run


async def test_a_same_size_replacement_is_refused_until_restart(batch: Any, store: LocalStore, tmp_path: Path) -> None:
    first = await batch()
    assert first.returncode == 0, first.stderr
    old = rows_of(first)[1]["readSetId"]
    replace_same_size(tmp_path / "a.fq.gz", seed=7)

    again = await batch()
    assert again.returncode == 2, again.stderr
    rows = rows_of(again)
    assert rows[1]["status"] == "failed" and rows[1]["restartNeeded"] is True
    assert "other bytes" in rows[1]["error"] and "--restart" in rows[1]["error"]
    assert rows[2]["status"] == "skipped"  # the unchanged row
    said = [line for line in again.stderr_lines if "row 1" in line and "changed since" in line]
    assert len(said) == 1 and f"source1 {tmp_path / 'a.fq.gz'}" in said[0] and "same size" in said[0], again.stderr
    assert "Traceback" not in again.stderr and creates(store) == 2  # nothing new was made

    restarted = await batch("--restart")
    assert restarted.returncode == 0, restarted.stderr
    rows = rows_of(restarted)
    assert rows[1]["status"] == "done" and rows[1]["readSetId"] != old and rows[2]["status"] == "skipped"
    assert creates(store) == 3

    settled = await batch()
    assert settled.returncode == 0, settled.stderr
    assert [line["status"] for line in rows_of(settled).values()] == ["skipped", "skipped"]
    assert creates(store) == 3


async def test_a_touched_file_with_the_same_bytes_keeps_its_read_set(
    batch: Any, store: LocalStore, tmp_path: Path
) -> None:
    first = await batch()
    assert first.returncode == 0, first.stderr
    old = rows_of(first)[1]["readSetId"]
    source = tmp_path / "a.fq.gz"
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))

    again = await batch()
    assert again.returncode == 0, again.stderr
    row = rows_of(again)[1]
    assert row["status"] == "done" and row["readSetId"] == old  # read again, found equal: the same read set
    assert any("row 1" in line and "reading it again" in line for line in again.stderr_lines), again.stderr
    assert creates(store) == 2
    quiet = await batch()  # the new identity is recorded: skipped without reading again
    assert [line["status"] for line in rows_of(quiet).values()] == ["skipped", "skipped"]
    assert not any("changed since" in line for line in quiet.stderr_lines), quiet.stderr


async def test_a_changed_row_without_its_checkpoint_is_refused(batch: Any, store: LocalStore, tmp_path: Path) -> None:
    assert (await batch()).returncode == 0
    for checkpoint in (tmp_path / "ck" / "checkpoints").glob("*.jsonl"):
        checkpoint.unlink()
    replace_same_size(tmp_path / "b.fq.gz", seed=9)
    again = await batch()
    assert again.returncode == 2, again.stderr
    rows = rows_of(again)
    assert rows[1]["status"] == "skipped" and rows[2]["status"] == "failed" and rows[2]["restartNeeded"] is True
    assert "no checkpoint is left" in rows[2]["error"] and "--restart" in rows[2]["error"]
    [line] = [line for line in again.stderr_lines if "row 2" in line and "failed" in line]
    assert f"source1 {tmp_path / 'b.fq.gz'}" in line
    assert creates(store) == 2


async def test_records_of_an_earlier_version_without_identities_are_still_read(
    batch: Any, store: LocalStore, tmp_path: Path
) -> None:
    assert (await batch()).returncode == 0
    done = tmp_path / "ck" / "done.jsonl"
    records = [json.loads(line) for line in done.read_text().splitlines()]
    assert all(len(record["sources"]) == 1 for record in records)
    done.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "sources"}) + "\n" for r in records))

    unchanged = await batch()  # checked against each row's checkpoint: unchanged, skipped
    assert unchanged.returncode == 0, unchanged.stderr
    assert [line["status"] for line in rows_of(unchanged).values()] == ["skipped", "skipped"]

    replace_same_size(tmp_path / "a.fq.gz", seed=5)
    changed = await batch()  # the checkpoint knows the file it was made from: refused
    assert changed.returncode == 2, changed.stderr
    assert rows_of(changed)[1]["restartNeeded"] is True

    done.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "sources"}) + "\n" for r in records))
    for checkpoint in (tmp_path / "ck" / "checkpoints").glob("*.jsonl"):
        checkpoint.unlink()
    blind = await batch()  # nothing to check against: skipped as before, and said so
    assert blind.returncode == 0, blind.stderr
    assert [line["status"] for line in rows_of(blind).values()] == ["skipped", "skipped"]
    notes = [line for line in blind.stderr_lines if "kept no identity of its files" in line]
    assert len(notes) == 2 and "row 1" in notes[0], blind.stderr
    assert creates(store) == 2
