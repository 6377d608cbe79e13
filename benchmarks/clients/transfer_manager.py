"""aws-healthomics-tools' TransferManager (AWS's recommended uploader), as a user would call it.

At its defaults: TransferConfig() (10 request threads) and its fixed 100 MiB part size, on a boto3 omics client
whose connection pool (10) matches. Tuning the part size has no public knob: the module constant
``omics.transfer.read_set_upload.UPLOAD_PART_SIZE_BYTES`` is replaced, and below 5 MiB the s3transfer chunk-size
adjuster (which would raise it to 5 MiB) is given a 1-byte minimum. ``--concurrency`` sets
``max_request_concurrency`` and the client's ``max_pool_connections``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import _common
import boto3
from botocore.config import Config


def _tune_part_size(part_size: int) -> None:
    import omics.transfer.read_set_upload as rsu
    from s3transfer.utils import ChunksizeAdjuster

    rsu.UPLOAD_PART_SIZE_BYTES = part_size

    class _Adjuster(ChunksizeAdjuster):
        def __init__(self) -> None:
            super().__init__(min_size=1)

    rsu.ChunksizeAdjuster = _Adjuster


def run(args: argparse.Namespace) -> dict[str, Any]:
    from omics.transfer.config import TransferConfig
    from omics.transfer.manager import TransferManager

    if args.part_size:
        _tune_part_size(args.part_size)
    pool = max(10, args.concurrency or 10)
    client = boto3.session.Session().client(
        "omics",
        region_name=_common.REGION,
        endpoint_url=args.endpoint,
        config=Config(inject_host_prefix=False, max_pool_connections=pool),
    )
    config = TransferConfig(max_request_concurrency=args.concurrency) if args.concurrency else TransferConfig()
    paths = _common.sources(args)
    opened: list[Any] = []
    started = time.perf_counter()
    with TransferManager(client, config) as manager:
        futures = []
        for index in range(args.count):
            if args.stream:
                fileobjs: list[Any] = [open(path, "rb") for path in paths]  # noqa: SIM115
                opened += fileobjs
            else:
                fileobjs = list(paths)
            futures.append(
                manager.upload_read_set(
                    fileobjs,
                    args.store_id,
                    "FASTQ",
                    _common.name(index),
                    _common.SUBJECT,
                    _common.SAMPLE,
                    wait=False,
                )
            )
        read_sets = [future.result() for future in futures]
    seconds = time.perf_counter() - started
    for fileobj in opened:
        fileobj.close()
    import omics.transfer.read_set_upload as rsu

    total = sum(_common.source_sizes(args)) * args.count
    parts = args.count * _common.part_count(args, rsu.UPLOAD_PART_SIZE_BYTES)
    return {
        "bytes": total,
        "parts": parts,
        "seconds": seconds,
        "readSets": len(read_sets),
        "part_size": rsu.UPLOAD_PART_SIZE_BYTES,
    }


if __name__ == "__main__":
    raise SystemExit(_common.main(run, _common.parser(__doc__ or "").parse_args()))
