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
import contextlib
import gc
import importlib
import os
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..core.errors import UploadInterruptedError
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
from .parser import EVENTS_ARGV, STORE_OPTION_COMMANDS, build_parser, check_options, command_in

if TYPE_CHECKING:
    from .upload import read_set_from_args, run_upload

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

# Each command's module is imported when that command runs, so a command loads only what it uses: ``--help`` and
# ``--version`` neither the engine (aiohttp, botocore, anyio) nor rich, numpy, Dask or the local store.
_LAZY = {"read_set_from_args": ".upload", "run_upload": ".upload"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


# -- entry point ------------------------------------------------------------------------------------------------


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on uvloop when it is installed (the ``fast`` extra), else on asyncio's own loop."""
    import asyncio  # noqa: PLC0415 (only the commands on the event loop)

    new_loop: Callable[[], asyncio.AbstractEventLoop] | None
    try:
        from uvloop import new_event_loop as new_loop  # noqa: PLC0415
    except ImportError:  # the fast extra is optional
        new_loop = None
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(coro)


_ASYNC_COMMANDS: dict[str, tuple[str, str]] = {
    "upload": (".upload", "_cmd_upload"),
    "batch": (".batch", "_cmd_batch"),
    "uploads": (".admin", "_cmd_uploads"),
    "parts": (".admin", "_cmd_parts"),
    "abort": (".admin", "_cmd_abort"),
    "verify": (".check", "_cmd_verify"),
    "status": (".check", "_cmd_status"),
    "ls": (".check", "_cmd_ls"),
}
"""The commands on the event loop: name -> (module, function); ``serve`` runs the store's own loop."""
_TAKES_ARGV = frozenset({"upload", "batch", "verify", "status", "ls"})
"""Those whose function takes the command line too (to print the command that resumes, or to log it)."""


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Importing a command's modules allocates some 10^5 objects (modules, classes, functions) and frees almost
    none: the cyclic collector is paused meanwhile, and what is alive at the end is frozen (``gc.freeze``) so that
    no later collection walks it again. Measured: a tenth of a short upload's CPU time (benchmarks/startup.py)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _command(name: str) -> Callable[..., Any]:
    module, function = _ASYNC_COMMANDS[name]
    with _collector_paused():
        command: Callable[..., Any] = getattr(importlib.import_module(module, __name__), function)
    return command


def _warn_unverified_tls(args: argparse.Namespace) -> None:
    if getattr(args, "no_verify_ssl", False):
        log.warning(
            "TLS certificates are not verified (--no-verify-ssl): anyone on the network path can read and change "
            "what is sent; use --ca-bundle or AWS_CA_BUNDLE instead",
            extra={"always": True},
        )


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> int:
    if args.command == "serve":
        from ..emulator import cli as emulator_cli  # noqa: PLC0415 (each command imports what it runs)

        return emulator_cli.run(args)
    if args.command in ("completion", "man"):
        from .shell import PLAIN_COMMANDS  # noqa: PLC0415

        return PLAIN_COMMANDS[args.command](args, parser)
    if args.command == "etag":
        from .etag import cmd_etag  # noqa: PLC0415

        return cmd_etag(args)
    if args.command not in _ASYNC_COMMANDS:
        parser.error(f"unknown command {args.command!r}")
    command = _command(args.command)
    coro: Coroutine[Any, Any, int] = command(args, argv) if args.command in _TAKES_ARGV else command(args)
    return _run(coro)


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
    parser = build_parser(store_options=command_in(argv) in STORE_OPTION_COMMANDS)
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
