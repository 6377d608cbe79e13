"""The emulated store driven by boto3's own omics client (botocore serializes, signs and parses)."""

from __future__ import annotations

import asyncio
import gzip
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from async_uploader.emulator import FaultOptions, LocalStore

STORE_ID = "1234567890"
MakeStore = Callable[..., Awaitable[LocalStore]]


def omics(store: LocalStore, secret: str = "test", access: str = "test") -> Any:
    return boto3.client(
        "omics",
        region_name="us-east-1",
        endpoint_url=store.url,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=Config(inject_host_prefix=False, retries={"mode": "standard", "total_max_attempts": 1}),
    )


def fastq(n: int, tag: str) -> bytes:
    rand = random.Random(tag)
    reads = (f"@{tag}{i}\n{''.join(rand.choices('ACGT', k=50))}\n+\n{'I' * 50}\n" for i in range(n))
    return gzip.compress("".join(reads).encode())


def create(client: Any, **extra: Any) -> str:
    args = {"sourceFileType": "FASTQ", "subjectId": "subject", "sampleId": "sample", "name": "reads"}
    args.update(extra)
    reply = client.create_multipart_read_set_upload(sequenceStoreId=STORE_ID, **args)
    return str(reply["uploadId"])


def put(client: Any, upload_id: str, source: str, number: int, data: bytes) -> str:
    reply = client.upload_read_set_part(
        sequenceStoreId=STORE_ID, uploadId=upload_id, partSource=source, partNumber=number, payload=data
    )
    return str(reply["checksum"])


def code_of(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response["Error"]["Code"])


def wait_status(client: Any, read_set_id: str, wanted: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        meta = client.get_read_set_metadata(sequenceStoreId=STORE_ID, id=read_set_id)
        if meta["status"] != "PROCESSING_UPLOAD" or time.monotonic() > deadline:
            assert meta["status"] == wanted, meta
            return dict(meta)
        time.sleep(0.02)


def paired_upload(store: LocalStore) -> None:
    client = omics(store)
    upload_id = create(client, generatedFrom="sequencer", description="paired", tags={"k": "v"})
    r1, r2 = fastq(300, "a"), fastq(200, "b")
    chunks = {"SOURCE1": [r1[i : i + 1000] for i in range(0, len(r1), 1000)]}
    chunks["SOURCE2"] = [r2[i : i + 1000] for i in range(0, len(r2), 1000)]
    assert len(chunks["SOURCE1"]) >= 3 and len(chunks["SOURCE2"]) >= 2
    parts = []
    for source, pieces in chunks.items():
        for number, piece in reversed(list(enumerate(pieces, 1))):
            checksum = put(client, upload_id, source, number, piece)
            assert 1 <= len(checksum) <= 100
            parts.append({"partSource": source, "partNumber": number, "checksum": checksum})
    # A re-upload replaces the part (its checksum is bound to the bytes and to the part's identity).
    again = put(client, upload_id, "SOURCE1", 1, chunks["SOURCE1"][0])
    assert again == next(p["checksum"] for p in parts if p["partSource"] == "SOURCE1" and p["partNumber"] == 1)
    other = put(client, upload_id, "SOURCE2", 1, chunks["SOURCE1"][0])
    assert other != again
    put(client, upload_id, "SOURCE2", 1, chunks["SOURCE2"][0])

    pages = list(
        client.get_paginator("list_read_set_upload_parts").paginate(
            sequenceStoreId=STORE_ID,
            uploadId=upload_id,
            partSource="SOURCE1",
            PaginationConfig={"PageSize": 2},
        )
    )
    assert len(pages) == (len(chunks["SOURCE1"]) + 1) // 2
    listed = [p for page in pages for p in page["parts"]]
    assert [p["partNumber"] for p in listed] == list(range(1, len(chunks["SOURCE1"]) + 1))
    assert [p["partSize"] for p in listed] == [len(c) for c in chunks["SOURCE1"]]
    assert all(p["partSource"] == "SOURCE1" for p in listed)

    done = client.complete_multipart_read_set_upload(
        sequenceStoreId=STORE_ID, uploadId=upload_id, parts=sorted(parts, key=lambda p: int(str(p["partNumber"])))
    )
    read_set_id = done["readSetId"]
    meta = wait_status(client, read_set_id, "ACTIVE")
    assert meta["fileType"] == "FASTQ" and meta["name"] == "reads"
    assert meta["files"]["source1"]["contentLength"] == len(r1)
    assert meta["files"]["source2"]["totalParts"] == len(chunks["SOURCE2"])
    for source, pieces in chunks.items():
        for number, piece in enumerate(pieces, 1):
            got = client.get_read_set(sequenceStoreId=STORE_ID, id=read_set_id, file=source, partNumber=number)
            assert got["payload"].read() == piece
    # The completed upload is no longer in progress.
    assert client.list_multipart_read_set_uploads(sequenceStoreId=STORE_ID)["uploads"] == []


async def test_paired_upload_round_trip(local_store: LocalStore) -> None:
    await asyncio.to_thread(paired_upload, local_store)
    operations = {r["operation"] for r in local_store.requests}
    assert "UploadReadSetPart" in operations and "GetReadSet" in operations
    assert all(r["status"] == 200 for r in local_store.requests)


def list_uploads_paginated(store: LocalStore) -> None:
    client = omics(store)
    created = [create(client, name=f"reads-{i}") for i in range(5)]
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        kwargs: dict[str, str] = {"nextToken": token} if token else {}
        reply = client.list_multipart_read_set_uploads(sequenceStoreId=STORE_ID, maxResults=2, **kwargs)
        pages += 1
        seen += [u["uploadId"] for u in reply["uploads"]]
        for upload in reply["uploads"]:
            assert upload["sequenceStoreId"] == STORE_ID and upload["sourceFileType"] == "FASTQ"
        token = reply.get("nextToken")
        if not token:
            break
    assert pages == 3 and seen == created
    client.abort_multipart_read_set_upload(sequenceStoreId=STORE_ID, uploadId=created[0])
    remaining = client.list_multipart_read_set_uploads(sequenceStoreId=STORE_ID)["uploads"]
    assert [u["uploadId"] for u in remaining] == created[1:]
    # Another store id is another (empty) store.
    assert client.list_multipart_read_set_uploads(sequenceStoreId="9" * 36)["uploads"] == []


async def test_list_uploads_pagination_and_abort(local_store: LocalStore) -> None:
    await asyncio.to_thread(list_uploads_paginated, local_store)


def abort_flow(store: LocalStore) -> None:
    client = omics(store)
    upload_id = create(client)
    put(client, upload_id, "SOURCE1", 1, fastq(10, "x"))
    client.abort_multipart_read_set_upload(sequenceStoreId=STORE_ID, uploadId=upload_id)
    for call in (
        lambda: put(client, upload_id, "SOURCE1", 2, b"@more"),
        lambda: client.abort_multipart_read_set_upload(sequenceStoreId=STORE_ID, uploadId=upload_id),
        lambda: client.list_read_set_upload_parts(sequenceStoreId=STORE_ID, uploadId=upload_id, partSource="SOURCE1"),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as info:
            call()
        assert code_of(info.value) == "ResourceNotFoundException"
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


async def test_abort(local_store: LocalStore) -> None:
    await asyncio.to_thread(abort_flow, local_store)
    assert not any(local_store.data_dir.glob(f"{STORE_ID}/[0-9]*/*"))


def complete_rejections(store: LocalStore) -> None:
    client = omics(store)
    upload_id = create(client)
    sums = {n: put(client, upload_id, "SOURCE1", n, fastq(5, str(n))) for n in (1, 2, 3)}

    def entry(n: int, checksum: str | None = None) -> dict[str, Any]:
        return {"partSource": "SOURCE1", "partNumber": n, "checksum": checksum or sums[n]}

    bad_lists = {
        "invented checksum": [entry(1), entry(2, "0" * 64), entry(3)],
        "other part's checksum": [entry(1), entry(2, sums[3]), entry(3)],
        "missing part": [entry(1), entry(2)],
        "duplicated part": [entry(1), entry(2), entry(2), entry(3)],
        "never uploaded": [entry(1), entry(2), entry(3), {**entry(1), "partNumber": 4}],
        "empty": [],
    }
    for why, parts in bad_lists.items():
        with pytest.raises(botocore.exceptions.ClientError) as info:
            client.complete_multipart_read_set_upload(sequenceStoreId=STORE_ID, uploadId=upload_id, parts=parts)
        assert code_of(info.value) == "ValidationException", why
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # A gap: parts 1 and 3 of SOURCE2, listed exactly as uploaded, still fail.
    gap = {n: put(client, upload_id, "SOURCE2", n, fastq(5, "g")) for n in (1, 3)}
    parts = [entry(n) for n in (1, 2, 3)] + [
        {"partSource": "SOURCE2", "partNumber": n, "checksum": c} for n, c in gap.items()
    ]
    with pytest.raises(botocore.exceptions.ClientError, match="without gaps"):
        client.complete_multipart_read_set_upload(sequenceStoreId=STORE_ID, uploadId=upload_id, parts=parts)
    put(client, upload_id, "SOURCE2", 2, fastq(5, "g"))
    listed = client.list_read_set_upload_parts(sequenceStoreId=STORE_ID, uploadId=upload_id, partSource="SOURCE2")
    parts = [entry(n) for n in (1, 2, 3)] + [
        {"partSource": "SOURCE2", "partNumber": p["partNumber"], "checksum": p["checksum"]} for p in listed["parts"]
    ]
    done = client.complete_multipart_read_set_upload(sequenceStoreId=STORE_ID, uploadId=upload_id, parts=parts)
    assert done["readSetId"].isdigit()


async def test_complete_rejections(local_store: LocalStore) -> None:
    await asyncio.to_thread(complete_rejections, local_store)


def status_transitions(store: LocalStore) -> None:
    client = omics(store)
    good = create(client)
    checksum = put(client, good, "SOURCE1", 1, fastq(5, "s"))
    read_set = client.complete_multipart_read_set_upload(
        sequenceStoreId=STORE_ID,
        uploadId=good,
        parts=[{"partSource": "SOURCE1", "partNumber": 1, "checksum": checksum}],
    )["readSetId"]
    first = client.get_read_set_metadata(sequenceStoreId=STORE_ID, id=read_set)
    assert first["status"] == "PROCESSING_UPLOAD"
    with pytest.raises(botocore.exceptions.ClientError, match="not ACTIVE"):
        client.get_read_set(sequenceStoreId=STORE_ID, id=read_set, file="SOURCE1", partNumber=1)
    wait_status(client, read_set, "ACTIVE")

    bad = create(client, sourceFileType="CRAM", referenceArn="arn:aws:omics:us-east-1:1:referenceStore/1/reference/1")
    checksum = put(client, bad, "SOURCE1", 1, b"not a cram file")
    read_set = client.complete_multipart_read_set_upload(
        sequenceStoreId=STORE_ID,
        uploadId=bad,
        parts=[{"partSource": "SOURCE1", "partNumber": 1, "checksum": checksum}],
    )["readSetId"]
    meta = wait_status(client, read_set, "UPLOAD_FAILED")
    assert "CRAM" in meta["statusMessage"]
    with pytest.raises(botocore.exceptions.ClientError) as info:
        client.get_read_set_metadata(sequenceStoreId=STORE_ID, id="5" * 12)
    assert code_of(info.value) == "ResourceNotFoundException"


async def test_metadata_status_transitions(make_store: MakeStore) -> None:
    store = await make_store(processing_delay=1.0)
    await asyncio.to_thread(status_transitions, store)


def wrong_secret(store: LocalStore) -> float:
    started = time.monotonic()
    for client in (omics(store, secret="wrong"), omics(store, access="nobody")):
        with pytest.raises(botocore.exceptions.ClientError) as info:
            create(client)
        assert code_of(info.value) == "AccessDeniedException"
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        with pytest.raises(botocore.exceptions.ClientError) as info:
            put(client, "1" * 18, "SOURCE1", 1, b"@" * 100_000)
        assert code_of(info.value) == "AccessDeniedException"
    return time.monotonic() - started


async def test_wrong_secret_is_403(local_store: LocalStore) -> None:
    elapsed = await asyncio.to_thread(wrong_secret, local_store)
    assert elapsed < 5  # generous bound: the rejection involves no retries nor waits
    assert {r["status"] for r in local_store.requests} == {403}


async def test_injected_throttle_is_throttling_exception(make_store: MakeStore) -> None:
    store = await make_store(faults=FaultOptions(throttle_rate=1.0))
    client = omics(store)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        await asyncio.to_thread(create, client)
    assert code_of(info.value) == "ThrottlingException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert store.requests[-1]["fault"] == "throttle"


async def test_injected_errors_are_5xx(make_store: MakeStore) -> None:
    store = await make_store(faults=FaultOptions(error_rate=1.0))
    client = omics(store)
    codes = set()
    for i in range(12):
        with pytest.raises(botocore.exceptions.ClientError) as info:
            await asyncio.to_thread(create, client, name=f"n{i}")
        codes.add((code_of(info.value), info.value.response["ResponseMetadata"]["HTTPStatusCode"]))
    assert codes <= {("InternalServerException", 500), ("ServiceUnavailableException", 503)}
    assert len(codes) == 2


async def test_reset_is_a_connection_error(make_store: MakeStore) -> None:
    store = await make_store(faults=FaultOptions(reset_rate=1.0))
    client = omics(store)
    with pytest.raises((botocore.exceptions.HTTPClientError, botocore.exceptions.ConnectionError)):
        await asyncio.to_thread(create, client)
    fields = {"sourceFileType": "FASTQ", "subjectId": "s", "sampleId": "s", "name": "n"}
    upload_id = store.state.create_upload(STORE_ID, fields)["uploadId"]
    with pytest.raises((botocore.exceptions.HTTPClientError, botocore.exceptions.ConnectionError)):
        await asyncio.to_thread(put, client, upload_id, "SOURCE1", 1, b"@" * 2_000_000)
    assert [r["fault"] for r in store.requests] == ["reset", "reset"]
    assert store.requests[-1]["status"] == 0 and 0 < store.requests[-1]["bytes"] < 2_000_000


async def test_quota_answers_429(make_store: MakeStore) -> None:
    store = await make_store(quotas={"control": 1.0, "listings": 1.0})
    client = omics(store)
    await asyncio.to_thread(create, client)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        await asyncio.to_thread(create, client)
    assert code_of(info.value) == "ThrottlingException"
    assert store.requests[-1]["fault"] == "quota"
    # Parts have no quota here.
    upload_id = store.requests[0]["upload_id"]
    for n in (1, 2, 3):
        await asyncio.to_thread(put, client, upload_id, "SOURCE1", n, b"@r\nA\n+\nI\n")


@pytest.mark.parametrize("family", ["MD5up", "SHA512up"])
async def test_get_sequence_store_names_its_etag_family(make_store: MakeStore, family: str) -> None:
    store = await make_store(etag_family=family)

    def ask() -> dict[str, Any]:
        reply: dict[str, Any] = omics(store).get_sequence_store(id=STORE_ID)
        return reply

    reply = await asyncio.to_thread(ask)
    assert reply["id"] == STORE_ID and reply["eTagAlgorithmFamily"] == family and reply["status"] == "ACTIVE"
