"""What a batch tells people: a short line per row as it ends, a table at the end, and the ``--report`` file.

The report file holds one record per row of the manifest (``COLUMNS``), as CSV or JSON Lines by its extension
(``.csv``; ``.jsonl`` or ``.json``). It is written whole at the end of every run, through a temporary file renamed
over it, and only over a report of this tool: a file of any other shape is left as it is (checked before anything
is sent). A rerun writes it again: the rows it skipped are ``skipped``, with the read set id recorded before and
what the earlier report said of that read set.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.errors import UsageError
from ..core.manifest import RowOutcome

__all__ = ["COLUMNS", "ReportFile", "outcome_table", "report_record", "row_line"]

COLUMNS = (
    "row",
    "name",
    "sample",
    "subject",
    "outcome",
    "readSetId",
    "verified",
    "bytes",
    "transferSeconds",
    "storeSeconds",
    "error",
)
"""The report's columns, in order."""

_CARRIED = ("verified", "bytes", "transferSeconds", "storeSeconds")
"""What a skipped row keeps from the earlier report that names the same read set."""


def _bytes(result: Mapping[str, Any]) -> int | None:
    sizes = result.get("bytes")
    if isinstance(sizes, dict) and all(isinstance(size, int) for size in sizes.values()):
        return sum(sizes.values())
    return None


def report_record(outcome: RowOutcome) -> dict[str, Any]:
    """One row's record: ``COLUMNS`` in order, None where a value is not known (a skipped or failed row)."""
    read_set = outcome.row.read_set
    result = outcome.result
    return {
        "row": outcome.row.row,
        "name": read_set.name,
        "sample": read_set.sample_id,
        "subject": read_set.subject_id,
        "outcome": outcome.status,
        "readSetId": outcome.read_set_id,
        "verified": result.get("verified"),
        "bytes": _bytes(result),
        "transferSeconds": result.get("transferSeconds"),
        "storeSeconds": result.get("storeSeconds"),
        "error": outcome.error,
    }


# -- for people -------------------------------------------------------------------------------------------------


def _size(count: int | None) -> str:
    if count is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def _verified(value: object, outcome: str) -> str:
    if value is True:
        return "verified"
    if value is False:
        return "NOT verified"
    return "not yet" if outcome == "done" else "-"


def _cells(outcome: RowOutcome) -> list[str]:
    record = report_record(outcome)
    seconds = outcome.result.get("seconds")
    return [
        str(outcome.row.row),
        outcome.row.read_set.name,
        outcome.status if outcome.duplicate_of is None else f"{outcome.status} of row {outcome.duplicate_of}",
        _size(record["bytes"]),
        f"{seconds:.1f} s" if isinstance(seconds, int | float) else "-",
        _verified(record["verified"], outcome.status),
        outcome.read_set_id or "-",
    ]


def row_line(outcome: RowOutcome) -> str:
    """A short line for one row as it ends: row, name, outcome, size, time, verified, read set id (or why not)."""
    number, name, status, size, seconds, verified, read_set = _cells(outcome)
    line = f"row {number}  {name}  {status}"
    if outcome.status == "done":
        line += f"  {size} in {seconds}  {verified}  read set {read_set}"
    elif outcome.read_set_id is not None:
        line += f"  read set {read_set}"
    if outcome.error is not None:
        line += f": {outcome.error}"
    return line


def outcome_table(outcomes: Sequence[RowOutcome]) -> list[str]:
    """Every row in a table (for the end of a batch): row, name, outcome, size, time, verified, read set."""
    header = ["row", "name", "outcome", "size", "time", "verified", "read set"]
    body = [_cells(outcome) for outcome in outcomes]
    widths = [max(len(cells[i]) for cells in [header, *body]) for i in range(len(header))]
    right = {0, 3, 4}  # numbers line up on the right

    def line(cells: list[str]) -> str:
        padded = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    return [line(header), *(line(cells) for cells in body)]


# -- the report file --------------------------------------------------------------------------------------------


class ReportFile:
    """The ``--report`` file: its format by extension, checked to be ours before the batch sends anything."""

    def __init__(self, path: Path) -> None:
        self.path = path
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".jsonl", ".json"):
            raise UsageError(f"--report {path}: name a .csv, .jsonl or .json file (the extension picks the format)")
        self.csv = suffix == ".csv"
        self.earlier: dict[str, dict[str, Any]] = {}
        """The records of the report this one replaces, by read set id."""

    def check(self) -> None:
        """Raise UsageError unless the file can be written: its folder exists, and it is absent, empty, or a report
        of this tool (whose records are kept for the rows a rerun skips)."""
        path = self.path
        if not path.parent.is_dir():
            raise UsageError(f"--report {path}: the folder {path.parent} does not exist")
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise UsageError(f"--report {path}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"--report {path}: is not a regular file; it is left as it is")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--report {path}: cannot read it to check it is a report: {exc}") from None
        records = self._records(text) if text.strip() else []
        if records is None:
            raise UsageError(f"--report {path}: is not a report of this tool; it is left as it is")
        self.earlier = {str(record["readSetId"]): record for record in records if record.get("readSetId")}

    def _records(self, text: str) -> list[dict[str, Any]] | None:
        """The records of an earlier report; None when ``text`` is not one."""
        if self.csv:
            reader = csv.DictReader(io.StringIO(text))
            if tuple(reader.fieldnames or ()) != COLUMNS:
                return None
            return [dict(record) for record in reader]
        records: list[dict[str, Any]] = []
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                return None
            if not isinstance(record, dict) or tuple(record) != COLUMNS:
                return None
            records.append(record)
        return records

    def records(self, outcomes: Iterable[RowOutcome]) -> list[dict[str, Any]]:
        """A record per row; a skipped row keeps what the earlier report said of its read set."""
        records = []
        for outcome in outcomes:
            record = report_record(outcome)
            earlier = self.earlier.get(str(record["readSetId"]))
            if outcome.status == "skipped" and earlier is not None:
                record.update({column: earlier.get(column) for column in _CARRIED})
            records.append(record)
        return records

    def render(self, outcomes: Iterable[RowOutcome]) -> str:
        records = self.records(outcomes)
        if not self.csv:
            return "".join(json.dumps(record) + "\n" for record in records)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerow({k: _csv_value(v) for k, v in record.items()})
        return out.getvalue()

    def write(self, outcomes: Iterable[RowOutcome]) -> None:
        """Write the report whole, through a temporary file beside it renamed over it (never half a report)."""
        text = self.render(outcomes)
        staged = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(staged, flags, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(staged, self.path)
        except OSError as exc:
            staged.unlink(missing_ok=True)
            raise UsageError(f"--report {self.path}: cannot write it: {exc.strerror or exc}") from None


def _csv_value(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value
