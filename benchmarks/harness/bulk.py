"""Scenario 1, bulk throughput: a paired 2 × N GiB upload into the local store in --discard mode."""

from __future__ import annotations

from .data import describe, ensure_pair
from .proc import GIB, MIB, number
from .report import Section, Table, bar_plot, ok_text, ratio, summarize
from .runner import AIOBOTOCORE, BOTO3, CEILING, OURS, OURS_TUNED, TM, Context, alternate
from .store import Store

CEILING_PART = 100 * MIB
CEILING_CONCURRENCY = 10


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
    clients = ctx.usable([OURS, OURS_TUNED, TM, BOTO3, AIOBOTOCORE, ceiling])
    sources = ensure_pair(ctx.data_dir, size)
    section = Section(
        "bulk",
        "Bulk throughput",
        intro=(
            f"A paired 2 × {describe(size)} upload (the same two files for every client, page-cached) into the local "
            f"store in `--discard` mode; clients alternated run by run, {runs} run(s) each."
        ),
    )
    ctx.log(f"bulk: 2 × {describe(size)}, {runs} run(s), {len(clients)} clients")
    with Store() as store:
        grouped = alternate(ctx, store, clients, sources, runs)
    speed = {label: summarize(runs_, lambda r: r.mb_per_s) for label, runs_ in grouped.items()}
    ceiling_speed = speed[ceiling.label].median
    tm_speed = speed[TM.label].median
    tm_cpu = summarize(grouped[TM.label], lambda r: r.cpu_per_gib).median
    rows = []
    for label, measured in grouped.items():
        cpu = summarize(measured, lambda r: r.cpu_per_gib)
        rows.append(
            [
                label,
                speed[label].text(),
                cpu.text(2),
                summarize(measured, lambda r: r.rss_mib).text(),
                ratio(speed[label].median, ceiling_speed),
                ratio(speed[label].median, tm_speed),
                ratio(cpu.median, tm_cpu),
                summarize(measured, lambda r: number(r.report.get("store_cpu")) / (r.bytes / GIB)).text(2),
                ok_text(measured),
            ]
        )
        section.add_runs(label, measured)
    section.tables.append(
        Table(
            "",
            [
                "client",
                "MB/s",
                "client CPU s/GiB",
                "peak RSS MiB",
                "× ceiling",
                "× TransferManager",
                "CPU × TM",
                "store CPU s/GiB",
                "ok",
            ],
            rows,
        )
    )
    plot = "bulk_throughput.png"
    bar_plot(
        ctx.out_dir / plot,
        list(grouped),
        [speed[label] for label in grouped],
        "MB/s",
        f"Paired 2 × {describe(size)} upload, local store (--discard)",
    )
    section.plots.append(plot)
    section.notes += [
        "The ceiling signs each request once with botocore's SigV4 signer (UNSIGNED-PAYLOAD for parts), because "
        "the store verifies every signature; it does no retries, digests or bookkeeping.",
        "TransferManager runs at TransferConfig() defaults: 10 request threads, its fixed 100 MiB parts. boto3 loop: "
        "sequential 100 MiB parts read whole. aiobotocore: 100 MiB parts read whole in a thread, 10 in flight.",
        "async_uploader (tuned): " + " ".join(OURS_TUNED.args) + "; rates lifted (no service quota locally) "
        "in both rows.",
    ]
    loops = sorted({str(r.report.get("loop")) for r in grouped.get(OURS_TUNED.label, []) if r.ok})
    if loops:
        section.notes.append("Event loop of the tuned runs: " + ", ".join(loops) + ".")
    return section
