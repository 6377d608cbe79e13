"""Scenario 3, per-part overhead: 2 × 10,000 parts of 4 KiB each."""

from __future__ import annotations

from .data import describe, ensure_pair
from .report import Section, Table, bar_plot, ok_text, ratio, summarize
from .runner import AIOBOTOCORE, CEILING, TM, Client, Context, alternate
from .store import Store

PART = 4096
TUNED_CONCURRENCY = 64


def run(ctx: Context) -> Section:
    parts = 300 if ctx.quick else 10_000
    size = parts * PART
    runs = ctx.repeat(3)
    sources = ensure_pair(ctx.data_dir, size)
    part = ("--part-size", str(PART))
    wide = (*part, "--concurrency", str(TUNED_CONCURRENCY))
    clients = ctx.usable(
        [
            Client("async_uploader (defaults, 4 KiB parts)", "ours", part),
            Client(f"async_uploader (concurrency {TUNED_CONCURRENCY}, uvloop)", "ours", (*wide, "--uvloop")),
            Client("TransferManager (10 threads, 4 KiB parts)", TM.script, part),
            Client(f"TransferManager ({TUNED_CONCURRENCY} threads)", TM.script, wide),
            Client(f"aiobotocore + semaphore ({TUNED_CONCURRENCY})", AIOBOTOCORE.script, wide),
            Client(f"floor: signed aiohttp PUTs ({TUNED_CONCURRENCY})", CEILING.script, wide),
        ]
    )
    section = Section(
        "tiny",
        "Per-part overhead: tiny parts",
        intro=(
            f"2 × {parts:,} parts of 4 KiB (2 × {describe(size)}) into the local store in `--discard` mode: what each "
            f"request costs. {runs} run(s) each, alternated."
        ),
    )
    ctx.log(f"tiny: 2 × {parts} × 4 KiB")
    with Store() as store:
        grouped = alternate(ctx, store, clients, sources, runs)
    speed = {label: summarize(measured, lambda r: r.parts_per_s) for label, measured in grouped.items()}
    floor = speed[clients[-1].label].median
    tm = speed.get("TransferManager (10 threads, 4 KiB parts)")
    rows = []
    for label, measured in grouped.items():
        rows.append(
            [
                label,
                speed[label].text(),
                ratio(speed[label].median, tm.median if tm else 0.0),
                ratio(speed[label].median, floor),
                summarize(measured, lambda r: r.cpu / max(1, r.parts) * 1e6).text(),
                summarize(measured, lambda r: r.rss_mib).text(),
                ok_text(measured),
            ]
        )
        section.add_runs(label, measured)
    section.tables.append(
        Table(
            "",
            ["client", "parts/s", "× TransferManager", "× floor", "client CPU µs/part", "peak RSS MiB", "ok"],
            rows,
        )
    )
    plot = "tiny_parts.png"
    bar_plot(ctx.out_dir / plot, list(grouped), list(speed.values()), "parts/s", "2 × 10,000 × 4 KiB parts")
    section.plots.append(plot)
    section.notes += [
        "TransferManager has no part-size setting: its 100 MiB module constant is replaced and the s3transfer "
        "chunk-size adjuster's 5 MiB minimum lowered to 1 byte, so it really sends 4 KiB parts.",
        "The floor is the ceiling client with 4 KiB parts: each PUT signed with botocore's SigV4 signer, a plain "
        "aiohttp loop of workers, no retries or bookkeeping.",
    ]
    return section
