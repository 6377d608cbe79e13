"""Batch manifests: parsing (pure), row checks, the concurrent runner, and one real `batch` subprocess."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from async_uploader.cli.demo import write_fastq_gz
from async_uploader.core.config import FileType, ReadSet
from async_uploader.core.errors import ValidationError
from async_uploader.core.manifest import ManifestError, ManifestRow, RowOutcome, parse_manifest
from async_uploader.edge.batchstate import BatchState
from async_uploader.emulator import LocalStore
from async_uploader.engine.batch import check_row_sources, read_manifest, run_batch
from tests.conftest import CliRun
from tests.helpers import fastq_gz

STORE = "1234567890"
HEADER = "source1,source2,sourceFileType,subjectId,sampleId,name,referenceArn,generatedFrom,description\n"


def test_parse_csv_with_import_manifest_columns(tmp_path: Path) -> None:
    text = HEADER + (
        "a_1.fq.gz,a_2.fq.gz,FASTQ,subj-1,samp-1,a,,lab,paired\n"
        "/data/b.bam,,bam,subj-2,samp-2,b,arn:aws:omics:us-east-1:1:referenceStore/1/reference/2,,\n"
    )
    rows = parse_manifest(text, base_dir=tmp_path, name="m.csv")
    assert [row.row for row in rows] == [1, 2] and [row.line for row in rows] == [2, 3]
    first, second = rows[0].read_set, rows[1].read_set
    assert first.source1 == tmp_path / "a_1.fq.gz" and first.source2 == tmp_path / "a_2.fq.gz"
    assert first.generated_from == "lab" and first.description == "paired" and first.reference_arn is None
    assert second.file_type is FileType.BAM and second.source1 == Path("/data/b.bam") and second.source2 is None


def test_parse_tsv_snake_case_headers_aliases_and_tags(tmp_path: Path) -> None:
    text = "# comment line\nSOURCE1\tFile_Type\tsubject_id\tsample_id\tName\ttags\n\nr.ubam\tUBAM\ts\tx\tn\ta=1;b=2\n"
    [row] = parse_manifest(text, base_dir=tmp_path, name="m.txt")  # sniffed from the header's tabs
    assert row.read_set.file_type is FileType.UBAM and row.read_set.tags == {"a": "1", "b": "2"}
    assert row.line == 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HEADER + "a.fq.gz,,FASTQ,s,x\n", "row 1 (line 2): has 5 fields"),
        (HEADER + "a.fq.gz,,FASTQ,s,x,n,,,\nb.bam,,BAM,s,x,n,,,\n", "row 2 (line 3): BAM is aligned"),
        (HEADER + "a.bam,b.bam,BAM,s,x,n,arn:x,,\n", "row 1 (line 2): a second source"),
        (HEADER + "a.fq.gz,,FASTA,s,x,n,,,\n", "row 1 (line 2): file type 'FASTA'"),
        (HEADER + "a.fq.gz,,FASTQ,,x,n,,,\n", "row 1 (line 2): subject_id is empty"),
        ("source1,sampel_id\na,b\n", "unknown column 'sampel_id'"),
        ("source1,name\na,b\n", "missing column(s) file_type, subject_id, sample_id"),
        (HEADER, "no rows"),
        ("", "empty"),
    ],
)
def test_malformed_manifests_name_the_row_and_problem(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ManifestError, match=r"m\.csv") as caught:
        parse_manifest(text, base_dir=tmp_path, name="m.csv")
    assert expected in str(caught.value)


def test_row_sources_are_checked_before_anything_uploads(tmp_path: Path) -> None:
    (tmp_path / "ok.fq.gz").write_bytes(fastq_gz(4096, 1))
    (tmp_path / "empty.fq.gz").touch()
    rows = parse_manifest(
        HEADER + "ok.fq.gz,,FASTQ,s,x,a,,,\nok.fq.gz,empty.fq.gz,FASTQ,s,x,b,,,\n", base_dir=tmp_path, name="m"
    )
    with pytest.raises(ManifestError, match=r"m row 2 \(line 3\): source2 .*empty"):
        check_row_sources(rows, "m")
    with pytest.raises(ManifestError, match="no such file"):
        read_manifest(tmp_path / "missing.csv")


def test_row_key_is_stable_and_depends_on_store_and_content(tmp_path: Path) -> None:
    text = HEADER + "a.fq.gz,,FASTQ,s,x,a,,,\n"
    [one], [two] = parse_manifest(text, base_dir=tmp_path), parse_manifest(text, base_dir=tmp_path)
    assert one.key(STORE) == two.key(STORE) != one.key("9999999999")
    [other] = parse_manifest(text.replace(",a,", ",b,"), base_dir=tmp_path)
    assert other.key(STORE) != one.key(STORE)


# -- the runner, with a scripted uploader ---------------------------------------------------------------------


@dataclass
class _Result:
    read_set_id: str

    def as_json(self) -> dict[str, object]:
        return {"readSetId": self.read_set_id, "uploadId": "1111111111"}


class _Handle:
    def __init__(self, outcome: Callable[[], Awaitable[_Result]]) -> None:
        self._task = asyncio.ensure_future(outcome())

    def __await__(self) -> Generator[Any, None, _Result]:
        return self._task.__await__()


class _ScriptedUploader:
    """Fails the rows whose name starts with 'bad'; counts what runs at once."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.checkpoints: list[Any] = []
        self.running = 0
        self.peak = 0

    def start(self, read_set: ReadSet, *, store_id: str, checkpoint: Any, **_: Any) -> _Handle:
        self.started.append(read_set.name)
        self.checkpoints.append(checkpoint)

        async def outcome() -> _Result:
            self.running += 1
            self.peak = max(self.peak, self.running)
            try:
                await asyncio.sleep(0.01)
                if read_set.name.startswith("bad"):
                    raise ValidationError("name rejected", status=400, operation="CreateMultipartReadSetUpload")
                return _Result(str(1000000000 + len(self.started)))
            finally:
                self.running -= 1

        return _Handle(outcome)


async def test_one_failing_row_does_not_stop_the_others_and_reruns_skip_done_rows(tmp_path: Path) -> None:
    names = ["a", "bad-b", "c", "d", "e"]
    rows = parse_manifest(
        HEADER + "".join(f"{n}.fq.gz,,FASTQ,s,x,{n},,,\n" for n in names), base_dir=tmp_path, name="m"
    )
    uploader = _ScriptedUploader()
    emitted: list[RowOutcome] = []
    summary = await run_batch(
        uploader,  # type: ignore[arg-type]
        rows,
        store_id=STORE,
        directory=tmp_path / "state",
        max_parallel=2,
        emit=emitted.append,
    )
    assert [o.status for o in summary.outcomes] == ["done", "failed", "done", "done", "done"]
    assert "name rejected" in (summary.outcomes[1].error or "")
    assert uploader.peak <= 2 and len(emitted) == 5
    assert summary.as_json()["done"] == 4 and summary.as_json()["failed"] == 1
    assert all(str(path).startswith(str(tmp_path / "state" / "checkpoints")) for path in uploader.checkpoints)
    assert len(BatchState(tmp_path / "state").done) == 4
    first_id = summary.outcomes[0].read_set_id

    again = _ScriptedUploader()
    summary = await run_batch(
        again,  # type: ignore[arg-type]
        rows,
        store_id=STORE,
        directory=tmp_path / "state",
        max_parallel=2,
        emit=lambda _: None,
    )
    assert again.started == ["bad-b"]  # only the row that failed runs again
    assert [o.status for o in summary.outcomes] == ["skipped", "failed", "skipped", "skipped", "skipped"]
    assert summary.outcomes[0].read_set_id == first_id


async def test_batch_state_ignores_a_torn_last_line(tmp_path: Path) -> None:
    [row] = parse_manifest(HEADER + "a.fq.gz,,FASTQ,s,x,a,,,\n", base_dir=tmp_path)
    state = BatchState(tmp_path)
    await state.record(row.key(STORE), "1234567891", row)
    with state.path.open("a") as handle:
        handle.write('{"key": "torn')
    assert BatchState(tmp_path).done == {row.key(STORE): "1234567891"}
    assert (state.path.stat().st_mode & 0o777) == 0o600
    assert isinstance(row, ManifestRow)


# -- the real thing ------------------------------------------------------------------------------------------


async def test_batch_command_uploads_rows_and_a_rerun_skips_them(
    local_store: LocalStore, run_cli: Callable[..., Awaitable[CliRun]], tmp_path: Path
) -> None:
    folder = tmp_path / "reads"
    folder.mkdir()
    for name in ("a_1", "a_2", "b_1"):
        write_fastq_gz(folder / f"{name}.fastq.gz", 200_000, seed=len(name))
    manifest = folder / "manifest.tsv"
    manifest.write_text(
        "source1\tsource2\tsourceFileType\tsubjectId\tsampleId\tname\n"
        "a_1.fastq.gz\ta_2.fastq.gz\tFASTQ\tsubject-a\tsample-a\tpaired-a\n"
        "b_1.fastq.gz\t\tFASTQ\tsubject-b\tsample-b\tsingle-b\n"
    )
    argv = ["batch", str(manifest), "--store-id", STORE, "--endpoint-url", local_store.url, "--part-size", "64KiB"]
    first = await run_cli(*argv, "--max-parallel", "2", "--checkpoint-dir", str(tmp_path / "ck"), "--events", "--json")
    assert first.returncode == 0, first.stderr
    events = [json.loads(line) for line in first.stderr.splitlines() if line.startswith("{")]
    assert {e["row"] for e in events if e["event"] == "part"} == {1, 2}
    lines = [json.loads(line) for line in first.stdout.splitlines()]
    rows, summary = lines[:-1], lines[-1]
    assert sorted((r["row"], r["status"]) for r in rows) == [(1, "done"), (2, "done")]
    assert all(r["readSetId"].isdigit() for r in rows)
    assert summary["summary"] is True and summary["done"] == 2 and summary["failed"] == 0
    creates = [r for r in local_store.requests if r["operation"] == "CreateMultipartReadSetUpload"]
    assert len(creates) == 2
    # the store's ETag family is asked once for the whole batch, not once per row
    assert [r["operation"] for r in local_store.requests].count("GetSequenceStore") == 1

    second = await run_cli(*argv, "--checkpoint-dir", str(tmp_path / "ck"), "--json")
    assert second.returncode == 0, second.stderr
    statuses = [json.loads(line).get("status") for line in second.stdout.splitlines()[:-1]]
    assert statuses == ["skipped", "skipped"]
    creates = [r for r in local_store.requests if r["operation"] == "CreateMultipartReadSetUpload"]
    assert len(creates) == 2
