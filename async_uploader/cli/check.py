"""``async-uploader verify``, ``status`` and ``ls``: look at read sets after their upload (``engine.check``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path

import anyio

from ..core.config import DEFAULT_WAIT_TIMEOUT, UploadConfig
from ..core.errors import ConfigError, ResourceNotFoundError
from ..core.protocol import ReadSetMetadata
from ..core.receipt import Receipt, public_url
from ..core.retry import aws_retry
from ..edge.receipts import find_receipts, read_receipt
from ..engine.check import (
    Check,
    list_read_sets,
    look,
    read_set_json,
    receipt_for_files,
    verify_receipt,
    worst,
)
from ..engine.uploader import Uploader
from .common import EXIT_FAILURE, EXIT_OK, PROG, log, rate_limits, say, service_config, settings_for

__all__ = ["_cmd_ls", "_cmd_status", "_cmd_verify", "parse_created_after"]

CHECKS_AT_ONCE = 8
"""Read sets checked at once by one ``verify`` (their looks share the limiter all the same)."""
HASHES_AT_ONCE = 2
"""Files hashed at once by one ``verify`` (each reads its file front to back in a thread)."""


async def _open(args: argparse.Namespace, stack: AsyncExitStack) -> Uploader:
    """An Uploader for its request machinery (limiter, retries, connections), the endpoint checked reachable."""
    settings = settings_for(args)
    attempts = args.max_attempts if args.max_attempts is not None else settings.max_attempts
    retry = aws_retry(attempts, settings.retry_mode)
    config = UploadConfig(rates=rate_limits(args), retry=retry.retry, adaptive=retry.adaptive)
    uploader = await stack.enter_async_context(Uploader(config, service=service_config(args)))
    hint = "check --endpoint-url and that the store is running" if args.endpoint_url else "check --region"
    await uploader.calls.ensure_reachable(hint)
    return uploader


# -- verify ----------------------------------------------------------------------------------------------------


def _receipts(args: argparse.Namespace) -> list[tuple[Receipt, str | None]]:
    """What to verify: the receipts named (a folder: every receipt in it), or the files named with
    --read-set-id. ConfigError (exit 2) for anything that is not there or not a receipt."""
    paths = [Path(p) for p in args.paths]
    if args.read_set_id is not None:
        if args.store_id is None:
            raise ConfigError("--read-set-id needs --store-id")
        if not 1 <= len(paths) <= 2:
            raise ConfigError("with --read-set-id, name the read set's files: SOURCE1 [SOURCE2]")
        for path in paths:
            if not path.is_file():
                raise ConfigError(f"{path}: no such file")
        return [(receipt_for_files(args.store_id, args.read_set_id, paths), None)]
    if args.store_id is not None:
        raise ConfigError("--store-id goes with --read-set-id; a receipt names its own store")
    if not paths:
        raise ConfigError("name a receipt, a folder of receipts, or --store-id and --read-set-id with the files")
    found: list[tuple[Receipt, str | None]] = []
    for path in paths:
        named = find_receipts(path) if path.is_dir() else [path]
        if path.is_dir() and not named:
            raise ConfigError(f"{path}: no receipts (*.json) in this folder")
        found += [(read_receipt(p), str(p)) for p in named]
    return found


async def _cmd_verify(args: argparse.Namespace, argv: list[str]) -> int:
    receipts = _receipts(args)
    timeout = 0.0 if args.no_wait else (args.wait_timeout or DEFAULT_WAIT_TIMEOUT)
    endpoint = (public_url(args.endpoint_url) or "").rstrip("/") or None
    for receipt, where in receipts:
        written_for = (receipt.endpoint or "").rstrip("/") or None
        if written_for is not None and written_for != endpoint and where is not None:
            log.warning("%s was written for %s; checking at %s", where, receipt.endpoint, endpoint or "AWS")
    checks: list[Check] = []
    async with AsyncExitStack() as stack:
        uploader = await _open(args, stack)
        deadline = time.monotonic() + timeout
        at_once, hashing = anyio.CapacityLimiter(CHECKS_AT_ONCE), anyio.CapacityLimiter(HASHES_AT_ONCE)

        async def one(receipt: Receipt, where: str | None) -> None:
            async with at_once:
                check = await verify_receipt(uploader.calls, receipt, deadline, where=where, hashing=hashing)
            checks.append(check)
            print(json.dumps(check.as_json()) if args.json else check.line(), flush=True)

        async with anyio.create_task_group() as group:
            for receipt, where in receipts:
                group.start_soon(one, receipt, where)
    code = worst(checks)
    if len(checks) > 1:
        counts: dict[str, int] = {}
        for check in checks:
            counts[check.outcome.value] = counts.get(check.outcome.value, 0) + 1
        say(args, f"{PROG}: {len(checks)} read sets: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return code


# -- status ----------------------------------------------------------------------------------------------------


def _sizes(metadata: ReadSetMetadata) -> str:
    sizes = read_set_json(metadata).get("sizes") or {}
    return ", ".join(f"{name} {size:,} B" for name, size in sizes.items()) or "-"


def _etag(metadata: ReadSetMetadata) -> str:
    etag = metadata.etag
    if etag is None:
        return "-"
    return f"{etag.algorithm} " + " ".join(f"{s.value}={d}" for s, d in sorted(etag.sources.items()))


async def _cmd_status(args: argparse.Namespace, argv: list[str]) -> int:
    code = EXIT_OK
    async with AsyncExitStack() as stack:
        uploader = await _open(args, stack)
        for read_set_id in args.read_set_ids:
            try:
                metadata = await look(uploader.calls, args.store_id, read_set_id)
            except ResourceNotFoundError:  # ReadSetGoneError included
                code = EXIT_FAILURE
                message = f"store {args.store_id} has no read set {read_set_id}"
                if args.json:
                    print(json.dumps({"id": read_set_id, "status": None, "error": message}), flush=True)
                else:
                    print(f"{read_set_id}\tNOT_FOUND\t{message}", flush=True)
                continue
            if args.json:
                print(json.dumps(read_set_json(metadata)), flush=True)
            else:
                print(
                    f"{metadata.id}\t{metadata.status}\t{metadata.name or '-'}\t{_sizes(metadata)}\t{_etag(metadata)}",
                    flush=True,
                )
    return code


# -- ls --------------------------------------------------------------------------------------------------------


def parse_created_after(text: str) -> str:
    """An ISO-8601 date or time (UTC when it names no zone), as the filter sends it."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO-8601 date or time (2026-12-01, 2026-12-01T08:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.isoformat()


_COLUMNS = ("ID", "STATUS", "TYPE", "NAME", "SUBJECT", "SAMPLE", "CREATED")


def _row(metadata: ReadSetMetadata) -> tuple[str, ...]:
    return (
        metadata.id,
        metadata.status,
        metadata.file_type or "-",
        metadata.name or "-",
        metadata.subject_id or "-",
        metadata.sample_id or "-",
        metadata.creation_time or "-",
    )


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in [_COLUMNS, *rows]) for i in range(len(_COLUMNS))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


async def _cmd_ls(args: argparse.Namespace, argv: list[str]) -> int:
    wanted: dict[str, str] = {}
    for key, value in (
        ("name", args.name),
        ("sampleId", args.sample_id),
        ("subjectId", args.subject_id),
        ("status", args.status),
        ("createdAfter", args.created_after),
    ):
        if value is not None:
            wanted[key] = value
    table = not args.json and sys.stdout.isatty()
    rows: list[tuple[str, ...]] = []
    count = 0
    async with AsyncExitStack() as stack:
        uploader = await _open(args, stack)
        async for metadata in list_read_sets(uploader.calls, args.store_id, wanted, args.page_size):
            count += 1
            if args.json:
                print(json.dumps(read_set_json(metadata)), flush=True)
            elif table:
                rows.append(_row(metadata))
            else:
                print("\t".join(_row(metadata)), flush=True)
    if table:
        lines = _table([_COLUMNS, *rows])
        print("\n".join(lines), flush=True)
    say(args, f"{PROG}: {count} read set(s) in store {args.store_id}" + (" matching the filter" if wanted else ""))
    return EXIT_OK
