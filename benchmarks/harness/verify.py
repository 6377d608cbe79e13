"""Scenario: what end-to-end verification costs, and whether it finishes within the upload and the wait for ACTIVE.

Two parts. First the hash itself, in this process on a page-cached source: ``FastqSummer`` (inflate, hash as the
ETag family says, count reads and bases) with each inflater and family. Then whole uploads of a paired real
FASTQ.gz into a store that keeps the bytes (so it joins the parts and computes the read set's ETag and counts
before ACTIVE, as the service does), without and with ``--verify``, alternated: at full loopback speed, and at the
service's quota pace (the store enforcing 10 parts/s, the client keeping the service's rates).
"""

from __future__ import annotations

import resource
import statistics
import time
from pathlib import Path

from async_uploader.core.fastq import FastqSummer, inflater_name

from .data import describe, ensure_fastq_gz
from .report import Section, Table, ok_text, ratio, summarize
from .runner import Client, Context, alternate
from .store import Store

GIB = 1024**3
CHUNK = 1024 * 1024


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _hash(path: Path, inflater: str, family: str) -> tuple[float, float]:
    """Wall and CPU seconds of one FastqSummer pass over ``path`` (read in 1 MiB chunks, as the engine does)."""
    summer = FastqSummer(family, inflater=inflater)
    started, before = time.perf_counter(), _cpu()
    with path.open("rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            summer.update(chunk)
    summer.finish()
    return time.perf_counter() - started, _cpu() - before


def run(ctx: Context) -> Section:
    size = 8 * 1024 * 1024 if ctx.quick else int(ctx.gib * GIB)
    runs = ctx.repeat(3)
    ctx.log(f"verify: making 2 × {describe(size)} of FASTQ.gz (once)")
    sources = [ensure_fastq_gz(ctx.data_dir, size, mate) for mate in (1, 2)]
    actual = sources[0].stat().st_size
    section = Section(
        "verify",
        "End-to-end verification",
        intro=(
            f"A paired FASTQ.gz of 2 × {describe(actual)} (random 150 bp reads, gzip level 1). The hash: "
            "`FastqSummer` over one page-cached source in the harness's own process. The uploads: into a store that "
            "keeps the bytes, so it joins the parts and computes the ETag and counts before the read set is ACTIVE, "
            f"without and with `--verify`, {runs} run(s) each, alternated."
        ),
    )
    rows = []
    sources[0].read_bytes()  # into the page cache
    for inflater in ("zlib", "isal"):
        for family in ("MD5up", "SHA256up"):
            walls, cpus = zip(*(_hash(sources[0], inflater, family) for _ in range(runs)), strict=True)
            wall, used = statistics.median(walls), statistics.median(cpus)
            rows.append([f"{inflater} + FASTQ_{family}", f"{actual / wall / 1e6:,.0f}", f"{used / (actual / GIB):.2f}"])
            ctx.log(f"  hash {inflater} {family}: {actual / wall / 1e6:.0f} MB/s compressed")
    section.tables.append(
        Table(
            "The hash, one source, one thread (what each verification thread does)",
            ["inflater + ETag algorithm", "MB/s of compressed input", "CPU s per GiB of compressed input"],
            rows,
        )
    )
    plain = Client("async_uploader, --no-verify", "ours")
    checked = Client("async_uploader, --verify", "ours", ("--verify",))
    for label, store_flags, client_flags in (
        ("full loopback speed", (), ()),
        ("the service's quota pace (10 parts/s)", ("--service-quotas",), ("--service-quotas",)),
    ):
        ctx.log(f"verify: uploads at {label}")
        with Store(store_flags, discard=False) as store:
            grouped = alternate(ctx, store, ctx.usable([plain, checked]), sources, runs, *client_flags)
        if not grouped:
            continue
        seconds = {name: summarize(measured, lambda r: r.seconds) for name, measured in grouped.items()}
        base = seconds[plain.label].median
        table = []
        for name, measured in grouped.items():
            verified = sum(int(str(run.report.get("verified", 0))) for run in measured if run.ok)
            table.append(
                [
                    name,
                    seconds[name].text(2),
                    ratio(seconds[name].median, base),
                    summarize(measured, lambda r: r.cpu).text(2),
                    summarize(measured, lambda r: r.rss_mib).text(),
                    f"{verified}/{len(measured)}",
                    ok_text(measured),
                ]
            )
            section.add_runs(f"{name} at {label}", measured)
        section.tables.append(
            Table(
                f"2 × {describe(actual)} uploads at {label}, to ACTIVE (and verified)",
                ["client", "seconds", "× without", "client CPU s", "peak RSS MiB", "verified", "ok"],
                table,
            )
        )
    section.notes += [
        f"The inflater the engine uses where it is installed: {inflater_name()} (python-isal, in the `fast` extra).",
        "Each source is hashed by a thread of its own, beside the upload, from the upload's start; the upload "
        "waits for it only after the read set is ACTIVE. Client and store share the machine's cores here.",
    ]
    return section
