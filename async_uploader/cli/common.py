"""What every command shares: exit codes, error lines, settings from arguments, logging, signals, progress.

The parser imports this module, so ``--help`` and ``--version`` load it: what it needs of botocore (the AWS
configuration), anyio (a shared budget), asyncio (signals) and rich (a progress bar) is imported where it is used.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..core.config import RateLimits, ServiceConfig, UploadConfig
from ..core.errors import (
    AccessDeniedError,
    ClockSkewError,
    CredentialsError,
    ReadSetGoneError,
    ResourceNotFoundError,
    RetryExhaustedError,
    UploaderError,
    UploadInterruptedError,
    UsageError,
)
from ..core.ratelimit import Limiter
from ..core.retry import aws_retry
from .progress import EventWriter

if TYPE_CHECKING:
    from rich.console import Console

    from ..edge.awsconfig import AwsSettings

PROG = "async-uploader"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: try again later; the same command resumes
EXIT_TEMPFAIL = EXIT_INTERRUPTED
"""Transient failures after every retry exit 75 too: a pipeline retries on it."""
STOP_GRACE = 10.0
"""Seconds parts in flight get to finish after the first SIGINT/SIGTERM."""

log = logging.getLogger("async_uploader")


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


def settings_for(args: argparse.Namespace) -> AwsSettings:
    """What botocore's configuration says for this profile (read once per command)."""
    cached: AwsSettings | None = getattr(args, "aws_settings", None)
    if cached is None:
        from ..edge.awsconfig import aws_settings  # noqa: PLC0415 (botocore: only commands that call the service)

        cached = aws_settings(getattr(args, "profile", None))
        args.aws_settings = cached
    return cached


def endpoint_for(args: argparse.Namespace) -> str | None:
    """The custom endpoint: --endpoint-url, else the one botocore's configuration names."""
    return getattr(args, "endpoint_url", None) or settings_for(args).endpoint_url


def service_config(args: argparse.Namespace) -> ServiceConfig:
    return ServiceConfig(
        region=args.region,
        endpoint_url=args.endpoint_url,
        profile=args.profile,
        verify_tls=not args.no_verify_ssl,
        ca_bundle=args.ca_bundle,
        connect_timeout=args.connect_timeout,
        read_timeout=args.read_timeout,
        operation_timeout=args.operation_timeout,
    )


def rate_limits(args: argparse.Namespace) -> RateLimits:
    """Service quotas by default; unlimited against a loopback endpoint; --max-rate sets the part rate.

    With --shared-budget the defaults are the service quotas even against a loopback endpoint: a budget shared
    by processes exists to hold them to the quotas (--max-rate still sets the part rate).
    """
    local = is_loopback(endpoint_for(args)) and getattr(args, "shared_budget", None) is None
    base = RateLimits.unlimited() if local else RateLimits()
    if hasattr(args, "max_rate"):
        return RateLimits(parts=args.max_rate, control=base.control, listings=base.listings)
    return base


def upload_config(args: argparse.Namespace) -> UploadConfig:
    extra: dict[str, Any] = {}
    if args.memory_budget is not None:
        extra["memory_budget"] = args.memory_budget
    if args.verify is not None:
        extra["verify"] = args.verify
    if getattr(args, "wait_timeout", None) is not None:
        extra["active_timeout"] = args.wait_timeout
    if getattr(args, "no_wait", False):
        extra["wait_for_active"] = False
    if getattr(args, "if_exists", None) is not None:
        extra["if_exists"] = args.if_exists
    if getattr(args, "compress", "auto") == "never":
        extra["compress"] = False
    settings = settings_for(args)
    attempts = args.max_attempts if args.max_attempts is not None else settings.max_attempts
    retry = aws_retry(attempts, settings.retry_mode)
    return UploadConfig(
        part_size=args.part_size,
        max_concurrency=args.max_concurrency,
        adaptive_concurrency=not getattr(args, "fixed_concurrency", False),
        workers=getattr(args, "workers", 1),
        rates=rate_limits(args),
        retry=retry.retry,
        adaptive=retry.adaptive,
        **extra,
    )


def limiter_for(args: argparse.Namespace, config: UploadConfig) -> Limiter | None:
    """The FileBudgetLimiter of --shared-budget PATH; None (the Uploader's own limiter) without it."""
    path: Path | None = getattr(args, "shared_budget", None)
    if path is None:
        return None
    from ..fleet.filebudget import FileBudgetLimiter  # noqa: PLC0415 (anyio: only with --shared-budget)

    return FileBudgetLimiter(path, config.rates, adaptive=config.adaptive)


# -- errors and exit codes --------------------------------------------------------------------------------------


def log_event(level: str, message: str, now: float) -> dict[str, Any]:
    """``core.events.log_event``: that module (and with it the upload's state machine, for the event schema) is
    imported when the first event is written, not by ``--help``."""
    from ..core import events  # noqa: PLC0415

    return events.log_event(level, message, now)


def exit_code_for(exc: BaseException) -> int:
    """sysexits: 75 for what may work later (interrupted; retryable failures that outlasted the retries), 2 for
    bad usage or input (arguments, sources, configuration, credentials, the clock), 1 for any other failure."""
    if isinstance(exc, UploadInterruptedError | RetryExhaustedError):
        return EXIT_TEMPFAIL
    if isinstance(exc, UsageError | AccessDeniedError):
        return EXIT_USAGE
    if isinstance(exc, UploaderError) and exc.retryable:
        return EXIT_TEMPFAIL
    return EXIT_FAILURE


def describe_error(exc: BaseException) -> str:
    """One line naming what went wrong and what to fix."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, ClockSkewError):
        return f"{text} (NTP: timedatectl set-ntp true, or chronyc makestep)"
    if isinstance(exc, AccessDeniedError):
        return f"{text}; check the AWS credentials (AWS_PROFILE, --profile, environment) and permissions"
    if isinstance(exc, CredentialsError):
        return f"{text}; configure credentials (aws configure, AWS_PROFILE or AWS_ACCESS_KEY_ID)"
    if isinstance(exc, ResourceNotFoundError) and not isinstance(exc, ReadSetGoneError):
        return f"{text}; check --store-id (and --upload-id)"
    cause = exc.__cause__
    if cause is not None and not isinstance(exc, UsageError | ReadSetGoneError) and str(cause) not in text:
        text = f"{text}: {' '.join(str(cause).split())}"
    if isinstance(exc, UploaderError):
        return text
    return f"unexpected {type(exc).__name__}: {text} (run with --debug for details)"


def report_error(exc: BaseException, debug: bool, *, events: bool = False) -> int:
    """The error as one line on stderr (a ``log`` event of level error under --events); returns the exit code."""
    if debug:
        log.error("failed", exc_info=exc)
    if events:
        EventWriter(sys.stderr).write(log_event("error", describe_error(exc), time.time()))
    else:
        sys.stderr.write(f"{PROG}: error: {describe_error(exc)}\n")
        sys.stderr.flush()
    return exit_code_for(exc)


def say(args: argparse.Namespace, message: str, stream: IO[str] | None = None) -> None:
    """A line for people on stderr: a ``log`` event (info) under --events, nothing under --quiet."""
    stream = stream or sys.stderr
    if getattr(args, "events", False):
        EventWriter(stream).write(log_event("info", message, time.time()))
    elif not getattr(args, "quiet", False):
        stream.write(message + "\n")
        stream.flush()


# -- logging ---------------------------------------------------------------------------------------------------

_EVENT_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning"}


class EventLogHandler(logging.Handler):
    """Log records as ``log`` events (JSON lines), so an --events stream stays JSON throughout."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__()
        self._writer = EventWriter(stream)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message = f"{message}: {describe_error(record.exc_info[1])}"
            level = _EVENT_LEVELS.get(record.levelno, "error")
            self._writer.write(log_event(level, f"{record.name}: {message}", record.created))
        except Exception:  # a log line must never break the upload
            self.handleError(record)


def configure_logging(args: argparse.Namespace | None, stream: IO[str] | None = None) -> None:
    """Warnings and errors by default; -v adds info, --debug a line per request, each with a timestamp;
    --quiet only errors; under --events every line is a ``log`` event. Records marked ``always`` pass --quiet."""
    stream = stream or sys.stderr
    debug, verbose, quiet = (bool(getattr(args, name, False)) for name in ("debug", "verbose", "quiet"))
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING
    handler: logging.Handler
    if getattr(args, "events", False):
        handler = EventLogHandler(stream)
    else:
        handler = logging.StreamHandler(stream)
        stamp = "%(asctime)s.%(msecs)03d " if debug or verbose else ""
        handler.setFormatter(logging.Formatter(f"{stamp}{PROG}: %(levelname)s: %(message)s", "%Y-%m-%dT%H:%M:%S"))
    handler.addFilter(lambda record: record.levelno >= level or bool(getattr(record, "always", False)))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(min(level, logging.WARNING))
    log_file: Path | None = getattr(args, "log_file", None)
    if log_file is not None:
        root.handlers.append(_file_handler(log_file))
        root.setLevel(logging.DEBUG)
    if debug or log_file is not None:
        for noisy in ("botocore", "urllib3", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.INFO)


class _LogFileHandler(logging.FileHandler):
    """--log-file: every record of this package from debug up, other libraries' from info up, timestamped."""


def _file_handler(path: Path) -> logging.Handler:
    try:
        handler = _LogFileHandler(path, mode="a", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--log-file {path}: {exc.strerror or exc}") from None
    handler.setFormatter(
        logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    handler.addFilter(lambda record: record.name.startswith("async_uploader") or record.levelno >= logging.INFO)
    return handler


def resume_command(argv: Sequence[str]) -> str:
    """The command line that resumes this upload: the same arguments, without --restart."""
    program = sys.argv[0] if sys.argv and sys.argv[0] else PROG
    if program.endswith("__main__.py") or program == "-m" or program.endswith(".py"):
        prefix = [sys.executable, "-m", "async_uploader"]
    else:
        prefix = [program]
    return shlex.join([*prefix, *(arg for arg in argv if arg != "--restart")])


# -- running an upload under signals, with progress -----------------------------------------------------------


class Signals:
    """SIGINT/SIGTERM while uploading: the first stops gracefully, the second stops at once."""

    def __init__(self, on_signal: Callable[[int, int], None]) -> None:
        self._on_signal = on_signal
        self.count = 0
        self._installed: list[int] = []

    def _handle(self, signum: int) -> None:
        self.count += 1
        self._on_signal(signum, self.count)

    def __enter__(self) -> Signals:
        import asyncio  # noqa: PLC0415 (only the commands on the event loop need it)

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, self._handle, signum)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
                continue
            self._installed.append(signum)
        return self

    def __exit__(self, *exc_info: object) -> None:
        import asyncio  # noqa: PLC0415

        loop = asyncio.get_running_loop()
        for signum in self._installed:
            loop.remove_signal_handler(signum)


def progress_console(args: argparse.Namespace, stream: IO[str]) -> Console | None:
    """A rich console for the progress bar, or None when no bar is wanted (not a terminal, --no-progress)."""
    if args.no_progress or args.events or not stream.isatty():
        return None
    from rich.console import Console  # noqa: PLC0415 (rich only when a bar is drawn)

    return Console(file=stream, stderr=stream is sys.stderr)


@contextlib.contextmanager
def progress_logging(console: Console | None) -> Iterator[None]:
    """While a progress bar is drawn, route log records through its console so they print above it."""
    if console is None:
        yield
        return
    root = logging.getLogger()
    saved = list(root.handlers)
    from rich.logging import RichHandler  # noqa: PLC0415

    handler = RichHandler(console=console, show_time=False, show_path=False)
    root.handlers = [handler, *(kept for kept in saved if isinstance(kept, _LogFileHandler))]
    try:
        yield
    finally:
        root.handlers = saved
