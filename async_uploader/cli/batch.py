"""``async-uploader batch``: every read set of a manifest, on one machine or as tasks on a Dask cluster."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import anyio

from ..core.config import ServiceConfig, UploadConfig
from ..core.errors import ConfigError, UsageError
from ..core.events import log_event, progress_event
from ..core.manifest import STATUSES, BatchSummary, ManifestError, ManifestRow, RowOutcome
from ..edge.batchstate import BatchState
from ..engine.batch import RESTART_NEEDED, check_manifest, default_batch_dir, run_batch
from ..engine.monitor import Monitor, Tick
from ..engine.uploader import Uploader, UploadHandle
from .batch_dryrun import batch_dry_run
from .common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    Signals,
    describe_error,
    limiter_for,
    log,
    progress_console,
    progress_logging,
    resume_command,
    say,
    service_config,
    upload_config,
)
from .progress import BatchProgress, EventWriter
from .report import ReportFile, outcome_table, row_line

# -- batch -------------------------------------------------------------------------------------------------------

DEFAULT_MAX_PARALLEL = 4
"""Rows sending parts at once on one machine, unless --max-parallel says otherwise (under --dask: the cluster's
threads, unless it says otherwise)."""


async def _cmd_batch(args: argparse.Namespace, argv: Sequence[str]) -> int:
    directory = args.checkpoint_dir or default_batch_dir(args.manifest)
    report = ReportFile(args.report) if args.report is not None else None
    try:
        rows = await anyio.to_thread.run_sync(_checked_rows, args, directory)
    except ManifestError as exc:
        return _refuse_manifest(args, exc)
    if report is not None:
        report.check()
    if args.dry_run:
        return batch_dry_run(args, rows, directory)
    service = service_config(args)
    config = upload_config(args)
    run = _BatchRun(args, len(rows))
    if args.dask:
        summary = await _batch_on_dask(args, rows, config, service, directory, run)
        return _batch_end(args, summary, argv, report)
    async with Uploader(config, service=service, limiter=limiter_for(args, config)) as uploader:
        with (
            run.drawing() if run.bar is not None else contextlib.nullcontext(),
            Signals(run.on_signal),
            progress_logging(run.console),
        ):
            ticks = [Tick(0.2, run.draw)] if run.bar is not None else []
            ticks += [Tick(1.0, run.report)] if run.events is not None else []
            async with Monitor(*ticks):
                summary = await run_batch(
                    uploader,
                    rows,
                    store_id=args.store_id,
                    directory=directory,
                    max_parallel=args.max_parallel or DEFAULT_MAX_PARALLEL,
                    emit=run.emit,
                    restart=args.restart,
                    keep_on_failure=args.keep_on_failure,
                    use_checkpoints=not args.no_checkpoint,
                    on_start=run.started,
                    on_finish=lambda row: run.handles.__delitem__(row.row),
                    on_event=run.row_events,
                    stopping=lambda: run.stopping,
                    format_error=describe_error,
                    note=run.note,
                    name=str(args.manifest),
                )
                run.draw()  # the last frame shows no row still running
    return _batch_end(args, summary, argv, report)


def _checked_rows(args: argparse.Namespace, directory: Path) -> list[ManifestRow]:
    """Every row of the manifest, each checked (fields, files, file types, rows that clash) before anything is
    sent; the rows recorded done in ``directory`` need not have their files any more. Blocking."""
    recorded = BatchState(directory).done
    return check_manifest(args.manifest, store_id=args.store_id, recorded=recorded)


def _refuse_manifest(args: argparse.Namespace, exc: ManifestError) -> int:
    """A manifest with bad rows: every one named, a line each (one row: the one error line), exit 2."""
    lines = exc.lines()
    if len(lines) == 1:
        raise exc
    if args.events:
        writer = EventWriter(sys.stderr)
        for line in lines:
            writer.write(log_event("error", line.strip(), time.time()))
        return EXIT_USAGE
    sys.stderr.write(f"{PROG}: error: {lines[0]}\n" + "".join(f"{line}\n" for line in lines[1:]))
    sys.stderr.flush()
    return EXIT_USAGE


def _batch_end(args: argparse.Namespace, summary: BatchSummary, argv: Sequence[str], report: ReportFile | None) -> int:
    """The table (for people: not with --json), the summary, the report file; the exit code."""
    if not args.json:
        sys.stdout.write("".join(line + "\n" for line in outcome_table(summary.outcomes)))
        sys.stdout.flush()
    code = _batch_summary(args, summary, argv)
    if report is not None:
        try:
            report.write(summary.outcomes)
        except UsageError as exc:
            say(args, f"{PROG}: {exc}")
            return code if code != EXIT_OK else EXIT_FAILURE
        say(args, f"{PROG}: report: {report.path}")
    return code


class _BatchRun:
    """What the batch command shows while its rows run: a line per row, the progress bars, events, signals."""

    def __init__(self, args: argparse.Namespace, rows: int) -> None:
        self.args = args
        self.live = False
        self.handles: dict[int, UploadHandle] = {}
        self.labels: dict[int, str] = {}
        self.counts: dict[str, int] = {}
        self.stopping = False
        self.stopped = anyio.Event()  # set with ``stopping``: what waits for it ends at once
        self.events = EventWriter(sys.stderr) if args.events else None
        self.console = progress_console(args, sys.stderr)
        self.bar = BatchProgress(self.console, rows) if self.console is not None else None

    @contextlib.contextmanager
    def drawing(self) -> Iterator[None]:
        """The bars drawn, and the lines of rows as they end printed above them meanwhile."""
        assert self.bar is not None
        with self.bar:
            self.live = True
            try:
                yield
            finally:
                self.live = False

    def emit(self, outcome: RowOutcome) -> None:
        """A row has ended: its JSON line under --json, else a short line for people."""
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        if not self.args.json:
            self.show(row_line(outcome))
            return
        sys.stdout.write(json.dumps(outcome.as_json()) + "\n")
        sys.stdout.flush()
        if outcome.status == "failed":
            say(self.args, f"{PROG}: {self.args.manifest} {outcome.row.where} failed: {outcome.error}")

    def show(self, line: str) -> None:
        """A line on stdout; through the console drawing the bars when both are this terminal, so the bars and
        the lines never share a frame."""
        if self.live and self.bar is not None and sys.stdout.isatty():
            self.bar.print(line)
            return
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def note(self, line: str) -> None:
        say(self.args, f"{PROG}: {line}")

    def on_signal(self, signum: int, count: int) -> None:
        self.stopping = True
        self.stopped.set()
        log.warning("%s: stopping the batch", signal.Signals(signum).name)
        for handle in list(self.handles.values()):
            handle.stop(self.args.stop_grace if count == 1 else 0.0)

    def row_events(self, row: ManifestRow) -> Callable[[dict[str, object]], None]:
        events = self.events

        def write(event: dict[str, object]) -> None:
            if events is not None and event.get("event") in ("part", "retry", "state"):
                events.write({**event, "row": row.row})

        return write

    def started(self, row: ManifestRow, handle: UploadHandle) -> None:
        self.handles[row.row] = handle
        self.labels[row.row] = f"row {row.row} {row.read_set.name}"[:40]

    def draw(self) -> None:
        if self.bar is not None:
            running = {self.labels[n]: handle.statistics() for n, handle in list(self.handles.items())}
            detail = ", ".join(f"{count} {status}" for status, count in sorted(self.counts.items()))
            self.bar.update(running, sum(self.counts.values()), detail)

    def report(self) -> None:
        if self.events is not None:
            for number, handle in list(self.handles.items()):
                self.events.write({**progress_event(handle.statistics(), time.time()), "row": number})


async def _batch_on_dask(
    args: argparse.Namespace,
    rows: Sequence[ManifestRow],
    config: UploadConfig,
    service: ServiceConfig,
    directory: Path,
    run: _BatchRun,
) -> BatchSummary:
    """The rows as tasks on a Dask cluster; their waits for the store here, shown and stopped as on one machine."""
    if args.no_checkpoint:
        raise ConfigError("--dask needs checkpoints: drop --no-checkpoint")
    if args.shared_budget is not None:
        raise ConfigError("--dask shares the rate budget through the scheduler: drop --shared-budget")
    try:  # the dask extra is optional: imported only for --dask
        from ..fleet.dask_batch import Waiting, run_batch_on_dask  # noqa: PLC0415
    except ImportError:
        raise UsageError("--dask needs the dask extra: pip install 'async-uploader[dask]'") from None
    waiting = Waiting(
        on_start=run.started,
        on_finish=lambda row: run.handles.__delitem__(row.row),
        stopped=run.stopped,
        format_error=describe_error,
    )
    with Signals(run.on_signal):
        async with Monitor(*([Tick(1.0, run.report)] if run.events is not None else [])):
            return await run_batch_on_dask(
                rows,
                address=args.dask,
                store_id=args.store_id,
                service=service,
                config=config,
                checkpoint_dir=directory,
                on_result=run.emit,
                restart=args.restart,
                on_progress=run.events.write if run.events is not None else None,
                note=run.note,
                name=str(args.manifest),
                max_parallel=args.max_parallel,
                waiting=waiting,
            )


def _batch_summary(args: argparse.Namespace, summary: BatchSummary, argv: Sequence[str]) -> int:
    """The summary: one line on stderr; with --json a JSON line on stdout too (counts, and which rows had each).

    Exit 75 when rows were interrupted; 1 when rows failed; 2 when the only rows that failed were refused because
    their files changed since their read set was made (as ``upload`` refuses a checkpoint in that case).
    """
    if args.json:
        sys.stdout.write(json.dumps(summary.as_json()) + "\n")
        sys.stdout.flush()
    counts = ", ".join(f"{summary.count(status)} {status}" for status in STATUSES if summary.count(status))
    say(args, f"{PROG}: batch: {counts or 'no rows'} in {summary.seconds:.1f} s")
    for status in ("failed", "interrupted"):
        if summary.count(status):
            say(args, f"{PROG}: rows {status}: {', '.join(map(str, summary.rows(status)))}")
    failed = [o for o in summary.outcomes if o.status == "failed"]
    first = {o.row.row for o in failed if o.result.get(RESTART_NEEDED)}
    refused = [o.row.row for o in failed if o.row.row in first or o.duplicate_of in first]
    if refused:
        say(args, f"{PROG}: rows whose files changed since their read set was made: {', '.join(map(str, refused))}")
        say(args, f"{PROG}: to upload them as new read sets, run again with --restart")
    if summary.count("interrupted"):
        say(args, f"{PROG}: to resume, run:")
        say(args, f"  {resume_command(argv)}")
        return EXIT_INTERRUPTED
    if summary.count("failed"):
        return EXIT_USAGE if len(refused) == summary.count("failed") else EXIT_FAILURE
    return EXIT_OK
