"""Scenario 5, streams: a paired upload read from two pipes (what stdin looks like), peak RSS against the budget.

The same table over HTTP and over TLS.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from .compare import Setting
from .data import describe, ensure_pair
from .proc import GIB, MIB, Measured
from .report import Headline, Section, Table, line_plot, ok_text, ratio
from .runner import OURS, TM, Client, Context, measure
from .store import Store

LIGHT = Setting("light store")


@contextlib.contextmanager
def _pipes(sources: Sequence[Path]) -> Iterator[list[str]]:
    """Two named pipes, each fed its file by `cat` as soon as a reader opens it."""
    with tempfile.TemporaryDirectory(prefix="bench-pipes-") as tmp:
        fifos = []
        writers = []
        for index, source in enumerate(sources, 1):
            fifo = os.path.join(tmp, f"R{index}")
            os.mkfifo(fifo, 0o600)
            fifos.append(fifo)
            writers.append(
                subprocess.Popen(
                    ["sh", "-c", 'exec cat -- "$1" > "$2"', "sh", str(source), fifo], stderr=subprocess.DEVNULL
                )
            )
        try:
            yield fifos
        finally:
            for writer in writers:
                try:
                    writer.wait(5)
                except subprocess.TimeoutExpired:
                    writer.kill()
                    writer.wait()


def _streamed(ctx: Context, store: Store, client: Client, sources: Sequence[Path], *extra: str) -> Measured:
    size = sources[0].stat().st_size
    with _pipes(sources) as fifos:
        return measure(ctx, store, client, fifos, "--stream", "--stream-bytes", str(size), *extra)


def run(ctx: Context) -> Section:
    size = 16 * MIB if ctx.quick else int(ctx.gib * GIB)
    part = 1 * MIB if ctx.quick else 16 * MIB
    budgets = [4 * MIB, 16 * MIB] if ctx.quick else [64 * MIB, 256 * MIB, 1024 * MIB]
    sources = ensure_pair(ctx.data_dir, size)
    section = Section(
        "streams",
        "Streams: paired upload from pipes",
        intro=(
            f"Both sources of a 2 × {describe(size)} read set arrive through named pipes fed by `cat` (no size, no "
            f"seeking, like stdin). async_uploader reads them into a bounded pool of {describe(part)} part buffers "
            "(the memory budget); TransferManager takes its non-seekable path (s3transfer's "
            "UploadNonSeekableInputManager) at its defaults. Over HTTP and over TLS."
        ),
    )
    for setting in (LIGHT.over(tls=False), LIGHT):
        ctx.log(f"streams: 2 × {describe(size)} through pipes, over {setting.transport}")
        _measure(ctx, section, setting, sources, part, budgets)
    section.notes.append(
        "TransferManager's non-seekable path reads each 100 MiB part into memory and queues it for its 10 threads; "
        "omics.transfer leaves s3transfer's in-memory upload semaphore out (a TODO in read_set_upload.py), so "
        "nothing bounds how far reading runs ahead of sending."
    )
    return section


def _measure(
    ctx: Context, section: Section, setting: Setting, sources: Sequence[Path], part: int, budgets: Sequence[int]
) -> None:
    points: dict[int, Measured] = {}
    baseline: Measured | None = None
    with setting.store() as store:
        if ctx.ours:
            baseline = measure(
                ctx,
                store,
                setting.label(OURS.with_args("async_uploader, same data from files")),
                [str(s) for s in sources],
                "--part-size",
                str(part),
            )
            for budget in budgets:
                points[budget] = _streamed(
                    ctx,
                    store,
                    setting.label(OURS.with_args(f"async_uploader, budget {describe(budget)}")),
                    sources,
                    "--part-size",
                    str(part),
                    "--memory-budget",
                    str(budget),
                )
        else:
            ctx.usable([OURS])
        tm = _streamed(ctx, store, setting.label(TM.with_args("TransferManager (defaults), non-seekable")), sources)

    def row(m: Measured, budget: str) -> list[str]:
        over = f"{m.rss_mib - baseline.rss_mib:+,.0f}" if baseline is not None else "n/a"
        return [
            m.label,
            budget,
            f"{m.mb_per_s:,.0f}",
            ratio(m.mb_per_s, tm.mb_per_s),
            f"{m.cpu_per_gib:.2f}",
            f"{m.rss_mib:,.0f}",
            over,
            ok_text([m]),
        ]

    rows = [row(baseline, "n/a")] if baseline is not None else []
    rows += [row(m, describe(budget)) for budget, m in points.items()]
    rows.append(row(tm, "none"))
    section.tables.append(
        Table(
            f"Over {setting.transport}",
            [
                "client",
                "memory budget",
                "MB/s",
                "× TransferManager",
                "client CPU s/GiB",
                "peak RSS MiB",
                "RSS over the file-source run, MiB",
                "ok",
            ],
            rows,
            note="The budget bounds part buffers only; the interpreter, libraries and sockets come on top, so the "
            "file-source run of the same engine is the reference: a stream should add at most its budget.",
        )
    )
    if setting.tls and points:
        default = points[max(points)]
        section.headlines.append(
            Headline(
                "streams",
                f"pipes, {describe(part)} parts, budget {describe(max(points))}",
                "MB/s",
                default.mb_per_s,
                tm.mb_per_s,
            )
        )
        line_plot(
            ctx.out_dir / "streams_rss.png",
            {
                "async_uploader peak RSS": ([b / MIB for b in points], [m.rss_mib for m in points.values()]),
                "budget": ([b / MIB for b in points], [b / MIB for b in points]),
            },
            "memory budget MiB",
            "MiB",
            "Streams over TLS: peak RSS against the memory budget",
            logx=True,
        )
        section.plots.append("streams_rss.png")
    section.add_runs(f"{setting.transport}: async_uploader", [m for m in (baseline, *points.values()) if m is not None])
    section.add_runs(f"{setting.transport}: TransferManager", [tm])
