"""Scenario ``startup``: ``benchmarks/startup.py``'s cases (--version, --help, a tiny paired upload, ours against
TransferManager) as a section of the results."""

from __future__ import annotations

import startup

from .report import Section, Table
from .runner import Context


def run(ctx: Context) -> Section:
    runs = 1 if ctx.quick else max(1, min(ctx.runs, 7))
    ctx.log(f"startup: {runs} alternated run(s) of each case")
    result = startup.measure(runs, log=False)
    cases = result["cases"]
    assert isinstance(cases, dict)
    rows = [
        [name, f"{row['wall']:.3f}", f"{row['cpu']:.3f}", f"{row['cpu_min']:.3f}-{row['cpu_max']:.3f}"]
        for name, row in cases.items()
    ]
    section = Section(
        "startup",
        "Start-up: short commands and a tiny upload",
        intro=(
            "Each case is one process from spawn to exit (interpreter start-up and imports included), against "
            f"`async-uploader serve`; {runs} alternated run(s), medians; CPU is user + system of the reaped child. "
            "The upload sends one paired FASTQ.gz of 2 × 200 reads with --no-wait (Create, parts, Complete: what "
            "TransferManager's upload_read_set(wait=False) does) and with the defaults (also waiting for ACTIVE "
            "and verifying)."
        ),
    )
    section.tables.append(Table("", ["case", "wall s", "CPU s", "CPU min-max"], rows))
    section.notes.append(
        f"upload --no-wait against TransferManager: CPU {result['upload_cpu_ratio']:.2f}×, "
        f"wall {result['upload_wall_ratio']:.2f}×; load average {result['load_before']} before, "
        f"{result['load_after']} after."
    )
    section.runs.append({"group": "startup", **result})
    return section
