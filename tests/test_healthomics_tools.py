"""AWS's own uploader (aws-healthomics-tools' TransferManager) against the emulated store, unmodified."""

from __future__ import annotations

import asyncio
import gzip
import random
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from async_uploader.emulator import LocalStore

pytestmark = pytest.mark.slow

try:
    from omics.transfer.config import TransferConfig
    from omics.transfer.manager import TransferManager
except ImportError as exc:  # pragma: no cover - depends on the test extra
    pytest.skip(f"aws-healthomics-tools is not importable: {exc}", allow_module_level=True)

STORE_ID = "4242424242"


def write_fastq_gz(path: Path, reads: int, seed: int) -> bytes:
    rand = random.Random(seed)
    text = "".join(f"@read{i}/{seed}\n{''.join(rand.choices('ACGT', k=100))}\n+\n{'I' * 100}\n" for i in range(reads))
    data = gzip.compress(text.encode(), compresslevel=1)
    path.write_bytes(data)
    return data


def upload_and_read_back(store: LocalStore, r1: Path, r2: Path) -> tuple[str, dict[str, Any], list[bytes]]:
    client = boto3.client(
        "omics",
        region_name="us-east-1",
        endpoint_url=store.url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(inject_host_prefix=False),
    )
    manager = TransferManager(client, TransferConfig(max_request_concurrency=4))
    with manager:
        read_set_id = manager.upload_read_set(
            [str(r1), str(r2)],
            STORE_ID,
            "FASTQ",
            "paired-reads",
            "subject-1",
            "sample-1",
            generated_from="test",
        )
    assert isinstance(read_set_id, str)
    for _ in range(500):
        meta = client.get_read_set_metadata(sequenceStoreId=STORE_ID, id=read_set_id)
        if meta["status"] != "PROCESSING_UPLOAD":
            break
    blobs = []
    for source in ("SOURCE1", "SOURCE2"):
        files: dict[str, Any] = dict(meta["files"])
        total = files[source.lower()]["totalParts"]
        data = b""
        for number in range(1, total + 1):
            reply = client.get_read_set(sequenceStoreId=STORE_ID, id=read_set_id, file=source, partNumber=number)
            data += reply["payload"].read()
        blobs.append(data)
    return read_set_id, dict(meta), blobs


async def test_transfer_manager_uploads_paired_fastq(local_store: LocalStore, tmp_path: Path) -> None:
    r1, r2 = tmp_path / "reads_1.fastq.gz", tmp_path / "reads_2.fastq.gz"
    expected = [write_fastq_gz(r1, 6000, 1), write_fastq_gz(r2, 5000, 2)]
    read_set_id, meta, blobs = await asyncio.to_thread(upload_and_read_back, local_store, r1, r2)
    assert read_set_id.isdigit()
    assert meta["status"] == "ACTIVE" and meta["name"] == "paired-reads"
    assert blobs == expected
    parts = [r for r in local_store.requests if r["operation"] == "UploadReadSetPart"]
    assert {r["source"] for r in parts} == {"SOURCE1", "SOURCE2"}
    assert all(r["status"] == 200 for r in local_store.requests)
