"""Scenario 4, scaling: concurrency, part size, file size, 1,000 requests in flight, many read sets at once."""

from __future__ import annotations

from pathlib import Path

from .data import describe, ensure_pair
from .proc import GIB, MIB, Measured
from .report import Section, Table, line_plot, ok_text
from .runner import OURS, TM, Client, Context, measure
from .store import Store


def _row(label: str, m: Measured) -> list[str]:
    return [
        label,
        f"{m.mb_per_s:,.0f}" if m.ok else "failed",
        f"{m.cpu_per_gib:.2f}",
        f"{m.rss_mib:,.0f}",
        ok_text([m]),
    ]


def run(ctx: Context) -> Section:
    quick = ctx.quick
    size = 8 * MIB if quick else int(ctx.gib * GIB)
    sweep_part = 1 * MIB if quick else 8 * MIB
    concurrencies = [1, 4] if quick else [1, 2, 4, 8, 16, 32, 64, 128, 256]
    part_sizes = [1 * MIB, 2 * MIB] if quick else [8 * MIB, 16 * MIB, 32 * MIB, 64 * MIB, 100 * MIB]
    file_sizes = [8 * MIB, 32 * MIB] if quick else [1 * GIB, 4 * GIB, 16 * GIB]
    tiny_parts = 300 if quick else 10_000
    batch, batch_size = (5, 256 * 1024) if quick else (50, 4 * MIB)
    columns = ["", "MB/s", "CPU s/GiB", "peak RSS MiB", "ok"]
    section = Section(
        "scaling",
        "Scaling",
        intro="async_uploader against the local store in `--discard` mode, one run per point.",
    )
    if not ctx.ours:
        ctx.usable([OURS])
        section.notes.append("Skipped: this scenario measures async_uploader's engine, which is not importable.")
        return section
    sources = ensure_pair(ctx.data_dir, size)
    ctx.log("scaling: concurrency, part size, file size, 1,000 in flight, many read sets")
    with Store() as store:
        by_concurrency = {
            c: measure(
                ctx,
                store,
                OURS.with_args(f"concurrency {c}"),
                sources,
                "--part-size",
                str(sweep_part),
                "--concurrency",
                str(c),
            )
            for c in concurrencies
        }
        by_part = {
            p: measure(ctx, store, OURS.with_args(f"part {describe(p)}"), sources, "--part-size", str(p))
            for p in part_sizes
        }
        by_file: dict[int, tuple[Measured, Measured]] = {}
        for file_size in file_sizes:
            sparse = ensure_pair(ctx.data_dir, file_size, sparse=True)
            if 2 * file_size <= _CACHE_FITS:  # whoever reads first would pay for filling the page cache
                for path in sparse:
                    _read_through(path)
            by_file[file_size] = (
                measure(ctx, store, OURS.with_args(f"ours 2 × {describe(file_size)}"), sparse),
                measure(ctx, store, TM.with_args(f"TM 2 × {describe(file_size)}"), sparse),
            )
        tiny_sources = ensure_pair(ctx.data_dir, tiny_parts * 4096)
        thousand = measure(
            ctx,
            store,
            OURS.with_args("concurrency 1,000"),
            tiny_sources,
            "--part-size",
            "4096",
            "--concurrency",
            "1000",
        )
        many_sources = ensure_pair(ctx.data_dir, batch_size)
        many = {
            client.label: measure(ctx, store, client, many_sources, "--count", str(batch))
            for client in (
                Client(f"async_uploader: {batch} read sets, one Uploader", OURS.script),
                Client(f"TransferManager: {batch} read sets, one manager", TM.script),
            )
        }
    section.tables.append(
        Table(
            f"Max concurrency, {describe(sweep_part)} parts, 2 × {describe(size)}",
            ["concurrency", *columns[1:]],
            [_row(str(c), m) for c, m in by_concurrency.items()],
        )
    )
    section.tables.append(
        Table(
            f"Part size, default concurrency, 2 × {describe(size)}",
            ["part size", *columns[1:]],
            [_row(describe(p), m) for p, m in by_part.items()],
        )
    )
    section.tables.append(
        Table(
            "Peak RSS against file size (sparse files; pairs up to 2 × 4 GiB read once first, so both clients find "
            "them cached; 2 × 16 GiB does not fit in memory and is read from the file system by both)",
            [
                "paired upload",
                "async_uploader MB/s",
                "async_uploader RSS MiB",
                "TransferManager MB/s",
                "TransferManager RSS MiB",
            ],
            [
                [
                    f"2 × {describe(s)}",
                    f"{a.mb_per_s:,.0f}",
                    f"{a.rss_mib:,.0f}",
                    f"{b.mb_per_s:,.0f}",
                    f"{b.rss_mib:,.0f}",
                ]
                for s, (a, b) in by_file.items()
            ],
        )
    )
    section.tables.append(
        Table(
            f"Max concurrency 1,000 with 2 × {tiny_parts:,} parts of 4 KiB",
            ["", "parts/s", "client CPU µs/part", "peak RSS MiB", "ok"],
            [
                [
                    "async_uploader",
                    f"{thousand.parts_per_s:,.0f}",
                    f"{thousand.cpu / max(1, thousand.parts) * 1e6:,.0f}",
                    f"{thousand.rss_mib:,.0f}",
                    ok_text([thousand]),
                ]
            ],
        )
    )
    section.tables.append(
        Table(
            f"{batch} paired read sets of 2 × {describe(batch_size)} at once (rates lifted)",
            ["", "seconds", "read sets/s", "MB/s", "peak RSS MiB", "ok"],
            [
                [
                    label,
                    f"{m.seconds:.2f}",
                    f"{batch / m.seconds:,.1f}" if m.ok else "n/a",
                    f"{m.mb_per_s:,.0f}",
                    f"{m.rss_mib:,.0f}",
                    ok_text([m]),
                ]
                for label, m in many.items()
            ],
        )
    )
    line_plot(
        ctx.out_dir / "scaling_concurrency.png",
        {"MB/s": (list(by_concurrency), [m.mb_per_s for m in by_concurrency.values()])},
        "max concurrency",
        "MB/s",
        f"async_uploader, {describe(sweep_part)} parts",
        logx=True,
        right={"peak RSS MiB": (list(by_concurrency), [m.rss_mib for m in by_concurrency.values()])},
        right_label="peak RSS MiB",
    )
    line_plot(
        ctx.out_dir / "scaling_file_size.png",
        {
            "async_uploader": ([s / GIB for s in by_file], [a.rss_mib for a, _ in by_file.values()]),
            "TransferManager": ([s / GIB for s in by_file], [b.rss_mib for _, b in by_file.values()]),
        },
        "GiB per source (paired)",
        "peak RSS MiB",
        "Peak RSS against file size",
        logx=True,
    )
    section.plots += ["scaling_concurrency.png", "scaling_file_size.png"]
    section.add_runs("concurrency", list(by_concurrency.values()))
    section.add_runs("part_size", list(by_part.values()))
    section.add_runs("file_size", [m for pair in by_file.values() for m in pair])
    section.add_runs("concurrency_1000", [thousand])
    section.add_runs("many_read_sets", list(many.values()))
    if not quick:
        section.notes.append(
            "The 4 and 16 GiB sources are sparse files made once under the data directory; they take no disk space."
        )
    return section


_CACHE_FITS = 8 * GIB
"""Pairs up to this size are read once before measuring, so neither client pays for filling the page cache."""


def _read_through(path: Path) -> None:
    with path.open("rb", buffering=0) as source:
        while source.read(8 * MIB):
            pass
