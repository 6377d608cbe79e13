"""Uploading many read sets from a manifest: parsing (pure), the done-rows record, and the concurrent runner.

A manifest is a CSV or TSV file whose header names columns like a HealthOmics import manifest::

    source1,source2,sourceFileType,subjectId,sampleId,name,referenceArn,generatedFrom,description
    reads/a_1.fastq.gz,reads/a_2.fastq.gz,FASTQ,patient-1,sample-1,a,,,
    aligned/b.bam,,BAM,patient-2,sample-2,b,arn:aws:omics:...:reference/123,,

Column names are matched ignoring case, underscores, dashes and spaces (``file_type`` for ``sourceFileType`` too).
Relative source paths are resolved against the manifest's folder. Every row is checked before any upload starts.

Rows run concurrently through one ``Uploader`` (one connection pool, one rate limiter), each with its own
checkpoint under the checkpoint directory. A row that completes is recorded in ``done.jsonl`` there, keyed by a
hash of the row, so running the same manifest again skips it.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import FileType, ReadSet
from .errors import ConfigError, UploadInterruptedError, UsageError

if TYPE_CHECKING:
    from .engine import Uploader, UploadHandle

__all__ = [
    "BatchState",
    "BatchSummary",
    "ManifestError",
    "ManifestRow",
    "RowOutcome",
    "check_row_sources",
    "default_batch_dir",
    "parse_manifest",
    "read_manifest",
    "run_batch",
]


class ManifestError(ConfigError):
    """The manifest cannot be read, or one of its rows is malformed."""


# Canonical column -> accepted spellings, compared after _normalise().
_COLUMNS: dict[str, tuple[str, ...]] = {
    "source1": ("source1", "read1", "file1"),
    "source2": ("source2", "read2", "file2"),
    "file_type": ("sourcefiletype", "filetype", "type"),
    "subject_id": ("subjectid", "subject"),
    "sample_id": ("sampleid", "sample"),
    "name": ("name", "readsetname"),
    "reference_arn": ("referencearn", "reference"),
    "generated_from": ("generatedfrom",),
    "description": ("description",),
    "tags": ("tags",),
}
_REQUIRED = ("source1", "file_type", "subject_id", "sample_id", "name")
_ALIASES = {spelling: canonical for canonical, spellings in _COLUMNS.items() for spelling in spellings}


def _normalise(column: str) -> str:
    return "".join(ch for ch in column.strip().lower() if ch not in "_- ")


@dataclass(frozen=True)
class ManifestRow:
    """One row of a manifest. ``line`` is the line number in the file; ``row`` counts data rows from 1."""

    row: int
    line: int
    read_set: ReadSet

    @property
    def where(self) -> str:
        return f"row {self.row} (line {self.line})"

    def key(self, store_id: str) -> str:
        """A stable hash of what this row uploads and where: the same row in a rerun has the same key."""
        rs = self.read_set
        fields = {
            "store": store_id,
            "sources": [str(path) for path in rs.sources.values()],
            "type": rs.file_type.value,
            "subject": rs.subject_id,
            "sample": rs.sample_id,
            "name": rs.name,
            "reference": rs.reference_arn,
            "generatedFrom": rs.generated_from,
            "description": rs.description,
            "tags": dict(sorted(rs.tags.items())),
        }
        encoded = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8", "surrogateescape")
        return hashlib.sha256(encoded).hexdigest()[:32]


def _sniff_delimiter(text: str, name: str) -> str:
    lowered = name.lower()
    if lowered.endswith(".tsv") or lowered.endswith(".tab"):
        return "\t"
    if lowered.endswith(".csv"):
        return ","
    header = next((line for line in text.splitlines() if line.strip() and not line.startswith("#")), "")
    return "\t" if header.count("\t") > header.count(",") else ","


def _parse_tags(text: str, where: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in text.replace(";", " ").split():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ManifestError(f"{where}: tag {item!r} is not KEY=VALUE (separate tags with ';')")
        tags[key] = value
    return tags


def _resolve(value: str, base_dir: Path) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base_dir / path


def _non_empty_lines(text: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            yield number, line


def parse_manifest(text: str, *, base_dir: Path, name: str = "manifest") -> list[ManifestRow]:
    """Parse a manifest's text into rows with validated read sets. No file is opened.

    Raises ManifestError naming the file, the row and the problem.
    """
    lines = list(_non_empty_lines(text))
    if not lines:
        raise ManifestError(f"{name}: the manifest is empty; it needs a header line and at least one row")
    delimiter = _sniff_delimiter(text, name)
    reader = csv.reader(io.StringIO("\n".join(line for _, line in lines)), delimiter=delimiter)
    records = list(reader)
    if len(records) != len(lines):
        raise ManifestError(f"{name}: a quoted field spans several lines, which manifests do not allow")
    header = records[0]
    columns: list[str] = []
    for raw in header:
        canonical = _ALIASES.get(_normalise(raw))
        if canonical is None:
            known = "source1, source2, sourceFileType, subjectId, sampleId, name, referenceArn, "
            known += "generatedFrom, description, tags"
            raise ManifestError(f"{name} line {lines[0][0]}: unknown column {raw.strip()!r}; expected {known}")
        if canonical in columns:
            raise ManifestError(f"{name} line {lines[0][0]}: column {raw.strip()!r} appears twice")
        columns.append(canonical)
    missing = [column for column in _REQUIRED if column not in columns]
    if missing:
        raise ManifestError(f"{name} line {lines[0][0]}: missing column(s) {', '.join(missing)}")
    if len(records) == 1:
        raise ManifestError(f"{name}: the manifest has a header but no rows")
    rows: list[ManifestRow] = []
    for number, ((line, _), record) in enumerate(zip(lines[1:], records[1:], strict=True), start=1):
        where = f"{name} row {number} (line {line})"
        if len(record) != len(columns):
            raise ManifestError(f"{where}: has {len(record)} fields, the header has {len(columns)}")
        values = {column: value.strip() for column, value in zip(columns, record, strict=True)}
        for column in _REQUIRED:
            if not values.get(column):
                raise ManifestError(f"{where}: {column} is empty")
        try:
            file_type = FileType.parse(values["file_type"])
            source2 = values.get("source2") or None
            read_set = ReadSet(
                source1=_resolve(values["source1"], base_dir),
                source2=_resolve(source2, base_dir) if source2 else None,
                file_type=file_type,
                subject_id=values["subject_id"],
                sample_id=values["sample_id"],
                name=values["name"],
                reference_arn=values.get("reference_arn") or None,
                generated_from=values.get("generated_from") or None,
                description=values.get("description") or None,
                tags=_parse_tags(values.get("tags", ""), where),
            )
        except ManifestError:
            raise
        except ConfigError as exc:
            raise ManifestError(f"{where}: {exc}") from None
        rows.append(ManifestRow(row=number, line=line, read_set=read_set))
    return rows


def read_manifest(path: Path) -> list[ManifestRow]:
    """Read and parse the manifest at ``path``; relative sources are resolved against its folder."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ManifestError(f"manifest {path}: no such file") from None
    except IsADirectoryError:
        raise ManifestError(f"manifest {path}: is a directory, not a file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest {path}: cannot read: {exc}") from None
    return parse_manifest(text, base_dir=path.resolve().parent, name=str(path))


def check_row_sources(rows: Sequence[ManifestRow], name: str = "manifest") -> None:
    """Check every row's sources exist, are files, are not empty and can be read (before anything uploads)."""
    from .sources import check_source_path

    for row in rows:
        for source, path in row.read_set.sources.items():
            assert isinstance(path, Path)
            try:
                check_source_path(path)
            except UsageError as exc:
                raise ManifestError(f"{name} {row.where}: {source.value.lower()} {exc}") from None


def default_batch_dir(manifest: Path) -> Path:
    """Where a batch keeps its checkpoints and done-rows record unless --checkpoint-dir says otherwise."""
    home = os.environ.get("ASYNC_UPLOADER_HOME")
    base = Path(home) if home else Path.home() / ".cache" / "async-uploader"
    key = hashlib.sha256(str(manifest.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return base / "batches" / f"{manifest.stem}-{key}"


class BatchState:
    """The rows of a batch already uploaded: an append-only JSON-lines file ``done.jsonl`` in the batch folder."""

    FILE = "done.jsonl"

    def __init__(self, directory: Path) -> None:
        self.path = directory / self.FILE
        self.done: dict[str, str] = {}
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            try:
                record = json.loads(line)
                self.done[str(record["key"])] = str(record["readSetId"])
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line from a crash: that row simply runs again

    def record(self, key: str, read_set_id: str, row: ManifestRow) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        line = json.dumps({"key": key, "readSetId": read_set_id, "row": row.row, "name": row.read_set.name})
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.done[key] = read_set_id


@dataclass(frozen=True)
class RowOutcome:
    """What happened to one row: status is done, skipped, failed or interrupted."""

    row: ManifestRow
    status: str
    read_set_id: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"row": self.row.row, "line": self.row.line, "name": self.row.read_set.name}
        data["status"] = self.status
        if self.read_set_id is not None:
            data["readSetId"] = self.read_set_id
        for key, value in self.result.items():
            if key == "status":
                data["readSetStatus"] = value
            elif key not in data and key != "readSetId":
                data[key] = value
        if self.error is not None:
            data["error"] = self.error
        return data


@dataclass(frozen=True)
class BatchSummary:
    outcomes: tuple[RowOutcome, ...]
    seconds: float

    def count(self, status: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    def as_json(self) -> dict[str, Any]:
        return {
            "summary": True,
            "rows": len(self.outcomes),
            "done": self.count("done"),
            "skipped": self.count("skipped"),
            "failed": self.count("failed"),
            "interrupted": self.count("interrupted"),
            "seconds": round(self.seconds, 3),
        }


async def run_batch(
    uploader: Uploader,
    rows: Sequence[ManifestRow],
    *,
    store_id: str,
    directory: Path,
    max_parallel: int,
    emit: Callable[[RowOutcome], None],
    restart: bool = False,
    keep_on_failure: bool | None = None,
    use_checkpoints: bool = True,
    on_start: Callable[[ManifestRow, UploadHandle], None] | None = None,
    on_finish: Callable[[ManifestRow], None] | None = None,
    on_event: Callable[[ManifestRow], Callable[[dict[str, object]], None]] | None = None,
    stopping: Callable[[], bool] = lambda: False,
    format_error: Callable[[BaseException], str] = str,
) -> BatchSummary:
    """Upload ``rows`` at most ``max_parallel`` at a time through ``uploader``; never raises for one row.

    ``emit`` is called once per row as it finishes (skipped rows first). ``on_start``/``on_finish`` let the caller
    track the handles in flight (to show progress or to stop them on a signal); once ``stopping()`` is true, rows
    not yet started are reported as interrupted. ``on_event(row)`` gives the engine's event callback for a row.
    """
    started = time.monotonic()
    state = BatchState(directory)
    outcomes: list[RowOutcome] = []
    pending: list[tuple[ManifestRow, str]] = []
    for row in rows:
        key = row.key(store_id)
        if key in state.done:
            outcome = RowOutcome(row, "skipped", read_set_id=state.done[key])
            outcomes.append(outcome)
            emit(outcome)
        else:
            pending.append((row, key))
    gate = asyncio.Semaphore(max(1, max_parallel))

    async def one(row: ManifestRow, key: str) -> None:
        async with gate:
            if stopping():
                outcome = RowOutcome(row, "interrupted", error="not started: the batch was stopped")
                outcomes.append(outcome)
                emit(outcome)
                return
            checkpoint: Path | bool = directory / "checkpoints" / f"{key}.jsonl" if use_checkpoints else False
            try:
                handle = uploader.start(
                    row.read_set,
                    store_id=store_id,
                    checkpoint=checkpoint,
                    restart=restart,
                    keep_on_failure=keep_on_failure,
                    on_event=on_event(row) if on_event is not None else None,
                )
                if on_start is not None:
                    on_start(row, handle)
                try:
                    result = await handle
                finally:
                    if on_finish is not None:
                        on_finish(row)
            except UploadInterruptedError as exc:
                outcome = RowOutcome(row, "interrupted", error=format_error(exc))
            except Exception as exc:  # one row's failure never stops the others
                outcome = RowOutcome(row, "failed", error=format_error(exc))
            else:
                state.record(key, result.read_set_id, row)
                outcome = RowOutcome(row, "done", read_set_id=result.read_set_id, result=result.as_json())
            outcomes.append(outcome)
            emit(outcome)

    async with asyncio.TaskGroup() as group:
        for row, key in pending:
            group.create_task(one(row, key), name=f"batch-row-{row.row}")
    ordered = tuple(sorted(outcomes, key=lambda outcome: outcome.row.row))
    return BatchSummary(ordered, time.monotonic() - started)


def describe(rows: Sequence[ManifestRow]) -> Mapping[str, int]:
    """Counts by file type, for the log line at the start of a batch."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.read_set.file_type.value] = counts.get(row.read_set.file_type.value, 0) + 1
    return counts
