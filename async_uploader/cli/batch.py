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
from ..engine.batch import default_batch_dir, read_manifest, run_batch
from ..engine.monitor import Monitor, Tick
from ..engine.uploader import Uploader, UploadHandle
from .common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
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


async def _cmd_batch(args: argparse.Namespace, argv: Sequence[str]) -> int:  # noqa: C901
    rows = read_manifest(args.manifest)
    service = service_config(args)
    config = upload_config(args)
    directory = args.checkpoint_dir or default_batch_dir(args.manifest)
    handles: dict[int, UploadHandle] = {}
    labels: dict[int, str] = {}
    counts: dict[str, int] = {}
    stopping = False
    events = EventWriter(sys.stderr) if args.events else None
    console = progress_console(args, sys.stderr)

    def emit(outcome: RowOutcome) -> None:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
        sys.stdout.write(json.dumps(outcome.as_json()) + "\n")
        sys.stdout.flush()
        if outcome.status == "failed":
            say(args, f"{PROG}: {args.manifest} {outcome.row.where} failed: {outcome.error}")

    def on_signal(signum: int, count: int) -> None:
        nonlocal stopping
        stopping = True
        log.warning("%s: stopping the batch", signal.Signals(signum).name)
        for handle in list(handles.values()):
            handle.stop(args.stop_grace if count == 1 else 0.0)

    def row_events(row: ManifestRow) -> Callable[[dict[str, object]], None]:
        def write(event: dict[str, object]) -> None:
            if events is not None and event.get("event") in ("part", "retry", "state"):
                events.write({**event, "row": row.row})

        return write

    def started(row: ManifestRow, handle: UploadHandle) -> None:
        handles[row.row] = handle
        labels[row.row] = f"row {row.row} {row.read_set.name}"[:40]

    bar = BatchProgress(console, len(rows)) if console is not None else None

    def draw() -> None:
        if bar is not None:
            running = {labels[n]: handle.statistics() for n, handle in list(handles.items())}
            detail = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
            bar.update(running, sum(counts.values()), detail)

    def report() -> None:
        if events is not None:
            for number, handle in list(handles.items()):
                events.write({**progress_event(handle.statistics(), time.time()), "row": number})

    if args.dask:
        progress = events.write if events is not None else None
        summary = await _batch_on_dask(args, rows, config, service, directory, emit, progress)
        return _batch_summary(args, summary, argv)
    async with Uploader(config, service=service, limiter=limiter_for(args, config)) as uploader:
        with (
            bar if bar is not None else contextlib.nullcontext(),
            Signals(on_signal),
            progress_logging(console),
        ):
            ticks = [Tick(0.2, draw)] if bar is not None else []
            ticks += [Tick(1.0, report)] if events is not None else []
            async with Monitor(*ticks):
                summary = await run_batch(
                    uploader,
                    rows,
                    store_id=args.store_id,
                    directory=directory,
                    max_parallel=args.max_parallel,
                    emit=emit,
                    restart=args.restart,
                    keep_on_failure=args.keep_on_failure,
                    use_checkpoints=not args.no_checkpoint,
                    on_start=started,
                    on_finish=lambda row: handles.__delitem__(row.row),
                    on_event=row_events,
                    stopping=lambda: stopping,
                    format_error=describe_error,
                )
    return _batch_summary(args, summary, argv)


async def _batch_on_dask(
    args: argparse.Namespace,
    rows: Sequence[ManifestRow],
    config: UploadConfig,
    service: ServiceConfig,
    directory: Path,
    emit: Callable[[RowOutcome], None],
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
        on_result=emit,
        restart=args.restart,
        on_progress=progress,
    )


def _batch_summary(args: argparse.Namespace, summary: BatchSummary, argv: Sequence[str]) -> int:
    """The summary: a JSON line on stdout (counts, and which rows had each outcome), one line on stderr."""
    sys.stdout.write(json.dumps(summary.as_json()) + "\n")
    counts = ", ".join(f"{summary.count(status)} {status}" for status in STATUSES if summary.count(status))
    say(args, f"{PROG}: batch: {counts or 'no rows'} in {summary.seconds:.1f} s")
    for status in ("failed", "interrupted"):
        if summary.count(status):
            say(args, f"{PROG}: rows {status}: {', '.join(map(str, summary.rows(status)))}")
    if summary.count("interrupted"):
        say(args, f"{PROG}: to resume, run:")
        say(args, f"  {resume_command(argv)}")
        return EXIT_INTERRUPTED
    return EXIT_FAILURE if summary.count("failed") else EXIT_OK
