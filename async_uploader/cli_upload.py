"""``async-uploader upload``: one read set, under signals (first graceful, second at once) and progress."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO

from .cli_common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    PROG,
    STOP_GRACE,
    _progress_console,
    _progress_logging,
    _report,
    _Signals,
    limiter_for,
    log,
    preflight,
    resume_command,
    service_config,
    upload_config,
)
from .config import FileType, ReadSet
from .errors import ConfigError, SourceError, UploaderError, UploadInterruptedError

if TYPE_CHECKING:
    from .engine import Uploader, UploadHandle, UploadResult


def _open_source(text: str, label: str) -> Path | BinaryIO:
    if text == "-":
        return sys.stdin.buffer
    from .sources import check_source_path

    path = Path(text)
    try:
        check_source_path(path)
    except SourceError as exc:
        raise SourceError(f"{label} {exc}") from None
    return path


def read_set_from_args(args: argparse.Namespace) -> ReadSet:
    """Check the sources (exist, files, not empty, readable) and the metadata; no request is made."""
    if args.source2 is not None and args.file_type is not FileType.FASTQ:
        raise ConfigError(f"SOURCE2 is only allowed for paired FASTQ, not {args.file_type.value}")
    if args.source1 == "-" and args.source2 == "-":
        raise ConfigError("only one source can be stdin ('-')")
    source1 = _open_source(args.source1, "SOURCE1")
    source2 = _open_source(args.source2, "SOURCE2") if args.source2 is not None else None
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


async def run_upload(
    args: argparse.Namespace,
    argv: Sequence[str],
    *,
    stderr: IO[str] | None = None,
    uploader: Uploader | None = None,
) -> UploadResult:
    """The ``upload`` command up to its result; raises on failure. ``uploader`` lets a caller share one."""
    from .engine import Uploader
    from .progress import EventWriter, Monitor, ProgressBar

    stderr = stderr or sys.stderr
    read_set = read_set_from_args(args)
    if args.no_checkpoint and args.checkpoint is not None:
        raise ConfigError("--checkpoint and --no-checkpoint contradict each other")
    checkpoint: Path | bool | None = False if args.no_checkpoint else args.checkpoint
    service = service_config(args)
    config = upload_config(args)
    if uploader is None:
        from .client import resolve_region

        await preflight(service, resolve_region(service))
    events = EventWriter(stderr) if args.events else None
    console = _progress_console(args, stderr)
    bar = ProgressBar(console) if console is not None else None

    def on_event(event: dict[str, object]) -> None:
        if event.get("event") == "retry":
            log.info(
                "retrying %s %s#%s after %s (attempt %s)",
                event.get("operation"),
                event.get("source"),
                event.get("partNumber"),
                event.get("error"),
                event.get("attempt"),
            )
        if events is not None and event.get("event") in ("part", "retry", "state"):
            events.write(event)

    async with contextlib.AsyncExitStack() as stack:
        if uploader is None:
            limiter = limiter_for(args, config)
            uploader = await stack.enter_async_context(Uploader(config, service=service, limiter=limiter))
        handle = uploader.start(
            read_set,
            store_id=args.store_id,
            checkpoint=checkpoint,
            restart=args.restart,
            keep_on_failure=args.keep_on_failure,
            on_event=on_event,
        )

        def on_signal(signum: int, count: int) -> None:
            name = signal.Signals(signum).name
            if count == 1:
                log.warning("%s: stopping; parts in flight get %.0f s (again to stop now)", name, STOP_GRACE)
                handle.stop(STOP_GRACE)
            else:
                log.warning("%s: stopping now", name)
                handle.stop(0.0)

        with _Signals(on_signal), _progress_logging(console):
            try:
                async with Monitor(handle.statistics, bar=bar, events=events):
                    return await handle
            except UploadInterruptedError as exc:
                _explain_interruption(exc, handle, argv, stderr)
                if exc.checkpoint is not None:
                    raise
                why = "interrupted; without a checkpoint (a stream, or --no-checkpoint) the upload cannot resume"
                if exc.upload_id and args.keep_on_failure is not True:
                    if await _abort_unresumable(uploader, args.store_id, exc.upload_id):
                        why += "; it was aborted"
                elif exc.upload_id:
                    why += f"; remove it with: {PROG} abort --store-id {args.store_id} --upload-id {exc.upload_id}"
                raise UploaderError(why) from None


def _explain_interruption(
    exc: UploadInterruptedError, handle: UploadHandle, argv: Sequence[str], stderr: IO[str]
) -> None:
    if exc.checkpoint is None and handle.checkpoint_path is not None:
        exc.checkpoint = str(handle.checkpoint_path)
    if exc.upload_id is None:
        exc.upload_id = handle.upload_id
    if exc.checkpoint is not None:
        stderr.write(f"{PROG}: interrupted; the upload is kept open. To resume, run:\n")
        stderr.write(f"  {resume_command(argv)}\n")
        stderr.flush()


async def _abort_unresumable(uploader: Uploader, store_id: str, upload_id: str) -> bool:
    """Nothing can resume an upload without a checkpoint: abort it rather than leave it open."""
    try:
        async with asyncio.timeout(10):
            await uploader.client.abort_upload(store_id, upload_id)
    except (UploaderError, TimeoutError) as error:
        log.warning("could not abort upload %s: %s", upload_id, error)
        return False
    return True


def _interrupted(exc: UploadInterruptedError, debug: bool) -> int:
    """Exit 75: a checkpoint can resume the upload (the resume command is already on stderr)."""
    if exc.checkpoint is not None:
        return EXIT_INTERRUPTED
    _report(exc, debug)
    return EXIT_FAILURE


def _summary_line(result: UploadResult) -> str:
    total = sum(result.bytes.values())
    parts = sum(result.parts.values())
    rate = total / result.seconds / 1e6 if result.seconds > 0 else 0.0
    line = f"{PROG}: uploaded {total / 1e6:.1f} MB in {parts} parts, {result.seconds:.1f} s ({rate:.1f} MB/s)"
    if result.resumed_parts:
        line += f", {result.resumed_parts} parts kept from before"
    if result.retries:
        line += f", {result.retries} retries ({result.throttles} throttled)"
    return line


async def _cmd_upload(args: argparse.Namespace, argv: Sequence[str]) -> int:
    result = await run_upload(args, argv)
    if args.json:
        print(json.dumps(result.as_json()))
    else:
        sys.stderr.write(_summary_line(result) + "\n")
        print(result.read_set_id)
    return EXIT_OK
