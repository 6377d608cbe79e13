"""aiobotocore with an asyncio.Semaphore: the obvious async alternative.

One task per part (all created up front, as the obvious version does), each reading its part whole from the file
in a worker thread and sending it with ``upload_read_set_part`` under a semaphore of ``--concurrency`` (default 10,
with a connection pool to match). Default part size 100 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

import _common
from aiobotocore.session import get_session
from botocore.config import Config

DEFAULT_PART_SIZE = 100 * 1024 * 1024
DEFAULT_CONCURRENCY = 10


def _read(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as handle:
        return os.pread(handle.fileno(), length, offset)


async def _upload(client: Any, args: argparse.Namespace, index: int, semaphore: asyncio.Semaphore) -> int:
    part_size = args.part_size or DEFAULT_PART_SIZE
    created = await client.create_multipart_read_set_upload(
        sequenceStoreId=args.store_id,
        sourceFileType="FASTQ",
        subjectId=_common.SUBJECT,
        sampleId=_common.SAMPLE,
        name=_common.name(index),
    )
    upload_id = created["uploadId"]

    async def part(source: str, path: str, number: int, offset: int, length: int) -> dict[str, Any]:
        async with semaphore:
            body = await asyncio.to_thread(_read, path, offset, length)
            response = await client.upload_read_set_part(
                sequenceStoreId=args.store_id,
                uploadId=upload_id,
                partSource=source,
                partNumber=number,
                payload=body,
            )
        return {"partNumber": number, "partSource": source, "checksum": response["checksum"]}

    jobs = []
    for source, path, size in zip(
        ("SOURCE1", "SOURCE2"), _common.sources(args), _common.source_sizes(args), strict=False
    ):
        for number, offset, length in _common.split(size, part_size):
            jobs.append(part(source, path, number, offset, length))
    done = await asyncio.gather(*jobs)
    await client.complete_multipart_read_set_upload(sequenceStoreId=args.store_id, uploadId=upload_id, parts=list(done))
    return len(done)


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    concurrency = args.concurrency or DEFAULT_CONCURRENCY
    semaphore = asyncio.Semaphore(concurrency)
    config = Config(inject_host_prefix=False, max_pool_connections=concurrency)
    session = get_session()
    async with session.create_client(
        "omics", region_name=_common.REGION, endpoint_url=args.endpoint, config=config
    ) as client:
        started = time.perf_counter()
        counts = await asyncio.gather(*(_upload(client, args, i, semaphore) for i in range(args.count)))
        seconds = time.perf_counter() - started
    return {"bytes": sum(_common.source_sizes(args)) * args.count, "parts": sum(counts), "seconds": seconds}


def run(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(_main(args))


if __name__ == "__main__":
    raise SystemExit(_common.main(run, _common.parser(__doc__ or "").parse_args()))
