"""The argument parser of ``async-uploader``: every command, option, help text and argument type."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import NoReturn

from .. import __version__
from ..core.config import MAX_PART_SIZE, FileType, Source, check_store_id, parse_size
from ..core.errors import ConfigError
from ..core.events import log_event
from ..core.fields import check_field
from ..emulator import cli as emulator_cli
from .common import EXIT_USAGE, PROG, STOP_GRACE

EXIT_CODES_HELP = """\
exit codes (sysexits):
  0   done (upload: the read set id is the last line of stdout)
  1   a permanent failure: the service refused (validation, quota, not found), an untrusted TLS
      certificate, a proxy refusing, the read set failed its checks, a batch row failed
  2   bad usage or input: arguments, sources, manifest, checkpoint mismatch, AWS configuration,
      wrong credentials or clock
  75  temporary (EX_TEMPFAIL), run the same command again later: interrupted (SIGINT/SIGTERM), or
      network, proxy, timeouts, throttling or 5xx still failing after every retry

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

    def error(self, message: str) -> NoReturn:
        line = f"{message} (see '{self.prog} --help')"
        if "--events" in sys.argv[1:] or "--events" in EVENTS_ARGV:
            sys.stderr.write(json.dumps(log_event("error", line, time.time()), separators=(",", ":")) + "\n")
        else:
            sys.stderr.write(f"{PROG}: error: {line}\n")
        raise SystemExit(EXIT_USAGE)


EVENTS_ARGV: list[str] = []
"""The argv being parsed, when it was given to ``main`` rather than taken from sys.argv."""


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
        help="most part requests in flight (default 64); the engine starts at 8 and keeps the number the "
        "throughput shows is best, never above N",
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


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--json", action="store_true", help="print the result as one JSON object")
    group.add_argument("--no-progress", action="store_true", help="no progress bar (shown only on a terminal)")
    group.add_argument(
        "--events",
        action="store_true",
        help="stderr becomes JSON lines only (core.events): states, parts, retries, progress each second, log "
        "lines and the result; stdout is unchanged",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Fast, resumable uploads of sequencing read sets into AWS HealthOmics sequence stores.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_upload_command(commands)
    _add_batch_command(commands)
    serve = commands.add_parser(
        "serve",
        help="run the local sequence store (prints its URL)",
        description="Run a local HealthOmics sequence store speaking the multipart upload API.",
    )
    emulator_cli.add_arguments(serve)
    _add_admin_commands(commands)
    return parser


def _add_upload_command(commands: argparse._SubParsersAction[_Parser]) -> None:
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
    _add_output_options(upload)
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


def _add_admin_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    """uploads, parts and abort: the in-progress uploads of a store."""
    uploads = commands.add_parser("uploads", help="list a store's in-progress uploads")
    uploads.add_argument("--store-id", required=True, type=_store_id, metavar="ID")
    uploads.add_argument("--checkpoint-dir", type=Path, metavar="DIR", help="where to look for checkpoints")
    uploads.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_service_options(uploads)

    parts = commands.add_parser("parts", help="list the parts of an in-progress upload")
    parts.add_argument("--store-id", required=True, type=_store_id, metavar="ID")
    parts.add_argument("--upload-id", required=True, type=_upload_id, metavar="ID")
    parts.add_argument("--source", type=Source, choices=list(Source), help="one source only")
    parts.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_service_options(parts)

    abort = commands.add_parser("abort", help="abort an in-progress upload and retire its checkpoint")
    abort.add_argument("--store-id", required=True, type=_store_id, metavar="ID")
    abort.add_argument("--upload-id", required=True, type=_upload_id, metavar="ID")
    abort.add_argument("--checkpoint-dir", type=Path, metavar="DIR", help="where to look for checkpoints")
    _add_service_options(abort)
