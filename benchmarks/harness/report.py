"""Results: summaries of repeated runs, markdown tables, results.json and PNG plots, stamped with the machine."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .proc import Measured, number

PACKAGES = (
    "async-uploader",
    "aws-healthomics-tools",
    "boto3",
    "botocore",
    "aiobotocore",
    "aiohttp",
    "uvloop",
    "matplotlib",
)


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""

    def markdown(self) -> str:
        lines = [f"**{self.title}**", ""] if self.title else []
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.columns))) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines)


@dataclass(frozen=True)
class Headline:
    """One row of the summary: async_uploader at its defaults against TransferManager at its defaults, over TLS.

    ``target`` is the ratio the performance issue asks for there (0: none).
    """

    scenario: str
    setting: str
    unit: str
    ours: float
    tm: float
    target: float = 0.0


@dataclass
class Section:
    key: str
    title: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    runs: list[dict[str, object]] = field(default_factory=list)
    headlines: list[Headline] = field(default_factory=list)
    measured: str = ""
    seconds: float = 0.0
    load_average: list[float] = field(default_factory=list)

    def add_runs(self, group: str, runs: Sequence[Measured]) -> None:
        for run in runs:
            self.runs.append({"group": group, **run.as_json()})


@dataclass(frozen=True)
class Summary:
    """Median and range of one metric over repeated runs of one client (failed runs left out)."""

    median: float
    low: float
    high: float
    count: int

    def text(self, digits: int = 0) -> str:
        if not self.count:
            return "n/a"
        if self.count == 1 or self.low == self.high:
            return f"{self.median:,.{digits}f}"
        return f"{self.median:,.{digits}f} ({self.low:,.{digits}f}–{self.high:,.{digits}f})"


def summarize(runs: Sequence[Measured], metric: Callable[[Measured], float]) -> Summary:
    values = [metric(run) for run in runs if run.ok]
    if not values:
        return Summary(0.0, 0.0, 0.0, 0)
    return Summary(statistics.median(values), min(values), max(values), len(values))


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}×" if value and reference else "n/a"


def ok_text(runs: Sequence[Measured]) -> str:
    good = sum(run.ok for run in runs)
    text = f"{good}/{len(runs)}"
    if good < len(runs):
        errors = {run.error for run in runs if not run.ok and run.error}
        if errors:
            text += " (" + "; ".join(sorted(errors))[:160].replace("|", "/") + ")"
    return text


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
            cwd=Path(__file__).resolve().parent,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "none"


def stamp(mode: str, argv: Sequence[str]) -> dict[str, object]:
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": mode,
        "command": " ".join(argv),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": _commit(),
        "packages": {name: _version(name) for name in PACKAGES},
    }


def write(out_dir: Path, header: dict[str, object], sections: Sequence[Section]) -> None:
    """Write results.json and RESULTS.md, keeping sections of an earlier run of the same mode not rerun now."""
    out_dir.mkdir(parents=True, exist_ok=True)
    previous: list[dict[str, object]] = []
    json_path = out_dir / "results.json"
    if json_path.exists():
        try:
            old = json.loads(json_path.read_text())
            if old.get("stamp", {}).get("mode") == header["mode"]:
                previous = list(old.get("sections", []))
        except (ValueError, AttributeError):
            previous = []
    fresh = {section.key for section in sections}
    merged = [s for s in previous if s.get("key") not in fresh] + [asdict(s) for s in sections]
    order = ["bulk", "distant", "tiny", "tuning", "scaling", "streams", "faults", "verify"]
    merged.sort(key=lambda s: order.index(str(s["key"])) if s["key"] in order else len(order))
    headlines = [Headline(**h) for s in merged for h in s.get("headlines", []) if isinstance(h, dict)]
    if headlines:
        _summary_plot(out_dir / SUMMARY_PLOT, headlines)
    json_path.write_text(json.dumps({"stamp": header, "sections": merged}, indent=1) + "\n")
    (out_dir / "RESULTS.md").write_text(_markdown(header, merged, headlines))


SUMMARY_PLOT = "tls_summary.png"


def _summary(headlines: Sequence[Headline]) -> list[str]:
    """The section that opens RESULTS.md: every scenario's headline pair over TLS, from the sections measured."""
    table = Table(
        "",
        [
            "scenario",
            "setting",
            "async_uploader (defaults)",
            "TransferManager (defaults)",
            "× TransferManager",
            "target",
        ],
        [
            [
                h.scenario,
                h.setting,
                f"{h.ours:,.0f} {h.unit}" if h.ours else "n/a",
                f"{h.tm:,.0f} {h.unit}" if h.tm else "n/a",
                ratio(h.ours, h.tm),
                f"≥ {h.target:.2f}×" if h.target else "",
            ]
            for h in headlines
        ],
    )
    return [
        "",
        "## Over TLS, every scenario: async_uploader against TransferManager",
        "",
        "Both at their defaults (async_uploader with the service's rate limits where the store enforces the "
        "service's quotas), medians of each scenario's runs below; each section says when it was measured.",
        "",
        table.markdown(),
        "",
        f"![{SUMMARY_PLOT}]({SUMMARY_PLOT})",
    ]


def _markdown(header: dict[str, object], sections: Sequence[dict[str, object]], headlines: Sequence[Headline]) -> str:
    packages = header["packages"]
    assert isinstance(packages, dict)
    load = header["load_average"]
    lines = [
        "# async_uploader benchmark results",
        "",
        f"Measured {header['date']} ({header['mode']} mode) with `{header['command']}` on {header['nproc']} CPUs "
        f"({header['cpu']}), {header['memory_gib']} GiB RAM, load average {load} at the start; Python "
        f"{header['python']}, {header['platform']}, commit {header['commit']}.",
        "",
        "Packages: " + ", ".join(f"{name} {version}" for name, version in packages.items()) + ".",
        "",
        "Every client runs as its own process; CPU is the client's user + system seconds and peak RSS its "
        "`ru_maxrss`, both from `wait4`. Throughput is bytes over the client's own transfer time (first request to "
        "last Complete, start-up excluded). Figures are median (min–max) over the runs shown; MB = 10^6 bytes.",
    ]
    if headlines:
        lines += _summary(headlines)
    for section in sections:
        lines += ["", f"## {section['title']}", ""]
        if section.get("measured"):
            load = section.get("load_average") or "?"
            lines += [
                f"_Measured {section['measured']} in {number(section.get('seconds')):.0f} s; load average {load} "
                "at the start._",
                "",
            ]
        if section.get("intro"):
            lines += [str(section["intro"]), ""]
        tables = section.get("tables", [])
        assert isinstance(tables, list)
        for table in tables:
            lines += [Table(**table).markdown(), ""]
        plots = section.get("plots", [])
        assert isinstance(plots, list)
        lines += [f"![{plot}]({plot})" for plot in plots]
        notes = section.get("notes", [])
        assert isinstance(notes, list)
        if notes:
            lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines).rstrip() + "\n"


# --- plots -----------------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_plot(path: Path, labels: Sequence[str], values: Sequence[Summary], ylabel: str, title: str) -> None:
    grouped_bar_plot(path, labels, {"": values}, ylabel, title)


_COLOURS = ("#4878a8", "#dd8452", "#55a868", "#c44e52", "#8172b3")


def grouped_bar_plot(
    path: Path,
    categories: Sequence[str],
    series: dict[str, Sequence[Summary | float]],
    ylabel: str,
    title: str,
    *,
    reference: float | None = None,
) -> None:
    """Bars per category, one per series side by side (median, min–max whiskers); a dashed line at ``reference``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(8.0, 0.9 * len(categories) * max(1, len(series))), 4.6))
    width = 0.8 / max(1, len(series))
    for index, (name, values) in enumerate(series.items()):
        summaries = [v if isinstance(v, Summary) else Summary(v, v, v, 1) for v in values]
        errors = [[v.median - v.low for v in summaries], [v.high - v.median for v in summaries]]
        offset = (index - (len(series) - 1) / 2) * width
        ax.bar(
            [i + offset for i in range(len(categories))],
            [v.median for v in summaries],
            width,
            yerr=errors,
            capsize=3,
            color=_COLOURS[index % len(_COLOURS)],
            label=name or None,
        )
    if reference is not None:
        ax.axhline(reference, color="#444444", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(categories)), categories, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if any(series):
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _summary_plot(path: Path, headlines: Sequence[Headline]) -> None:
    grouped_bar_plot(
        path,
        [f"{h.scenario}: {h.setting}" for h in headlines],
        {
            "async_uploader ÷ TransferManager": [h.ours / h.tm if h.ours and h.tm else 0.0 for h in headlines],
            "target": [h.target for h in headlines],
        },
        "× TransferManager (both at defaults)",
        "Over TLS: async_uploader against TransferManager (1.0 = as fast)",
        reference=1.0,
    )


def line_plot(
    path: Path,
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    title: str,
    *,
    logx: bool = False,
    right: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    right_label: str = "",
) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    if right:
        twin = ax.twinx()
        for label, (xs, ys) in right.items():
            twin.plot(xs, ys, marker="s", linestyle="--", label=label, color="#c44e52")
        twin.set_ylabel(right_label)
        more, more_names = twin.get_legend_handles_labels()
        handles += more
        names += more_names
    if names:
        ax.legend(handles, names, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
