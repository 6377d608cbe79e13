"""Scenario: a batch of paired read sets at the pace of the service's quotas, to ACTIVE and verified.

16 paired FASTQ.gz read sets (2 × 32 MiB each) from one manifest into a store that keeps the bytes, enforces the
service's default quotas (1 Create/Complete/Abort per second, 10 parts/s, 5 listings/s) and keeps each read set
PROCESSING_UPLOAD for ``INGEST_DELAY`` seconds after Complete. async_uploader is the CLI a user runs,
``async-uploader batch MANIFEST --json``, at its defaults (verification on, every read set waited for until ACTIVE
and checked), and again with ``--no-wait`` (the batch ends at the last Complete); TransferManager uploads the same
rows one after another in a loop and returns at each Complete, checking nothing (clients/transfer_manager_loop.py).
Each run gets a store of its own, so every client finds the quota buckets full and no read set of an earlier run.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from async_uploader.emulator.faults import SERVICE_QUOTAS

from .compare import rss_mib
from .data import MIB, VERSION, describe, fastq_member
from .proc import Measured, client_argv, number, run_measured
from .report import Headline, Section, Table, ok_text, ratio, summarize
from .runner import Context
from .store import STORE_ID, Store
from .targets import Target, targets_table

READ_SETS = 16
SIZE = 32 * MIB  # per source, at full size
# Six seconds: the figure of the issue's own test. At the control quota a read set costs two seconds (its Create
# and its Complete), so a batch that held one of its 4 slots per row from the first part until ACTIVE would need
# 16 / 4 × (2 + 6) s = 32 s, as long as the control quota itself: the wait has to overlap the uploads to be free.
INGEST_DELAY = 6.0
GOAL = 1.1  # the target: our wall time ÷ TransferManager's, verification on
QUICK_READ_SETS = 3
QUICK_SIZE = 64 * 1024
QUICK_DELAY = 0.2


@dataclass(frozen=True)
class BatchClient:
    label: str
    kind: str  # "ours" or "tm"
    args: tuple[str, ...] = ()


OURS = BatchClient("async_uploader batch (defaults: verify, wait for ACTIVE)", "ours")
OURS_NO_WAIT = BatchClient("async_uploader batch --no-wait", "ours", ("--no-wait",))
TM_LOOP = BatchClient("TransferManager in a loop (returns at Complete, checks nothing)", "tm")


def ensure_batch(data_dir: Path, count: int, size: int) -> Path:
    """``count`` distinct pairs of FASTQ.gz of about ``size`` bytes each and their manifest; made once.

    Each file is a gzip member of its own (200 reads, seeded by row and mate) followed by whole members from a
    shared pool, rotated by row and mate, until it reaches ``size``: every file differs and is valid FASTQ.gz.
    """
    folder = data_dir / f"batch-v{VERSION}-{count}-{size}"
    folder.mkdir(parents=True, exist_ok=True)
    records = 20_000 if size >= 8 * MIB else 200
    pool: list[bytes] = []
    lines = ["source1,source2,sourceFileType,subjectId,sampleId,name"]
    for row in range(count):
        names = []
        for mate in (1, 2):
            name = f"rs{row:02d}_R{mate}.fq.gz"
            names.append(name)
            path = folder / name
            if path.exists() and path.stat().st_size >= size:
                continue
            salt = 2 * row + mate
            tmp = path.with_suffix(".tmp")
            with tmp.open("wb") as out:
                written = out.write(fastq_member(200, 1_000 + salt))
                index = salt
                while written < size:
                    while len(pool) <= index % 12:
                        pool.append(fastq_member(records, 50_000 + len(pool)))
                    written += out.write(pool[index % 12])
                    index += 1
            tmp.replace(path)
        lines.append(f"{names[0]},{names[1]},FASTQ,bench-subject-{row},bench-sample-{row},bench-batch-{row:02d}")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def _argv(client: BatchClient, manifest: Path, url: str, scratch: Path, quotas: bool) -> list[str]:
    if client.kind == "tm":
        return client_argv(
            "transfer_manager_loop", ["--endpoint", url, "--store-id", STORE_ID, "--manifest", str(manifest)]
        )
    argv = [sys.executable, "-m", "async_uploader", "batch", str(manifest), "--json", "--store-id", STORE_ID]
    argv += ["--endpoint-url", url, "--region", "us-east-1", "--checkpoint-dir", str(scratch / "batches")]
    if quotas:
        # Against a loopback endpoint the CLI lifts its rate limits (a local store has no quota); a shared budget
        # holds it to the service's quotas again, as every user of the real service has them.
        argv += ["--shared-budget", str(scratch / "budget")]
    return [*argv, *client.args]


def _measure(ctx: Context, client: BatchClient, manifest: Path, flags: Sequence[str], quotas: bool) -> Measured:
    """One run of ``client`` against a store of its own (fresh buckets, no earlier read sets).

    Over TLS, as the service is; under --quick over HTTP, which starts faster (no CA to make).
    """
    store = Store(flags, discard=False, tls=not ctx.quick)
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp, store:
        before = store.cpu()
        result = run_measured(
            client.label,
            _argv(client, manifest, store.url, Path(tmp), quotas),
            timeout=ctx.timeout,
            env=store.client_env(),
        )
        result.report["store_cpu"] = round(store.cpu() - before, 3)
    status = f"{result.wall:7.1f} s" if result.ok else f"FAILED: {result.error[:200]}"
    ctx.log(f"  {client.label:<64} {status}  cpu {result.cpu:6.2f} s  rss {result.rss_mib:6.0f} MiB")
    return result


def wall(run: Measured) -> float:
    return run.wall


def seconds(run: Measured) -> float:
    """What the client itself timed: the batch summary's seconds (ours), first request to last Complete (theirs)."""
    return run.seconds


def cpu(run: Measured) -> float:
    return run.cpu


def store_cpu(run: Measured) -> float:
    """The store's CPU seconds while the client ran: mostly joining and hashing the read sets it ingests."""
    return number(run.report.get("store_cpu"))


def _read_sets(run: Measured) -> str:
    """What the run's last JSON line says it finished (and verified), where it says so."""
    report = run.report
    done = report.get("readSets", report.get("done"))
    verified = report.get("verified")
    text = f"{number(done):.0f}" if done is not None else "?"
    return text + (f" ({number(verified):.0f} verified)" if verified is not None else "")


def run(ctx: Context) -> Section:
    count = QUICK_READ_SETS if ctx.quick else READ_SETS
    size = QUICK_SIZE if ctx.quick else SIZE
    delay = QUICK_DELAY if ctx.quick else INGEST_DELAY
    quotas = not ctx.quick  # under --quick, a smoke test of the mechanics: no quota pace to wait out
    flags = ("--ingest-delay", f"{delay:g}", *(("--service-quotas",) if quotas else ()))
    runs = ctx.repeat(3)
    transport = "HTTP" if ctx.quick else "TLS"
    ctx.log(f"batch: {count} paired read sets of 2 × {describe(size)} (made once)")
    manifest = ensure_batch(ctx.data_dir, count, size)
    clients = [OURS, OURS_NO_WAIT, TM_LOOP] if ctx.ours else [TM_LOOP]
    if not ctx.ours:
        ctx.skipped += [OURS.label, OURS_NO_WAIT.label]
    results: dict[str, list[Measured]] = {client.label: [] for client in clients}
    for index in range(runs):
        ctx.log(f" run {index + 1}/{runs} (store: {' '.join(flags)}, keeping bytes, {transport})")
        for client in clients:
            results[client.label].append(_measure(ctx, client, manifest, flags, quotas))
    pace = (
        f"the service's quotas ({SERVICE_QUOTAS['control']:g} Create/Complete/Abort per second, "
        f"{SERVICE_QUOTAS['parts']:g} parts/s, {SERVICE_QUOTAS['listings']:g} listings/s)"
        if quotas
        else "no quotas (--quick)"
    )
    section = Section(
        "batch",
        "A batch at the pace of the quotas",
        intro=(
            f"{count} paired FASTQ.gz read sets of 2 × {describe(size)} from one manifest, into a store over "
            f"{transport} that keeps the bytes, with {pace} and each read set PROCESSING_UPLOAD for {delay:g} s "
            f"after its Complete (`serve {' '.join(flags)}`). async_uploader is `async-uploader batch MANIFEST "
            "--json` at its defaults (verification on, every read set waited for until ACTIVE and checked), then "
            "with `--no-wait`; TransferManager uploads the same rows one after another in a loop, returning at each "
            f"Complete and checking nothing. Each client in its own process, a fresh store per run, {runs} run(s) "
            "each, alternated; medians (min–max)."
        ),
    )
    ref = summarize(results[TM_LOOP.label], wall).median
    rows = []
    for label, measured in results.items():
        took = summarize(measured, wall)
        rows.append(
            [
                label,
                took.text(1),
                ratio(took.median, ref),
                summarize(measured, seconds).text(1),
                summarize(measured, cpu).text(2),
                summarize(measured, rss_mib).text(),
                summarize(measured, store_cpu).text(1),
                "; ".join(sorted({_read_sets(run) for run in measured if run.ok})) or "n/a",
                ok_text(measured),
            ]
        )
    section.tables.append(
        Table(
            f"{count} read sets of 2 × {describe(size)}: wall time of the whole process, start-up included",
            [
                "client",
                "wall s",
                "× TransferManager",
                "own s",
                "client CPU s",
                "peak RSS MiB",
                "store CPU s",
                "read sets",
                "ok",
            ],
            rows,
        )
    )
    for label, measured in results.items():
        section.add_runs(label, measured)
    paired = _paired_ratios(results.get(OURS.label, []), results[TM_LOOP.label])
    ours_ratio = summarize(results.get(OURS.label, []), wall).median / ref if ref else 0.0
    if ctx.ours:
        section.tables.append(
            targets_table(
                [Target("batch: async_uploader (verify, to ACTIVE) ÷ TransferManager, wall", ours_ratio, GOAL, True)]
            )
        )
        per_minute = [60 * count / summarize(results[c.label], wall).median if ref else 0.0 for c in (OURS, TM_LOOP)]
        if all(per_minute):
            section.headlines.append(
                Headline(
                    "batch", f"{count} read sets, service quotas", "read sets/min", *per_minute, round(1 / GOAL, 2)
                )
            )
    section.notes += [
        "Wall time is the client process's, from spawn to exit (interpreter start-up and imports included, the "
        "store started beforehand): the time a user waits for the command. CPU and peak RSS are the client's own.",
        "Round by round, async_uploader (defaults) ÷ TransferManager wall: "
        + (", ".join(f"{value:.2f}" for value in paired) or "n/a")
        + (f" (median {statistics.median(paired):.2f})" if paired else "")
        + ".",
        (
            "async_uploader's rows keep the service's quotas through `--shared-budget FILE` (against a loopback "
            "store the CLI otherwise lifts its rate limits), i.e. 90% of each quota; TransferManager has no rate "
            "limit and relies on botocore retrying the store's 429s. Create and Complete alone cost each read set "
            f"two control requests: at 1/s, {count} read sets need at least {2 * count - 1} s whatever the client."
            if quotas
            else "--quick: no quotas and a short ingest delay, over HTTP; a smoke test of the scenario, not a measure."
        ),
        "store CPU s: what the store spent while the client ran, on the same cores (it inflates and hashes every "
        "read set it ingests, as the service does on its own machines); a client that waits for ACTIVE waits for "
        "that work too, and one that verifies does the same hashing itself beside the uploads.",
        "own s: what the client timed itself (async_uploader: the batch summary's seconds; TransferManager: first "
        "request to last Complete), start-up and imports left out.",
    ]
    if quotas:
        section.notes.append(
            f"Ingest delay {delay:g} s: the figure of the issue's own test. A read set costs two seconds of the "
            "control quota, so holding one of four slots per row from the first part until ACTIVE would need "
            f"{count} / 4 × (2 + {delay:g}) s, as long as the quota itself; the wait must overlap the uploads to be "
            "free. TransferManager never waits for it."
        )
    return section


def _paired_ratios(ours: Sequence[Measured], theirs: Sequence[Measured]) -> list[float]:
    """Our wall ÷ TransferManager's, run by run (the runs alternate, so each pair shares the machine's mood)."""
    return [a.wall / b.wall for a, b in zip(ours, theirs, strict=False) if a.ok and b.ok and b.wall]
