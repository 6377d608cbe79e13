"""Helpers shared by the store's tests: a boto3 omics client for a store and the steps of an upload."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from async_uploader.emulator import LocalStore

STORE_ID = "1234567890"
REFERENCE = "arn:aws:omics:us-east-1:123456789012:referenceStore/1234567890/reference/1234567890"


def omics(store: LocalStore) -> Any:
    return boto3.client(
        "omics",
        region_name="us-east-1",
        endpoint_url=store.url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(inject_host_prefix=False, retries={"mode": "standard", "total_max_attempts": 1}),
    )


def create(client: Any, **extra: Any) -> str:
    args = {"sourceFileType": "FASTQ", "subjectId": "subject", "sampleId": "sample", "name": "reads", **extra}
    return str(client.create_multipart_read_set_upload(sequenceStoreId=STORE_ID, **args)["uploadId"])


def put(client: Any, upload_id: str, source: str, number: int, data: bytes) -> dict[str, Any]:
    reply = client.upload_read_set_part(
        sequenceStoreId=STORE_ID, uploadId=upload_id, partSource=source, partNumber=number, payload=data
    )
    return {"partSource": source, "partNumber": number, "checksum": reply["checksum"]}


def active(client: Any, read_set_id: str) -> dict[str, Any]:
    for _ in range(500):
        meta = client.get_read_set_metadata(sequenceStoreId=STORE_ID, id=read_set_id)
        if meta["status"] != "PROCESSING_UPLOAD":
            assert meta["status"] == "ACTIVE", meta
            return dict(meta)
        time.sleep(0.02)
    raise AssertionError(f"read set {read_set_id} stayed PROCESSING_UPLOAD")


def error_of(call: Callable[[], Any]) -> tuple[str, int]:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call()
    return str(info.value.response["Error"]["Code"]), int(info.value.response["ResponseMetadata"]["HTTPStatusCode"])


def upload_read_set(client: Any, sources: dict[str, list[bytes]], **extra: Any) -> str:
    upload_id = create(client, **extra)
    parts = [put(client, upload_id, s, n, data) for s, pieces in sources.items() for n, data in enumerate(pieces, 1)]
    done = client.complete_multipart_read_set_upload(sequenceStoreId=STORE_ID, uploadId=upload_id, parts=parts)
    return str(done["readSetId"])
