"""What an upload looks like while it runs: a live progress bar on a terminal, or JSON lines for monitors.

Both read the same ``UploadStatistics`` snapshot on a timer (``engine.monitor``); neither changes the upload.
The bar is drawn with rich and only when stderr is a terminal (rich is imported then, not before); the JSON-lines
writer never writes escape codes.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from ..core.stats import UploadStatistics

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID

__all__ = [
    "PHASE_WORDS",
    "BatchProgress",
    "EventWriter",
    "ProgressBar",
    "ProgressLines",
    "describe_phase",
    "format_rate",
    "format_seconds",
    "human_size",
]

_PAST_THE_BYTES = frozenset({"confirming", "completing", "finding", "checking", "waiting", "verifying", "done"})
"""States in which no part is moving: the rate shown is the transfer's own, not the last second's."""
PHASE_WORDS = {
    "starting": "checking the sources",
    "creating": "creating the upload",
    "resuming": "resuming: listing the parts on the store",
    "finding": "looking for the read set an earlier run made",
    "checking": "reading the parts again",
    "uploading": "uploading",
    "confirming": "checking the sources did not change",
    "completing": "completing",
    "waiting": "waiting for the store to process the read set",
    "verifying": "verifying: the store's ETag against the local hash",
    "done": "done",
    "failed": "failed",
    "interrupted": "interrupted",
}
"""What each state is, in words, as the bar and the log lines say it."""


def describe_phase(state: str, elapsed: float) -> str:
    """``waiting for the store to process the read set, 0:01:12``: the phase and how long it has lasted."""
    words = PHASE_WORDS.get(state, state)
    return words if state in ("uploading", "done", "failed", "interrupted") else f"{words}, {format_seconds(elapsed)}"


def format_rate(bytes_per_second: float) -> str:
    """Throughput in decimal megabytes per second, as ``12.3 MB/s``."""
    return f"{bytes_per_second / 1e6:.1f} MB/s"


def human_size(nbytes: float) -> str:
    """A size in decimal units for people, as ``512 B``, ``12.3 MB``, ``1.50 GB``."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            value = nbytes / scale
            digits = 2 if value < 10 else 1 if value < 100 else 0
            return f"{value:.{digits}f} {unit}"
    return f"{int(nbytes)} B"


def format_seconds(seconds: float | None) -> str:
    """A duration as ``H:MM:SS``; ``-:--:--`` when unknown."""
    if seconds is None or math.isnan(seconds) or seconds < 0 or seconds > 1e7:
        return "-:--:--"
    whole = int(seconds + 0.5)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class _Rate:
    """Recent throughput from successive (time, bytes) samples over a sliding window of a few seconds."""

    def __init__(self, window: float = 5.0) -> None:
        self._window = window
        self._samples: list[tuple[float, int]] = []

    def update(self, now: float, done: int) -> float | None:
        """Bytes per second over the window; None until the samples span half a second."""
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self._window:
            self._samples.pop(0)
        first_time, first_done = self._samples[0]
        if now - first_time < 0.5:
            return None
        return max(0.0, (done - first_done) / (now - first_time))


class EventWriter:
    """Writes one JSON object per line to a text stream (stderr by default), flushed at once."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, event: Mapping[str, Any]) -> None:
        self._stream.write(json.dumps(event, separators=(",", ":"), default=str) + "\n")
        self._stream.flush()

    def __call__(self, event: Mapping[str, Any]) -> None:
        """Usable directly as the engine's ``on_event`` callback."""
        self.write(event)


class ProgressLines:
    """Progress for logs (stderr not a terminal): one plain, timestamped line per interval.

    Each line gives the phase, bytes and percent, MB/s over the interval, ETA and retries. Phase changes get a
    line as they happen once the first progress line is out: an upload shorter than one interval stays as quiet
    as before, its summary line saying it all.
    """

    def __init__(self, stream: IO[str], interval: float, *, prog: str = "async-uploader") -> None:
        self._stream = stream
        self.interval = interval
        self._prog = prog
        self._started = time.monotonic()
        self._last: tuple[float, int] | None = None
        self._phase: str | None = None

    def _write(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        self._stream.write(f"{stamp} {self._prog}: {text}\n")
        self._stream.flush()

    def phase(self, state: str) -> None:
        """The upload entered ``state`` (a ``state`` event)."""
        if state != self._phase and self._last is not None:
            self._write(f"phase {state}: {PHASE_WORDS.get(state, state)}")
        self._phase = state

    def line(self, stats: UploadStatistics, now: float) -> str:
        """The progress line for ``stats`` (and remember this sample for the next rate)."""
        done = max(stats.total_bytes_sent, stats.total_bytes_done)
        total = stats.total_bytes
        since, before = self._last if self._last is not None else (self._started, 0)
        seconds = now - since
        rate = (done - before) / seconds if seconds > 0 else 0.0
        if stats.state in _PAST_THE_BYTES or rate <= 0:
            rate = done / stats.elapsed if stats.elapsed > 0 else 0.0
        self._last = (now, done)
        amount = human_size(done)
        if total is not None:
            percent = done * 100 / total if total else 100.0
            amount += f" of {human_size(total)} ({percent:.1f}%)"
        eta = (total - done) / rate if total is not None and rate > 0 else None
        return (
            f"{describe_phase(stats.state, stats.phase_elapsed)}: {amount}, {format_rate(rate)}, "
            f"ETA {format_seconds(eta)}, retries {stats.retries}"
            f" ({stats.throttles} throttled)"
        )

    def update(self, stats: UploadStatistics, now: float | None = None) -> None:
        """Write a line when an interval has passed since the last one (the first: since the start)."""
        now = time.monotonic() if now is None else now
        since = self._last[0] if self._last is not None else self._started
        if now - since < self.interval * 0.9:  # the monitor's last call at the end of a short run
            return
        self._write(self.line(stats, now))


class ProgressBar:
    """A rich progress display: a row per source (bytes, percent, parts) and a total row (MB/s, ETA, retries)."""

    NARROW = 120
    """Below this many columns the display is one line: the bar, percent, bytes, MB/s and ETA."""

    def __init__(self, console: Console, *, label: str | None = None) -> None:
        from rich.progress import (  # noqa: PLC0415 (rich only when a bar is drawn)
            BarColumn,
            DownloadColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
        )

        self.console = console
        self._label = label
        self._narrow = console.width < self.NARROW
        columns = [] if self._narrow else [TextColumn("{task.description}")]
        self._progress = Progress(
            *columns,
            BarColumn(bar_width=None),
            TaskProgressColumn(),
            DownloadColumn(binary_units=False),
            TextColumn("{task.fields[detail]}"),
            console=console,
            auto_refresh=False,
            transient=False,
            expand=True,
            redirect_stdout=False,  # stdout carries results (read set ids, JSON lines), never the display
        )
        self._tasks: dict[str, TaskID] = {}
        self._rate = _Rate()
        self._started = False

    def __enter__(self) -> ProgressBar:
        self._progress.start()
        self._started = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._started:
            self._started = False
            self._progress.refresh()
            self._progress.stop()

    def _task(self, key: str, description: str) -> TaskID:
        if key not in self._tasks:
            self._tasks[key] = self._progress.add_task(description, total=None, detail="")
        return self._tasks[key]

    def _totals(self, stats: UploadStatistics, now: float) -> tuple[int, int | None, float, float | None]:
        """Bytes done, bytes in all (None while unknown), the rate shown and the ETA."""
        done = max(sum(stats.bytes_sent.values()), sum(stats.bytes_done.values()))
        total_bytes = stats.total_bytes
        recent = self._rate.update(now, done)
        average = done / stats.elapsed if stats.elapsed > 0 else 0.0
        if stats.state in _PAST_THE_BYTES:
            rate = stats.timings.transfer_rate or average
        else:
            rate = average if recent is None else recent
        eta = (total_bytes - done) / rate if total_bytes is not None and rate > 0 else None
        return done, total_bytes, rate, eta

    def _update_narrow(self, stats: UploadStatistics, now: float) -> None:
        """One line for every source together: the bar, percent, bytes, MB/s, ETA (retries once there are any)."""
        done, total_bytes, rate, eta = self._totals(stats, now)
        detail = f"{format_rate(rate)} ETA {format_seconds(eta)}"
        if stats.retries:
            detail += f" retries {stats.retries}"
        self._progress.update(self._task("total", "total"), completed=done, total=total_bytes, detail=detail)
        self._progress.refresh()

    def update(self, stats: UploadStatistics, now: float | None = None) -> None:
        """Redraw from a statistics snapshot."""
        now = time.monotonic() if now is None else now
        if self._narrow:
            self._update_narrow(stats, now)
            return
        sources = list(stats.bytes_total)
        for source in sources:
            total = stats.bytes_total.get(source)
            parts_total = stats.parts_total.get(source)
            parts = f"parts {stats.parts_done.get(source, 0)}/{parts_total if parts_total is not None else '?'}"
            in_flight = stats.parts_in_flight.get(source, 0)
            if in_flight:
                parts += f" ({in_flight} sending)"
            self._progress.update(
                self._task(str(source), str(source)),
                completed=max(stats.bytes_sent.get(source, 0), stats.bytes_done.get(source, 0)),
                total=total,
                detail=parts,
            )
        done, total_bytes, rate, eta = self._totals(stats, now)
        detail = f"{format_rate(rate)}  ETA {format_seconds(eta)}  retries {stats.retries}"
        detail += f"  throttles {stats.throttles}  {describe_phase(stats.state, stats.phase_elapsed)}"
        if len(sources) > 1 or self._label:
            self._progress.update(
                self._task("total", self._label or "total"), completed=done, total=total_bytes, detail=detail
            )
        elif sources:
            first = self._tasks[str(sources[0])]
            current = self._progress.tasks[first].fields.get("detail", "")
            self._progress.update(first, detail=f"{current}  {detail}")
        self._progress.refresh()


class BatchProgress:
    """A batch on a terminal: one bar counting rows, and a bar per read set uploading now."""

    def __init__(self, console: Console, rows: int) -> None:
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn  # noqa: PLC0415

        self.console = console
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=None),
            TaskProgressColumn(),
            TextColumn("{task.fields[detail]}"),
            console=console,
            auto_refresh=False,
            expand=True,
            redirect_stdout=False,
        )
        self._rows = self._progress.add_task("batch", total=rows, detail="")
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> BatchProgress:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.refresh()
        self._progress.stop()

    def print(self, line: str) -> None:
        """A line above the bars, which are drawn again below it: no frame is left behind in the scrollback."""
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def update(self, running: Mapping[str, UploadStatistics], finished: int, detail: str) -> None:
        """``running``: label -> statistics of each read set uploading now; ``finished`` rows are over."""
        self._progress.update(self._rows, completed=finished, detail=detail)
        for label in [label for label in self._tasks if label not in running]:
            self._progress.remove_task(self._tasks.pop(label))
        for label, stats in running.items():
            if label not in self._tasks:
                self._tasks[label] = self._progress.add_task(label, total=None, detail="")
            done = max(sum(stats.bytes_sent.values()), sum(stats.bytes_done.values()))
            total = stats.total_bytes
            parts_total = stats.total_parts
            parts = f"{sum(stats.parts_done.values())}/{parts_total if parts_total is not None else '?'} parts"
            self._progress.update(
                self._tasks[label],
                completed=done,
                total=total,
                detail=f"{done / 1e6:.1f}/{(total or 0) / 1e6:.1f} MB  {parts}  {stats.state}",
            )
        self._progress.refresh()
