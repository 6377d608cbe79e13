"""``async-uploader batch --dry-run``: every row checked, then the plan and its least time, with no request at all.

Nothing is sent and nothing is created: no credentials are resolved, no checkpoint or batch folder is written.
A row whose FASTQ is plain text is marked compressed on the fly, or, with ``--compress never``, refused as the real
run would refuse it (the plan is printed, then exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ..core.batch_estimate import estimate_batch
from ..core.config import RateLimits, Source
from ..core.errors import SourceError
from ..core.manifest import ManifestRow, plan_batch
from ..core.plan import Plan, make_plan
from ..edge.batchstate import BatchState
from ..edge.sources import check_source_path
from .common import EXIT_OK, EXIT_USAGE, PROG
from .dryrun import plain_fastq

__all__ = ["batch_dry_run"]


def _plan(row: ManifestRow, part_size: int | None) -> Plan:
    sizes: dict[Source, int] = {}
    for source, path in row.read_set.sources.items():
        assert isinstance(path, Path)
        sizes[source] = check_source_path(path)
    return make_plan(sizes, part_size)


def _compression(args: argparse.Namespace, row: ManifestRow) -> tuple[list[Source], str]:
    """The row's plain FASTQ sources (compressed on the fly), or why the real run would refuse the row."""
    try:
        return plain_fastq(args, row.read_set), ""
    except SourceError as exc:
        return [], str(exc)


def _mark(plain: list[Source], refused: str) -> str:
    if refused:
        return "  refused: plain FASTQ with --compress never"
    return f"  {' and '.join(plain)} plain FASTQ: compressed on the fly" if plain else ""


def batch_dry_run(args: argparse.Namespace, rows: Sequence[ManifestRow], directory: Path) -> int:
    """Print the plan of the checked ``rows`` (stdout; --json: one object) and exit 0, having sent nothing.

    Rows recorded done in ``directory`` are counted as skipped (a real run skips them while their files are
    unchanged); rows repeating an earlier row's read set are counted once.
    """
    plan = plan_batch(rows, args.store_id, BatchState(directory).done)
    repeats = sum(len(rows) for rows in plan.duplicates.values())
    plans = [(row, _plan(row, args.part_size)) for row, _ in plan.to_upload]
    compression = {row.row: _compression(args, row) for row, _ in plans}
    refused = [(row, compression[row.row][1]) for row, _ in plans if compression[row.row][1]]
    rates = RateLimits(parts=getattr(args, "max_rate", RateLimits().parts))
    found = estimate_batch([p for _, p in plans], rates)
    if args.json:
        per_row = [
            {
                "row": row.row,
                "name": row.read_set.name,
                "bytes": p.total_bytes,
                "parts": p.total_parts,
                "compressOnTheFly": [str(source) for source in compression[row.row][0]],
                "refused": compression[row.row][1] or None,
            }
            for row, p in plans
        ]
        counts = {"rows": len(rows), "skipped": len(plan.skipped), "duplicates": repeats}
        print(
            json.dumps({"dryRun": True, "manifest": str(args.manifest), **counts, **found.as_json(), "upload": per_row})
        )
        return _refused(refused)
    print("dry run: every row checked; nothing is sent and nothing is created")
    print(
        f"manifest {args.manifest}: {len(rows)} rows: {found.read_sets} read sets to upload, "
        f"{len(plan.skipped)} recorded done (skipped while their files are unchanged), {repeats} repeating an "
        "earlier row"
    )
    width = max((len(row.read_set.name) for row, _ in plans), default=4)
    for row, p in plans:
        print(
            f"  row {row.row:>4}  {row.read_set.name:<{width}}  {p.total_bytes:>15,} bytes  {p.total_parts:>6,} parts"
            + _mark(*compression[row.row])
        )
    print(f"bytes: {found.bytes:,} in {found.parts:,} parts")
    print("requests: " + ", ".join(f"{count:,} {name}" for name, count in found.requests.items()) + " (retries aside)")
    print(
        f"time at the service's quotas: at least {found.seconds:.1f} s (Create and Complete {rates.control:g}/s "
        f"together, parts {rates.parts or 0:g}/s, GetReadSetMetadata {rates.listings:g}/s); the network and the "
        "store's processing may make it longer"
    )
    if any(plain for plain, _ in compression.values()):
        print("plain FASTQ is gzip-compressed on the fly as it uploads: its parts above are of plain input")
    return _refused(refused)


def _refused(refused: Sequence[tuple[ManifestRow, str]]) -> int:
    """Exit 0; or, when the real run would refuse rows, a line for each on stderr and exit 2."""
    for row, why in refused:
        print(f"{PROG}: row {row.row} would be refused: {why}", file=sys.stderr)
    return EXIT_USAGE if refused else EXIT_OK
