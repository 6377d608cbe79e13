"""async_uploader's own engine: one Uploader, ``--count`` read sets started at once, no checkpoint.

Rates are lifted (RateLimits.unlimited(): a local store has no service quota) unless ``--service-quotas`` keeps the
service's defaults, as a user of the real service would have them; everything else is the package's
default unless ``--part-size``, ``--concurrency`` or ``--memory-budget`` say otherwise, except end-to-end
verification: off unless ``--verify``, since a store in --discard mode keeps no bytes and reports no ETag (the
verification scenario measures it against a store that keeps them). ``--uvloop`` runs the event loop on uvloop
when it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any, BinaryIO

import _common

from async_uploader import FileType, RateLimits, ReadSet, ServiceConfig, UploadConfig, Uploader


def _config(args: argparse.Namespace) -> UploadConfig:
    options: dict[str, Any] = {"rates": RateLimits() if args.service_quotas else RateLimits.unlimited()}
    options["verify"] = args.verify
    if args.part_size:
        options["part_size"] = args.part_size
    if args.concurrency:
        options["max_concurrency"] = args.concurrency
    if args.memory_budget:
        options["memory_budget"] = args.memory_budget
    return UploadConfig(**options)


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    service = ServiceConfig(region=_common.REGION, endpoint_url=args.endpoint)
    opened: list[BinaryIO] = []

    def source(path: str) -> Path | BinaryIO:
        if not args.stream:
            return Path(path)
        handle = open(path, "rb")  # noqa: SIM115 (closed below)
        opened.append(handle)
        return handle

    try:
        async with Uploader(_config(args), service=service) as uploader:
            started = time.perf_counter()
            handles = []
            for index in range(args.count):
                paths = _common.sources(args)
                read_set = ReadSet(
                    source1=source(paths[0]),
                    source2=source(paths[1]) if len(paths) > 1 else None,
                    file_type=FileType.FASTQ,
                    subject_id=_common.SUBJECT,
                    sample_id=_common.SAMPLE,
                    name=_common.name(index),
                )
                handles.append(uploader.start(read_set, store_id=args.store_id, checkpoint=False))
            results = await asyncio.gather(*handles)
            seconds = time.perf_counter() - started
    finally:
        for handle in opened:
            handle.close()
    total = sum(sum(result.bytes.values()) for result in results)
    parts = sum(sum(result.parts.values()) for result in results)
    retries = sum(result.retries for result in results)
    throttles = sum(result.throttles for result in results)
    verified = sum(result.verified for result in results)
    return {
        "bytes": total,
        "parts": parts,
        "seconds": seconds,
        "retries": retries,
        "throttles": throttles,
        "verified": verified,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return {**uvloop.run(_main(args)), "loop": "uvloop"}
    return {**asyncio.run(_main(args)), "loop": "asyncio"}


if __name__ == "__main__":
    cli = _common.parser(__doc__ or "")
    cli.add_argument("--memory-budget", type=int, default=0, help="bytes for stream part buffers; 0 = default")
    cli.add_argument("--uvloop", action="store_true")
    cli.add_argument(
        "--verify", action="store_true", help="verify each read set against its ETag (the store must keep bytes)"
    )
    cli.add_argument(
        "--service-quotas", action="store_true", help="keep the service's default rate limits (10 parts/s, ...)"
    )
    raise SystemExit(_common.main(run, cli.parse_args()))
