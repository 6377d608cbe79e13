"""``async-uploader batch``: every read set of a manifest, on one machine or as tasks on a Dask cluster."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..core.config import ServiceConfig, UploadConfig
from ..core.errors import ConfigError, UsageError
from ..core.events import progress_event
from ..core.manifest import STATUSES, BatchSummary, ManifestRow, RowOutcome
from ..engine.batch import RESTART_NEEDED, default_batch_dir, read_manifest, run_batch
from ..engine.monitor import Monitor, Tick
from ..engine.uploader import Uploader, UploadHandle
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

# -- batch -------------------------------------------------------------------------------------------------------


async def _cmd_batch(args: argparse.Namespace, argv: Sequence[str]) -> int:
    rows = read_manifest(args.manifest)
    service = service_config(args)
    config = upload_config(args)
    directory = args.checkpoint_dir or default_batch_dir(args.manifest)
    run = _BatchRun(args, len(rows))
    if args.dask:
        progress = run.events.write if run.events is not None else None
        summary = await _batch_on_dask(args, rows, config, service, directory, run, progress)
        return _batch_summary(args, summary, argv)
    async with Uploader(config, service=service, limiter=limiter_for(args, config)) as uploader:
        with (
            run.bar if run.bar is not None else contextlib.nullcontext(),
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
                    max_parallel=args.max_parallel,
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
    return _batch_summary(args, summary, argv)


class _BatchRun:
    """What the batch command shows while its rows run: a line per row, the progress bars, events, signals."""

    def __init__(self, args: argparse.Namespace, rows: int) -> None:
        self.args = args
        self.handles: dict[int, UploadHandle] = {}
        self.labels: dict[int, str] = {}
        self.counts: dict[str, int] = {}
        self.stopping = False
        self.events = EventWriter(sys.stderr) if args.events else None
        self.console = progress_console(args, sys.stderr)
        self.bar = BatchProgress(self.console, rows) if self.console is not None else None

    def emit(self, outcome: RowOutcome) -> None:
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        sys.stdout.write(json.dumps(outcome.as_json()) + "\n")
        sys.stdout.flush()
        if outcome.status == "failed":
            say(self.args, f"{PROG}: {self.args.manifest} {outcome.row.where} failed: {outcome.error}")

    def note(self, line: str) -> None:
        say(self.args, f"{PROG}: {line}")

    def on_signal(self, signum: int, count: int) -> None:
        self.stopping = True
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
    progress: Callable[[dict[str, object]], None] | None,
) -> BatchSummary:
    if args.no_checkpoint:
        raise ConfigError("--dask needs checkpoints: drop --no-checkpoint")
    if args.shared_budget is not None:
        raise ConfigError("--dask shares the rate budget through the scheduler: drop --shared-budget")
    try:  # the dask extra is optional: imported only for --dask
        from ..fleet.dask_batch import run_batch_on_dask  # noqa: PLC0415
    except ImportError:
        raise UsageError("--dask needs the dask extra: pip install 'async-uploader[dask]'") from None
    return await run_batch_on_dask(
        rows,
        address=args.dask,
        store_id=args.store_id,
        service=service,
        config=config,
        checkpoint_dir=directory,
        on_result=run.emit,
        restart=args.restart,
        on_progress=progress,
        note=run.note,
        name=str(args.manifest),
    )


def _batch_summary(args: argparse.Namespace, summary: BatchSummary, argv: Sequence[str]) -> int:
    """The summary: a JSON line on stdout (counts, and which rows had each outcome), one line on stderr.

    Exit 75 when rows were interrupted; 1 when rows failed; 2 when the only rows that failed were refused because
    their files changed since their read set was made (as ``upload`` refuses a checkpoint in that case).
    """
    sys.stdout.write(json.dumps(summary.as_json()) + "\n")
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
