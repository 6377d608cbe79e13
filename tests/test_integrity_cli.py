"""Never wrong, through the real CLI against the local store: inputs checked as the service checks them (and none
reaching the store), files that are not the tool's own left alone, one owner per checkpoint, batch semantics."""

from __future__ import annotations

import asyncio
import json
import os
from asyncio import Task
from pathlib import Path
from typing import Any

import pytest

from async_uploader.emulator import LocalStore, StoreOptions
from tests.conftest import CliRun, run_cli_process
from tests.helpers import fastq_gz, gzip_like, upload_argv


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store")) as running:
        yield running


def with_option(argv: list[str], option: str, value: str) -> list[str]:
    """``argv`` with ``option``'s value replaced."""
    changed = list(argv)
    changed[changed.index(option) + 1] = value
    return changed


def one_error_line(run: CliRun) -> str:
    assert run.returncode == 2, (run.returncode, run.stderr)
    assert len(run.stderr_lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr_lines[0].startswith("async-uploader: error: "), run.stderr
    return run.stderr_lines[0]


async def test_bad_input_is_one_line_exit_2_and_never_reaches_the_store(
    store: LocalStore, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    source = gzip_like(tmp_path / "r1.fq.gz", 4096)
    base = upload_argv(store.url, source)
    a_file = tmp_path / "a-file"
    a_file.write_text("a file, not a folder")
    budget_dir = tmp_path / "budget-dir"
    budget_dir.mkdir()
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    cases: dict[str, tuple[list[str], dict[str, str], str]] = {
        "store id with a final newline": (with_option(base, "--store-id", "1234567890\n"), {}, "store id"),
        "subject id with a newline": (with_option(base, "--subject-id", "a\nb"), {}, "subject id"),
        "subject id with U+200B": (with_option(base, "--subject-id", "a\u200bb"), {}, "U+200B"),
        "subject id with U+E000": (with_option(base, "--subject-id", "\ue000"), {}, "U+E000"),
        "name of 128 characters": (with_option(base, "--name", "n" * 128), {}, "128 characters"),
        "endpoint port 99999": (with_option(base, "--endpoint-url", "http://127.0.0.1:99999"), {}, "Port"),
        "endpoint port :abc": (with_option(base, "--endpoint-url", "http://127.0.0.1:abc"), {}, "abc"),
        "checkpoint under a file": ([*base, "--checkpoint", str(a_file / "ck.jsonl")], {}, "is a file, not a"),
        "home naming a file": (base, {"ASYNC_UPLOADER_HOME": str(a_file)}, "ASYNC_UPLOADER_HOME"),
        "shared budget naming a folder": ([*base, "--shared-budget", str(budget_dir)], {}, "is a folder"),
        "shared budget naming another file": ([*base, "--shared-budget", str(notes)], {}, "is not a request budget"),
        "restart onto a file that is no checkpoint": (
            [*base, "--checkpoint", str(notes), "--restart"],
            {},
            "is not a checkpoint of async-uploader",
        ),
        "the source as its own checkpoint": ([*base, "--checkpoint", str(source), "--restart"], {}, "is the source"),
        "tag of 129 characters": ([*base, "--tag", "k" * 129 + "=v"], {}, "tag key"),
    }
    runs = await asyncio.gather(
        *(run_cli_process(argv, env={**cli_env, **env}, limit=60) for argv, env, _ in cases.values())
    )
    for (label, (_, _, expected)), run in zip(cases.items(), runs, strict=True):
        line = one_error_line(run)
        assert expected in line, (label, line)
    assert store.requests == [], [r["operation"] for r in store.requests]  # not one request reached it
    assert notes.read_text() == "my notes\n" and source.stat().st_size == 4096


@pytest.mark.parametrize("subject", ["🧬 patient", "no\u00a0break"])
async def test_values_the_model_allows_are_accepted(
    store: LocalStore, tmp_path: Path, cli_env: dict[str, str], subject: str
) -> None:
    source = gzip_like(tmp_path / "r1.fq.gz", 4096)
    run = await run_cli_process(with_option(upload_argv(store.url, source), "--subject-id", subject), env=cli_env)
    assert run.returncode == 0, run.stderr
    [create] = [r for r in store.requests if r["operation"] == "CreateMultipartReadSetUpload"]
    assert create["status"] == 200


def _race(url: str, sources: list[Path], checkpoint: Path, env: dict[str, str], restart: bool) -> list[Task[CliRun]]:
    extra = ("--checkpoint", str(checkpoint), "--part-size", "64KiB", *(["--restart"] if restart else []))
    argv = upload_argv(url, *sources, name=checkpoint.stem, extra=extra)
    return [asyncio.create_task(run_cli_process(argv, env=env, limit=120)) for _ in range(2)]


@pytest.mark.slow
@pytest.mark.parametrize("restart", [False, True], ids=["resume", "restart"])
async def test_two_processes_on_one_checkpoint_make_one_read_set(
    tmp_path: Path, cli_env: dict[str, str], restart: bool
) -> None:
    """A workflow retrying a task while its first attempt still runs: 20 times, always one read set.

    The store keeps every read set processing until, in each pair, one process has ended: whichever holds the
    checkpoint is still waiting for its read set then, so the two always overlap, however slowly either starts.
    """
    sources = [gzip_like(tmp_path / f"r{n}.fq.gz", 256 * 1024) for n in (1, 2)]
    async with LocalStore(StoreOptions(data_dir=tmp_path / "store")) as store:
        for batch in range(2):
            store.hold_processing()
            checkpoints = [tmp_path / "ck" / f"rs{batch}-{n}.jsonl" for n in range(10)]
            pairs = [_race(store.url, sources, checkpoint, cli_env, restart) for checkpoint in checkpoints]
            for pair in pairs:
                ended, _ = await asyncio.wait(pair, timeout=120, return_when=asyncio.FIRST_COMPLETED)
                assert ended, "neither process of a pair ended while its read set was held: both hold the checkpoint?"
            store.release_processing()
            for checkpoint, pair in zip(checkpoints, pairs, strict=True):
                runs = [await task for task in pair]
                codes = sorted(run.returncode for run in runs)
                assert codes == [0, 2], [(r.returncode, r.stderr) for r in runs]
                loser = next(run for run in runs if run.returncode == 2)
                assert "is already being uploaded by PID" in one_error_line(loser)
                records = [json.loads(line.rpartition("\t")[0]) for line in checkpoint.read_text().splitlines()]
                assert sum(1 for r in records if r["t"] == "upload") == 1, records  # the journal holds one upload
        completed = [r for r in store.requests if r["operation"] == "CompleteMultipartReadSetUpload"]
        created = [r for r in store.requests if r["operation"] == "CreateMultipartReadSetUpload"]
        assert len(completed) == len(created) == 20  # exactly one read set each time


async def test_a_batch_uploads_a_repeated_row_once_and_a_missing_file_is_refused_before_anything_is_sent(
    store: LocalStore, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    for name in ("a", "b"):
        gzip_like(tmp_path / f"{name}.fq.gz", 8192)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "source1,sourceFileType,subjectId,sampleId,name\n"
        "a.fq.gz,FASTQ,s,x,a\n"
        "missing.fq.gz,FASTQ,s,x,m\n"
        "a.fq.gz,FASTQ,s,x,a\n"  # the same read set as row 1
        "b.fq.gz,FASTQ,s,x,b\n"
    )
    argv = ["batch", str(manifest), "--store-id", "1234567890", "--endpoint-url", store.url, "--no-progress"]
    run = await run_cli_process([*argv, "--json"], env=cli_env, limit=60)
    assert run.returncode == 2, run.stderr  # every row is checked before anything is sent
    assert "row 2 (line 3)" in run.stderr and "missing.fq.gz: no such file" in run.stderr
    assert run.stdout == "" and store.requests == []

    manifest.write_text(manifest.read_text().replace("missing.fq.gz,FASTQ,s,x,m\n", ""))
    run = await run_cli_process([*argv, "--json"], env=cli_env, limit=60)
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    rows = {line["row"]: line for line in lines if "row" in line}
    summary = lines[-1]
    assert rows[1]["status"] == "done" and rows[3]["status"] == "done"
    assert rows[2]["status"] == "duplicate" and rows[2]["duplicateOf"] == 1
    assert rows[2]["readSetId"] == rows[1]["readSetId"]
    assert summary["outcomes"] == {"done": [1, 3], "duplicate": [2]}
    assert run.returncode == 0, run.stderr  # a repeated row is a duplicate, not a failure
    created = [r for r in store.requests if r["operation"] == "CreateMultipartReadSetUpload"]
    assert len(created) == 2


async def test_a_checkpoint_through_a_symbolic_link_is_refused_and_left_alone(
    store: LocalStore, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    source = gzip_like(tmp_path / "r1.fq.gz", 4096)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    links = {
        "self.jsonl": "self.jsonl",  # a link to itself
        "to-notes.jsonl": "notes.txt",  # to a file that is no checkpoint
        "dangling.jsonl": "nothing-here.jsonl",
        "loop": "loop",  # a folder that loops
        "gone": str(tmp_path / "no-such-folder"),
        "lockless.jsonl.lock": "notes.txt",  # the lock beside a new checkpoint
    }
    for name, target in links.items():
        (tmp_path / name).symlink_to(target)
    cases = {
        "self.jsonl": "symbolic link that loops",
        "to-notes.jsonl": "is a symbolic link (to notes.txt)",
        "dangling.jsonl": "is a symbolic link (to nothing-here.jsonl)",
        "loop/ck.jsonl": "its folders loop",
        "gone/ck.jsonl": "which does not exist",
        "lockless.jsonl": "lockless.jsonl.lock is a symbolic link",
    }
    runs = await asyncio.gather(
        *(
            run_cli_process(upload_argv(store.url, source, extra=("--checkpoint", name)), env=cli_env, cwd=tmp_path)
            for name in cases
        )
    )
    for (name, expected), run in zip(cases.items(), runs, strict=True):
        line = one_error_line(run)
        assert expected in line, (name, line)
    home_loop = await run_cli_process(
        upload_argv(store.url, source), env={**cli_env, "ASYNC_UPLOADER_HOME": str(tmp_path / "loop")}, cwd=tmp_path
    )
    assert "loop" in one_error_line(home_loop)
    for name, target in links.items():
        assert (tmp_path / name).is_symlink() and os.readlink(tmp_path / name) == target, name
    assert notes.read_text() == "my notes\n" and not (tmp_path / "lockless.jsonl").exists()
    assert store.requests == [], [r["operation"] for r in store.requests]


async def test_a_part_size_too_small_is_refused_with_the_smallest_that_works(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    small = gzip_like(tmp_path / "small.fq.gz", 1_000_001)
    large = tmp_path / "large.fq.gz"  # sparse: 20 GB that take no room, FASTQ in its first bytes (--dry-run looks)
    with large.open("wb") as out:
        out.write(fastq_gz(4096))
        out.truncate(20_000_000_001)

    async def dry_run(source: Path, part_size: str) -> CliRun:
        argv = upload_argv("http://127.0.0.1:9", source, extra=("--part-size", part_size, "--dry-run"))
        return await run_cli_process(argv, env=cli_env)

    refused = await dry_run(small, "100")
    assert one_error_line(refused).endswith("use a part size of at least 101 bytes"), refused.stderr
    assert (await dry_run(small, "101")).returncode == 0
    refused = await dry_run(large, "1MiB")
    assert "at least 2,000,001 bytes (2 MiB in whole MiB)" in one_error_line(refused)
    fits = await dry_run(large, "2000001")
    assert fits.returncode == 0 and "10,000 parts of 2,000,001 bytes" in fits.stdout, fits.stdout
