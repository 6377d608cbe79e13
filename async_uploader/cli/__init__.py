"""The ``async-uploader`` command line: argv in, exit code out; the library does the work.

This module parses, dispatches and turns exceptions into exit codes; the commands live beside it:
``parser`` (every option and its help), ``common`` (exit codes, error lines, settings from arguments, signals,
progress output), ``upload``, ``batch`` and ``admin`` (uploads, parts, abort), ``progress`` (the bar and the JSON
lines) and ``demo`` (``make demo``).

Exit codes (sysexits): 0 done; 1 a permanent failure; 2 bad usage or input (including the AWS configuration,
wrong credentials or clock); 75 temporary: interrupted, or a transient failure that outlasted every retry (run the
same command again). Every error is one line on stderr, ``async-uploader: error: ...`` (a ``log`` event under
--events); a traceback only with --debug.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from ..core.errors import UploadInterruptedError
from ..emulator import cli as emulator_cli
from .admin import _cmd_abort, _cmd_parts, _cmd_uploads
from .batch import _cmd_batch
from .common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TEMPFAIL,
    EXIT_USAGE,
    PROG,
    STOP_GRACE,
    configure_logging,
    describe_error,
    exit_code_for,
    is_loopback,
    limiter_for,
    log,
    rate_limits,
    report_error,
    resume_command,
    service_config,
    upload_config,
)
from .etag import cmd_etag
from .parser import EVENTS_ARGV, build_parser
from .upload import _cmd_upload, read_set_from_args, run_upload

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TEMPFAIL",
    "EXIT_USAGE",
    "PROG",
    "STOP_GRACE",
    "build_parser",
    "describe_error",
    "exit_code_for",
    "is_loopback",
    "limiter_for",
    "main",
    "rate_limits",
    "read_set_from_args",
    "resume_command",
    "run_upload",
    "service_config",
    "upload_config",
]

T = TypeVar("T")

_new_loop: Callable[[], asyncio.AbstractEventLoop] | None
try:
    from uvloop import new_event_loop as _new_loop
except ImportError:  # the fast extra is optional
    _new_loop = None


# -- entry point ------------------------------------------------------------------------------------------------


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on uvloop when it is installed (the ``fast`` extra), else on asyncio's own loop."""
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        return runner.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script passes it to sys.exit)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    EVENTS_ARGV[:] = argv
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    events = bool(getattr(args, "events", False))
    configure_logging(args)
    if getattr(args, "no_verify_ssl", False):
        log.warning(
            "TLS certificates are not verified (--no-verify-ssl): anyone on the network path can read and change "
            "what is sent; use --ca-bundle or AWS_CA_BUNDLE instead",
            extra={"always": True},
        )
    started = time.monotonic()
    try:
        if args.command == "serve":
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
        if args.command == "etag":
            return cmd_etag(args)
        parser.error(f"unknown command {args.command!r}")
    except UploadInterruptedError as exc:
        if exc.checkpoint is None:  # nothing to resume: say what happened (with a checkpoint, stderr already has)
            report_error(exc, debug, events=events)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except Exception as exc:
        return report_error(exc, debug, events=events)
    finally:
        log.debug("finished in %.2f s", time.monotonic() - started)
