"""A plain boto3 loop: Create, then every part of SOURCE1 and SOURCE2 one after another, then Complete.

What a user writes from the API reference without any tool. Each part is read whole into memory and handed to
``upload_read_set_part``; no concurrency. Default part size 100 MiB, as AWS's walkthrough splits.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any, Literal

import _common
import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_omics.type_defs import CompleteReadSetUploadPartListItemTypeDef

DEFAULT_PART_SIZE = 100 * 1024 * 1024
SOURCES: tuple[Literal["SOURCE1", "SOURCE2"], ...] = ("SOURCE1", "SOURCE2")


def run(args: argparse.Namespace) -> dict[str, Any]:
    part_size = args.part_size or DEFAULT_PART_SIZE
    client = boto3.session.Session().client(
        "omics",
        region_name=_common.REGION,
        endpoint_url=args.endpoint,
        config=Config(inject_host_prefix=False),
    )
    started = time.perf_counter()
    parts = 0
    for index in range(args.count):
        upload_id = client.create_multipart_read_set_upload(
            sequenceStoreId=args.store_id,
            sourceFileType="FASTQ",
            subjectId=_common.SUBJECT,
            sampleId=_common.SAMPLE,
            name=_common.name(index),
        )["uploadId"]
        done: list[CompleteReadSetUploadPartListItemTypeDef] = []
        for source, path in zip(SOURCES, _common.sources(args), strict=False):
            with open(path, "rb") as handle:
                number = 0
                while body := handle.read(part_size):
                    number += 1
                    checksum = client.upload_read_set_part(
                        sequenceStoreId=args.store_id,
                        uploadId=upload_id,
                        partSource=source,
                        partNumber=number,
                        payload=body,
                    )["checksum"]
                    done.append({"partNumber": number, "partSource": source, "checksum": checksum})
        client.complete_multipart_read_set_upload(sequenceStoreId=args.store_id, uploadId=upload_id, parts=done)
        parts += len(done)
    seconds = time.perf_counter() - started
    return {"bytes": sum(_common.source_sizes(args)) * args.count, "parts": parts, "seconds": seconds}


if __name__ == "__main__":
    raise SystemExit(_common.main(run, _common.parser(__doc__ or "").parse_args()))
