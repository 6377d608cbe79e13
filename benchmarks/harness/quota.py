"""The distant store with the service's part quota: async_uploader and TransferManager against the schedule bound.

The store caps each connection at 25 MB/s, adds 20 ms to every request and enforces the service's default
quotas (10 UploadReadSetPart per second, from a bucket that starts full). async_uploader keeps the service's
default client-side rates (``--service-quotas``), as a user of the real service has them; TransferManager runs at its
defaults. Each run is set against the least time any schedule of its parts could take (``bound.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from async_uploader.emulator.faults import SERVICE_QUOTAS, QuotaBucket

from .bound import part_sizes, schedule_bound
from .compare import Column, Metric, Setting, comparison, head_to_head, headline, summary_column
from .data import describe, ensure_pair
from .proc import GIB, MIB, Measured, number
from .report import Section, summarize
from .runner import TM, Client, Context
from .stunnel import find_stunnel
from .targets import Target, targets_table

QUOTA_MBPS = 25
LATENCY_MS = 20
PART_RATE = SERVICE_QUOTAS["parts"]
CONTROL_RATE = SERVICE_QUOTAS["control"]
PART_BURST = QuotaBucket(PART_RATE).burst  # what the store's own bucket holds when it starts
# Idle long enough before each run for the store's part and control buckets to be full again.
SETTLE = max(PART_BURST / PART_RATE, QuotaBucket(CONTROL_RATE).burst / CONTROL_RATE) + 0.1
QUOTA = Setting(
    "distant, service quota",
    ("--connection-mbps", str(QUOTA_MBPS), "--latency-ms", str(LATENCY_MS), "--service-quotas"),
    settle=SETTLE,
)
OURS_QUOTA = Client("async_uploader (defaults, service rates)", "ours", ("--service-quotas",))
TM_PART_SIZE = 100 * MIB  # TransferManager's module constant, when a run does not report it


def bound_of(run: Measured, sources: Sequence[Path]) -> float:
    """The schedule bound for the parts ``run`` cut: its reported part size over these sources' sizes."""
    sizes = part_sizes([source.stat().st_size for source in sources], _part_size(run))
    return schedule_bound(
        sizes,
        rate=PART_RATE,
        burst=PART_BURST,
        speed=QUOTA_MBPS * 1e6,
        latency=LATENCY_MS / 1000,
        control_rate=CONTROL_RATE,
    )


def _part_size(run: Measured) -> int:
    return int(number(run.report.get("part_size"))) or TM_PART_SIZE


def against_bound(sources: Sequence[Path]) -> Metric:
    """A run's schedule bound over its own seconds (1.0: a perfect schedule)."""
    return lambda run: bound_of(run, sources) / run.seconds


def _columns(sources: Sequence[Path]) -> list[Column]:
    return [
        summary_column("seconds", lambda r: r.seconds, 2),
        summary_column("part size MiB", lambda r: _part_size(r) / MIB),
        summary_column("schedule bound s", lambda r: bound_of(r, sources), 2),
        summary_column("× bound", against_bound(sources), 2),
        summary_column("throttles", lambda r: number(r.report.get("throttles"))),
    ]


def quota_tables(ctx: Context, section: Section) -> None:
    """Add the quota head-to-heads (2 × 1 GiB over HTTP and TLS, 2 × 4 GiB over TLS) and their targets."""
    small = 8 * MIB if ctx.quick else int(ctx.gib * GIB)
    large = 16 * MIB if ctx.quick else int(4 * ctx.gib * GIB)
    small_sources = ensure_pair(ctx.data_dir, small)
    large_sources = ensure_pair(ctx.data_dir, large, sparse=True)
    ctx.log(f"distant: the service's quotas, 2 × {describe(small)} and 2 × {describe(large)}")
    stunnel, why = find_stunnel(install=not ctx.quick)
    if not stunnel:
        ctx.log(f"distant: no TLS terminator ({why}): the TLS rows use the store's own TLS")
        section.notes.append(f"The TLS rows ran on the store's own TLS in Python: {why}.")
    tls = QUOTA.behind(stunnel)
    clients = [OURS_QUOTA, TM]
    measured = [
        (small, small_sources, head_to_head(ctx, QUOTA.over(tls=False), clients, small_sources, ctx.repeat(3))),
        (small, small_sources, head_to_head(ctx, tls, clients, small_sources, ctx.repeat(3))),
        (large, large_sources, head_to_head(ctx, tls, clients, large_sources, ctx.repeat(2))),
    ]
    targets = []
    for size, sources, result in measured:
        pair = f"2 × {describe(size)}"
        title = f"Service quota, {pair} over {result.setting.transport}, store {result.setting.command}"
        section.tables.append(comparison(title, result, extra=_columns(sources)))
        result.record(section, f"quota {pair}")
        if not result.setting.tls:
            continue
        goal = 1.45 if size == small else 2.5
        targets += [
            Target(
                f"quota, {pair}, TLS: async_uploader × schedule bound",
                summarize(result.of(OURS_QUOTA), against_bound(sources)).median,
                0.95,
            ),
            Target(f"quota, {pair}, TLS: async_uploader ÷ TransferManager", result.versus(OURS_QUOTA), goal),
        ]
        section.headlines.append(headline("distant", f"{pair}, service quota", result, OURS_QUOTA, target=goal))
    section.tables.append(targets_table(targets))
    section.notes += [
        "Service quota rows over TLS: stunnel (TLS in C, OpenSSL) terminates TLS in front of the store, one "
        "backend connection per client connection, so each connection keeps its cap and the server side of TLS "
        "costs what a real terminator's does, not the Python store's (which shared the two cores with the clients).",
        "Service quota rows: the store enforces the service's default quotas "
        f"({PART_RATE:g} UploadReadSetPart/s from a bucket of {PART_BURST:g} that starts full; {CONTROL_RATE:g} "
        f"Create/Complete per second), caps each connection at {QUOTA_MBPS} MB/s and adds {LATENCY_MS} ms to every "
        f"request; the harness waits {SETTLE:.1f} s before each run so every client finds the buckets full. The "
        "larger pair is sparse files (a FASTQ gzip head, then a hole), which the store in --discard mode neither "
        "keeps nor checks. The targets are the issue's for 2 × 1 GiB and 2 × 4 GiB (the sizes at --gib 1).",
        "Schedule bound: the least time any schedule of the run's own parts could take, with unlimited connections "
        "and free CPU: the i-th part admitted (0-based) passes no earlier than max(0, (i + 1 − burst) / rate) after "
        "the first and then takes its size / (connection speed); admitting the largest parts first makes the last "
        "finish earliest. Add one latency each for Create, the parts and Complete (and Complete waits for a control "
        "token a second after Create's): bound = 3 × latency + max_i(slot_i + size_i / speed). × bound is the bound "
        "over the run's own seconds; 1.00 would be a perfect schedule. The part size is what the client reported "
        "(async_uploader: the part size its plan used; TransferManager: its module constant). async_uploader's "
        "seconds include its wait for the read set to turn ACTIVE (its default); TransferManager's end at Complete.",
    ]
