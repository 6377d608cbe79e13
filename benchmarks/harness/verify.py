"""Scenario: what end-to-end verification costs, and whether it finishes within the upload and the wait for ACTIVE.

Three parts. First, on two data sets (``harness.pipeline``): the verifier against its stages alone, the store's
processing against the client's verifier on the same pair, and compressing plain FASTQ on the fly. Then the hash
in this process on a page-cached source: ``FastqSummer`` (inflate, hash as the ETag family says, count reads and
bases) with each inflater and family. Then whole uploads of a paired real
FASTQ.gz into a store that keeps the bytes (so it joins the parts and computes the read set's ETag and counts
before ACTIVE, as the service does), without and with ``--verify``, alternated with TransferManager at its defaults
for reference: at full loopback speed over HTTP and over TLS, and at the service's quota pace over TLS (the store
enforcing 10 parts/s, the client keeping the service's rates).
"""

from __future__ import annotations

import resource
import statistics
import time
from pathlib import Path

from async_uploader.core.fastq import FastqSummer, inflater_name

from .compare import Setting, head_to_head, headline, phases_comparison
from .data import describe, ensure_fastq_gz
from .pipeline import tables as pipeline_tables
from .quota import SETTLE
from .report import Section, Table
from .runner import Client, Context

KEEPING = Setting("store keeping bytes", discard=False)
CASES = (
    ("full loopback speed", KEEPING.over(tls=False), ()),
    ("full loopback speed", KEEPING, ()),
    (
        "the service's quota pace (10 parts/s)",
        Setting("store keeping bytes, service quotas", ("--service-quotas",), discard=False, settle=SETTLE),
        ("--service-quotas",),
    ),
)
TM_REFERENCE = Client("TransferManager (defaults; returns at Complete, checks nothing)", "transfer_manager")


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
            "First two data sets of real reads, each a FASTQ.gz pair: the demo's (about 1.8×) and reads whose "
            "qualities are binned to four values (about 4×): the verifier against its stages, the store against "
            "the verifier, compression on the fly. Then a paired FASTQ.gz of "
            f"2 × {describe(actual)} (random 150 bp reads, gzip level 1). The hash: "
            "`FastqSummer` over one page-cached source in the harness's own process. The uploads: into a store that "
            "keeps the bytes, so it joins the parts and computes the ETag and counts before the read set is ACTIVE, "
            f"without and with `--verify`, and TransferManager at its defaults for reference, {runs} run(s) each, "
            "alternated."
        ),
    )
    section.tables += pipeline_tables(ctx, 2 * 1024 * 1024 if ctx.quick else ctx.pipeline_mb * 1_000_000, runs)
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
    for name, setting, quota in CASES:
        ctx.log(f"verify: uploads at {name}, over {setting.transport}")
        plain = Client("async_uploader, --no-verify", "ours", quota)
        checked = Client("async_uploader, --verify", "ours", ("--verify", *quota))
        result = head_to_head(ctx, setting, [plain, checked, TM_REFERENCE], sources, runs, reference=TM_REFERENCE)
        if not result.of(checked):
            continue
        result.record(section, name)
        if setting.tls and not quota:
            section.headlines.append(headline("verify", "FASTQ.gz, --verify (the default), to ACTIVE", result, checked))
        section.tables.append(
            phases_comparison(
                f"2 × {describe(actual)} uploads at {name} over {setting.transport}, to ACTIVE (and verified)",
                result,
                plain,
            )
        )
    section.notes += [
        f"The inflater the engine uses where it is installed: {inflater_name()} (python-isal, in the `fast` extra).",
        "Each source is hashed by a thread of its own, beside the upload, from the upload's start; the upload "
        "waits for it only after the read set is ACTIVE. Client and store share the machine's cores here.",
        "TransferManager (defaults) is there for reference: it returns at Complete, without waiting for ACTIVE, "
        "and checks nothing. Full loopback speed is measured over HTTP and over TLS; the quota pace over TLS only "
        "(async_uploader keeps the service's rates there, and every run waits for the quota buckets to refill).",
        "`--verify` is the package's default (UploadConfig.verify); the other benchmarks switch it off because "
        "their store keeps no bytes to compute an ETag from.",
    ]
    return section
