"""What a batch shows and writes: every bad row named before anything is sent, --dry-run, a line per row and a
table for people, JSON only under --json, and the --report file (CSV or JSON Lines) a rerun rewrites."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pexpect
import pytest

from async_uploader.cli.report import COLUMNS, ReportFile, outcome_table, report_record, row_line
from async_uploader.core.batch_estimate import estimate_batch
from async_uploader.core.config import RateLimits, Source
from async_uploader.core.errors import UsageError
from async_uploader.core.manifest import (
    ManifestError,
    RowOutcome,
    RowProblem,
    bad_rows,
    conflicting_rows,
    parse_manifest,
)
from async_uploader.core.plan import make_plan
from async_uploader.emulator import LocalStore
from tests.conftest import REPO_ROOT, CliRun, closed_port, run_cli_process
from tests.helpers import fastq_gz, fastq_plain

STORE = "1234567890"
HEADER = "source1,source2,sourceFileType,subjectId,sampleId,name\n"


# -- pure parts -------------------------------------------------------------------------------------------------


def test_every_malformed_row_is_named_and_one_bad_row_stays_one_line(tmp_path: Path) -> None:
    text = HEADER + "a.fq,,FASTQ,s,x\nb.fq,,FASTQ,s,x,b\nc.fq,,FASTA,s,x,c\nd.fq,,FASTQ,,x,\n"
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text, base_dir=tmp_path, name="m.csv")
    assert [problem.row for problem in caught.value.problems] == [1, 3, 4]
    assert caught.value.lines() == [
        "manifest m.csv: 3 bad rows:",
        "  row 1 (line 2): has 5 fields, the header has 6",
        "  row 3 (line 4): " + caught.value.problems[1].why,
        "  row 4 (line 5): subject_id, name are empty",
    ]
    assert "file type 'FASTA'" in caught.value.problems[1].why
    one = bad_rows("m.csv", [RowProblem(2, 3, "a"), RowProblem(2, 3, "b")])
    assert one.lines() == ["m.csv row 2 (line 3): a; b"]


def test_rows_naming_one_file_as_different_read_sets_clash_but_repeats_do_not(tmp_path: Path) -> None:
    text = HEADER + "a.fq,,FASTQ,s,x,a\na.fq,,FASTQ,s,x,a\nb.fq,a.fq,FASTQ,s,x,b\n./b.fq,,FASTQ,s,y,c\n"
    rows = parse_manifest(text, base_dir=tmp_path, name="m")
    problems = conflicting_rows(rows, lambda path: str(path.resolve()))
    assert [(p.row, p.why.split(",")[1].strip()) for p in problems] == [(3, "as row 1 does"), (4, "as row 3 does")]


def test_the_least_time_of_a_batch_at_the_quotas() -> None:
    plans = [make_plan({Source.SOURCE1: 64 * 1024 * 5}, 64 * 1024) for _ in range(8)]  # 8 read sets of 5 parts
    found = estimate_batch(plans, RateLimits())
    assert found.requests["CreateMultipartReadSetUpload"] == found.requests["CompleteMultipartReadSetUpload"] == 8
    assert found.parts == 40 and found.bytes == 8 * 5 * 64 * 1024
    assert found.seconds == 16.0  # 16 Create and Complete at 1/s outlast 40 parts at 10/s
    assert estimate_batch(plans, RateLimits(parts=2.0)).seconds == 20.0  # 40 parts at 2/s


def test_a_record_carries_the_columns_and_the_lines_for_people_name_the_row(tmp_path: Path) -> None:
    [row] = parse_manifest(HEADER + "a.fq,,FASTQ,subj,samp,a\n", base_dir=tmp_path)
    result = {"bytes": {"SOURCE1": 1500000}, "seconds": 2.25, "transferSeconds": 1.5, "storeSeconds": 0.5}
    done = RowOutcome(row, "done", read_set_id="1234567890", result={**result, "verified": True})
    record = report_record(done)
    assert tuple(record) == COLUMNS
    assert record["bytes"] == 1500000 and record["sample"] == "samp" and record["subject"] == "subj"
    assert row_line(done) == "row 1  a  done  1.5 MB in 2.2 s  verified  read set 1234567890"
    failed = RowOutcome(row, "failed", error="no such file")
    assert row_line(failed) == "row 1  a  failed: no such file"
    table = outcome_table([done, failed])
    assert table[0].split() == ["row", "name", "outcome", "size", "time", "verified", "read", "set"]
    assert len(table) == 3 and "NOT" not in table[1]


def test_the_report_is_written_only_over_a_report(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"\.csv, \.jsonl or \.json"):
        ReportFile(tmp_path / "report.txt")
    notes = tmp_path / "notes.csv"
    notes.write_text("a,b\n1,2\n")
    with pytest.raises(UsageError, match="not a report of this tool"):
        ReportFile(notes).check()
    lines = tmp_path / "other.jsonl"
    lines.write_text('{"row": 1}\n')
    with pytest.raises(UsageError, match="not a report of this tool"):
        ReportFile(lines).check()
    assert notes.read_text() == "a,b\n1,2\n" and lines.read_text() == '{"row": 1}\n'
    with pytest.raises(UsageError, match="does not exist"):
        ReportFile(tmp_path / "no-folder" / "r.csv").check()


# -- through the command line -----------------------------------------------------------------------------------


def _reads(folder: Path, count: int) -> Path:
    """A manifest of ``count`` single-file rows of valid FASTQ.gz in ``folder``."""
    lines = [HEADER]
    for n in range(1, count + 1):
        (folder / f"r{n}.fq.gz").write_bytes(fastq_gz(150_000, n))
        lines.append(f"r{n}.fq.gz,,FASTQ,subject-{n},sample-{n},read-set-{n}\n")
    manifest = folder / "m.csv"
    manifest.write_text("".join(lines))
    return manifest


async def _batch(manifest: Path, url: str, env: dict[str, str], *extra: str) -> CliRun:
    argv = ["batch", str(manifest), "--store-id", STORE, "--endpoint-url", url, "--part-size", "64KiB"]
    argv += ["--checkpoint-dir", str(manifest.parent / "ck"), *extra]
    return await run_cli_process(argv, env=env, limit=90)


async def test_three_bad_rows_are_named_at_once_and_nothing_is_sent(
    local_store: LocalStore, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    manifest = _reads(tmp_path, 2)
    (tmp_path / "plain.fq.gz").write_bytes(b"not a FASTQ file\n")
    manifest.write_text(
        manifest.read_text()
        + "missing.fq.gz,,FASTQ,s,x,m\n"  # row 3: no such file
        + "plain.fq.gz,,FASTQ,s,x,p\n"  # row 4: its first bytes are not FASTQ
        + "r1.fq.gz,,FASTQ,s,x,other-name\n"  # row 5: row 1's file as another read set
    )
    run = await _batch(manifest, local_store.url, cli_env)
    assert run.returncode == 2, run.stderr
    assert run.stderr_lines[0] == f"async-uploader: error: manifest {manifest}: 3 bad rows:"
    assert [line.split(":")[0].strip() for line in run.stderr_lines[1:]] == [
        "row 3 (line 4)",
        "row 4 (line 5)",
        "row 5 (line 6)",
    ]
    assert "no such file" in run.stderr_lines[1] and "declared FASTQ" in run.stderr_lines[2]
    assert "as row 1 does" in run.stderr_lines[3]
    assert run.stdout == "" and local_store.requests == []
    assert not (tmp_path / "ck").exists()


async def test_dry_run_prints_the_plan_and_connects_to_nothing(
    local_store: LocalStore, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    manifest = _reads(tmp_path, 3)
    nowhere = f"http://127.0.0.1:{closed_port()}"  # a request would fail: the dry run makes none
    run = await _batch(manifest, nowhere, cli_env, "--dry-run")
    assert run.returncode == 0, run.stderr
    assert "3 rows: 3 read sets to upload" in run.stdout
    assert "9 UploadReadSetPart" in run.stdout  # 150,000 bytes in parts of 64 KiB: 3 each
    assert "at least 6.0 s" in run.stdout  # 3 Creates and 3 Completes at 1/s
    plan = await _batch(manifest, local_store.url, cli_env, "--dry-run", "--json")
    assert plan.returncode == 0, plan.stderr
    found = json.loads(plan.stdout)
    assert found["readSets"] == 3 and found["parts"] == 9 and found["bytes"] == 450_000
    assert found["secondsAtQuota"] == 6.0 and [r["row"] for r in found["upload"]] == [1, 2, 3]
    assert local_store.requests == [] and not (tmp_path / "ck").exists()


async def test_dry_run_marks_plain_fastq_rows_compressed_on_the_fly_or_refused_with_compress_never(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    manifest = _reads(tmp_path, 2)
    (tmp_path / "plain.fq").write_bytes(fastq_plain(100_000, seed=4))
    manifest.write_text(manifest.read_text() + "plain.fq,,FASTQ,subject-3,sample-3,read-set-3\n")
    nowhere = f"http://127.0.0.1:{closed_port()}"  # a request would fail: the dry run makes none
    text, data, refused = await asyncio.gather(
        _batch(manifest, nowhere, cli_env, "--dry-run"),
        _batch(manifest, nowhere, cli_env, "--dry-run", "--json"),
        _batch(manifest, nowhere, cli_env, "--dry-run", "--compress", "never"),
    )
    assert text.returncode == 0, text.stderr
    rows = [line for line in text.stdout.splitlines() if line.lstrip().startswith("row ")]
    assert [line.endswith("SOURCE1 plain FASTQ: compressed on the fly") for line in rows] == [False, False, True]
    assert data.returncode == 0, data.stderr
    found = json.loads(data.stdout)["upload"]
    assert [row["compressOnTheFly"] for row in found] == [[], [], ["SOURCE1"]]
    assert [row["refused"] for row in found] == [None, None, None]
    assert refused.returncode == 2  # the plan, then the rows a real run would refuse
    rows = [line for line in refused.stdout.splitlines() if line.lstrip().startswith("row ")]
    assert len(rows) == 3 and rows[2].endswith("refused: plain FASTQ with --compress never")
    [line] = refused.stderr_lines
    assert line.startswith("async-uploader: row 3 would be refused: SOURCE1 ") and "is plain FASTQ" in line
    assert not (tmp_path / "ck").exists()


def _csv(path: Path) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(path.read_text()))
    assert tuple(reader.fieldnames or ()) == COLUMNS
    return list(reader)


async def test_people_get_lines_and_a_table_and_the_report_has_a_line_per_row(
    local_store: LocalStore, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    manifest = _reads(tmp_path, 3)
    report = tmp_path / "report.csv"
    first = await _batch(manifest, local_store.url, cli_env, "--report", str(report))
    assert first.returncode == 0, first.stderr
    assert not any(line.lstrip().startswith("{") for line in first.stdout.splitlines())  # no JSON without --json
    ended = first.stdout.splitlines()[:3]  # a line per row as it ends
    assert sorted(line.split()[1] for line in ended) == ["1", "2", "3"]
    assert all(" done " in line and "verified  read set " in line for line in ended)
    assert first.stdout.splitlines()[3].split()[:3] == ["row", "name", "outcome"]  # the table follows
    rows = _csv(report)
    assert [r["row"] for r in rows] == ["1", "2", "3"] and {r["outcome"] for r in rows} == {"done"}
    assert all(r["verified"] == "true" and r["bytes"] == "150000" and r["readSetId"] for r in rows)
    assert all(float(r["transferSeconds"]) > 0 and r["storeSeconds"] != "" and r["error"] == "" for r in rows)
    assert [r["sample"] for r in rows] == ["sample-1", "sample-2", "sample-3"]

    again = await _batch(manifest, local_store.url, cli_env, "--report", str(report), "--json")
    assert again.returncode == 0, again.stderr
    lines = [json.loads(line) for line in again.stdout.splitlines()]  # only JSON with --json
    assert [line.get("status") for line in lines[:-1]] == ["skipped"] * 3 and lines[-1]["summary"] is True
    rerun = _csv(report)
    assert [r["outcome"] for r in rerun] == ["skipped"] * 3
    assert [r["readSetId"] for r in rerun] == [r["readSetId"] for r in rows]
    assert [r["verified"] for r in rerun] == ["true"] * 3  # what the earlier report said of those read sets
    assert not list(tmp_path.glob(".report.csv*"))  # no temporary file left


async def test_a_jsonl_report_and_a_file_that_is_no_report(
    local_store: LocalStore, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    manifest = _reads(tmp_path, 2)
    mine = tmp_path / "notes.jsonl"
    mine.write_text("my own notes\n")
    refused = await _batch(manifest, local_store.url, cli_env, "--report", str(mine))
    assert refused.returncode == 2 and "not a report of this tool" in refused.stderr
    assert mine.read_text() == "my own notes\n" and local_store.requests == []

    report = tmp_path / "report.jsonl"
    run = await _batch(manifest, local_store.url, cli_env, "--report", str(report), "--no-wait")
    assert run.returncode == 0, run.stderr
    records: list[dict[str, Any]] = [json.loads(line) for line in report.read_text().splitlines()]
    assert [tuple(r) for r in records] == [COLUMNS, COLUMNS]
    assert [r["row"] for r in records] == [1, 2] and all(r["outcome"] == "done" for r in records)
    assert all(r["verified"] is None and r["bytes"] == 150_000 for r in records)  # --no-wait: not verified yet


def _under_a_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    child = pexpect.spawn(
        sys.executable, argv, env=env, cwd=str(REPO_ROOT), dimensions=(30, 140), encoding="utf-8", timeout=90
    )
    output = child.read()  # until EOF
    child.close()
    return int(child.exitstatus if child.exitstatus is not None else -1), output


async def test_under_a_terminal_each_row_line_is_printed_once_above_the_bars(
    make_store: Callable[..., Awaitable[LocalStore]], tmp_path: Path, cli_env: dict[str, str]
) -> None:
    store = await make_store(latency_ms=40)  # parts of >= 40 ms: the bars are drawn while rows run
    manifest = _reads(tmp_path, 3)
    argv = ["-m", "async_uploader", "batch", str(manifest), "--store-id", STORE, "--endpoint-url", store.url]
    argv += ["--part-size", "64KiB", "--max-concurrency", "1", "--checkpoint-dir", str(tmp_path / "ck")]
    code, output = await asyncio.to_thread(_under_a_terminal, argv, {**cli_env, "TERM": "xterm-256color"})
    assert code == 0, output
    assert "\x1b[" in output and "parts" in output  # the live bars were drawn
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)
    for n in (1, 2, 3):
        ended = re.findall(rf"row {n}  read-set-{n}  done  150\.0 kB in [0-9.]+ s  verified  read set \d+", plain)
        assert len(ended) == 1, plain  # printed once, whole, not part of a frame drawn again
    assert "{" not in plain  # no JSON for people
    assert re.search(r"row\s+name\s+outcome\s+size\s+time\s+verified\s+read set", plain)


async def test_a_rerun_after_the_uploaded_files_were_removed_skips_their_rows(
    local_store: LocalStore, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    manifest = _reads(tmp_path, 2)
    first = await _batch(manifest, local_store.url, cli_env, "--json")
    assert first.returncode == 0, first.stderr
    (tmp_path / "r1.fq.gz").unlink()  # files are often removed once uploaded: their read sets stand
    again = await _batch(manifest, local_store.url, cli_env, "--json")
    assert again.returncode == 0, again.stderr
    assert [json.loads(line).get("status") for line in again.stdout.splitlines()[:-1]] == ["skipped", "skipped"]
    elsewhere = await _batch(manifest, local_store.url, cli_env, "--checkpoint-dir", str(tmp_path / "other"))
    assert elsewhere.returncode == 2 and "row 1 (line 2): source1" in elsewhere.stderr  # no record of it there
