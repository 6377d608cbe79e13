"""``async-uploader upload``: one read set, under signals (first graceful, second at once) and progress."""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import IO, BinaryIO

from ..core.config import FileType, ReadSet, Source
from ..core.errors import ConfigError, SourceError, UploadInterruptedError
from ..core.events import progress_event, result_event
from ..core.stats import UploadResult
from ..edge.sources import check_source_path, fingerprint_source
from ..engine.monitor import Monitor, Tick
from ..engine.uploader import Uploader, UploadHandle
from .common import (
    EXIT_OK,
    PROG,
    Signals,
    limiter_for,
    log,
    progress_console,
    progress_logging,
    resume_command,
    say,
    service_config,
    upload_config,
)
from .progress import EventWriter, ProgressBar, ProgressLines


def _open_source(text: str, label: str) -> Path | BinaryIO:
    if text == "-":
        return sys.stdin.buffer
    path = Path(text)
    try:
        check_source_path(path)
    except SourceError as exc:
        raise SourceError(f"{label} {exc}") from None
    return path


def _check_not_identical(source1: Path, source2: Path) -> None:
    """Paired FASTQ has two different mates: the same file twice (or a copy of it) is a slip of the command line."""
    if source1.samefile(source2):
        raise SourceError(f"SOURCE2 {source2} is the same file as SOURCE1 {source1}; give the mate file")
    one, two = fingerprint_source(Source.SOURCE1, source1), fingerprint_source(Source.SOURCE2, source2)
    if one.size == two.size and one.fingerprint == two.fingerprint:
        raise SourceError(
            f"SOURCE2 {source2} holds the same bytes as SOURCE1 {source1} (size and sampled content); "
            "give the mate file"
        )


def read_set_from_args(args: argparse.Namespace) -> ReadSet:
    """Check the sources (exist, files, not empty, readable) and the metadata; no request is made."""
    if args.source2 is not None and args.file_type is not FileType.FASTQ:
        raise ConfigError(f"SOURCE2 is only allowed for paired FASTQ, not {args.file_type.value}")
    if args.source1 == "-" and args.source2 == "-":
        raise ConfigError("only one source can be stdin ('-')")
    source1 = _open_source(args.source1, "SOURCE1")
    source2 = _open_source(args.source2, "SOURCE2") if args.source2 is not None else None
    if isinstance(source1, Path) and isinstance(source2, Path):
        _check_not_identical(source1, source2)
    return ReadSet(
        source1=source1,
        source2=source2,
        file_type=args.file_type,
        subject_id=args.subject_id,
        sample_id=args.sample_id,
        name=args.name,
        reference_arn=args.reference_arn,
        generated_from=args.generated_from,
        description=args.description,
        tags=dict(args.tag),
    )


def _checkpoint_from_args(args: argparse.Namespace) -> Path | bool | None:
    """--checkpoint PATH, --no-checkpoint (False) or neither (None: the default file)."""
    if args.no_checkpoint and args.checkpoint is not None:
        raise ConfigError("--checkpoint and --no-checkpoint contradict each other")
    return False if args.no_checkpoint else args.checkpoint


def _event_handler(
    events: EventWriter | None, lines: ProgressLines | None = None
) -> Callable[[dict[str, object]], None]:
    """The upload's ``on_event``: retries logged (seen with -v), parts, retries, states as --events lines, and
    phase changes among the progress lines for logs."""

    def on_event(event: dict[str, object]) -> None:
        if event.get("event") == "state":
            log.debug("phase %s", event.get("state"))
            if lines is not None:
                lines.phase(str(event.get("state")))
        if event.get("event") == "retry":
            part = f" {event['source']}#{event['partNumber']}" if event.get("source") else ""
            log.info(
                "retrying %s%s after %s (attempt %s)",
                event.get("operation"),
                part,
                event.get("error"),
                event.get("attempt"),
            )
        if events is not None and event.get("event") in ("part", "retry", "state"):
            events.write(event)

    return on_event


def _signal_handler(handle: UploadHandle, grace: float) -> Callable[[int, int], None]:
    """The first SIGINT/SIGTERM stops the upload with ``grace`` seconds for work in flight, a second one at once."""

    def on_signal(signum: int, count: int) -> None:
        name = signal.Signals(signum).name
        if count == 1:
            log.warning("%s: stopping; work in flight gets %.0f s (again to stop now)", name, grace)
            handle.stop(grace)
        else:
            log.warning("%s: stopping now", name)
            handle.stop(0.0)

    return on_signal


def _progress_lines(args: argparse.Namespace, stream: IO[str]) -> ProgressLines | None:
    """Plain progress lines when stderr is not a terminal (a log), unless -q, --events or an interval of 0."""
    interval = getattr(args, "progress_interval", 0.0)
    if args.events or getattr(args, "quiet", False) or not interval or stream.isatty():
        return None
    return ProgressLines(stream, interval, prog=PROG)


def _ticks(
    handle: UploadHandle, bar: ProgressBar | None, events: EventWriter | None, lines: ProgressLines | None = None
) -> list[Tick]:
    """The progress bar five times a second, a --events progress line each second, a log line per interval."""
    ticks = []
    if bar is not None:
        ticks.append(Tick(0.2, lambda: bar.update(handle.statistics())))
    if lines is not None:
        ticks.append(Tick(lines.interval, lambda: lines.update(handle.statistics())))
    if events is not None:
        ticks.append(Tick(1.0, lambda: events.write(progress_event(handle.statistics(), time.time()))))
    return ticks


async def run_upload(
    args: argparse.Namespace,
    argv: Sequence[str],
    *,
    stderr: IO[str] | None = None,
    uploader: Uploader | None = None,
) -> UploadResult:
    """The ``upload`` command up to its result; raises on failure. ``uploader`` lets a caller share one."""
    stderr = stderr or sys.stderr
    read_set = read_set_from_args(args)
    checkpoint = _checkpoint_from_args(args)
    service = service_config(args)
    config = upload_config(args)
    events = EventWriter(stderr) if args.events else None
    console = progress_console(args, stderr)
    bar = ProgressBar(console) if console is not None else None
    lines = _progress_lines(args, stderr) if bar is None else None
    async with AsyncExitStack() as stack:
        if uploader is None:
            limiter = limiter_for(args, config)
            uploader = await stack.enter_async_context(Uploader(config, service=service, limiter=limiter))
        handle = uploader.start(
            read_set,
            store_id=args.store_id,
            checkpoint=checkpoint,
            restart=args.restart,
            keep_on_failure=args.keep_on_failure,
            on_event=_event_handler(events, lines),
            receipt=getattr(args, "receipt", None),
        )
        ticks = _ticks(handle, bar, events, lines)
        if bar is not None:
            stack.enter_context(bar)
        with Signals(_signal_handler(handle, args.stop_grace)), progress_logging(console):
            try:
                async with Monitor(*ticks):
                    result = await handle
            except UploadInterruptedError as exc:
                if exc.checkpoint is not None:
                    say(args, f"{PROG}: interrupted; the upload is kept open. To resume, run:", stderr)
                    say(args, f"  {resume_command(argv)}", stderr)
                raise
    return result


def _summary_line(result: UploadResult) -> str:
    """What took the time, phase by phase: the transfer's own rate, the store's processing, the verification."""
    total = sum(result.bytes.values())
    parts = sum(result.parts.values())
    timings = result.timings
    if result.existing:
        return f"{PROG}: {total / 1e6:.1f} MB found in the store already; {result.seconds:.1f} s in all"
    line = f"{PROG}: uploaded {total / 1e6:.1f} MB in {parts} parts"
    if timings.transferred:
        line += f": transfer {timings.transfer:.1f} s ({timings.transfer_rate / 1e6:.1f} MB/s)"
    if result.status == "ACTIVE":
        line += f", store processing {timings.store:.1f} s"
    if timings.verify >= 0.05:
        line += f", verification {timings.verify:.1f} s more"
    line += f"; {result.seconds:.1f} s in all"
    if result.plain_bytes:
        plain = sum(result.plain_bytes.values())
        sent = sum(result.bytes[s] for s in result.plain_bytes)
        line += (
            f", gzip-compressed on the fly from {plain / 1e6:.1f} MB of plain FASTQ (ratio {plain / max(sent, 1):.2f})"
        )
    if result.resumed_parts:
        line += f", {result.resumed_parts} parts kept from before"
    if result.retries:
        line += f", {result.retries} retries ({result.throttles} throttled)"
    return line


def _verification_line(result: UploadResult) -> str:
    if result.existing:
        verification = result.verification
        how = verification.line() if verification is not None else "not verified"
        return f"already in the store as read set {result.read_set_id}, nothing sent; {how}"
    if result.status != "ACTIVE":
        later = f"; or later: {PROG} verify {shlex.quote(str(result.receipt))}" if result.receipt else ""
        return (
            f"not verified yet: the store is processing read set {result.read_set_id} ({result.status}); "
            f"run the same command again to wait for it and verify it{later}"
        )
    verification = result.verification
    return verification.line() if verification is not None else "not verified: verification was switched off"


async def _cmd_upload(args: argparse.Namespace, argv: Sequence[str]) -> int:
    if args.dry_run:
        from .dryrun import dry_run  # noqa: PLC0415 (the plan and its estimate only for --dry-run)

        return dry_run(args, read_set_from_args(args))
    result = await run_upload(args, argv)
    if args.events:
        EventWriter(sys.stderr).write(result_event(result, time.time()))
    if args.json:
        print(json.dumps(result.as_json()))
    else:
        if not args.events:
            say(args, _summary_line(result))
            say(args, f"{PROG}: {_verification_line(result)}")
        print(result.read_set_id)
    return EXIT_OK
