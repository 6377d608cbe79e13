"""The argument parser of ``async-uploader``: every command, option, help text and argument type.

It imports only the core's checks: ``--help`` and ``--version`` load neither the engine (aiohttp, botocore, anyio),
nor rich, nor the local store; the store's options (``serve``) are read only when that command is parsed or shown.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from ..core.config import MAX_PART_SIZE, FileType, Source, check_store_id, parse_duration, parse_size
from ..core.errors import ConfigError
from ..core.fastq import FAMILIES
from ..core.fields import check_field
from .common import EXIT_USAGE, PROG, STOP_GRACE, log_event

EXIT_CODES_HELP = """\
exit codes (sysexits):
  0   done (upload: the read set id is the last line of stdout)
  1   a permanent failure: the service refused (validation, quota, not found), an untrusted TLS
      certificate, a proxy refusing, an answer past its size cap, the read set failed its checks,
      a batch row failed
  2   bad usage or input: arguments, sources, manifest, checkpoint mismatch, AWS configuration
      (an endpoint URL of the wrong scheme among it), wrong credentials or clock
  75  temporary (EX_TEMPFAIL), run the same command again later: interrupted (SIGINT/SIGTERM), or
      network, proxy, timeouts, throttling or 5xx still failing after every retry
  141 stdout's reader went away (| head): stopped quietly, as cat does

environment (as botocore and the AWS CLI read them; README "Where users are"):
  AWS_PROFILE, AWS_REGION/AWS_DEFAULT_REGION, the credential chain (incl. credential_process, SSO)
  AWS_ENDPOINT_URL_OMICS, AWS_ENDPOINT_URL, a profile's endpoint_url or services section
  AWS_CA_BUNDLE or a profile's ca_bundle; HTTPS_PROXY, HTTP_PROXY, NO_PROXY (user:pass@ allowed)
  AWS_MAX_ATTEMPTS, AWS_RETRY_MODE or the profile's max_attempts, retry_mode
  ASYNC_UPLOADER_HOME moves the checkpoint folder (default ~/.cache/async-uploader).
"""


# -- argument parsing ----------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit code 2 (a ``log`` event when the command
    line asks for --events, so that stream stays JSON even when the arguments are wrong)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # --end is not --endpoint-url: a prefix is an unknown option
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        line = f"{message} (see '{self.prog} --help')"
        if "--events" in sys.argv[1:] or "--events" in EVENTS_ARGV:
            sys.stderr.write(json.dumps(log_event("error", line, time.time()), separators=(",", ":")) + "\n")
        else:
            sys.stderr.write(f"{PROG}: error: {line}\n")
        raise SystemExit(EXIT_USAGE)


EVENTS_ARGV: list[str] = []
"""The argv being parsed, when it was given to ``main`` rather than taken from sys.argv."""


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    return [option for action in parser._actions for option in action.option_strings]


def check_options(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Refuse the first unknown ``--option`` by name, with the nearest known one, before any other complaint
    (argparse would first say that a required option is missing, and never name the typo)."""
    known = _option_strings(parser)
    commands = _subparsers(parser)
    command: argparse.ArgumentParser | None = None
    for arg in argv:
        if arg == "--":
            return
        if command is None and arg in commands:
            command = commands[arg]
            known = known + _option_strings(command)
            continue
        if not arg.startswith("--"):
            continue
        name = arg.split("=", 1)[0]
        if name not in known:
            longer = [option for option in known if option.startswith(name) and len(name) > 2]
            import difflib  # noqa: PLC0415 (only to name the nearest option of a typo)

            near = longer[:1] or difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"; did you mean {near[0]}?" if near else ""
            (command or parser).error(f"unknown option {name}{hint}")


def _store_id(text: str) -> str:
    try:
        return check_store_id(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _upload_id(text: str) -> str:
    try:
        return check_field("uploadId", text)
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


def _workers(text: str) -> int:
    value = _positive_int(text)
    if value > 64:
        raise argparse.ArgumentTypeError(f"{text} is more than 64")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds of 0 or more")
    return value


def _duration(text: str) -> float:
    """A duration: seconds (``90``, ``1.5``) or with a unit (``30s``, ``2m``, ``1h``); 0 is allowed."""
    try:
        return parse_duration(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("the timeout must be more than 0 seconds")
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
    _add_timeout_options(group)
    group.add_argument(
        "--ca-bundle",
        metavar="PEM",
        help="trust the CAs in this PEM file instead of the system's (default: AWS_CA_BUNDLE, the profile's "
        "ca_bundle): a private CA, or a proxy that inspects TLS",
    )
    group.add_argument(
        "--no-verify-ssl",
        action="store_true",
        help="do not verify TLS certificates (testing only; a warning is printed)",
    )
    group.add_argument(
        "--max-attempts",
        type=_positive_int,
        metavar="N",
        help="tries per request, the first included (default: AWS_MAX_ATTEMPTS, the profile's max_attempts, else 10)",
    )
    _add_verbosity_options(group)
    _add_log_file_option(group)


def _add_log_file_option(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--log-file",
        type=Path,
        metavar="PATH",
        help="append timestamped lines at debug level to PATH (a line per request, retries, phases), whatever "
        "-q/-v and the terminal; never a credential",
    )


def _add_timeout_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--connect-timeout", type=_positive_seconds, default=10.0, metavar="S", help="seconds to connect (default 10)"
    )
    group.add_argument(
        "--read-timeout",
        type=_positive_seconds,
        default=30.0,
        metavar="S",
        help="an attempt fails when no bytes move, either way, for S seconds (default 30); a slow link never "
        "cuts a large part short",
    )
    group.add_argument(
        "--operation-timeout",
        type=_positive_seconds,
        default=120.0,
        metavar="S",
        help="every request but parts (Create, Complete, Abort, listings) gives up after S seconds, retries "
        "included (default 120)",
    )


def _add_verbosity_options(group: argparse._ArgumentGroup) -> None:
    verbosity = group.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v", "--verbose", action="store_true", help="log what happens (retries, refreshes), with timestamps"
    )
    verbosity.add_argument(
        "-q", "--quiet", action="store_true", help="print only the result and errors: no summary, no warnings"
    )
    verbosity.add_argument(
        "--debug",
        action="store_true",
        help="one timestamped line per request (method, operation, status, bytes, seconds, attempt; never a "
        "credential) and every retry; tracebacks on errors",
    )


def _add_transfer_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("transfer")
    _add_concurrency_options(group)
    _add_rate_options(group)
    _add_verify_options(group)
    _add_wait_options(group)
    _add_compress_option(group)
    group.add_argument(
        "--memory-budget",
        type=_memory,
        metavar="SIZE",
        help="memory for buffering parts of a stream such as stdin (default 1GiB)",
    )
    group.add_argument("--restart", action="store_true", help="ignore any checkpoint and start a new upload")
    _add_stop_options(group)


def _add_concurrency_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--part-size",
        type=_part_size,
        metavar="SIZE",
        help="bytes per part, e.g. 64MiB (default 100MiB, the service's maximum; see README)",
    )
    group.add_argument(
        "--max-concurrency",
        type=_positive_int,
        default=64,
        metavar="N",
        help="most part requests in flight (default 64); the engine starts at two per core (4 to 8) and keeps "
        "the number the throughput shows is best, never above N",
    )
    group.add_argument(
        "--fixed-concurrency",
        action="store_true",
        help="keep exactly --max-concurrency part requests in flight instead of tuning the number",
    )
    group.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="event loops sending part bodies, each in its own thread with its own connections (default 1: more "
        "help only where the CPU, not the network, limits the upload and there are cores to spare)",
    )


def _add_rate_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--max-rate",
        type=_rate,
        default=argparse.SUPPRESS,
        metavar="RATE",
        help="UploadReadSetPart starts per second, or 'none' (default: the service quota, 10/s; "
        "unlimited when --endpoint-url is a loopback address, i.e. a local store, unless --shared-budget)",
    )
    group.add_argument(
        "--shared-budget",
        type=Path,
        metavar="PATH",
        help="share the account's request quotas with every process on this machine naming the same file "
        "(Snakemake jobs, Nextflow tasks, other shells): Create/Complete/Abort 1/s in all, parts 10/s, "
        "listings 5/s by default, each at 90%%; implies these quotas against a loopback endpoint too",
    )


def _wait_duration(text: str) -> float:
    value = _duration(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("the wait must be more than 0 seconds")
    return value


def _add_wait_options(group: argparse._ArgumentGroup) -> None:
    """After Complete: wait for the store to process the read set (and verify it), or return at once."""
    wait = group.add_mutually_exclusive_group()
    wait.add_argument(
        "--wait-timeout",
        type=_wait_duration,
        default=None,
        metavar="DURATION",
        help="wait at most this long for the store to make the read set ACTIVE (90, 90s, 30m, 6h; default 12h); "
        "past it exit 75, and the same command run again goes on waiting",
    )
    group.add_argument(
        "--if-exists",
        choices=("skip", "upload", "fail"),
        default=None,
        help="when no checkpoint knows the upload and the store holds a read set of these files already (same "
        "name, subject, sample, type, sizes and ETag): report it (skip, the default), upload again, or fail",
    )
    wait.add_argument(
        "--no-wait",
        action="store_true",
        help="return at Complete: the read set id, not verified yet; check it later with 'async-uploader verify'",
    )


def _add_compress_option(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--compress",
        choices=("auto", "never"),
        default="auto",
        help="auto (the default): gzip-compress a plain FASTQ source while it uploads, as the service stores FASTQ "
        "gzip-compressed only; never: refuse a plain FASTQ source instead",
    )


def _add_verify_options(group: argparse._ArgumentGroup) -> None:
    check = group.add_mutually_exclusive_group()
    check.add_argument(
        "--verify",
        dest="verify",
        action="store_const",
        const=True,
        default=None,
        help="hash each FASTQ source as the service computes its ETag, while it uploads, and compare once the read "
        "set is ACTIVE (the default; README 'End-to-end verification')",
    )
    check.add_argument(
        "--no-verify", dest="verify", action="store_const", const=False, help="do not hash the sources to verify"
    )


def _add_stop_options(group: argparse._ArgumentGroup) -> None:
    """What a signal or a fatal error does to the upload: the grace for work in flight; keep or abort."""
    group.add_argument(
        "--stop-grace",
        type=_seconds,
        default=STOP_GRACE,
        metavar="S",
        help=f"on the first SIGINT/SIGTERM, work in flight gets S seconds before it is cancelled (default "
        f"{STOP_GRACE:g}); a second signal stops at once",
    )
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


def _add_output_options(parser: argparse.ArgumentParser, *, lines: bool = False) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--json", action="store_true", help="print the result as one JSON object")
    group.add_argument("--no-progress", action="store_true", help="no progress bar (shown only on a terminal)")
    if lines:
        _add_progress_interval(group)
    group.add_argument(
        "--events",
        action="store_true",
        help="stderr becomes JSON lines only (core.events): states, parts, retries, progress each second, log "
        "lines and the result; stdout is unchanged",
    )


def _add_progress_interval(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--progress-interval",
        type=_duration,
        default=60.0,
        metavar="DURATION",
        help="when stderr is not a terminal (a log): a progress line each DURATION (default 1m; e.g. 30s, 5m; "
        "0 for none; none under -q or --events), and the phase changes after the first one",
    )


STORE_OPTION_COMMANDS = frozenset({"serve", "man", "completion"})
"""The commands that parse or show the local store's options (``serve``'s): the others never import the store."""


def command_in(argv: Sequence[str]) -> str | None:
    """The command word of ``argv`` (the first argument that is not an option), if any."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def build_parser(*, store_options: bool = True) -> argparse.ArgumentParser:
    """The whole command line. ``store_options=False`` leaves out ``serve``'s options (the local store's, read
    from it): ``main`` passes it for every command but those of ``STORE_OPTION_COMMANDS``."""
    parser = _Parser(
        prog=PROG,
        description="Fast, resumable uploads of sequencing read sets into AWS HealthOmics sequence stores.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action=_Version, nargs=0, help="print the versions that matter for a bug report, and exit"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_upload_command(commands)
    _add_batch_command(commands)
    serve = commands.add_parser(
        "serve",
        help="run the local sequence store (prints its URL, keys and an upload command)",
        description="Run a local HealthOmics sequence store speaking the multipart upload API, until Ctrl-C. It "
        "prints its URL, the keys it accepts, its store ids and an upload command to paste; a store id it does "
        "not know is answered 404 ResourceNotFoundException, as the service does.",
        epilog=_examples(f"{PROG} serve --port 8080", f"{PROG} serve --store-id 1234567890 --store-id 2222222222"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if store_options:
        from ..emulator import cli as emulator_cli  # noqa: PLC0415 (the store's own options, read from it)

        emulator_cli.add_arguments(serve)
    _add_admin_commands(commands)
    _add_check_commands(commands)
    _add_etag_command(commands)
    _add_shell_commands(commands)
    return parser


class _Version(argparse.Action):
    """--version: looked up only when asked (the libraries' metadata takes a moment to read)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> NoReturn:
        sys.stdout.write(versions() + "\n")
        parser.exit()


def versions() -> str:
    """This program's version and those of what it runs on: Python, the platform, OpenSSL and the libraries.

    Each library's version is read from its installed metadata, never by importing it.
    """
    import platform  # noqa: PLC0415 (these three only for --version)
    import ssl  # noqa: PLC0415
    from importlib import metadata  # noqa: PLC0415

    from .. import __version__  # noqa: PLC0415

    found = []
    for name in ("botocore", "aiohttp", "anyio", "uvloop", "isal", "numpy", "rich"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return (
        f"{PROG} {__version__}\n"
        f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.platform(terse=True)}\n"
        f"{ssl.OPENSSL_VERSION}\n" + ", ".join(found)
    )


def _add_etag_command(commands: argparse._SubParsersAction[_Parser]) -> None:
    etag = commands.add_parser(
        "etag",
        help="print the ETag, reads and bases the service will report for FASTQ files",
        description="Print what the service will report for each FASTQ file (gzip, BGZF or plain): its read set "
        "ETag, reads and bases, one line per file like md5sum. No request is made.",
        epilog=f"example:\n  {PROG} etag r1.fastq.gz r2.fastq.gz --family SHA256up\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    etag.add_argument("files", nargs="+", metavar="FILE", help="a FASTQ file, or '-' for stdin")
    etag.add_argument("--family", choices=list(FAMILIES), default="MD5up", help="the store's ETag family")
    etag.add_argument("--json", action="store_true", help="one JSON object per file")


def _examples(*lines: str) -> str:
    return "example" + ("s" if len(lines) > 1 else "") + ":\n" + "".join(f"  {line}\n" for line in lines)


def _add_shell_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    completion = commands.add_parser(
        "completion",
        help="print a completion script for bash, zsh or fish",
        description="Print the completion script for SHELL, made from this program's own options.",
        epilog=_examples(
            f"{PROG} completion bash > ~/.local/share/bash-completion/completions/{PROG}",
            f"{PROG} completion zsh > ~/.zfunc/_{PROG}   (with fpath+=~/.zfunc before compinit)",
            f"{PROG} completion fish > ~/.config/fish/completions/{PROG}.fish",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    completion.add_argument("shell", choices=("bash", "zsh", "fish"), metavar="SHELL", help="bash, zsh or fish")
    commands.add_parser(
        "man",
        help="print the man page (roff)",
        description="Print the man page of every command, made from this program's own options.",
        epilog=_examples(f"{PROG} man > ~/.local/share/man/man1/{PROG}.1 && man {PROG}", f"{PROG} man | man -l -"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_upload_command(commands: argparse._SubParsersAction[_Parser]) -> None:
    upload = commands.add_parser(
        "upload",
        help="upload one read set (one source, or two for paired FASTQ)",
        description="Upload one read set. SOURCE '-' reads stdin. Prints the read set id as the last line of "
        "stdout. Interrupted uploads resume when the same command is run again (a checkpoint is kept per "
        "upload).",
        epilog=_examples(
            f"{PROG} upload reads.fq.gz --store-id 1234567890 --file-type FASTQ --subject-id S1 --sample-id X1 "
            "--name run1",
            f"{PROG} upload r1.fq.gz r2.fq.gz --store-id 1234567890 --file-type FASTQ --subject-id S1 "
            "--sample-id X1 --name pair --dry-run",
        )
        + "\n"
        + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    upload.add_argument("source1", metavar="SOURCE1", help="the file to upload, or '-' for stdin")
    upload.add_argument("source2", metavar="SOURCE2", nargs="?", help="the mate file of paired FASTQ")
    _add_read_set_options(upload)
    _add_transfer_options(upload)
    upload.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (parts per source, part size, requests, time at the service's quotas) and exit: "
        "no request is made, nothing is created",
    )
    checkpoint = upload.add_argument_group("checkpoint")
    checkpoint.add_argument(
        "--checkpoint", type=Path, metavar="PATH", help="checkpoint file (default: one per store and sources)"
    )
    checkpoint.add_argument("--no-checkpoint", action="store_true", help="keep no checkpoint (cannot resume)")
    _add_receipt_option(checkpoint)
    _add_output_options(upload, lines=True)
    _add_service_options(upload)


def _add_read_set_options(upload: argparse.ArgumentParser) -> None:
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


def _add_batch_command(commands: argparse._SubParsersAction[_Parser]) -> None:
    batch = commands.add_parser(
        "batch",
        help="upload every read set listed in a CSV or TSV manifest",
        description="Upload the read sets of a manifest, several at once under one rate limiter and connection "
        "pool. Columns: source1, source2, sourceFileType, subjectId, sampleId, name, referenceArn, "
        "generatedFrom, description, tags. Every row is checked before anything is sent. Prints a line per row "
        "as it ends and a table at the end (--json: a JSON line per row and a summary); rows already done are "
        "skipped when the batch is run again.",
        epilog=_examples(f"{PROG} batch manifest.tsv --store-id 1234567890 --max-parallel 8") + "\n" + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    batch.add_argument("manifest", type=Path, metavar="MANIFEST")
    batch.add_argument("--store-id", required=True, type=_store_id, metavar="ID", help="sequence store id")
    batch.add_argument(
        "--max-parallel",
        type=_positive_int,
        default=None,
        metavar="N",
        help="read sets sending parts at once (default 4; under --dask, as many as the cluster has threads); one "
        "Complete has made waits for the store without its slot",
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
    _add_batch_report_options(batch)
    _add_transfer_options(batch)
    _add_output_options(batch)
    _add_service_options(batch)


def _add_batch_report_options(batch: argparse.ArgumentParser) -> None:
    """What a batch checks and reports: --dry-run, --report."""
    batch.add_argument(
        "--dry-run",
        action="store_true",
        help="check every row (fields, files, file types, repeats) and print the plan (rows, parts, bytes, the "
        "least time at the service's quotas); no request is made, nothing is created",
    )
    batch.add_argument(
        "--report",
        type=Path,
        metavar="PATH",
        help="write every row's outcome to PATH at the end, as CSV (.csv) or JSON Lines (.jsonl, .json): row, "
        "name, sample, subject, outcome, readSetId, verified, bytes, transferSeconds, storeSeconds, error; a "
        "rerun rewrites it (rows it skipped: skipped); never written over a file that is not such a report",
    )


def _add_admin_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    """uploads, parts and abort: the in-progress uploads of a store."""
    table = "on a terminal a table with a header and sizes for people; else tab-separated raw values"
    uploads = commands.add_parser(
        "uploads",
        help="list a store's in-progress uploads",
        description="List the multipart uploads in progress in a store (ListMultipartReadSetUploads), with how far "
        f"each got when a local checkpoint knows it; {table}.",
        epilog=_examples(f"{PROG} uploads --store-id 1234567890", f"{PROG} uploads --store-id 1234567890 --json"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    uploads.add_argument("--store-id", required=True, type=_store_id, metavar="ID", help="sequence store id")
    uploads.add_argument("--checkpoint-dir", type=Path, metavar="DIR", help="where to look for checkpoints")
    uploads.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_service_options(uploads)

    parts = commands.add_parser(
        "parts",
        help="list the parts of an in-progress upload",
        description=f"List the parts the service holds for an upload in progress (ListReadSetUploadParts); {table}.",
        epilog=_examples(f"{PROG} parts --store-id 1234567890 --upload-id 1122334455 --source SOURCE1"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parts.add_argument("--store-id", required=True, type=_store_id, metavar="ID", help="sequence store id")
    parts.add_argument("--upload-id", required=True, type=_upload_id, metavar="ID", help="the upload (see uploads)")
    parts.add_argument("--source", type=Source, choices=list(Source), help="one source only")
    parts.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_service_options(parts)

    abort = commands.add_parser(
        "abort",
        help="abort an in-progress upload and retire its checkpoint",
        description="Abort an upload in progress (AbortMultipartReadSetUpload): the service drops its parts. The "
        "local checkpoint of that upload, if one is found, is removed.",
        epilog=_examples(f"{PROG} abort --store-id 1234567890 --upload-id 1122334455"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    abort.add_argument("--store-id", required=True, type=_store_id, metavar="ID", help="sequence store id")
    abort.add_argument("--upload-id", required=True, type=_upload_id, metavar="ID", help="the upload (see uploads)")
    abort.add_argument("--checkpoint-dir", type=Path, metavar="DIR", help="where to look for checkpoints")
    abort.add_argument("--json", action="store_true", help="print what was done as one JSON object")
    _add_service_options(abort)


def _add_receipt_option(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--receipt",
        type=Path,
        metavar="PATH",
        help="write the upload's receipt here (default: $ASYNC_UPLOADER_HOME/receipts/READSETID.json); "
        "'async-uploader verify PATH' checks the read set later",
    )


def _page_size(text: str) -> int:
    value = _positive_int(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"{text} is more than 100, the largest page ListReadSets returns")
    return value


def _created_after(text: str) -> str:
    from .check import parse_created_after  # noqa: PLC0415 (the check commands' own parsing)

    return parse_created_after(text)


READ_SET_STATUSES = (
    "ARCHIVED",
    "ACTIVATING",
    "ACTIVE",
    "DELETING",
    "DELETED",
    "PROCESSING_UPLOAD",
    "UPLOAD_FAILED",
)


def _read_set_id(text: str) -> str:
    try:
        return check_field("readSetId", text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_check_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    """verify, status and ls: read sets after their upload."""
    _add_verify_command(commands)
    status = commands.add_parser(
        "status",
        help="the status, name, sizes and ETag of read sets, one line each",
        description="One line per read set: id, status, name, sizes, ETag (GetReadSetMetadata). Exit 1 when one "
        "is not in the store.",
        epilog=_examples(f"{PROG} status --store-id 1234567890 1111111111 2222222222 --json"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("read_set_ids", nargs="+", type=_read_set_id, metavar="ID", help="read set id")
    status.add_argument("--store-id", required=True, type=_store_id, metavar="S", help="sequence store id")
    status.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_service_options(status)

    ls = commands.add_parser(
        "ls",
        help="list a store's read sets (every page), filtered",
        description="The read sets of a store (ListReadSets, every page): a table on a terminal, one line of "
        "tab-separated fields each otherwise, JSON Lines with --json.",
        epilog=_examples(
            f"{PROG} ls --store-id 1234567890 --status PROCESSING_UPLOAD",
            f"{PROG} ls --store-id 1234567890 --sample-id X1 --created-after 2026-12-01 --json",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ls.add_argument("--store-id", required=True, type=_store_id, metavar="S", help="sequence store id")
    ls.add_argument("--name", metavar="N", help="only read sets of this name")
    ls.add_argument("--sample-id", metavar="X", help="only read sets of this sample")
    ls.add_argument("--subject-id", metavar="S", help="only read sets of this subject")
    ls.add_argument("--status", choices=READ_SET_STATUSES, help="only read sets in this status")
    ls.add_argument(
        "--created-after",
        type=_created_after,
        metavar="WHEN",
        help="only read sets created after WHEN (ISO-8601: 2026-12-01 or 2026-12-01T08:00:00Z; UTC unless a zone "
        "is given)",
    )
    ls.add_argument(
        "--page-size",
        type=_page_size,
        metavar="N",
        help="read sets per ListReadSets page (1-100; default the service's)",
    )
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_service_options(ls)


def _add_verify_command(commands: argparse._SubParsersAction[_Parser]) -> None:
    verify = commands.add_parser(
        "verify",
        help="check read sets against their receipts: wait for ACTIVE, compare ETags and counts",
        description="Check read sets later: wait for each to be ACTIVE, then compare the store's ETag and counts "
        "with the receipt's (a FASTQ source the receipt holds no hash of is hashed now, if its size and "
        "modification time are still the receipt's). RECEIPT may be a folder: every receipt in it. Or name the "
        "read set with --store-id and --read-set-id and its files: they are hashed now. One line per read set.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_examples(
            f"{PROG} verify ~/.cache/async-uploader/receipts/1234567890123.json",
            f"{PROG} verify BATCH_DIR --wait-timeout 6h",
            f"{PROG} verify --store-id 1234567890 --read-set-id 1234567890123 r1.fastq.gz r2.fastq.gz",
        )
        + "\nexit codes: 0 every read set equals its receipt (a BAM, CRAM or uBAM, or a stream whose hash was "
        "not kept: nothing disagrees, but the content could not be compared; the line says so); 1 a mismatch, a "
        "read set UPLOAD_FAILED or gone; 2 bad input, or a source to hash changed since the upload; 75 still "
        "processing at the end of the wait (run the same command again). Several read sets: the first of 1, 2, "
        "75 that applies.",
    )
    verify.add_argument(
        "paths", nargs="*", metavar="RECEIPT", help="a receipt, or a folder of receipts (with --read-set-id: the files)"
    )
    verify.add_argument("--store-id", type=_store_id, metavar="S", help="with --read-set-id: the sequence store id")
    verify.add_argument(
        "--read-set-id", type=_read_set_id, metavar="ID", help="check this read set against the files named"
    )
    wait = verify.add_mutually_exclusive_group()
    wait.add_argument(
        "--wait-timeout",
        type=_wait_duration,
        default=None,
        metavar="DURATION",
        help="wait at most this long in all for the read sets to be ACTIVE (90, 90s, 30m, 6h; default 12h)",
    )
    wait.add_argument("--no-wait", action="store_true", help="look once: a read set still processing exits 75")
    verify.add_argument("--json", action="store_true", help="one JSON object per read set, one per line")
    _add_service_options(verify)
