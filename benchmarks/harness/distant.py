"""Scenario 2, a distant service: the store caps each connection and delays each request.

This machine's kernel has no netem, so the store shapes itself: ``--connection-mbps`` bounds each TCP
connection's share and ``--latency-ms`` delays every request. What concurrency and part size buy, and the two tools
head to head at their defaults and tuned.
"""

from __future__ import annotations

from .data import describe, ensure_pair
from .proc import GIB, MIB
from .report import Section, Table, line_plot, ok_text, ratio, summarize
from .runner import OURS, TM, TM_TUNED_DISTANT, TUNED_DISTANT, Client, Context, alternate, measure
from .store import Store

CONNECTION_MBPS = 50
LATENCY_MS = 20


def run(ctx: Context) -> Section:
    # Large enough that 100 MiB parts outnumber the connections: 2 × (2 × --gib) GiB.
    size = 16 * MIB if ctx.quick else max(64 * MIB, int(2 * ctx.gib * GIB))
    runs = ctx.repeat(3)
    sources = ensure_pair(ctx.data_dir, size)
    flags = ["--connection-mbps", str(CONNECTION_MBPS), "--latency-ms", str(LATENCY_MS)]
    section = Section(
        "distant",
        "Distant service",
        intro=(
            f"The same kind of paired upload, 2 × {describe(size)}, into a store started with `{' '.join(flags)}`: "
            "every TCP connection gets a bounded share and every request waits, like a far-away service."
        ),
    )
    sweep_part = 1 * MIB if ctx.quick else 16 * MIB
    concurrencies = [1, 8] if ctx.quick else [1, 2, 4, 8, 16, 32, 64, 128]
    part_sizes = [1 * MIB, 4 * MIB] if ctx.quick else [8 * MIB, 16 * MIB, 32 * MIB, 64 * MIB, 100 * MIB]
    sweep_concurrency = 64
    ours_tuned = Client("async_uploader (tuned)", "ours", TUNED_DISTANT)
    tm_tuned = Client("TransferManager (tuned)", "transfer_manager", TM_TUNED_DISTANT)
    ctx.log(f"distant: 2 × {describe(size)}, {' '.join(flags)}")
    ours_quota = Client("async_uploader (defaults, service quotas)", "ours", ("--service-quotas",))
    tm_quota = Client("TransferManager (defaults, service quotas)", "transfer_manager")
    with Store([*flags, "--service-quotas"]) as store:
        ctx.log("distant: with the service's default quotas enforced by the store")
        quota_head = alternate(ctx, store, ctx.usable([ours_quota, tm_quota]), sources, runs)
    with Store(flags) as store:
        head = alternate(ctx, store, ctx.usable([OURS, ours_tuned, TM, tm_tuned]), sources, runs)
        by_concurrency = {}
        by_part = {}
        if ctx.ours:
            for concurrency in concurrencies:
                by_concurrency[concurrency] = measure(
                    ctx,
                    store,
                    OURS.with_args(f"concurrency {concurrency}"),
                    sources,
                    "--part-size",
                    str(sweep_part),
                    "--concurrency",
                    str(concurrency),
                )
            for part in part_sizes:
                by_part[part] = measure(
                    ctx,
                    store,
                    OURS.with_args(f"part {describe(part)}"),
                    sources,
                    "--part-size",
                    str(part),
                    "--concurrency",
                    str(sweep_concurrency),
                )
        else:
            ctx.usable([OURS])
    tm_speed = summarize(head.get(TM.label, []), lambda r: r.mb_per_s).median
    rows = []
    for label, measured in head.items():
        speed = summarize(measured, lambda r: r.mb_per_s)
        rows.append(
            [
                label,
                speed.text(),
                ratio(speed.median, tm_speed),
                summarize(measured, lambda r: r.cpu_per_gib).text(2),
                summarize(measured, lambda r: r.rss_mib).text(),
                ok_text(measured),
            ]
        )
        section.add_runs(label, measured)
    quota_tm = summarize(quota_head.get(tm_quota.label, []), lambda r: r.mb_per_s).median
    quota_rows = []
    for label, measured in quota_head.items():
        speed = summarize(measured, lambda r: r.mb_per_s)
        throttles = sum(_count(r.report.get("throttles")) for r in measured)
        quota_rows.append([label, speed.text(), ratio(speed.median, quota_tm), str(throttles), ok_text(measured)])
        section.add_runs(label, measured)
    section.tables.append(
        Table(
            f"With the service's default quotas (store: --service-quotas; 10 parts/s), {runs} run(s) each",
            ["client", "MB/s", "× TransferManager", "throttles", "ok"],
            quota_rows,
        )
    )
    section.tables.append(
        Table(
            f"Head to head, no quota, {runs} run(s) each",
            ["client", "MB/s", "× TransferManager (defaults)", "CPU s/GiB", "peak RSS MiB", "ok"],
            rows,
        )
    )
    if by_concurrency:
        section.tables.append(
            Table(
                f"async_uploader, {describe(sweep_part)} parts, by max concurrency",
                ["concurrency", "MB/s", "peak RSS MiB"],
                [[str(c), f"{m.mb_per_s:,.0f}", f"{m.rss_mib:,.0f}"] for c, m in by_concurrency.items()],
            )
        )
        section.tables.append(
            Table(
                f"async_uploader, concurrency {sweep_concurrency}, by part size",
                ["part size", "MB/s", "peak RSS MiB"],
                [[describe(p), f"{m.mb_per_s:,.0f}", f"{m.rss_mib:,.0f}"] for p, m in by_part.items()],
            )
        )
        plot = "distant_concurrency.png"
        line_plot(
            ctx.out_dir / plot,
            {"async_uploader MB/s": (list(by_concurrency), [m.mb_per_s for m in by_concurrency.values()])},
            "max concurrency",
            "MB/s",
            f"Distant store ({CONNECTION_MBPS} MB/s per connection, {LATENCY_MS} ms)",
            logx=True,
        )
        section.plots.append(plot)
        for key, group in (("concurrency", by_concurrency), ("part", by_part)):
            section.add_runs(key, list(group.values()))
    section.notes += [
        "TransferManager (tuned): " + " ".join(TM_TUNED_DISTANT) + " (part size by replacing its module constant, "
        "concurrency through TransferConfig and the client's connection pool); async_uploader (tuned): "
        + " ".join(TUNED_DISTANT)
        + ".",
        f"With its 100 MiB parts TransferManager cuts a {describe(size)} source into {-(-size // (100 * MIB))} "
        "part(s), which caps how many of its 10 threads one read set keeps busy.",
    ]
    return section


def _count(value: object) -> int:
    return int(value) if isinstance(value, int | float) else 0
