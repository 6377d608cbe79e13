"""The ``async-uploader`` command line: argv in, exit code out; the library does the work.

This module parses, dispatches and turns exceptions into exit codes; the commands live beside it:
``parser`` (every option and its help), ``shell`` (completion scripts, the man page), ``common`` (exit codes,
error lines, settings from arguments, signals, progress output), ``upload``, ``batch``, ``admin`` (uploads, parts,
abort), ``check`` (verify, status, ls), ``etag``, ``progress`` (the bar, the lines for logs and the JSON lines) and
``demo`` (``make demo``).

Exit codes (sysexits): 0 done; 1 a permanent failure; 2 bad usage or input (including the AWS configuration,
wrong credentials or clock); 75 temporary: interrupted, or a transient failure that outlasted every retry (run the
same command again); 141 (128 + SIGPIPE), quietly, when stdout's reader went away. Every error is one line on
stderr, ``async-uploader: error: ...`` (a ``log`` event under --events); a traceback only with --debug.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from ..core.errors import UploadInterruptedError
from ..emulator import cli as emulator_cli
from .admin import _cmd_abort, _cmd_parts, _cmd_uploads
from .batch import _cmd_batch
from .check import _cmd_ls, _cmd_status, _cmd_verify
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
from .parser import EVENTS_ARGV, build_parser, check_options
from .shell import PLAIN_COMMANDS as _PLAIN_COMMANDS
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

EXIT_CLOSED_PIPE = 141
"""128 + SIGPIPE: what a shell reports for ``cat`` when the reader of its output stopped."""

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


# The commands on the event loop, by name; ``serve`` runs the store's own loop.
_ASYNC_COMMANDS: dict[str, Callable[[argparse.Namespace, list[str]], Coroutine[Any, Any, int]]] = {
    "upload": _cmd_upload,
    "batch": _cmd_batch,
    "uploads": lambda args, argv: _cmd_uploads(args),
    "parts": lambda args, argv: _cmd_parts(args),
    "abort": lambda args, argv: _cmd_abort(args),
    "verify": _cmd_verify,
    "status": _cmd_status,
    "ls": _cmd_ls,
}


def _warn_unverified_tls(args: argparse.Namespace) -> None:
    if getattr(args, "no_verify_ssl", False):
        log.warning(
            "TLS certificates are not verified (--no-verify-ssl): anyone on the network path can read and change "
            "what is sent; use --ca-bundle or AWS_CA_BUNDLE instead",
            extra={"always": True},
        )


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> int:
    if args.command == "serve":
        return emulator_cli.run(args)
    if args.command in _PLAIN_COMMANDS:
        return _PLAIN_COMMANDS[args.command](args, parser)
    if args.command == "etag":
        return cmd_etag(args)
    command = _ASYNC_COMMANDS.get(args.command)
    if command is None:
        parser.error(f"unknown command {args.command!r}")
    return _run(command(args, argv))


def _closed_pipe() -> int:
    """stdout's reader went away (``| head``): stop quietly, as ``cat`` does, with 128 + SIGPIPE."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush must not fail again
    except (OSError, ValueError):
        pass
    return EXIT_CLOSED_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script passes it to sys.exit)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    EVENTS_ARGV[:] = argv
    check_options(parser, argv)
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    events = bool(getattr(args, "events", False))
    started = time.monotonic()
    try:
        configure_logging(args)
        _warn_unverified_tls(args)
        code = _dispatch(parser, args, argv)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _closed_pipe()
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
