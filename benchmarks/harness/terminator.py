"""Scenario: bulk over TLS through an efficient terminator (stunnel, ``stunnel.py``) in front of the local store.

The store serves plain HTTP on 127.0.0.1 in ``--discard`` mode behind stunnel, so the server side of TLS costs
what a real service's terminators cost, not a Python store's, and the clients' own costs decide. Skipped, saying
why, where stunnel cannot be had.

Wall here is the whole process, interpreter start-up and imports included, as a user timing the command sees it.
"""

from __future__ import annotations

from .compare import HeadToHead, Setting, comparison, cpu_per_gib, rss_mib, store_cpu_per_gib, summary_column
from .data import describe, ensure_pair
from .proc import GIB, MIB, Measured
from .report import Headline, Section, Table, summarize
from .runner import OURS, TM, Client, Context, alternate
from .stunnel import Terminated, find_stunnel
from .targets import Target, targets_table

SETTING = Setting("behind stunnel", tls=True)


def wall_mb_per_s(run: Measured) -> float:
    """Bytes over the whole process's wall time, start-up included."""
    return run.bytes / run.wall / 1e6 if run.ok and run.wall > 0 else 0.0


OURS_NO_VERIFY = OURS.with_args("async_uploader (defaults, --no-verify)")
OURS_FIXED = OURS.with_args("async_uploader (--concurrency 10 --fixed)", "--concurrency", "10", "--fixed")
OURS_FIRST = OURS.with_args("async_uploader (--concurrency 4 --fixed)", "--concurrency", "4", "--fixed")
CLI = Client("async-uploader upload --no-verify (command line)", "cli", ("--no-verify",))
SERVER_CPU = summary_column("server CPU s/GiB (store + stunnel)", store_cpu_per_gib, 2)
WALL = summary_column("whole-process MB/s", wall_mb_per_s)


def _table(title: str, result: HeadToHead) -> Table:
    table = comparison(title, result, extra=[WALL, SERVER_CPU])
    ref = summarize(result.runs.get(result.reference, []), wall_mb_per_s).median
    table.columns.insert(-1, "wall × TM")
    for row, measured in zip(table.rows, result.runs.values(), strict=True):
        mine = summarize(measured, wall_mb_per_s).median
        row.insert(-1, f"{mine / ref:.2f}×" if mine and ref else "n/a")
    return table


def run(ctx: Context) -> Section:
    size = 8 * MIB if ctx.quick else int(ctx.gib * GIB)
    runs = ctx.repeat(ctx.runs)
    section = Section(
        "terminator",
        "Bulk over TLS through an efficient terminator",
        intro=(
            f"A paired 2 × {describe(size)} upload through stunnel (TLS in C, OpenSSL) in front of the local store "
            "(plain HTTP on 127.0.0.1, `--discard`): the server side of TLS costs what a real terminator costs, so "
            f"each client's own cost decides. Clients alternated run by run, {runs} run(s) each; "
            "async_uploader without end-to-end verification, since TransferManager checks nothing."
        ),
    )
    stunnel, why = find_stunnel()
    if not stunnel:
        ctx.log(f"terminator: skipped: {why}")
        section.notes.append(f"Skipped: {why}.")
        return section
    sources = ensure_pair(ctx.data_dir, size)
    clients = ctx.usable([SETTING.label(c) for c in (OURS_NO_VERIFY, TM, CLI, OURS_FIXED, OURS_FIRST)])
    ctx.log(f"terminator: 2 × {describe(size)} through {stunnel}, {runs} run(s)")
    with Terminated(stunnel) as store:
        grouped = alternate(ctx, store, clients, sources, runs)
    result = HeadToHead(SETTING, grouped, SETTING.label(TM).label, clients)
    section.tables.append(_table(f"Through stunnel, 2 × {describe(size)}, {runs} run(s) each", result))
    result.record(section, "stunnel")
    targets = []
    for client, who in ((OURS_NO_VERIFY, "async_uploader"), (CLI, "the command line")):
        targets += [
            Target(
                f"through stunnel: whole-process wall, {who} ÷ TransferManager",
                result.versus(client, wall_mb_per_s),
                1.15,
            ),
            Target(
                f"through stunnel: client CPU s/GiB, {who} ÷ TransferManager",
                result.versus(client, cpu_per_gib),
                0.8,
                True,
            ),
        ]
    section.tables.append(
        targets_table(
            [
                *targets,
                Target(
                    "through stunnel: async_uploader peak RSS, highest run",
                    summarize(result.of(OURS_NO_VERIFY), rss_mib).high,
                    100,
                    True,
                    "MiB",
                ),
            ]
        )
    )
    section.headlines.append(
        Headline(
            "terminator",
            f"2 × {describe(size)} through stunnel, whole-process wall",
            "MB/s",
            result.median(OURS_NO_VERIFY, wall_mb_per_s),
            result.reference_median(wall_mb_per_s),
            1.15,
        )
    )
    section.notes += [
        "MB/s is bytes over the transfer (first request to last Complete); whole-process MB/s is bytes over the "
        "client process's wall time, interpreter start-up and imports included. Client CPU is the whole process's "
        "(user + system, from wait4), start-up included.",
        "async-uploader upload --no-verify (command line): the command a pipeline runs, in the client's process "
        "(`benchmarks/clients/cli.py`), its checkpoint kept as by default; async_uploader (defaults, --no-verify) is "
        "the Python API (`Uploader`) at its defaults.",
        "async_uploader (--concurrency 10 --fixed): ten requests in flight from the start, as TransferManager "
        "holds, without the self-tuning's probing; no end-to-end verification either.",
        "async_uploader (--concurrency 4 --fixed): the level the self-tuning starts from on two cores, held from the "
        "start: what the defaults would cost without the probing (on cores found busy, down to 2 or 1 and back), "
        "which on a 3-second upload of 100 MiB parts is a large share of the run.",
        "stunnel runs with its defaults (TLS 1.3, AES-GCM on this CPU's AES-NI); its certificate is for 127.0.0.1 "
        "and localhost, from a CA made with trustme at the start, trusted through AWS_CA_BUNDLE.",
    ]
    return section
