"""Scenario 1, bulk throughput: a paired 2 × N GiB upload into the local store in --discard mode.

Three head-to-heads on the same two page-cached files: every client over HTTP; every client but aiobotocore over
TLS; and async_uploader against TransferManager over TLS into a store that also hashes every part body it
receives (``--hash-parts``), so the store spends CPU on every byte on the same cores. Then a fourth on a real
FASTQ.gz pair of the same size into a store that keeps the bytes (and so processes the read set before ACTIVE, as
the service does): async_uploader at its defaults (verified) and with ``--no-verify`` against TransferManager,
with where the time goes (ours reports its phases).
"""

from __future__ import annotations

from .compare import (
    Setting,
    comparison,
    cpu_per_gib,
    head_to_head,
    headline,
    mb_per_s,
    phases_comparison,
    rss_mib,
    store_cpu_per_gib,
    summary_column,
    versus_column,
)
from .data import describe, ensure_fastq_gz, ensure_pair
from .proc import GIB, MIB
from .report import Section, grouped_bar_plot, summarize
from .runner import AIOBOTOCORE, BOTO3, CEILING, OURS, OURS_TUNED, TM, Client, Context
from .targets import Target, targets_table

CEILING_PART = 100 * MIB
CEILING_CONCURRENCY = 10
LIGHT = Setting("light store", tls=False)
WORKERS = OURS.with_args("async_uploader (--workers 2)", "--workers", "2")
HASHING = Setting("store hashing every part", ("--hash-parts",))
STORE_CPU = summary_column("store CPU s/GiB", store_cpu_per_gib, 2)
KEEPING = Setting("store keeping bytes", discard=False)
VERIFIED = Client("async_uploader (defaults: verified)", "ours", ("--verify",))
NO_VERIFY = Client("async_uploader (--no-verify)", "ours")


def run(ctx: Context) -> Section:
    size = 8 * MIB if ctx.quick else int(ctx.gib * GIB)
    runs = ctx.repeat(ctx.runs)
    ceiling = CEILING.with_args(
        f"ceiling: bare aiohttp PUT ({CEILING_PART // MIB} MiB × {CEILING_CONCURRENCY})",
        "--part-size",
        str(CEILING_PART),
        "--concurrency",
        str(CEILING_CONCURRENCY),
    )
    clients = [OURS, OURS_TUNED, TM, BOTO3, AIOBOTOCORE, ceiling]
    sources = ensure_pair(ctx.data_dir, size)
    section = Section(
        "bulk",
        "Bulk throughput",
        intro=(
            f"A paired 2 × {describe(size)} upload (the same two files for every client, page-cached) into the local "
            f"store in `--discard` mode, over HTTP and over TLS (`--tls`); clients alternated run by run, {runs} "
            "run(s) each. Then the same upload over TLS into a store that also computes SHA-256 over every part "
            "body it receives (`--hash-parts`): a store that checksums what it takes in, on the same two cores. "
            "Last, a real FASTQ.gz pair of about the same size over TLS into a store that keeps the bytes and "
            "processes the read set before ACTIVE, as the service does: async_uploader at its defaults (verified) "
            "and with `--no-verify`, against TransferManager, with where the time goes."
        ),
    )
    ctx.log(f"bulk: 2 × {describe(size)}, {runs} run(s), {len(clients)} clients")
    http = head_to_head(ctx, LIGHT, clients, sources, runs)
    over_tls = [c for c in clients if c is not AIOBOTOCORE]
    tls = head_to_head(ctx, LIGHT.over(tls=True), [*over_tls[:2], WORKERS, *over_tls[2:]], sources, runs)
    hashing = head_to_head(ctx, HASHING, [OURS, TM], sources, runs)
    for title, result, extra in (
        ("Over HTTP", http, [versus_column("× ceiling", http, ceiling), STORE_CPU]),
        ("Over TLS", tls, [versus_column("× ceiling", tls, ceiling), STORE_CPU]),
        (f"Over TLS into a store hashing every part ({HASHING.command})", hashing, [STORE_CPU]),
    ):
        section.tables.append(comparison(title, result, extra=extra))
        result.record(section)
    fastq = [ensure_fastq_gz(ctx.data_dir, size, mate) for mate in (1, 2)]
    actual = describe(fastq[0].stat().st_size)
    verified = head_to_head(ctx, KEEPING, [VERIFIED, NO_VERIFY, TM], fastq, ctx.repeat(3))
    section.tables.append(
        phases_comparison(
            f"A FASTQ.gz pair of 2 × {actual} over TLS into a store keeping the bytes: to ACTIVE (and verified), "
            "where the time goes",
            verified,
            NO_VERIFY,
            note="transfer: first part sent to last acknowledged; Complete: the Complete call; to Complete: from the "
            "start (Create, the transfer and Complete); the store's processing: PROCESSING_UPLOAD to ACTIVE as "
            "polled; verification after ACTIVE: waiting for the client's own hash once ACTIVE, and comparing. "
            "TransferManager returns at Complete and checks nothing.",
        )
    )
    verified.record(section, "FASTQ.gz")
    ours_rss = summarize(tls.of(OURS), rss_mib)
    section.tables.append(
        targets_table(
            [
                Target(
                    "TLS: async_uploader (defaults) ÷ TransferManager (defaults), wall MB/s", tls.versus(OURS), 1.15
                ),
                Target(
                    "TLS: client CPU s/GiB, async_uploader ÷ TransferManager", tls.versus(OURS, cpu_per_gib), 0.8, True
                ),
                Target("TLS: async_uploader (defaults) peak RSS, highest run", ours_rss.high, 100, True, "MiB"),
                Target("TLS, store hashing every part: async_uploader ÷ TransferManager", hashing.versus(OURS), 1.1),
            ]
        )
    )
    section.headlines += [
        headline("bulk", f"2 × {describe(size)}, light store", tls, OURS, target=1.15),
        headline("bulk", f"2 × {describe(size)}, store hashing every part", hashing, OURS, target=1.1),
        headline("bulk", f"2 × {actual} FASTQ.gz: ours to ACTIVE and verified, TM to Complete", verified, VERIFIED),
    ]
    plot = "bulk_throughput.png"
    grouped_bar_plot(
        ctx.out_dir / plot,
        [client.label for client in ctx.usable(clients)],
        {
            result.setting.transport: [summarize(result.of(client), mb_per_s) for client in ctx.usable(clients)]
            for result in (http, tls)
        },
        "MB/s",
        f"Paired 2 × {describe(size)} upload, local store (--discard), HTTP and TLS",
    )
    section.plots.append(plot)
    section.notes += [
        "The ceiling signs each request once with botocore's SigV4 signer (UNSIGNED-PAYLOAD for parts), because "
        "the store verifies every signature; it does no retries, digests or bookkeeping.",
        "TransferManager runs at TransferConfig() defaults: 10 request threads, its fixed 100 MiB parts. boto3 loop: "
        "sequential 100 MiB parts read whole. aiobotocore: 100 MiB parts read whole in a thread, 10 in flight; it "
        "is left out over TLS, where it would cost most of the scenario's time (its HTTP row shows why).",
        "async_uploader (tuned): " + " ".join(OURS_TUNED.args) + "; rates lifted (no service quota locally) "
        "in both rows. async_uploader (--workers 2): part bodies sent from two event loops (the caller's and a "
        "thread with its own connections), on the two cores the store also uses.",
        "Over TLS the store serves HTTPS with a certificate from a CA it makes at start; every client trusts that "
        "CA through AWS_CA_BUNDLE. The store decrypts (and with --hash-parts hashes) on the same two cores.",
        "Peak RSS against file size over TLS, both clients at defaults: the scaling scenario's file-size table.",
    ]
    loops = sorted({str(r.report.get("loop")) for r in tls.of(OURS_TUNED) + http.of(OURS_TUNED) if r.ok})
    if loops:
        section.notes.append("Event loop of the tuned runs: " + ", ".join(loops) + ".")
    return section
