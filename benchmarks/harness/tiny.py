"""Scenario 3, per-part overhead: 2 × 10,000 parts of 4 KiB each, over HTTP and over TLS."""

from __future__ import annotations

from .compare import (
    Setting,
    comparison,
    cpu_us_per_part,
    head_to_head,
    headline,
    parts_per_s,
    summary_column,
    versus_column,
)
from .data import describe, ensure_pair
from .report import Section, bar_plot, summarize
from .runner import AIOBOTOCORE, CEILING, OURS, TM, Client, Context
from .targets import Target, targets_table

PART = 4096
TUNED_CONCURRENCY = 64
LIGHT = Setting("light store", tls=False)
_SIZE = ("--part-size", str(PART))
_WIDE = (*_SIZE, "--concurrency", str(TUNED_CONCURRENCY))
OURS_TINY = Client("async_uploader (defaults, 4 KiB parts)", OURS.script, _SIZE)
OURS_WIDE = Client(f"async_uploader (concurrency {TUNED_CONCURRENCY}, uvloop)", OURS.script, (*_WIDE, "--uvloop"))
TM_TINY = Client("TransferManager (10 threads, 4 KiB parts)", TM.script, _SIZE)
TM_WIDE = Client(f"TransferManager ({TUNED_CONCURRENCY} threads)", TM.script, _WIDE)
AIOBOTOCORE_WIDE = Client(f"aiobotocore + semaphore ({TUNED_CONCURRENCY})", AIOBOTOCORE.script, _WIDE)
FLOOR = Client(f"floor: signed aiohttp PUTs ({TUNED_CONCURRENCY})", CEILING.script, _WIDE)


def run(ctx: Context) -> Section:
    parts = 300 if ctx.quick else 10_000
    size = parts * PART
    runs = ctx.repeat(3)
    sources = ensure_pair(ctx.data_dir, size)
    section = Section(
        "tiny",
        "Per-part overhead: tiny parts",
        intro=(
            f"2 × {parts:,} parts of 4 KiB (2 × {describe(size)}) into the local store in `--discard` mode: what each "
            f"request costs. Every client over HTTP, then async_uploader, TransferManager and the floor over TLS; "
            f"{runs} run(s) each, alternated."
        ),
    )
    ctx.log(f"tiny: 2 × {parts} × 4 KiB")
    http = head_to_head(
        ctx, LIGHT, [OURS_TINY, OURS_WIDE, TM_TINY, TM_WIDE, AIOBOTOCORE_WIDE, FLOOR], sources, runs, reference=TM_TINY
    )
    tls = head_to_head(ctx, LIGHT.over(tls=True), [OURS_TINY, TM_TINY, FLOOR], sources, runs, reference=TM_TINY)
    for result in (http, tls):
        section.tables.append(
            comparison(
                f"Over {result.setting.transport}",
                result,
                speed=parts_per_s,
                unit="parts/s",
                extra=[
                    versus_column("× floor", result, FLOOR, parts_per_s),
                    summary_column("client CPU µs/part", cpu_us_per_part),
                ],
            )
        )
        result.record(section)
    against_floor = tls.versus(OURS_TINY, parts_per_s, to=FLOOR)
    section.tables.append(
        targets_table([Target("TLS: async_uploader (defaults) ÷ the floor, parts/s", against_floor, 0.85)])
    )
    section.headlines.append(
        headline("tiny", f"2 × {parts:,} × 4 KiB", tls, OURS_TINY, metric=parts_per_s, unit="parts/s")
    )
    plot = "tiny_parts.png"
    bar_plot(
        ctx.out_dir / plot,
        list(http.runs) + list(tls.runs),
        [summarize(measured, parts_per_s) for measured in (*http.runs.values(), *tls.runs.values())],
        "parts/s",
        f"2 × {parts:,} × 4 KiB parts, HTTP and TLS",
    )
    section.plots.append(plot)
    section.notes += [
        "TransferManager has no part-size setting: its 100 MiB module constant is replaced and the s3transfer "
        "chunk-size adjuster's 5 MiB minimum lowered to 1 byte, so it really sends 4 KiB parts.",
        "The floor is the ceiling client with 4 KiB parts: each PUT signed with botocore's SigV4 signer, a plain "
        "aiohttp loop of workers, no retries or bookkeeping. × TransferManager is against TransferManager with "
        "10 threads; client CPU s/GiB is large here by nature (4 KiB per request).",
    ]
    return section
