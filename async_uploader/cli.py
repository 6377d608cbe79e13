"""The ``async-uploader`` command line: argv in, exit code out; the library does the work.

Exit codes: 0 done; 1 another failure; 2 bad usage or input (including wrong credentials); 75 interrupted and
resumable (run the same command again). Every error is one line on stderr, ``async-uploader: error: ...``; a
traceback only with --debug.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import shlex
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, NoReturn, TypeVar
from urllib.parse import urlsplit

from .config import (
    MAX_PART_SIZE,
    FileType,
    RateLimits,
    ReadSet,
    ServiceConfig,
    Source,
    UploadConfig,
    check_store_id,
    parse_size,
)
from .errors import (
    AccessDeniedError,
    ConfigError,
    CredentialsError,
    ResourceNotFoundError,
    SourceError,
    TransportError,
    UploaderError,
    UploadInterruptedError,
    UsageError,
)

if TYPE_CHECKING:
    from .batch import BatchSummary, ManifestRow, RowOutcome
    from .engine import Uploader, UploadHandle, UploadResult

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "exit_code_for", "main"]

PROG = "async-uploader"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: try again later; the same command resumes
STOP_GRACE = 10.0
"""Seconds parts in flight get to finish after the first SIGINT/SIGTERM."""

log = logging.getLogger("async_uploader")
T = TypeVar("T")

EXIT_CODES_HELP = """\
exit codes:
  0   done (upload: the read set id is the last line of stdout)
  1   another failure (service error, network, retries exhausted, a batch row failed)
  2   bad usage or input: arguments, sources, manifest, checkpoint mismatch, wrong credentials
  75  interrupted (SIGINT/SIGTERM) but resumable: run the same command again

environment:
  AWS_REGION, AWS_PROFILE and the rest of botocore's credential chain are respected.
  ASYNC_UPLOADER_HOME moves the checkpoint folder (default ~/.cache/async-uploader).
"""


def _version() -> str:
    from . import __version__

    return str(__version__)


# -- argument parsing ----------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{PROG}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_USAGE)


def _store_id(text: str) -> str:
    try:
        return check_store_id(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _part_size(text: str) -> int:
    try:
        size = parse_size(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if size < 1:
        raise argparse.ArgumentTypeError("part size must be at least 1 byte")
    if size > MAX_PART_SIZE:
        raise argparse.ArgumentTypeError(
            f"part size {text} is over 100 MiB ({MAX_PART_SIZE} bytes), the largest part the service accepts"
        )
    return size


def _memory(text: str) -> int:
    try:
        return parse_size(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def _rate(text: str) -> float | None:
    if text.strip().lower() in ("none", "unlimited", "off"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of parts per second, or 'none'") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("max rate must be a positive number of parts per second, or 'none'")
    return value


def _tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"tag {text!r} is not KEY=VALUE")
    return key, value


def _file_type(text: str) -> FileType:
    try:
        return FileType.parse(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_service_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("service")
    group.add_argument(
        "--endpoint-url",
        metavar="URL",
        help="send every request to URL (a local store, e.g. http://127.0.0.1:8080) instead of AWS",
    )
    group.add_argument("--region", metavar="R", help="AWS region (default: AWS_REGION or the profile's region)")
    group.add_argument("--profile", metavar="P", help="AWS profile for credentials (default: AWS_PROFILE)")
    group.add_argument("--debug", action="store_true", help="log requests and retries; tracebacks on errors")


def _add_transfer_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("transfer")
    group.add_argument(
        "--part-size",
        type=_part_size,
        metavar="SIZE",
        help="bytes per part, e.g. 64MiB (default 100MiB, the service's maximum; see README)",
    )
    group.add_argument(
        "--max-concurrency", type=_positive_int, default=32, metavar="N", help="requests in flight (default 32)"
    )
    group.add_argument(
        "--max-rate",
        type=_rate,
        default=argparse.SUPPRESS,
        metavar="RATE",
        help="UploadReadSetPart starts per second, or 'none' (default: the service quota, 10/s; "
        "unlimited when --endpoint-url is a loopback address, i.e. a local store)",
    )
    group.add_argument(
        "--memory-budget",
        type=_memory,
        metavar="SIZE",
        help="memory for buffering parts of a stream such as stdin (default 1GiB)",
    )
    group.add_argument("--restart", action="store_true", help="ignore any checkpoint and start a new upload")
    failure = group.add_mutually_exclusive_group()
    failure.add_argument(
        "--keep-on-failure",
        dest="keep_on_failure",
        action="store_const",
        const=True,
        default=None,
        help="leave the upload open on a fatal error (default when a checkpoint exists)",
    )
    failure.add_argument(
        "--abort-on-failure",
        dest="keep_on_failure",
        action="store_const",
        const=False,
        help="abort the upload on a fatal error (default without a checkpoint)",
    )


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--json", action="store_true", help="print the result as one JSON object")
    group.add_argument("--no-progress", action="store_true", help="no progress bar (shown only on a terminal)")
    group.add_argument(
        "--events", action="store_true", help="write JSON lines to stderr: progress each second, parts, retries"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Fast, resumable uploads of sequencing read sets into AWS HealthOmics sequence stores.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    upload = commands.add_parser(
        "upload",
        help="upload one read set (one source, or two for paired FASTQ)",
        description="Upload one read set. SOURCE '-' reads stdin. Prints the read set id as the last line of "
        "stdout. Interrupted uploads resume when the same command is run again (a checkpoint is kept per "
        "upload).",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    upload.add_argument("source1", metavar="SOURCE1", help="the file to upload, or '-' for stdin")
    upload.add_argument("source2", metavar="SOURCE2", nargs="?", help="the mate file of paired FASTQ")
    meta = upload.add_argument_group("read set")
    meta.add_argument("--store-id", required=True, type=_store_id, metavar="ID", help="sequence store id")
    meta.add_argument("--file-type", required=True, type=_file_type, metavar="{FASTQ,BAM,CRAM,UBAM}")
    meta.add_argument("--subject-id", required=True, metavar="S")
    meta.add_argument("--sample-id", required=True, metavar="X")
    meta.add_argument("--name", required=True, metavar="N", help="read set name")
    meta.add_argument("--reference-arn", metavar="ARN", help="reference (required for BAM and CRAM)")
    meta.add_argument("--generated-from", metavar="G")
    meta.add_argument("--description", metavar="D")
    meta.add_argument("--tag", type=_tag, action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    _add_transfer_options(upload)
    checkpoint = upload.add_argument_group("checkpoint")
    checkpoint.add_argument(
        "--checkpoint", type=Path, metavar="PATH", help="checkpoint file (default: one per store and sources)"
    )
    checkpoint.add_argument("--no-checkpoint", action="store_true", help="keep no checkpoint (cannot resume)")
    _add_output_options(upload)
    _add_service_options(upload)

    batch = commands.add_parser(
        "batch",
        help="upload every read set listed in a CSV or TSV manifest",
        description="Upload the read sets of a manifest, several at once under one rate limiter and connection "
        "pool. Columns: source1, source2, sourceFileType, subjectId, sampleId, name, referenceArn, "
        "generatedFrom, description, tags. Prints a JSON line per row and a summary; rows already done are "
        "skipped when the batch is run again.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    batch.add_argument("manifest", type=Path, metavar="MANIFEST")
    batch.add_argument("--store-id", required=True, type=_store_id, metavar="ID", help="sequence store id")
    batch.add_argument(
        "--max-parallel", type=_positive_int, default=4, metavar="N", help="read sets at once (default 4)"
    )
    batch.add_argument(
        "--checkpoint-dir",
        type=Path,
        metavar="DIR",
        help="checkpoints and the record of rows done (default: under ~/.cache/async-uploader/batches)",
    )
    batch.add_argument("--no-checkpoint", action="store_true", help="keep no checkpoints (rows cannot resume)")
    batch.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="run each row as a task on a Dask cluster: tcp://HOST:8786, or local:N for a local cluster of N "
        "workers (needs async-uploader[dask]; --checkpoint-dir must be on storage every worker sees); the "
        "rate limits are shared by every worker through the scheduler",
    )
    _add_transfer_options(batch)
    _add_output_options(batch)
    _add_service_options(batch)

    serve = commands.add_parser(
        "serve",
        help="run the local sequence store (prints its URL)",
        description="Run a local HealthOmics sequence store speaking the multipart upload API.",
    )
    from .emulator import cli as emulator_cli

    emulator_cli.add_arguments(serve)

    uploads = commands.add_parser("uploads", help="list a store's in-progress uploads")
    uploads.add_argument("--store-id", required=True, type=_store_id, metavar="ID")
    uploads.add_argument("--checkpoint-dir", type=Path, metavar="DIR", help="where to look for checkpoints")
    uploads.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_service_options(uploads)

    parts = commands.add_parser("parts", help="list the parts of an in-progress upload")
    parts.add_argument("--store-id", required=True, type=_store_id, metavar="ID")
    parts.add_argument("--upload-id", required=True, type=_store_id, metavar="ID")
    parts.add_argument("--source", type=Source, choices=list(Source), help="one source only")
    parts.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_service_options(parts)

    abort = commands.add_parser("abort", help="abort an in-progress upload and retire its checkpoint")
    abort.add_argument("--store-id", required=True, type=_store_id, metavar="ID")
    abort.add_argument("--upload-id", required=True, type=_store_id, metavar="ID")
    abort.add_argument("--checkpoint-dir", type=Path, metavar="DIR", help="where to look for checkpoints")
    _add_service_options(abort)
    return parser


# -- from arguments to settings --------------------------------------------------------------------------------


def is_loopback(url: str | None) -> bool:
    """True when ``url`` names this machine (a local store)."""
    if not url:
        return False
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def service_config(args: argparse.Namespace) -> ServiceConfig:
    return ServiceConfig(region=args.region, endpoint_url=args.endpoint_url, profile=args.profile)


def rate_limits(args: argparse.Namespace) -> RateLimits:
    """Service quotas by default; unlimited against a loopback endpoint; --max-rate sets the part rate."""
    local = is_loopback(args.endpoint_url)
    base = RateLimits.unlimited() if local else RateLimits()
    if hasattr(args, "max_rate"):
        return RateLimits(parts=args.max_rate, control=base.control, listings=base.listings)
    return base


def upload_config(args: argparse.Namespace) -> UploadConfig:
    extra: dict[str, Any] = {}
    if args.memory_budget is not None:
        extra["memory_budget"] = args.memory_budget
    return UploadConfig(
        part_size=args.part_size, max_concurrency=args.max_concurrency, rates=rate_limits(args), **extra
    )


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


async def preflight(service: ServiceConfig, region: str) -> None:
    """Fail in seconds, not after minutes of retries, when the endpoint accepts no connection at all."""
    if service.endpoint_url:
        parts = urlsplit(service.endpoint_url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        where = service.endpoint_url
    else:
        host, port = f"control-storage-omics.{region}.amazonaws.com", 443
        where = f"https://{host}"
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), timeout=min(service.connect_timeout, 10.0)
        )
    except (OSError, TimeoutError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or "timed out"
        hint = "check --endpoint-url and that the store is running" if service.endpoint_url else "check --region"
        raise TransportError(f"cannot connect to {where}: {reason}; {hint}") from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


# -- errors and exit codes --------------------------------------------------------------------------------------


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, UploadInterruptedError):
        return EXIT_INTERRUPTED
    if isinstance(exc, UsageError | AccessDeniedError):
        return EXIT_USAGE
    return EXIT_FAILURE


def describe_error(exc: BaseException) -> str:
    """One line naming what went wrong and what to fix."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, AccessDeniedError):
        return f"{text}; check the AWS credentials (AWS_PROFILE, --profile, environment) and permissions"
    if isinstance(exc, CredentialsError):
        return f"{text}; configure credentials (aws configure, AWS_PROFILE or AWS_ACCESS_KEY_ID)"
    if isinstance(exc, ResourceNotFoundError):
        return f"{text}; check --store-id (and --upload-id)"
    cause = exc.__cause__
    if cause is not None and not isinstance(exc, UsageError) and str(cause) and str(cause) not in text:
        text = f"{text}: {' '.join(str(cause).split())}"
    if isinstance(exc, UploaderError):
        return text
    return f"unexpected {type(exc).__name__}: {text} (run with --debug for details)"


def _report(exc: BaseException, debug: bool) -> int:
    if debug:
        log.error("failed", exc_info=exc)
    sys.stderr.write(f"{PROG}: error: {describe_error(exc)}\n")
    sys.stderr.flush()
    return exit_code_for(exc)


def resume_command(argv: Sequence[str]) -> str:
    """The command line that resumes this upload: the same arguments, without --restart."""
    program = sys.argv[0] if sys.argv and sys.argv[0] else PROG
    if program.endswith("__main__.py") or program == "-m" or program.endswith(".py"):
        prefix = [sys.executable, "-m", "async_uploader"]
    else:
        prefix = [program]
    return shlex.join([*prefix, *(arg for arg in argv if arg != "--restart")])


# -- running an upload under signals, with progress -----------------------------------------------------------


class _Signals:
    """SIGINT/SIGTERM while uploading: the first stops gracefully, the second stops at once."""

    def __init__(self, on_signal: Callable[[int, int], None]) -> None:
        self._on_signal = on_signal
        self.count = 0
        self._installed: list[int] = []

    def _handle(self, signum: int) -> None:
        self.count += 1
        self._on_signal(signum, self.count)

    def __enter__(self) -> _Signals:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, self._handle, signum)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
                continue
            self._installed.append(signum)
        return self

    def __exit__(self, *exc_info: object) -> None:
        loop = asyncio.get_running_loop()
        for signum in self._installed:
            loop.remove_signal_handler(signum)


def _progress_console(args: argparse.Namespace, stream: IO[str]) -> Any:
    """A rich console for the progress bar, or None when no bar is wanted (not a terminal, --no-progress)."""
    if args.no_progress or args.events or not stream.isatty():
        return None
    from rich.console import Console

    return Console(file=stream, stderr=stream is sys.stderr)


@contextlib.contextmanager
def _progress_logging(console: Any) -> Iterator[None]:
    """While a progress bar is drawn, route log records through its console so they print above it."""
    if console is None:
        yield
        return
    from rich.logging import RichHandler

    root = logging.getLogger()
    saved = list(root.handlers)
    handler = RichHandler(console=console, show_time=False, show_path=False)
    root.handlers = [handler]
    try:
        yield
    finally:
        root.handlers = saved


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
            uploader = await stack.enter_async_context(Uploader(config, service=service))
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


# -- batch -------------------------------------------------------------------------------------------------------


async def _cmd_batch(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .batch import (
        BatchState,
        check_row_sources,
        default_batch_dir,
        read_manifest,
        run_batch,
    )
    from .client import resolve_region
    from .engine import Uploader
    from .progress import BatchProgress, EventWriter, statistics_event

    rows = read_manifest(args.manifest)
    check_row_sources(rows, str(args.manifest))
    service = service_config(args)
    config = upload_config(args)
    directory = args.checkpoint_dir or default_batch_dir(args.manifest)
    if len({row.key(args.store_id) for row in rows}) != len(rows):
        log.warning("the manifest lists the same read set more than once; it is uploaded once")
    todo = sum(1 for row in rows if row.key(args.store_id) not in BatchState(directory).done)
    if todo:
        await preflight(service, resolve_region(service))
    handles: dict[int, UploadHandle] = {}
    labels: dict[int, str] = {}
    counts: dict[str, int] = {}
    stopping = False
    events = EventWriter(sys.stderr) if args.events else None
    console = _progress_console(args, sys.stderr)

    def emit(outcome: RowOutcome) -> None:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
        sys.stdout.write(json.dumps(outcome.as_json()) + "\n")
        sys.stdout.flush()
        if outcome.status == "failed":
            sys.stderr.write(f"{PROG}: {args.manifest} {outcome.row.where} failed: {outcome.error}\n")

    def on_signal(signum: int, count: int) -> None:
        nonlocal stopping
        stopping = True
        log.warning("%s: stopping the batch", signal.Signals(signum).name)
        for handle in list(handles.values()):
            handle.stop(STOP_GRACE if count == 1 else 0.0)

    def row_events(row: ManifestRow) -> Callable[[dict[str, object]], None]:
        def write(event: dict[str, object]) -> None:
            if events is not None and event.get("event") in ("part", "retry", "state"):
                events.write({**event, "row": row.row})

        return write

    def started(row: ManifestRow, handle: UploadHandle) -> None:
        handles[row.row] = handle
        labels[row.row] = f"row {row.row} {row.read_set.name}"[:40]

    async def tick() -> None:
        bar = BatchProgress(console, len(rows)) if console is not None else None
        next_event = time.monotonic()

        def draw() -> None:
            if bar is not None:
                running = {labels[n]: handle.statistics() for n, handle in list(handles.items())}
                detail = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
                bar.update(running, sum(counts.values()), detail)

        with bar if bar is not None else contextlib.nullcontext():
            try:
                while True:
                    await asyncio.sleep(0.2 if bar is not None else 1.0)
                    draw()
                    if events is not None and time.monotonic() >= next_event:
                        next_event = time.monotonic() + 1.0
                        for number, handle in list(handles.items()):
                            events.write({**statistics_event(handle.statistics()), "row": number})
            except asyncio.CancelledError:
                draw()  # the final state, then stop: this task is only ever cancelled by its owner

    if args.dask:
        summary = await _batch_on_dask(args, rows, config, service, directory, emit)
        return _batch_summary(summary, argv)
    async with Uploader(config, service=service) as uploader:
        ticker = asyncio.create_task(tick()) if console is not None or events is not None else None
        try:
            with _Signals(on_signal), _progress_logging(console):
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
        finally:
            if ticker is not None:
                ticker.cancel()
                await asyncio.gather(ticker, return_exceptions=True)
    return _batch_summary(summary, argv)


async def _batch_on_dask(
    args: argparse.Namespace,
    rows: Sequence[ManifestRow],
    config: UploadConfig,
    service: ServiceConfig,
    directory: Path,
    emit: Callable[[RowOutcome], None],
) -> BatchSummary:
    if args.no_checkpoint:
        raise ConfigError("--dask needs checkpoints: drop --no-checkpoint")
    try:
        from .distributed import run_batch_on_dask
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
    )


def _batch_summary(summary: BatchSummary, argv: Sequence[str]) -> int:
    sys.stdout.write(json.dumps(summary.as_json()) + "\n")
    line = f"{PROG}: batch: {summary.count('done')} done, {summary.count('skipped')} skipped, "
    line += f"{summary.count('failed')} failed"
    if summary.count("interrupted"):
        line += f", {summary.count('interrupted')} interrupted"
    sys.stderr.write(f"{line} in {summary.seconds:.1f} s\n")
    if summary.count("interrupted"):
        sys.stderr.write(f"{PROG}: to resume, run:\n  {resume_command(argv)}\n")
        return EXIT_INTERRUPTED
    return EXIT_FAILURE if summary.count("failed") else EXIT_OK


# -- uploads, parts, abort --------------------------------------------------------------------------------------


def _checkpoint_dir(args: argparse.Namespace) -> Path:
    """Where to look for checkpoints: --checkpoint-dir, else the whole uploader home (single uploads and batches)."""
    if args.checkpoint_dir is not None:
        return Path(args.checkpoint_dir)
    from .checkpoint import default_checkpoint_path

    return default_checkpoint_path("0000000000", ["."]).parent.parent


def _local_checkpoints(directory: Path, store_id: str) -> dict[str, tuple[Path, int, int]]:
    """upload id -> (checkpoint path, parts recorded, parts planned) for the checkpoints found under ``directory``."""
    from .checkpoint import Checkpoint
    from .plan import make_plan

    found: dict[str, tuple[Path, int, int]] = {}
    if not directory.is_dir():
        return found
    for path in sorted(directory.rglob("*.jsonl")):
        try:
            checkpoint = Checkpoint.load(path)
        except (UploaderError, OSError):
            continue
        try:
            header = checkpoint.header
            if header.store_id != store_id or checkpoint.upload_id is None or checkpoint.read_set_id:
                continue
            try:
                plan = make_plan({fp.source: fp.size for fp in header.sources}, header.part_size)
                planned = plan.total_parts
            except UploaderError:
                planned = 0
            found[checkpoint.upload_id] = (path, len(checkpoint.parts), planned)
        finally:
            checkpoint.close()
    return found


async def _cmd_uploads(args: argparse.Namespace) -> int:
    from .engine import Uploader

    async with Uploader(UploadConfig(rates=rate_limits(args)), service=service_config(args)) as uploader:
        listed = await uploader.client.list_uploads(args.store_id)
    local = _local_checkpoints(_checkpoint_dir(args), args.store_id)
    for upload in listed:
        known = local.get(upload.upload_id)
        if args.json:
            record: dict[str, Any] = {
                "uploadId": upload.upload_id,
                "name": upload.name,
                "sampleId": upload.sample_id,
                "subjectId": upload.subject_id,
                "sourceFileType": upload.source_file_type,
                "creationTime": upload.creation_time,
            }
            if known is not None:
                record.update(checkpoint=str(known[0]), partsRecorded=known[1], partsTotal=known[2])
            print(json.dumps(record))
        else:
            progress = "-"
            if known is not None:
                percent = f" ({known[1] * 100 // known[2]}%)" if known[2] else ""
                progress = f"{known[1]}/{known[2]} parts{percent} {known[0]}"
            print(
                f"{upload.upload_id}\t{upload.creation_time or '-'}\t{upload.source_file_type or '-'}\t"
                f"{upload.name or '-'}\t{progress}"
            )
    if not args.json:
        sys.stderr.write(f"{PROG}: {len(listed)} upload(s) in progress in store {args.store_id}\n")
    return EXIT_OK


async def _cmd_parts(args: argparse.Namespace) -> int:
    from .engine import Uploader

    sources = [args.source] if args.source else list(Source)
    async with Uploader(UploadConfig(rates=rate_limits(args)), service=service_config(args)) as uploader:
        for source in sources:
            listed = await uploader.client.list_parts(args.store_id, args.upload_id, source)
            for part in listed:
                if args.json:
                    print(
                        json.dumps(
                            {
                                "partSource": part.source.value,
                                "partNumber": part.number,
                                "partSize": part.size,
                                "checksum": part.checksum,
                                "creationTime": part.creation_time,
                            }
                        )
                    )
                else:
                    print(f"{part.source.value}\t{part.number}\t{part.size}\t{part.checksum}")
    return EXIT_OK


async def _cmd_abort(args: argparse.Namespace) -> int:
    from .engine import Uploader

    async with Uploader(UploadConfig(rates=rate_limits(args)), service=service_config(args)) as uploader:
        await uploader.client.abort_upload(args.store_id, args.upload_id)
    sys.stderr.write(f"{PROG}: aborted upload {args.upload_id}\n")
    local = _local_checkpoints(_checkpoint_dir(args), args.store_id)
    if args.upload_id in local:
        path = local[args.upload_id][0]
        path.unlink(missing_ok=True)
        sys.stderr.write(f"{PROG}: removed its checkpoint {path}\n")
    return EXIT_OK


# -- entry point ------------------------------------------------------------------------------------------------


def _configure_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format=f"{PROG}: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    if debug:
        for noisy in ("botocore", "urllib3", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.INFO)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on uvloop when it is installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script passes it to sys.exit)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    _configure_logging(debug)
    started = time.monotonic()
    try:
        if args.command == "serve":
            from .emulator import cli as emulator_cli

            return emulator_cli.run(args)
        if args.command == "upload":
            return _run(_cmd_upload(args, argv))
        if args.command == "batch":
            return _run(_cmd_batch(args, argv))
        if args.command == "uploads":
            return _run(_cmd_uploads(args))
        if args.command == "parts":
            return _run(_cmd_parts(args))
        if args.command == "abort":
            return _run(_cmd_abort(args))
        parser.error(f"unknown command {args.command!r}")
    except UploadInterruptedError as exc:
        return _interrupted(exc, debug)
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except Exception as exc:
        return _report(exc, debug)
    finally:
        log.debug("finished in %.2f s", time.monotonic() - started)
