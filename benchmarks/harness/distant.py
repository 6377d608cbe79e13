"""Scenario 2, a distant service: the store caps each connection and delays each request.

This machine's kernel has no netem, so the store shapes itself: ``--connection-mbps`` bounds each TCP
connection's share and ``--latency-ms`` delays every request. First the service's part quota on top (``quota.py``:
both tools against the schedule bound), then without a quota: the two tools head to head at their defaults and
tuned, over HTTP and over TLS, and what concurrency and part size buy async_uploader (sweeps, over TLS only).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .compare import Setting, comparison, head_to_head, headline
from .data import describe, ensure_pair
from .proc import GIB, MIB, Measured
from .quota import quota_tables
from .report import Section, Table, line_plot
from .runner import OURS, TM, TM_TUNED_DISTANT, TUNED_DISTANT, Client, Context, measure
from .stunnel import find_stunnel

CONNECTION_MBPS = 50
LATENCY_MS = 20
NO_QUOTA = Setting("distant, no quota", ("--connection-mbps", str(CONNECTION_MBPS), "--latency-ms", str(LATENCY_MS)))
OURS_TUNED = Client("async_uploader (tuned)", "ours", TUNED_DISTANT)
TM_TUNED = Client("TransferManager (tuned)", "transfer_manager", TM_TUNED_DISTANT)


def _sweep_row(label: str, m: Measured) -> list[str]:
    return [label, f"{m.mb_per_s:,.0f}", f"{m.cpu_per_gib:.2f}", f"{m.rss_mib:,.0f}"]


def run(ctx: Context) -> Section:
    size = 16 * MIB if ctx.quick else int(ctx.gib * GIB)
    runs = ctx.repeat(3)
    sources = ensure_pair(ctx.data_dir, size)
    section = Section(
        "distant",
        "Distant service",
        intro=(
            "Paired uploads into a store that shapes itself like a far-away service: every TCP connection gets a "
            "bounded share (`--connection-mbps`) and every request waits (`--latency-ms`). First with the service's "
            f"quotas enforced as well, against the schedule bound; then 2 × {describe(size)} without a quota "
            f"({NO_QUOTA.command}), head to head over HTTP and TLS, and async_uploader's sweeps over TLS."
        ),
    )
    quota_tables(ctx, section)
    ctx.log(f"distant: no quota, 2 × {describe(size)}")
    stunnel, _ = find_stunnel(install=not ctx.quick)
    for tls in (False, True):
        setting = NO_QUOTA.behind(stunnel) if tls else NO_QUOTA.over(tls=False)
        result = head_to_head(ctx, setting, [OURS, OURS_TUNED, TM, TM_TUNED], sources, runs)
        section.tables.append(comparison(f"No quota, over {result.setting.transport}, {runs} run(s) each", result))
        result.record(section, "no quota")
        if tls:
            section.headlines.append(headline("distant", f"2 × {describe(size)}, no quota", result, OURS))
    if ctx.ours:
        _sweeps(ctx, section, sources)
    else:
        ctx.usable([OURS])
    section.notes += [
        "TransferManager (tuned): " + " ".join(TM_TUNED_DISTANT) + " (part size by replacing its module constant, "
        "concurrency through TransferConfig and the client's connection pool); async_uploader (tuned): "
        + " ".join(TUNED_DISTANT)
        + ".",
        f"With its 100 MiB parts TransferManager cuts a {describe(size)} source into {-(-size // (100 * MIB))} "
        "part(s), which caps how many of its 10 threads one read set keeps busy.",
        "Head-to-head tables are measured over HTTP and over TLS; the sweeps over TLS only. async_uploader's seconds "
        "include its wait for the read set to turn ACTIVE (its default); TransferManager's end at Complete.",
    ]
    return section


def _sweeps(ctx: Context, section: Section, sources: Sequence[Path]) -> None:
    """async_uploader by max concurrency and by part size, over TLS, TransferManager at defaults for reference."""
    sweep_part = 1 * MIB if ctx.quick else 16 * MIB
    concurrencies = [1, 8] if ctx.quick else [1, 2, 4, 8, 16, 32, 64, 128]
    part_sizes = [1 * MIB, 4 * MIB] if ctx.quick else [8 * MIB, 16 * MIB, 32 * MIB, 64 * MIB, 100 * MIB]
    sweep_concurrency = 64
    paths = [str(source) for source in sources]
    with NO_QUOTA.store() as store:
        reference = measure(ctx, store, NO_QUOTA.label(TM), paths)
        by_concurrency = {
            c: measure(
                ctx,
                store,
                OURS.with_args(f"concurrency {c}"),
                paths,
                "--part-size",
                str(sweep_part),
                "--concurrency",
                str(c),
                "--fixed",
            )
            for c in concurrencies
        }
        by_part = {
            p: measure(
                ctx,
                store,
                OURS.with_args(f"part {describe(p)}"),
                paths,
                "--part-size",
                str(p),
                "--concurrency",
                str(sweep_concurrency),
                "--fixed",
            )
            for p in part_sizes
        }
    columns = ["MB/s", "client CPU s/GiB", "peak RSS MiB"]
    tm_row = _sweep_row(reference.label, reference)
    section.tables.append(
        Table(
            f"async_uploader over TLS, {describe(sweep_part)} parts, by fixed concurrency",
            ["concurrency", *columns],
            [*(_sweep_row(str(c), m) for c, m in by_concurrency.items()), tm_row],
        )
    )
    section.tables.append(
        Table(
            f"async_uploader over TLS, fixed concurrency {sweep_concurrency}, by part size",
            ["part size", *columns],
            [*(_sweep_row(describe(p), m) for p, m in by_part.items()), tm_row],
        )
    )
    plot = "distant_concurrency.png"
    line_plot(
        ctx.out_dir / plot,
        {
            "async_uploader MB/s": (list(by_concurrency), [m.mb_per_s for m in by_concurrency.values()]),
            "TransferManager (defaults)": (list(by_concurrency), [reference.mb_per_s] * len(by_concurrency)),
        },
        "concurrency (fixed)",
        "MB/s",
        f"Distant store over TLS ({CONNECTION_MBPS} MB/s per connection, {LATENCY_MS} ms)",
        logx=True,
    )
    section.plots.append(plot)
    for key, group in (("concurrency", by_concurrency), ("part", by_part)):
        section.add_runs(f"TLS sweep: {key}", list(group.values()))
    section.add_runs("TLS sweep: reference", [reference])
