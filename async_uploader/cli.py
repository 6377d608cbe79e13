"""The ``async-uploader`` command line: argv in, exit code out; the library does the work.

This module parses, dispatches and turns exceptions into exit codes; the commands live beside it:
``cli_parser`` (every option and its help), ``cli_common`` (exit codes, error lines, settings from arguments,
signals, progress output), ``cli_upload``, ``cli_batch`` and ``cli_admin`` (uploads, parts, abort).

Exit codes: 0 done; 1 another failure; 2 bad usage or input (including wrong credentials); 75 interrupted and
resumable (run the same command again). Every error is one line on stderr, ``async-uploader: error: ...``; a
traceback only with --debug.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from . import cli_common
from .cli_admin import _cmd_abort, _cmd_parts, _cmd_uploads
from .cli_batch import _cmd_batch
from .cli_common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    STOP_GRACE,
    _report,
    describe_error,
    exit_code_for,
    is_loopback,
    limiter_for,
    log,
    preflight,
    rate_limits,
    resume_command,
    service_config,
    upload_config,
)
from .cli_parser import build_parser
from .cli_upload import _cmd_upload, _interrupted, read_set_from_args, run_upload
from .errors import UploadInterruptedError

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "STOP_GRACE",
    "build_parser",
    "describe_error",
    "exit_code_for",
    "is_loopback",
    "limiter_for",
    "main",
    "preflight",
    "rate_limits",
    "read_set_from_args",
    "resume_command",
    "run_upload",
    "service_config",
    "upload_config",
]

T = TypeVar("T")
_Signals = cli_common._Signals  # found here too, as before the commands moved to their own modules


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
