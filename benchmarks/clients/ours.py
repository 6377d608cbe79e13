"""async_uploader's own engine: one Uploader, ``--count`` read sets started at once, no checkpoint.

Rates are lifted (RateLimits.unlimited(): a local store has no service quota) unless ``--service-quotas`` keeps the
service's defaults, as a user of the real service would have them; everything else is the package's default
unless ``--part-size``, ``--concurrency`` (``max_concurrency``) or ``--memory-budget`` say otherwise, except
end-to-end verification: off unless ``--verify``, since a store in --discard mode keeps no bytes and reports no
ETag (the verification scenario measures it against a store that keeps them). ``--uvloop`` runs the event loop on
uvloop when it is installed.

Settings that newer engines have are passed only where ``UploadConfig`` has the field: ``--fixed`` holds exactly
``--concurrency`` requests in flight (``adaptive_concurrency=False``; without the field the engine is
fixed-concurrency anyway and the flag changes nothing); ``--workers N`` sets ``workers`` (without the field, N > 1
is an error). The JSON line adds what the client can see: the event loop, the part size used (with whether the
engine reported it, it is the one planned, or it is derived from the part counts), the max concurrency, and
``adaptive`` and ``workers`` where known.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any, BinaryIO

import _common

from async_uploader import DEFAULT_PART_SIZE, FileType, RateLimits, ReadSet, ServiceConfig, UploadConfig, Uploader

# Settings that only some versions of the engine have; each is passed only where UploadConfig has the field.
ADAPTIVE_FIELD = "adaptive_concurrency"
WORKERS_FIELD = "workers"


def _has_field(name: str) -> bool:
    return name in {f.name for f in dataclasses.fields(UploadConfig)}


def _config(args: argparse.Namespace) -> tuple[UploadConfig, dict[str, Any]]:
    """The UploadConfig, and what the JSON line reports about the settings that may not exist."""
    options: dict[str, Any] = {"rates": RateLimits() if args.service_quotas else RateLimits.unlimited()}
    options["verify"] = args.verify
    reported: dict[str, Any] = {}
    if args.part_size:
        options["part_size"] = args.part_size
    if args.concurrency:
        options["max_concurrency"] = args.concurrency
    if args.memory_budget:
        options["memory_budget"] = args.memory_budget
    if args.fixed:
        # Without the field the engine holds max_concurrency requests in flight anyway: --fixed is then a no-op.
        if _has_field(ADAPTIVE_FIELD):
            options[ADAPTIVE_FIELD] = False
        reported["adaptive"] = False
    if args.workers:
        if _has_field(WORKERS_FIELD):
            options[WORKERS_FIELD] = args.workers
        elif args.workers > 1:
            raise SystemExit(f"error: --workers {args.workers}: this engine's UploadConfig has no workers setting")
        reported["workers"] = args.workers
    config = UploadConfig(**options)
    if _has_field(ADAPTIVE_FIELD):
        reported["adaptive"] = bool(getattr(config, ADAPTIVE_FIELD))
    if _has_field(WORKERS_FIELD):
        reported["workers"] = getattr(config, WORKERS_FIELD)
    return config, reported


def _part_size(args: argparse.Namespace, results: list[Any]) -> tuple[int, str]:
    """The part size the uploads used, and how it is known: reported by the engine, planned, or derived.

    "planned" is the part size asked for (or the package default) when it splits every source into exactly the
    parts the results count; otherwise "derived": the smallest part size that gives those counts.
    """
    reported = {int(size) for result in results if isinstance(size := getattr(result, "part_size", None), int)}
    if len(reported) == 1:
        return reported.pop(), "reported"
    counts = [(result.bytes[source], result.parts[source]) for result in results for source in result.parts]
    planned = args.part_size or DEFAULT_PART_SIZE
    if counts and all(parts == -(-size // planned) for size, parts in counts):
        return planned, "planned"
    return max((-(-size // parts) for size, parts in counts if parts), default=0), "derived"


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    service = ServiceConfig(region=_common.REGION, endpoint_url=args.endpoint)
    opened: list[BinaryIO] = []

    def source(path: str) -> Path | BinaryIO:
        if not args.stream:
            return Path(path)
        handle = open(path, "rb")  # noqa: SIM115 (closed below)
        opened.append(handle)
        return handle

    config, settings = _config(args)
    try:
        async with Uploader(config, service=service) as uploader:
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
    part_size, known = _part_size(args, results)
    timings = [result.timings for result in results]
    phases = {  # the slowest upload's, each phase on its own: the parts sent, Complete, the time to Complete (both
        # and what comes before them), the store's processing, the verification after ACTIVE
        "transfer_seconds": max((t.transfer for t in timings), default=0.0),
        "complete_seconds": max((t.complete for t in timings), default=0.0),
        "to_complete_seconds": max((t.total - t.store - t.verify for t in timings), default=0.0),
        "store_seconds": max((t.store for t in timings), default=0.0),
        "verify_seconds": max((t.verify for t in timings), default=0.0),
    }
    return {
        "bytes": total,
        "parts": parts,
        "seconds": seconds,
        "retries": retries,
        "throttles": throttles,
        "verified": verified,
        "part_size": part_size,
        "part_size_from": known,
        "max_concurrency": config.max_concurrency,
        **phases,
        **settings,
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
    cli.add_argument(
        "--fixed",
        action="store_true",
        help="hold exactly --concurrency requests in flight: no self-tuning (where the engine has it)",
    )
    cli.add_argument("--workers", type=int, default=0, help="worker processes of the engine (where it has them)")
    raise SystemExit(_common.main(run, cli.parse_args()))
