"""The store behaves as the service does where botocore's model and the service docs say how (boto3 drives it)."""

from __future__ import annotations

import asyncio
import functools
import gzip
import os
import random

from async_uploader.emulator import LocalStore
from tests.store_helpers import REFERENCE, STORE_ID, active, create, error_of, omics, put, upload_read_set

MIB = 1024 * 1024


def unequal_parts(store: LocalStore) -> None:
    client = omics(store)
    rand = random.Random(5)
    pieces = [b"\x1f\x8b" + rand.randbytes(5 * MIB - 2), rand.randbytes(1 * MIB), rand.randbytes(4_470_000)]
    source = b"".join(pieces)
    read_set = upload_read_set(client, {"SOURCE1": pieces})
    meta = active(client, read_set)
    # One assembled file, described as such, served re-cut at the part size the metadata reports.
    assert meta["files"]["source1"] == {"partSize": 5 * MIB, "totalParts": 3, "contentLength": len(source)}
    served = bytearray()
    for number in (1, 2, 3):
        got = client.get_read_set(sequenceStoreId=STORE_ID, id=read_set, file="SOURCE1", partNumber=number)
        data = got["payload"].read()
        assert data == source[(number - 1) * 5 * MIB : number * 5 * MIB]
        served += data
    assert served == source and len(served) == 10_761_456
    # Past the last part: the model's RangeNotSatisfiableException.
    assert error_of(
        lambda: client.get_read_set(sequenceStoreId=STORE_ID, id=read_set, file="SOURCE1", partNumber=4)
    ) == ("RangeNotSatisfiableException", 416)
    assert error_of(
        lambda: client.get_read_set(sequenceStoreId=STORE_ID, id=read_set, file="SOURCE2", partNumber=1)
    ) == ("ResourceNotFoundException", 404)
    # Random bytes behind a gzip magic pass the format check but are no FASTQ: no ETag, no counts.
    assert "etag" not in meta and "sequenceInformation" not in meta
    # The parts were joined: the store keeps one file for the source, not the uploaded pieces.
    kept = [p.name for p in store.state.read_set_dir(STORE_ID, read_set).iterdir()]
    assert kept == ["source1"]


async def test_unequal_parts_are_served_re_cut(local_store: LocalStore) -> None:
    await asyncio.to_thread(unequal_parts, local_store)


def tiny_first_part(store: LocalStore) -> None:
    """A first part so small that 10,000 parts of its size would not hold the source: the part size grows."""
    client = omics(store)
    text = gzip.compress(b"@r\nACGT\n+\nIIII\n" * 1000)  # FASTQ is taken gzip-compressed only
    pieces = [text[:1], text[1:]]
    read_set = upload_read_set(client, {"SOURCE1": pieces})
    info = active(client, read_set)["files"]["source1"]
    length = 1 + len(pieces[1])
    assert info == {
        "partSize": -(-length // 10_000),
        "totalParts": -(-length // info["partSize"]),
        "contentLength": length,
    }
    assert info["totalParts"] <= 10_000


async def test_part_size_keeps_within_10000_parts(local_store: LocalStore) -> None:
    await asyncio.to_thread(tiny_first_part, local_store)


def complete_retried(store: LocalStore) -> None:
    client = omics(store)
    upload_id = create(client)
    parts = [put(client, upload_id, "SOURCE1", n, b"@r\nA\n+\nI\n") for n in (1, 2)]
    first = client.complete_multipart_read_set_upload(sequenceStoreId=STORE_ID, uploadId=upload_id, parts=parts)
    # Its reply lost, the client sends the same Complete again: the same read set, no second one.
    again = client.complete_multipart_read_set_upload(
        sequenceStoreId=STORE_ID, uploadId=upload_id, parts=list(reversed(parts))
    )
    assert again["readSetId"] == first["readSetId"]
    assert len(store.state.stores[STORE_ID].read_sets) == 1
    other = [parts[0], {**parts[1], "checksum": "0" * 64}]
    code = error_of(
        lambda: client.complete_multipart_read_set_upload(sequenceStoreId=STORE_ID, uploadId=upload_id, parts=other)
    )
    assert code == ("ValidationException", 400)
    fewer = error_of(
        lambda: client.complete_multipart_read_set_upload(sequenceStoreId=STORE_ID, uploadId=upload_id, parts=parts[:1])
    )
    assert fewer == ("ValidationException", 400)
    # An upload that never was is still unknown.
    unknown = error_of(
        lambda: client.complete_multipart_read_set_upload(sequenceStoreId=STORE_ID, uploadId="9" * 20, parts=parts)
    )
    assert unknown == ("ResourceNotFoundException", 404)
    # Parts can no longer be added to a completed upload.
    assert error_of(lambda: put(client, upload_id, "SOURCE1", 3, b"@r\nA\n+\nI\n"))[1] == 404


async def test_complete_retried_after_success(local_store: LocalStore) -> None:
    await asyncio.to_thread(complete_retried, local_store)


def client_token(store: LocalStore) -> None:
    client = omics(store)
    first = create(client, clientToken="token-1", description="first")
    assert create(client, clientToken="token-1", description="first") == first
    for changed in ({"description": "second"}, {"name": "other"}, {"tags": {"k": "v"}}, {"generatedFrom": "x"}):
        args = {"clientToken": "token-1", "description": "first", **changed}
        assert error_of(functools.partial(create, client, **args)) == ("ValidationException", 400)
    assert [u["uploadId"] for u in client.list_multipart_read_set_uploads(sequenceStoreId=STORE_ID)["uploads"]] == [
        first
    ]
    # The token stays bound after the upload is gone: a retry is answered as the first Create was.
    client.abort_multipart_read_set_upload(sequenceStoreId=STORE_ID, uploadId=first)
    assert create(client, clientToken="token-1", description="first") == first
    assert create(client, clientToken="token-2", description="first") != first


async def test_client_token_reuse(local_store: LocalStore) -> None:
    await asyncio.to_thread(client_token, local_store)


def source2_refused(store: LocalStore) -> None:
    client = omics(store)
    bam = b"\x1f\x8b\x08\x04" + os.urandom(3000)
    # SOURCE2 of a BAM upload is refused when it is sent, and nothing is kept of it.
    upload_id = create(client, sourceFileType="BAM", referenceArn=REFERENCE)
    assert error_of(lambda: put(client, upload_id, "SOURCE2", 1, bam)) == ("ValidationException", 400)
    listed = client.list_read_set_upload_parts(sequenceStoreId=STORE_ID, uploadId=upload_id, partSource="SOURCE2")
    assert listed["parts"] == []
    # Unaligned BAM has no index.
    ubam = upload_read_set(client, {"SOURCE1": [bam]}, sourceFileType="UBAM")
    meta = active(client, ubam)
    assert "index" not in meta["files"] and "etag" not in meta
    assert error_of(lambda: client.get_read_set(sequenceStoreId=STORE_ID, id=ubam, file="INDEX", partNumber=1)) == (
        "ResourceNotFoundException",
        404,
    )


async def test_source2_only_for_fastq_and_no_index_for_ubam(local_store: LocalStore) -> None:
    await asyncio.to_thread(source2_refused, local_store)
