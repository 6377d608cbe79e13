"""Hand-built signed requests: what botocore's own parameter validation would never send."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from async_uploader.emulator import LocalStore

STORE_ID = "1234567890"
MakeStore = Callable[..., Awaitable[LocalStore]]
FIELDS = {"sourceFileType": "FASTQ", "subjectId": "s", "sampleId": "s", "name": "n"}


def sign(
    method: str,
    url: str,
    body: bytes = b"",
    *,
    secret: str = "test",
    payload_hash: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, str]:
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    if payload_hash is not None:
        request.headers["X-Amz-Content-SHA256"] = payload_hash
    SigV4Auth(Credentials("test", secret), "omics", "us-east-1").add_auth(request)
    return {k: str(v) for k, v in request.headers.items()}


async def send(
    method: str, url: str, body: Any = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=body, headers=headers) as response,
    ):
        return response.status, dict(response.headers), await response.read()


async def signed(method: str, url: str, body: bytes = b"", **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    return await send(method, url, body, sign(method, url, body, **kwargs))


def assert_error(reply: tuple[int, dict[str, str], bytes], status: int, code: str, text: str = "") -> None:
    got_status, headers, body = reply
    assert (got_status, headers.get("x-amzn-ErrorType")) == (status, code), body
    message = json.loads(body)["message"]
    assert text in message


def part_url(store: LocalStore, upload_id: str, source: str = "SOURCE1", number: Any = 1) -> str:
    return f"{store.url}/sequencestore/{STORE_ID}/upload/{upload_id}/part?partSource={source}&partNumber={number}"


@pytest.fixture
async def upload(local_store: LocalStore) -> AsyncIterator[str]:
    yield str(local_store.state.create_upload(STORE_ID, dict(FIELDS))["uploadId"])


async def test_unsigned_payload_part_is_accepted(local_store: LocalStore, upload: str) -> None:
    url = part_url(local_store, upload)
    status, _, body = await signed("PUT", url, b"@r\nA\n+\nI\n", payload_hash="UNSIGNED-PAYLOAD")
    assert status == 200 and len(json.loads(body)["checksum"]) == 64
    # Without the header the signature covers the SHA-256 of the body, checked once it has arrived.
    status, _, body = await signed("PUT", part_url(local_store, upload, number=2), b"@r\nC\n+\nI\n")
    assert status == 200, body
    data = b"@r\nG\n+\nI\n"
    reply = await signed(
        "PUT", part_url(local_store, upload, number=3), data, payload_hash=hashlib.sha256(data).hexdigest()
    )
    assert reply[0] == 200


@pytest.mark.parametrize(
    ("source", "number", "text"),
    [
        ("SOURCE1", 0, "between 1 and 10000"),
        ("SOURCE1", 10001, "between 1 and 10000"),
        ("SOURCE1", "x", "integer"),
        ("SOURCE3", 1, "partSource"),
    ],
)
async def test_part_identity_validated(
    local_store: LocalStore, upload: str, source: str, number: Any, text: str
) -> None:
    url = part_url(local_store, upload, source, number)
    reply = await signed("PUT", url, b"@" * 100_000, payload_hash="UNSIGNED-PAYLOAD")
    assert_error(reply, 400, "ValidationException", text)


async def test_ids_validated(local_store: LocalStore, upload: str) -> None:
    body = json.dumps(FIELDS).encode()
    for store_id in ("12345abcde", "123456789", "1" * 37):
        reply = await signed("POST", f"{local_store.url}/sequencestore/{store_id}/upload", body)
        assert_error(reply, 400, "ValidationException", "sequenceStoreId")
    reply = await signed("DELETE", f"{local_store.url}/sequencestore/{STORE_ID}/upload/12x4567890/abort")
    assert_error(reply, 400, "ValidationException", "uploadId")
    reply = await signed("DELETE", f"{local_store.url}/sequencestore/{STORE_ID}/upload/{'7' * 20}/abort")
    assert_error(reply, 404, "ResourceNotFoundException")
    reply = await signed("GET", f"{local_store.url}/sequencestore/{STORE_ID}/nothing")
    assert_error(reply, 404, "UnknownOperationException")


async def test_wrong_payload_hash(local_store: LocalStore, upload: str) -> None:
    other = hashlib.sha256(b"something else").hexdigest()
    reply = await signed("PUT", part_url(local_store, upload), b"@" * 300_000, payload_hash=other)
    assert_error(reply, 400, "ValidationException", "x-amz-content-sha256")
    body = json.dumps(FIELDS).encode()
    reply = await signed("POST", f"{local_store.url}/sequencestore/{STORE_ID}/upload", body, payload_hash=other)
    assert_error(reply, 400, "ValidationException", "x-amz-content-sha256")
    # Without the header, a body that differs from the signed one breaks the signature.
    url = part_url(local_store, upload)
    headers = sign("PUT", url, b"@" * 1000)
    reply = await send("PUT", url, b"@" * 999 + b"X", headers)
    assert_error(reply, 403, "AccessDeniedException", "signature")
    assert local_store.state.upload(STORE_ID, upload).parts == {}


async def test_chunked_body_rejected(local_store: LocalStore, upload: str) -> None:
    url = part_url(local_store, upload)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"@" * 10_000

    headers = sign("PUT", url, payload_hash="UNSIGNED-PAYLOAD")
    reply = await send("PUT", url, chunks(), headers)
    assert_error(reply, 400, "ValidationException", "Content-Length")


async def test_missing_content_length_rejected(local_store: LocalStore, upload: str) -> None:
    url = part_url(local_store, upload)
    headers = sign("PUT", url, payload_hash="UNSIGNED-PAYLOAD")
    host = url.split("/")[2]
    path = url.split(host, 1)[1]
    lines = [f"PUT {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    reader, writer = await asyncio.open_connection(*host.split(":"))
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    assert response.startswith(b"HTTP/1.1 411"), response
    assert b"x-amzn-ErrorType: ValidationException" in response


async def test_oversize_part_rejected_and_drained(make_store: MakeStore) -> None:
    store = await make_store(max_part_size=1000)
    upload = str(store.state.create_upload(STORE_ID, dict(FIELDS))["uploadId"])
    reply = await signed("PUT", part_url(store, upload), b"@" * 1_000_000, payload_hash="UNSIGNED-PAYLOAD")
    assert_error(reply, 400, "ValidationException", "exceeds the maximum of 1000")
    assert store.requests[-1]["bytes"] == 0
    reply = await signed("PUT", part_url(store, upload), b"@" * 1000, payload_hash="UNSIGNED-PAYLOAD")
    assert reply[0] == 200


async def test_skewed_date_rejected(local_store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"{local_store.url}/sequencestore/{STORE_ID}/uploads"
    real = botocore.auth.get_current_datetime()  # type: ignore[attr-defined]
    for minutes, status in ((-16, 403), (16, 403), (-14, 200), (14, 200)):
        skewed = real + datetime.timedelta(minutes=minutes)
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda skewed=skewed: skewed)
        reply = await signed("POST", url)
        assert reply[0] == status, (minutes, reply)
        if status == 403:
            assert_error(reply, 403, "AccessDeniedException", "Signature expired")


async def test_unsigned_or_foreign_requests_rejected(local_store: LocalStore) -> None:
    url = f"{local_store.url}/sequencestore/{STORE_ID}/uploads"
    assert_error(await send("POST", url), 403, "AccessDeniedException")
    assert_error(await signed("POST", url, secret="nope"), 403, "AccessDeniedException", "signature")
    headers = sign("POST", url)
    headers["Authorization"] = headers["Authorization"].replace("Credential=test/", "Credential=other/")
    assert_error(await send("POST", url, b"", headers), 403, "AccessDeniedException")
    headers = sign("POST", url, headers={"x-custom": "a"})
    headers["x-custom"] = "b"
    assert_error(await send("POST", url, b"", headers), 403, "AccessDeniedException")


async def test_create_validation(local_store: LocalStore) -> None:
    url = f"{local_store.url}/sequencestore/{STORE_ID}/upload"
    cases = [
        ({**FIELDS, "sourceFileType": "VCF"}, "sourceFileType"),
        ({**FIELDS, "sourceFileType": "BAM"}, "referenceArn"),
        ({**FIELDS, "sourceFileType": "CRAM", "referenceArn": "nope"}, "referenceArn"),
        ({k: v for k, v in FIELDS.items() if k != "name"}, "name"),
        ({**FIELDS, "subjectId": "x" * 128}, "subjectId"),
    ]
    for fields, text in cases:
        assert_error(await signed("POST", url, json.dumps(fields).encode()), 400, "ValidationException", text)
    assert_error(await signed("POST", url, b"{not json"), 400, "SerializationException")
    # A client token makes Create idempotent.
    body = json.dumps({**FIELDS, "clientToken": "token-1"}).encode()
    first = json.loads((await signed("POST", url, body))[2])["uploadId"]
    again = json.loads((await signed("POST", url, body))[2])["uploadId"]
    assert first == again


async def test_source2_only_for_fastq(local_store: LocalStore) -> None:
    fields = {**FIELDS, "sourceFileType": "UBAM"}
    upload = str(local_store.state.create_upload(STORE_ID, fields)["uploadId"])
    reply = await signed(
        "PUT", part_url(local_store, upload, "SOURCE1"), b"\x1f\x8b\x08\x04", payload_hash="UNSIGNED-PAYLOAD"
    )
    assert reply[0] == 200
    # Refused at UploadReadSetPart already, not only at Complete; nothing is recorded.
    reply = await signed(
        "PUT", part_url(local_store, upload, "SOURCE2"), b"\x1f\x8b\x08\x04", payload_hash="UNSIGNED-PAYLOAD"
    )
    assert_error(reply, 400, "ValidationException", "SOURCE2 is only allowed for FASTQ")
    assert set(local_store.state.upload(STORE_ID, upload).parts) == {("SOURCE1", 1)}
    assert not list(local_store.state.upload(STORE_ID, upload).directory.glob("*SOURCE2*"))


async def test_discard_mode(make_store: MakeStore) -> None:
    store = await make_store(discard=True, processing_delay=0.0)
    upload = str(store.state.create_upload(STORE_ID, dict(FIELDS))["uploadId"])
    status, _, body = await signed("PUT", part_url(store, upload), b"no format check", payload_hash="UNSIGNED-PAYLOAD")
    assert status == 200
    parts = [{"partSource": "SOURCE1", "partNumber": 1, "checksum": json.loads(body)["checksum"]}]
    url = f"{store.url}/sequencestore/{STORE_ID}/upload/{upload}/complete"
    status, _, body = await signed("POST", url, json.dumps({"parts": parts}).encode())
    assert status == 200
    read_set = json.loads(body)["readSetId"]
    assert not any(p.is_file() for p in store.data_dir.rglob("*"))
    base = f"{store.url}/sequencestore/{STORE_ID}/readset/{read_set}"
    for _ in range(100):
        status, _, body = await signed("GET", f"{base}/metadata")
        if json.loads(body)["status"] != "PROCESSING_UPLOAD":
            break
    meta = json.loads(body)
    assert meta["status"] == "ACTIVE" and meta["files"]["source1"]["contentLength"] == 15
    reply = await signed("GET", f"{base}?file=SOURCE1&partNumber=1")
    assert_error(reply, 404, "ResourceNotFoundException", "--discard")


async def test_threaded_writes_keep_the_bytes(local_store: LocalStore, upload: str) -> None:
    local_store._app.threaded_writes = True  # the path taken once the disk proves slow
    data = bytes(range(256)) * 4000
    status, _, body = await signed("PUT", part_url(local_store, upload), data, payload_hash="UNSIGNED-PAYLOAD")
    assert status == 200
    part = local_store.state.upload(STORE_ID, upload).parts[("SOURCE1", 1)]
    assert part.path is not None and part.path.read_bytes() == data
    assert part.checksum == json.loads(body)["checksum"]
