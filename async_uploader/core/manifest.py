"""Batch manifests, pure: a CSV or TSV manifest's text into validated read sets, and what became of each row.

A manifest is a CSV or TSV file whose header names columns like a HealthOmics import manifest::

    source1,source2,sourceFileType,subjectId,sampleId,name,referenceArn,generatedFrom,description
    reads/a_1.fastq.gz,reads/a_2.fastq.gz,FASTQ,patient-1,sample-1,a,,,
    aligned/b.bam,,BAM,patient-2,sample-2,b,arn:aws:omics:...:reference/123,,

Column names are matched ignoring case, underscores, dashes and spaces (``file_type`` for ``sourceFileType`` too).
Relative source paths are resolved against the manifest's folder. No file is opened here.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import FileType, ReadSet
from .errors import ConfigError

__all__ = [
    "STATUSES",
    "BatchPlan",
    "BatchSummary",
    "ManifestError",
    "ManifestRow",
    "RowOutcome",
    "RowProblem",
    "bad_rows",
    "conflicting_rows",
    "parse_manifest",
    "parse_manifest_rows",
    "plan_batch",
]


@dataclass(frozen=True)
class RowProblem:
    """Why one row of a manifest cannot be uploaded (``row`` counts data rows from 1, ``line`` the file's lines)."""

    row: int
    line: int
    why: str

    @property
    def where(self) -> str:
        return f"row {self.row} (line {self.line})"


class ManifestError(ConfigError):
    """The manifest cannot be read, or rows of it are malformed: ``problems`` names each bad row (maybe none)."""

    def __init__(self, message: str, problems: Sequence[RowProblem] = ()) -> None:
        super().__init__(message)
        self.name = ""
        self.problems = tuple(problems)

    def lines(self) -> list[str]:
        """For people: the message alone when it names one row or none; else a heading and a line per bad row."""
        if len(self.problems) < 2:
            return [str(self)]
        return [f"manifest {self.name}: {len(self.problems)} bad rows:"] + [
            f"  {problem.where}: {problem.why}" for problem in self.problems
        ]


def bad_rows(name: str, problems: Sequence[RowProblem]) -> ManifestError:
    """One error naming every bad row of the manifest ``name`` (a row's several problems joined on its line)."""
    merged: dict[int, RowProblem] = {}
    for problem in problems:
        known = merged.get(problem.row)
        merged[problem.row] = (
            problem if known is None else RowProblem(known.row, known.line, f"{known.why}; {problem.why}")
        )
    ordered = [merged[row] for row in sorted(merged)]
    if len(ordered) == 1:
        error = ManifestError(f"{name} {ordered[0].where}: {ordered[0].why}", ordered)
    else:
        listed = "; ".join(f"{problem.where}: {problem.why}" for problem in ordered)
        error = ManifestError(f"manifest {name}: {len(ordered)} bad rows: {listed}", ordered)
    error.name = name
    return error


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


def _parse_tags(text: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in text.replace(";", " ").split():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ManifestError(f"tag {item!r} is not KEY=VALUE (separate tags with ';')")
        tags[key] = value
    return tags


def _resolve(value: str, base_dir: Path) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base_dir / path


def _non_empty_lines(text: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            yield number, line


def _columns(header: list[str], where: str) -> list[str]:
    """The header's canonical column names; ``where`` is the manifest and the header's line."""
    columns: list[str] = []
    for raw in header:
        canonical = _ALIASES.get(_normalise(raw))
        if canonical is None:
            known = "source1, source2, sourceFileType, subjectId, sampleId, name, referenceArn, "
            known += "generatedFrom, description, tags"
            raise ManifestError(f"{where}: unknown column {raw.strip()!r}; expected {known}")
        if canonical in columns:
            raise ManifestError(f"{where}: column {raw.strip()!r} appears twice")
        columns.append(canonical)
    missing = [column for column in _REQUIRED if column not in columns]
    if missing:
        raise ManifestError(f"{where}: missing column(s) {', '.join(missing)}")
    return columns


def _row_values(record: list[str], columns: list[str]) -> dict[str, str]:
    """One record's stripped values by column, every required one present (ManifestError says why not)."""
    if len(record) != len(columns):
        raise ManifestError(f"has {len(record)} fields, the header has {len(columns)}")
    values = {column: value.strip() for column, value in zip(columns, record, strict=True)}
    empty = [column for column in _REQUIRED if not values.get(column)]
    if empty:
        raise ManifestError(f"{', '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty")
    return values


def _row_read_set(values: dict[str, str], base_dir: Path) -> ReadSet:
    try:
        file_type = FileType.parse(values["file_type"])
        source2 = values.get("source2") or None
        return ReadSet(
            source1=_resolve(values["source1"], base_dir),
            source2=_resolve(source2, base_dir) if source2 else None,
            file_type=file_type,
            subject_id=values["subject_id"],
            sample_id=values["sample_id"],
            name=values["name"],
            reference_arn=values.get("reference_arn") or None,
            generated_from=values.get("generated_from") or None,
            description=values.get("description") or None,
            tags=_parse_tags(values.get("tags", "")),
        )
    except ManifestError:
        raise
    except ConfigError as exc:
        raise ManifestError(str(exc)) from None


def parse_manifest(text: str, *, base_dir: Path, name: str = "manifest") -> list[ManifestRow]:
    """Parse a manifest's text into rows with validated read sets. No file is opened.

    Raises ManifestError naming the file, every bad row and its problems.
    """
    rows, problems = parse_manifest_rows(text, base_dir=base_dir, name=name)
    if problems:
        raise bad_rows(name, problems)
    return rows


def parse_manifest_rows(
    text: str, *, base_dir: Path, name: str = "manifest"
) -> tuple[list[ManifestRow], list[RowProblem]]:
    """The rows of a manifest's text that are well formed, and the problem of each other row (all of them).

    Raises ManifestError for what spoils the whole file (no header, unknown columns, no rows).
    """
    lines = list(_non_empty_lines(text))
    if not lines:
        raise ManifestError(f"{name}: the manifest is empty; it needs a header line and at least one row")
    delimiter = _sniff_delimiter(text, name)
    reader = csv.reader(io.StringIO("\n".join(line for _, line in lines)), delimiter=delimiter)
    records = list(reader)
    if len(records) != len(lines):
        raise ManifestError(f"{name}: a quoted field spans several lines, which manifests do not allow")
    columns = _columns(records[0], f"{name} line {lines[0][0]}")
    if len(records) == 1:
        raise ManifestError(f"{name}: the manifest has a header but no rows")
    rows: list[ManifestRow] = []
    problems: list[RowProblem] = []
    for number, ((line, _), record) in enumerate(zip(lines[1:], records[1:], strict=True), start=1):
        try:
            read_set = _row_read_set(_row_values(record, columns), base_dir)
        except ManifestError as exc:
            problems.append(RowProblem(number, line, str(exc)))
            continue
        rows.append(ManifestRow(row=number, line=line, read_set=read_set))
    return rows, problems


def conflicting_rows(rows: Sequence[ManifestRow], same_file: Callable[[Path], Hashable]) -> list[RowProblem]:
    """The rows naming a file an earlier row names, not as the same read set (other metadata or other sources).

    ``same_file(path)`` says which file a path is (two paths to one file give equal answers). A row repeating an
    earlier row whole is no problem: the read set is uploaded once and the repeat is a ``duplicate``.
    """
    first: dict[Hashable, ManifestRow] = {}
    problems: list[RowProblem] = []
    for row in rows:
        clashes: dict[int, str] = {}
        files = [(path, same_file(path)) for path in row.read_set.sources.values() if isinstance(path, Path)]
        for path, identity in files:
            earlier = first.get(identity)
            if earlier is not None and earlier.key("") != row.key(""):
                clashes.setdefault(earlier.row, str(path))
        for _, identity in files:
            first.setdefault(identity, row)
        problems += [
            RowProblem(row.row, row.line, f"names {path}, as row {other} does, with other metadata or sources")
            for other, path in sorted(clashes.items())
        ]
    return problems


@dataclass(frozen=True)
class RowOutcome:
    """What happened to one row: ``status`` is one of ``STATUSES``.

    ``duplicate``: the row names the same read set (same store, sources and metadata) as an earlier row, which
    was uploaded once for both; its read set id is the earlier row's.
    """

    row: ManifestRow
    status: str
    read_set_id: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    duplicate_of: int | None = None

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"row": self.row.row, "line": self.row.line, "name": self.row.read_set.name}
        data["status"] = self.status
        if self.duplicate_of is not None:
            data["duplicateOf"] = self.duplicate_of
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

    def rows(self, status: str) -> list[int]:
        return [outcome.row.row for outcome in self.outcomes if outcome.status == status]

    def as_json(self) -> dict[str, Any]:
        """The counts per status, and which rows had each (``"outcomes": {"failed": [3, 7], ...}``)."""
        return {
            "summary": True,
            "rows": len(self.outcomes),
            **{status: self.count(status) for status in STATUSES},
            "outcomes": {status: self.rows(status) for status in STATUSES if self.count(status)},
            "seconds": round(self.seconds, 3),
        }


STATUSES = ("done", "skipped", "duplicate", "failed", "interrupted")
"""What can become of a row."""


@dataclass(frozen=True)
class BatchPlan:
    """What a batch has to do: rows already done, the rows to upload (one per read set), and the later rows that
    name a read set an earlier row uploads."""

    skipped: tuple[RowOutcome, ...]
    to_upload: tuple[tuple[ManifestRow, str], ...]
    duplicates: dict[str, tuple[ManifestRow, ...]]

    def duplicate_outcomes(self, key: str, first: RowOutcome) -> list[RowOutcome]:
        """The outcomes of the rows that repeat ``first``'s read set: the same read set, uploaded once."""
        if first.status == "done":
            return [
                RowOutcome(row, "duplicate", read_set_id=first.read_set_id, duplicate_of=first.row.row)
                for row in self.duplicates.get(key, ())
            ]
        why = f"the same read set as row {first.row.row}, which {first.status}"
        return [
            RowOutcome(row, first.status, error=why, duplicate_of=first.row.row) for row in self.duplicates.get(key, ())
        ]


def plan_batch(rows: Sequence[ManifestRow], store_id: str, done: Mapping[str, str]) -> BatchPlan:
    """Split ``rows``: those ``done`` records (key -> read set id), the first row of each read set, its repeats."""
    skipped: list[RowOutcome] = []
    first: dict[str, ManifestRow] = {}
    duplicates: dict[str, list[ManifestRow]] = {}
    for row in rows:
        key = row.key(store_id)
        if key in done:
            skipped.append(RowOutcome(row, "skipped", read_set_id=done[key]))
        elif key in first:
            duplicates.setdefault(key, []).append(row)
        else:
            first[key] = row
    return BatchPlan(
        tuple(skipped),
        tuple((row, key) for key, row in first.items()),
        {key: tuple(repeats) for key, repeats in duplicates.items()},
    )
