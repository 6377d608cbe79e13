"""Head to head: some clients against one store setting, alternated, and the table that sets each against a reference.

A ``Setting`` is a store started one way (its flags, HTTP or TLS). ``head_to_head`` runs clients against it A B A B
...; over TLS every row's label says so, so one section can hold the same client over both transports.
``comparison`` turns the runs into the table every head-to-head shares: speed, × the reference (TransferManager),
client CPU s/GiB and CPU × the reference, peak RSS, whatever columns a scenario adds, and how many runs succeeded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .proc import GIB, Measured, number
from .report import Headline, Section, Summary, Table, ok_text, ratio, summarize
from .runner import TM, Client, Context, alternate
from .store import Store
from .stunnel import Terminated

Metric = Callable[[Measured], float]


def mb_per_s(run: Measured) -> float:
    return run.mb_per_s


def parts_per_s(run: Measured) -> float:
    return run.parts_per_s


def cpu_per_gib(run: Measured) -> float:
    return run.cpu_per_gib


def rss_mib(run: Measured) -> float:
    return run.rss_mib


def store_cpu_per_gib(run: Measured) -> float:
    return number(run.report.get("store_cpu")) / (run.bytes / GIB) if run.bytes else 0.0


def cpu_us_per_part(run: Measured) -> float:
    return run.cpu / max(1, run.parts) * 1e6


@dataclass(frozen=True)
class Setting:
    """A store to measure against: its flags and whether it serves HTTPS.

    ``settle`` is how long to wait before each run, so that a store enforcing quotas has refilled its buckets and
    every client starts from the same full burst.
    """

    name: str
    flags: tuple[str, ...] = ()
    tls: bool = True
    discard: bool = True
    settle: float = 0.0
    stunnel: str = ""
    """With TLS, the path of a stunnel that terminates it in front of the store (plain HTTP behind it); empty: the
    store's own TLS."""

    @property
    def transport(self) -> str:
        return "TLS" if self.tls else "HTTP"

    @property
    def command(self) -> str:
        """The store's flags as they would be typed, for titles and notes."""
        tls = ["--tls"] if self.tls and not self.stunnel else []
        flags = [*self.flags, *(["--discard"] if self.discard else []), *tls]
        typed = "`" + " ".join(flags) + "`" if flags else "no flags"
        return f"{typed} behind stunnel" if self.tls and self.stunnel else typed

    def store(self) -> Store | Terminated:
        if self.tls and self.stunnel:
            return Terminated(self.stunnel, self.flags, discard=self.discard)
        return Store(self.flags, discard=self.discard, tls=self.tls)

    def label(self, client: Client) -> Client:
        """The client as a row of this setting: over TLS its label says so."""
        return Client(f"{client.label} over TLS", client.script, client.args) if self.tls else client

    def over(self, *, tls: bool) -> Setting:
        return dataclasses.replace(self, tls=tls)

    def behind(self, stunnel: str) -> Setting:
        """This setting over TLS terminated by ``stunnel`` (the store's own TLS when it is empty)."""
        return dataclasses.replace(self, tls=True, stunnel=stunnel)


@dataclass
class HeadToHead:
    """The runs of one head-to-head, by row label, and which row is the reference."""

    setting: Setting
    runs: dict[str, list[Measured]]
    reference: str
    clients: list[Client] = field(default_factory=list)

    def of(self, client: Client) -> list[Measured]:
        """The runs of ``client`` as given to ``head_to_head`` (before the setting relabelled it)."""
        return self.runs.get(self.setting.label(client).label, [])

    def median(self, client: Client, metric: Metric = mb_per_s) -> float:
        return summarize(self.of(client), metric).median

    def reference_median(self, metric: Metric = mb_per_s) -> float:
        return summarize(self.runs.get(self.reference, []), metric).median

    def versus(self, client: Client, metric: Metric = mb_per_s, *, to: Client | None = None) -> float:
        """``client``'s median over that of ``to`` (default: the reference); 0 when either is missing."""
        theirs = self.median(to, metric) if to is not None else self.reference_median(metric)
        mine = self.median(client, metric)
        return mine / theirs if mine and theirs else 0.0

    def record(self, section: Section, group: str = "") -> None:
        prefix = f"{group} " if group else ""
        for label, measured in self.runs.items():
            section.add_runs(f"{prefix}{self.setting.transport}: {label}", measured)


def head_to_head(
    ctx: Context,
    setting: Setting,
    clients: Sequence[Client],
    sources: Sequence[Path | str],
    runs: int,
    *extra: str,
    reference: Client = TM,
) -> HeadToHead:
    """Start the store of ``setting``, run ``clients`` alternated ``runs`` times, stop it."""
    usable = [setting.label(client) for client in ctx.usable(clients)]
    ctx.log(f" {setting.name} over {setting.transport} ({setting.command})")
    with setting.store() as store:
        grouped = alternate(ctx, store, usable, sources, runs, *extra, settle=setting.settle)
    return HeadToHead(setting, grouped, setting.label(reference).label, usable)


@dataclass(frozen=True)
class Column:
    """An extra column of a comparison: its header and how a row's runs make its cell."""

    header: str
    cell: Callable[[list[Measured]], str]


def summary_column(header: str, metric: Metric, digits: int = 0) -> Column:
    return Column(header, lambda runs: summarize(runs, metric).text(digits))


def comparison(
    title: str,
    result: HeadToHead,
    *,
    speed: Metric = mb_per_s,
    unit: str = "MB/s",
    extra: Sequence[Column] = (),
    note: str = "",
) -> Table:
    """The shared head-to-head table: one row per client, each set against the reference row."""
    ref_speed = result.reference_median(speed)
    ref_cpu = result.reference_median(cpu_per_gib)
    rows = []
    for label, measured in result.runs.items():
        fast: Summary = summarize(measured, speed)
        cpu = summarize(measured, cpu_per_gib)
        rows.append(
            [
                label,
                fast.text(),
                ratio(fast.median, ref_speed),
                cpu.text(2),
                ratio(cpu.median, ref_cpu),
                summarize(measured, rss_mib).text(),
                *(column.cell(measured) for column in extra),
                ok_text(measured),
            ]
        )
    columns = [
        "client",
        unit,
        "× TransferManager",
        "client CPU s/GiB",
        "CPU × TM",
        "peak RSS MiB",
        *(column.header for column in extra),
        "ok",
    ]
    return Table(title, columns, rows, note)


def versus_column(header: str, result: HeadToHead, client: Client, metric: Metric = mb_per_s) -> Column:
    """Each row's median of ``metric`` over that of ``client`` in the same head-to-head (× ceiling, × floor)."""
    return Column(header, lambda runs: ratio(summarize(runs, metric).median, result.median(client, metric)))


def headline(
    scenario: str,
    setting: str,
    result: HeadToHead,
    ours: Client,
    *,
    metric: Metric = mb_per_s,
    unit: str = "MB/s",
    target: float = 0.0,
) -> Headline:
    """The summary row of ``result``: the medians of ``ours`` and of the reference."""
    return Headline(scenario, setting, unit, result.median(ours, metric), result.reference_median(metric), target)


# --- where the time goes: ours reports its phases; a client that returns at Complete has one ---------------------


def seconds(run: Measured) -> float:
    return run.seconds


def to_complete(run: Measured) -> float:
    """Seconds to Complete: ours reports it apart; a client that returns at Complete, its whole time."""
    value = run.report.get("to_complete_seconds")
    return float(value) if isinstance(value, int | float) and value > 0 else run.seconds


def phase(name: str) -> Metric:
    """A phase ours reports (``transfer_seconds``, ``store_seconds``, ...); 0 where the client reports none."""

    def of(run: Measured) -> float:
        value = run.report.get(name)
        return float(value) if isinstance(value, int | float) else 0.0

    return of


PHASES = (
    ("transfer s", "transfer_seconds"),
    ("Complete s", "complete_seconds"),
    ("to Complete s", ""),
    ("store's processing s", "store_seconds"),
    ("verification after ACTIVE s", "verify_seconds"),
)


def phases_comparison(title: str, result: HeadToHead, base: Client, *, note: str = "") -> Table:
    """Each row's time phase by phase (where the time goes), its time in all against ``base`` (the same client
    without verification), its MB/s against the reference, CPU, RSS, how many runs verified and succeeded.

    The reference (TransferManager) returns at Complete: its time to Complete is its time in all, its phases n/a.
    """
    base_seconds = result.median(base, seconds)
    rows = []
    for label, measured in result.runs.items():
        ours = label != result.reference
        cells = [summarize(measured, to_complete if not key else phase(key)).text(2) for _, key in PHASES]
        if not ours:
            cells = [cell if not key else "n/a" for cell, (_, key) in zip(cells, PHASES, strict=True)]
        took = summarize(measured, seconds)
        speed = summarize(measured, mb_per_s)
        verified = sum(int(number(run.report.get("verified"))) for run in measured if run.ok)
        rows.append(
            [
                label,
                *cells,
                took.text(2),
                ratio(took.median, base_seconds),
                speed.text(),
                ratio(speed.median, result.reference_median()),
                summarize(measured, cpu_per_gib).text(2),
                summarize(measured, rss_mib).text(),
                f"{verified}/{len(measured)}" if ours else "n/a",
                ok_text(measured),
            ]
        )
    columns = [
        "client",
        *(header for header, _ in PHASES),
        "seconds in all",
        "× --no-verify",
        "MB/s",
        "× TransferManager",
        "client CPU s/GiB",
        "peak RSS MiB",
        "verified",
        "ok",
    ]
    return Table(title, columns, rows, note)
