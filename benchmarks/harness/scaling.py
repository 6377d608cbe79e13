"""Scenario 4, scaling: concurrency, part size, file size, 1,000 requests in flight, many read sets at once.

The sweeps run over TLS only; the head-to-heads with TransferManager (file size, many read sets) over HTTP and TLS.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .compare import Setting, comparison, head_to_head, summary_column
from .data import describe, ensure_pair
from .proc import GIB, MIB, Measured
from .report import Headline, Section, Table, line_plot, ok_text, ratio
from .runner import OURS, TM, Client, Context, evict, measure, warm
from .store import Store

TLS = Setting("light store")
HTTP = TLS.over(tls=False)


def _row(label: str, m: Measured) -> list[str]:
    return [
        label,
        f"{m.mb_per_s:,.0f}" if m.ok else "failed",
        f"{m.cpu_per_gib:.2f}",
        f"{m.rss_mib:,.0f}",
        ok_text([m]),
    ]


def _fixed(ctx: Context, store: Store, label: str, sources: Sequence[Path], *args: str) -> Measured:
    return measure(ctx, store, OURS.with_args(label), [str(s) for s in sources], *args, "--fixed")


def run(ctx: Context) -> Section:
    quick = ctx.quick
    size = 8 * MIB if quick else int(ctx.gib * GIB)
    sweep_part = 1 * MIB if quick else 8 * MIB
    concurrencies = [1, 4] if quick else [1, 2, 4, 8, 16, 32, 64, 128, 256]
    part_sizes = [1 * MIB, 2 * MIB] if quick else [8 * MIB, 16 * MIB, 32 * MIB, 64 * MIB, 100 * MIB]
    file_sizes = [8 * MIB, 32 * MIB] if quick else [1 * GIB, 4 * GIB, 16 * GIB]
    tiny_parts = 300 if quick else 10_000
    batch, batch_size = (5, 256 * 1024) if quick else (50, 4 * MIB)
    columns = ["", "MB/s", "client CPU s/GiB", "peak RSS MiB", "ok"]
    section = Section(
        "scaling",
        "Scaling",
        intro=(
            "async_uploader against the local store in `--discard` mode, one run per point: the sweeps over TLS "
            "only, with TransferManager at its defaults on the same store for reference; file size and many read "
            "sets at once head to head with TransferManager over HTTP and over TLS."
        ),
    )
    if not ctx.ours:
        ctx.usable([OURS])
        section.notes.append("Skipped: this scenario measures async_uploader's engine, which is not importable.")
        return section
    sources = ensure_pair(ctx.data_dir, size)
    ctx.log("scaling: concurrency, part size, 1,000 in flight (TLS); file size, many read sets (HTTP and TLS)")
    with TLS.store() as store:
        reference = measure(ctx, store, TLS.label(TM), [str(s) for s in sources])
        by_concurrency = {
            c: _fixed(ctx, store, f"concurrency {c}", sources, "--part-size", str(sweep_part), "--concurrency", str(c))
            for c in concurrencies
        }
        by_part = {
            p: measure(
                ctx, store, OURS.with_args(f"part {describe(p)}"), [str(s) for s in sources], "--part-size", str(p)
            )
            for p in part_sizes
        }
        tiny_sources = ensure_pair(ctx.data_dir, tiny_parts * 4096)
        thousand = _fixed(ctx, store, "concurrency 1,000", tiny_sources, "--part-size", "4096", "--concurrency", "1000")
    by_file = {setting.transport: _file_sizes(ctx, setting, file_sizes) for setting in (HTTP, TLS)}
    many_sources = ensure_pair(ctx.data_dir, batch_size)
    ours_many = Client(f"async_uploader: {batch} read sets, one Uploader", OURS.script)
    tm_many = Client(f"TransferManager: {batch} read sets, one manager", TM.script)
    many = {
        setting.transport: head_to_head(
            ctx, setting, [ours_many, tm_many], many_sources, 1, "--count", str(batch), reference=tm_many
        )
        for setting in (HTTP, TLS)
    }
    tm_row = _row(reference.label, reference)
    section.tables.append(
        Table(
            f"Fixed concurrency, {describe(sweep_part)} parts, 2 × {describe(size)}, over TLS",
            ["concurrency", *columns[1:]],
            [*(_row(str(c), m) for c, m in by_concurrency.items()), tm_row],
        )
    )
    section.tables.append(
        Table(
            f"Part size, default concurrency, 2 × {describe(size)}, over TLS",
            ["part size", *columns[1:]],
            [*(_row(describe(p), m) for p, m in by_part.items()), tm_row],
        )
    )
    section.tables.append(
        Table(
            "Peak RSS against file size, both at defaults (sparse files; pairs up to 2 × 4 GiB read once first, so "
            "both clients find them cached; 2 × 16 GiB does not fit in memory and is read from the file system by "
            "both, each run starting with the data directory dropped from the page cache)",
            [
                "paired upload",
                "transport",
                "async_uploader MB/s",
                "async_uploader CPU s/GiB",
                "async_uploader RSS MiB",
                "TransferManager MB/s",
                "TransferManager CPU s/GiB",
                "TransferManager RSS MiB",
                "× TM",
            ],
            [
                [
                    f"2 × {describe(s)}",
                    transport,
                    f"{a.mb_per_s:,.0f}",
                    f"{a.cpu_per_gib:.2f}",
                    f"{a.rss_mib:,.0f}",
                    f"{b.mb_per_s:,.0f}",
                    f"{b.cpu_per_gib:.2f}",
                    f"{b.rss_mib:,.0f}",
                    ratio(a.mb_per_s, b.mb_per_s),
                ]
                for transport, group in by_file.items()
                for s, (a, b) in group.items()
            ],
        )
    )
    section.tables.append(
        Table(
            f"Fixed concurrency 1,000 with 2 × {tiny_parts:,} parts of 4 KiB, over TLS",
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
    for transport, result in many.items():
        section.tables.append(
            comparison(
                f"{batch} paired read sets of 2 × {describe(batch_size)} at once (rates lifted), over {transport}",
                result,
                extra=[
                    summary_column("seconds", lambda r: r.seconds, 2),
                    summary_column("read sets/s", lambda r: batch / r.seconds if r.seconds else 0.0, 1),
                ],
            )
        )
        result.record(section, "many read sets")
    tls_files = by_file["TLS"]
    section.headlines += [
        Headline("scaling", f"2 × {describe(s)} (sparse), defaults", "MB/s", a.mb_per_s, b.mb_per_s)
        for s, (a, b) in list(tls_files.items())[-2:]
    ]
    line_plot(
        ctx.out_dir / "scaling_concurrency.png",
        {"MB/s": (list(by_concurrency), [m.mb_per_s for m in by_concurrency.values()])},
        "concurrency (fixed)",
        "MB/s",
        f"async_uploader over TLS, {describe(sweep_part)} parts",
        logx=True,
        right={"peak RSS MiB": (list(by_concurrency), [m.rss_mib for m in by_concurrency.values()])},
        right_label="peak RSS MiB",
    )
    line_plot(
        ctx.out_dir / "scaling_file_size.png",
        {
            f"{name} over {transport}": ([s / GIB for s in group], [pair[index].rss_mib for pair in group.values()])
            for transport, group in by_file.items()
            for index, name in enumerate(("async_uploader", "TransferManager"))
        },
        "GiB per source (paired)",
        "peak RSS MiB",
        "Peak RSS against file size, both at defaults",
        logx=True,
    )
    section.plots += ["scaling_concurrency.png", "scaling_file_size.png"]
    section.add_runs("TLS: concurrency", list(by_concurrency.values()))
    section.add_runs("TLS: part_size", list(by_part.values()))
    section.add_runs("TLS: reference", [reference])
    for transport, group in by_file.items():
        section.add_runs(f"{transport}: file_size", [m for pair in group.values() for m in pair])
    section.add_runs("TLS: concurrency_1000", [thousand])
    section.notes.append(
        "The sweeps are measured over TLS only, with `--fixed` where a concurrency is given (exactly that many "
        "requests in flight); the file-size and many-read-set tables over HTTP and over TLS."
    )
    if not quick:
        section.notes.append(
            "The 4 and 16 GiB sources are sparse files made once under the data directory; they take no disk space."
        )
    return section


def _file_sizes(ctx: Context, setting: Setting, sizes: Sequence[int]) -> dict[int, tuple[Measured, Measured]]:
    """async_uploader and TransferManager at their defaults on a sparse pair of each size."""
    found = {}
    with setting.store() as store:
        for file_size in sizes:
            sparse = ensure_pair(ctx.data_dir, file_size, sparse=True)
            fits = 2 * file_size <= _CACHE_FITS
            if fits:  # whoever reads first would pay for filling the page cache
                warm(sparse)
            paths = [str(path) for path in sparse]
            measured = []
            for client in (
                OURS.with_args(f"ours 2 × {describe(file_size)}"),
                TM.with_args(f"TM 2 × {describe(file_size)}"),
            ):
                if not fits:  # whoever reads first would pay for evicting what is cached (the smaller pairs)
                    evict(ctx.data_dir)
                measured.append(measure(ctx, store, setting.label(client), paths))
            found[file_size] = (measured[0], measured[1])
    return found


_CACHE_FITS = 8 * GIB
"""Pairs up to this size are read once before measuring, so neither client pays for filling the page cache; a larger
pair is dropped from it (with everything else under the data directory) before each client's run."""
