"""Scenario: self-tuning. async_uploader at its defaults against itself at the best fixed concurrency, five settings.

For each setting (all over TLS) a sweep of fixed concurrencies (``--concurrency N --fixed``, one run per point,
everything else at defaults) finds the best N; then async_uploader at its defaults, async_uploader fixed at that N
and TransferManager at its defaults are alternated. Defaults ÷ best fixed says what a user loses by not tuning.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .compare import HeadToHead, Metric, Setting, cpu_per_gib, head_to_head, headline, mb_per_s, parts_per_s
from .data import describe, ensure_pair
from .proc import GIB, MIB, Measured
from .quota import QUOTA
from .report import Section, Table, grouped_bar_plot, line_plot, ok_text, ratio, summarize
from .runner import OURS, TM, Client, Context, measure
from .targets import Target, targets_table

POINTS = (1, 2, 4, 8, 16, 32, 64)
# At 25-50 MB/s per connection one or two requests in flight take minutes for what the rest do in seconds.
DISTANT_POINTS = (4, 8, 16, 32, 64)
QUICK_POINTS = (1, 8)
TINY_PART = 4096


@dataclass(frozen=True)
class Case:
    """One row of the tuning table: a store setting, the sources, and what every client run adds."""

    setting: Setting
    points: tuple[int, ...]
    tiny: bool = False
    ours: tuple[str, ...] = ()

    @property
    def metric(self) -> Metric:
        return parts_per_s if self.tiny else mb_per_s

    @property
    def unit(self) -> str:
        return "parts/s" if self.tiny else "MB/s"

    @property
    def part(self) -> tuple[str, ...]:
        return ("--part-size", str(TINY_PART)) if self.tiny else ()


CASES = (
    Case(Setting("loopback, light store"), POINTS),
    Case(Setting("loopback, store hashing every part", ("--hash-parts",)), POINTS),
    Case(Setting("distant, no quota", ("--connection-mbps", "50", "--latency-ms", "20")), DISTANT_POINTS),
    Case(QUOTA, DISTANT_POINTS, ours=("--service-quotas",)),
    Case(Setting("tiny parts, light store"), POINTS, tiny=True),
)


@dataclass
class Outcome:
    """One case measured: its sweep, the best fixed concurrency, and the alternated head-to-head."""

    case: Case
    size: int
    sweep: dict[int, Measured]
    best: int
    result: HeadToHead
    clients: tuple[Client, Client, Client]  # defaults, best fixed, TransferManager

    @property
    def defaults(self) -> list[Measured]:
        return self.result.of(self.clients[0])

    @property
    def fixed(self) -> list[Measured]:
        return self.result.of(self.clients[1])

    @property
    def tm(self) -> list[Measured]:
        return self.result.of(self.clients[2])

    def median(self, runs: list[Measured]) -> float:
        return summarize(runs, self.case.metric).median


def _sweep(ctx: Context, case: Case, sources: Sequence[Path]) -> dict[int, Measured]:
    points = QUICK_POINTS if ctx.quick else case.points
    paths = [str(source) for source in sources]
    found = {}
    with case.setting.store() as store:
        for concurrency in points:
            time.sleep(case.setting.settle)
            found[concurrency] = measure(
                ctx,
                store,
                OURS.with_args(f"fixed concurrency {concurrency}"),
                paths,
                *case.part,
                *case.ours,
                "--concurrency",
                str(concurrency),
                "--fixed",
            )
    return found


def _measure(ctx: Context, case: Case) -> Outcome | None:
    if ctx.quick:
        size = 200 * TINY_PART if case.tiny else 8 * MIB
    else:
        size = 5_000 * TINY_PART if case.tiny else int(ctx.gib * GIB / 2)
    sources = ensure_pair(ctx.data_dir, size)
    ctx.log(f"tuning: {case.setting.name}, 2 × {describe(size)}")
    sweep = _sweep(ctx, case, sources)
    good = {c: m for c, m in sweep.items() if m.ok}
    if not good:
        return None
    best = max(good, key=lambda c: case.metric(good[c]))
    defaults = Client("async_uploader (defaults)", OURS.script, (*case.part, *case.ours))
    fixed = Client(
        f"async_uploader (fixed concurrency {best})",
        OURS.script,
        (*defaults.args, "--concurrency", str(best), "--fixed"),
    )
    tm = Client("TransferManager (defaults)", TM.script, case.part)
    result = head_to_head(ctx, case.setting, [defaults, fixed, tm], sources, ctx.repeat(3), reference=tm)
    return Outcome(case, size, sweep, best, result, (defaults, fixed, tm))


def run(ctx: Context) -> Section:
    section = Section(
        "tuning",
        "Self-tuning against the best fixed concurrency",
        intro=(
            "Five settings, all over TLS. For each, a sweep of fixed concurrencies (one run per point, everything else "
            "at defaults) finds the best N for async_uploader; then async_uploader at its defaults, async_uploader "
            f"fixed at that N and TransferManager at its defaults are alternated, {ctx.repeat(3)} run(s) each."
        ),
    )
    if not ctx.ours:
        ctx.usable([OURS])
        section.notes.append("Skipped: this scenario measures async_uploader's engine, which is not importable.")
        return section
    outcomes = [outcome for case in CASES if (outcome := _measure(ctx, case)) is not None]
    rows, targets = [], []
    for o in outcomes:
        ours, best, tm = o.median(o.defaults), o.median(o.fixed), o.median(o.tm)
        pair = f"2 × {o.size // TINY_PART:,} × 4 KiB" if o.case.tiny else f"2 × {describe(o.size)}"
        name = f"{o.case.setting.name}, {pair}"
        rows.append(
            [
                name,
                o.case.unit,
                summarize(o.defaults, o.case.metric).text(),
                summarize(o.fixed, o.case.metric).text(),
                ratio(ours, best),
                summarize(o.tm, o.case.metric).text(),
                ratio(ours, tm),
                str(o.best),
                summarize(o.defaults, cpu_per_gib).text(2),
                summarize(o.tm, cpu_per_gib).text(2),
                ok_text([*o.defaults, *o.fixed, *o.tm]),
            ]
        )
        targets.append(Target(f"{name}: defaults ÷ best fixed", ours / best if ours and best else 0.0, 0.9))
        section.headlines.append(
            headline("tuning", name, o.result, o.clients[0], metric=o.case.metric, unit=o.case.unit)
        )
        section.add_runs(f"{o.case.setting.name}: sweep", list(o.sweep.values()))
        for label, runs in (("defaults", o.defaults), ("best fixed", o.fixed), ("TransferManager", o.tm)):
            section.add_runs(f"{o.case.setting.name}: {label}", runs)
    section.tables.append(
        Table(
            "",
            [
                "setting (over TLS)",
                "unit",
                "async_uploader (defaults)",
                "async_uploader (best fixed)",
                "defaults ÷ best fixed",
                "TransferManager (defaults)",
                "× TM",
                "best fixed concurrency",
                "async_uploader CPU s/GiB",
                "TM CPU s/GiB",
                "ok",
            ],
            rows,
        )
    )
    section.tables.append(_sweep_table(outcomes))
    section.tables.append(targets_table(targets))
    _plots(ctx, section, outcomes)
    section.notes += [
        "Store flags per setting: loopback `--discard --tls`; hashing `--hash-parts --discard --tls`; distant, no "
        "quota `--connection-mbps 50 --latency-ms 20 --discard --tls`; distant, service quota `--connection-mbps 25 "
        "--latency-ms 20 --service-quotas --discard --tls` (async_uploader keeps the service's rates there, "
        "`--service-quotas`, and every run waits for the quota buckets to refill); tiny parts: 4 KiB parts for "
        "every client, light store.",
        f"Sweep points: {', '.join(map(str, POINTS))}; the two distant settings leave out "
        f"{', '.join(str(p) for p in POINTS if p not in DISTANT_POINTS)} (at 25-50 MB/s per connection those take "
        "minutes each and cannot be the best). The best N is chosen from one run per point, so its alternated "
        "median can come out a little below the sweep's best run.",
        "`--fixed` passes adaptive_concurrency=False where the engine's UploadConfig has that field; an engine "
        "without it holds max_concurrency in flight anyway, and then defaults ÷ best fixed compares the default "
        "max concurrency (64) with the best one.",
    ]
    return section


def _sweep_table(outcomes: list[Outcome]) -> Table:
    points = sorted({c for o in outcomes for c in o.sweep})
    return Table(
        "The sweeps: async_uploader at each fixed concurrency, one run each",
        ["setting", "unit", *map(str, points)],
        [
            [
                o.case.setting.name,
                o.case.unit,
                *(f"{o.case.metric(o.sweep[c]):,.0f}" if c in o.sweep and o.sweep[c].ok else "" for c in points),
            ]
            for o in outcomes
        ],
    )


def _plots(ctx: Context, section: Section, outcomes: list[Outcome]) -> None:
    if not outcomes:
        return
    names = [o.case.setting.name for o in outcomes]
    bests = [o.median(o.fixed) or 1.0 for o in outcomes]
    grouped_bar_plot(
        ctx.out_dir / "tuning.png",
        names,
        {
            "async_uploader (defaults)": [o.median(o.defaults) / b for o, b in zip(outcomes, bests, strict=True)],
            "async_uploader (best fixed)": [o.median(o.fixed) / b for o, b in zip(outcomes, bests, strict=True)],
            "TransferManager (defaults)": [o.median(o.tm) / b for o, b in zip(outcomes, bests, strict=True)],
        },
        "÷ async_uploader at the best fixed concurrency",
        "Self-tuning over TLS: defaults against the best fixed concurrency",
        reference=0.9,
    )
    line_plot(
        ctx.out_dir / "tuning_sweeps.png",
        {o.case.setting.name: (list(o.sweep), _relative(o)) for o in outcomes},
        "fixed concurrency",
        "÷ the sweep's best",
        "async_uploader over TLS by fixed concurrency",
        logx=True,
    )
    section.plots += ["tuning.png", "tuning_sweeps.png"]


def _relative(o: Outcome) -> list[float]:
    """Each sweep point over the sweep's best (failed points 0)."""
    values = [o.case.metric(m) for m in o.sweep.values()]
    top = max(values, default=0.0) or 1.0
    return [value / top for value in values]
