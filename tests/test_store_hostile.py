"""Requests a hostile or broken client sends: always a rest-json 4xx, never a 5xx, nothing half-recorded."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from async_uploader.emulator import LocalStore
from tests.store_raw import FIELDS, STORE_ID, Connection, head_bytes, request, signed, signed_headers

MakeStore = Callable[..., Awaitable[LocalStore]]
MIB = 1024 * 1024


def new_upload(store: LocalStore, **fields: str) -> str:
    return str(store.state.create_upload(STORE_ID, {**FIELDS, **fields})["uploadId"])


def part_target(upload: str, source: str = "SOURCE1", number: str = "1") -> str:
    return f"/sequencestore/{STORE_ID}/upload/{upload}/part?partSource={source}&partNumber={number}"


def buffered(reader: asyncio.StreamReader) -> bool:
    """Whether bytes have arrived that nobody has read yet (the reader's own buffer, which it does not expose)."""
    return bool(vars(reader)["_buffer"])


@pytest.fixture(autouse=True)
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No request in these tests may make the store log an error (a traceback on its stderr)."""
    yield
    errors = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert not errors, [r.getMessage() for r in errors]


async def test_superscript_digits(local_store: LocalStore) -> None:
    port = local_store.port
    upload = new_upload(local_store)
    reply = await signed(port, "PUT", part_target(upload, number="%C2%B2"), b"@r\n", "UNSIGNED-PAYLOAD")
    reply.assert_error(400, "ValidationException", "partNumber")
    body = json.dumps({"parts": [{"partSource": "SOURCE1", "partNumber": "²", "checksum": "x"}]}).encode()
    reply = await signed(port, "POST", f"/sequencestore/{STORE_ID}/upload/{upload}/complete", body)
    reply.assert_error(400, "ValidationException", "partNumber")
    for number in (1.0, 1e999, True, None, [1]):
        parts = [{"partSource": "SOURCE1", "partNumber": number, "checksum": "x"}]
        body = json.dumps({"parts": parts}).encode()
        reply = await signed(port, "POST", f"/sequencestore/{STORE_ID}/upload/{upload}/complete", body)
        reply.assert_error(400, "ValidationException", "partNumber")
    reply = await signed(port, "POST", f"/sequencestore/{STORE_ID}/uploads?maxResults=%C2%B2")
    reply.assert_error(400, "ValidationException", "maxResults")
    assert local_store.state.upload(STORE_ID, upload).parts == {}


async def test_next_tokens_that_were_never_made(local_store: LocalStore) -> None:
    for decoded in (b'{"offset": 1e999}', b'{"offset": -1}', b'{"offset": "1"}', b"[1]", b"\xff", b"[" * 10_000):
        token = base64.urlsafe_b64encode(decoded).decode()
        reply = await signed(local_store.port, "POST", f"/sequencestore/{STORE_ID}/uploads?nextToken={token}")
        reply.assert_error(400, "ValidationException", "nextToken")
    reply = await signed(local_store.port, "POST", f"/sequencestore/{STORE_ID}/uploads?nextToken=%C2%B2")
    reply.assert_error(400, "ValidationException", "nextToken")


async def test_hostile_authorization_and_host(local_store: LocalStore) -> None:
    port = local_store.port
    target = f"/sequencestore/{STORE_ID}/uploads"
    headers = {"Host": f"127.0.0.1:{port}", **signed_headers("POST", f"http://127.0.0.1:{port}{target}")}
    headers["Content-Length"] = "0"
    non_ascii = dict(headers, Authorization=headers["Authorization"][:-2] + "²é")
    (await request(port, "POST", target, non_ascii)).assert_error(403, "AccessDeniedException", "signature")
    for host in ("[", "[::1", "a b", "é"):
        reply = await request(port, "POST", target, dict(headers, Host=host))
        reply.assert_error(403, "AccessDeniedException")
    for authorization in (
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 Credential=",
        "Basic dGVzdA==",
        "AWS4-HMAC-SHA256 ,,,=",
    ):
        reply = await request(port, "POST", target, dict(headers, Authorization=authorization))
        reply.assert_error(403, "AccessDeniedException")
    reply = await request(port, "POST", target, dict(headers, **{"X-Amz-Date": "²0261201T000000Z"}))
    reply.assert_error(403, "AccessDeniedException")


async def test_oversized_chunked_create_is_413(local_store: LocalStore) -> None:
    port = local_store.port
    target = f"/sequencestore/{STORE_ID}/upload"
    headers = {"Host": f"127.0.0.1:{port}", **signed_headers("POST", f"http://127.0.0.1:{port}{target}")}
    headers["Transfer-Encoding"] = "chunked"
    conn = await Connection.open(port)
    try:
        await conn.send(head_bytes("POST", target, headers))
        chunk = b"%x\r\n%s\r\n" % (MIB, b" " * MIB)
        sent = 0
        while sent < 20 and not (conn.reader.at_eof() or buffered(conn.reader)):  # until the store has answered
            await conn.send(chunk)
            sent += 1
        replied = await conn.reply()
        # The rest of the 20 MB is discarded as it comes, and the connection closed at its end.
        for _ in range(sent, 20):
            await conn.send(chunk)
        await conn.send(b"0\r\n\r\n")
        assert await conn.closed(limit=3)
    finally:
        await conn.close()
    replied.assert_error(413, "ValidationException", "exceeds")
    assert local_store.state.list_uploads(STORE_ID) == []


async def test_unsigned_part_refused_from_the_headers(local_store: LocalStore) -> None:
    """403 before any body byte is sent, nothing written to disk, and the connection closed after the reply."""
    port = local_store.port
    upload = new_upload(local_store)
    target = part_target(upload)
    url = f"http://127.0.0.1:{port}{target}"
    good = signed_headers("PUT", url, payload_hash="UNSIGNED-PAYLOAD")
    cases = {
        "unsigned": {"Host": f"127.0.0.1:{port}"},
        "unsigned, body hash not declared": {"Host": f"127.0.0.1:{port}", "X-Amz-Date": good["X-Amz-Date"]},
        "wrong secret": {
            "Host": f"127.0.0.1:{port}",
            **signed_headers("PUT", url, payload_hash="UNSIGNED-PAYLOAD", secret="x"),
        },
        "unknown key": {
            "Host": f"127.0.0.1:{port}",
            **good,
            "Authorization": good["Authorization"].replace("Credential=test/", "Credential=nobody/"),
        },
    }
    for why, headers in cases.items():
        conn = await Connection.open(port)
        try:
            started = time.monotonic()
            await conn.send(head_bytes("PUT", target, {**headers, "Content-Length": str(4 * MIB)}))
            reply = await conn.reply(limit=3)
            assert time.monotonic() - started < 3, why
            reply.assert_error(403, "AccessDeniedException")
            assert reply.headers.get("connection", "").lower() == "close", (why, reply.headers)
            assert not list(local_store.state.upload(STORE_ID, upload).directory.iterdir()), why
            # What still comes is discarded, not kept, and the connection then closes.
            await conn.send(b"@" * (4 * MIB))
            assert await conn.closed(limit=8), why
        finally:
            await conn.close()
    assert local_store.state.upload(STORE_ID, upload).parts == {}


async def test_unknown_routes_and_methods(local_store: LocalStore) -> None:
    port = local_store.port
    (await signed(port, "GET", "/")).assert_error(404, "UnknownOperationException")
    (await signed(port, "GET", f"/sequencestore/{STORE_ID}/nothing")).assert_error(404, "UnknownOperationException")
    (await signed(port, "GET", f"/sequencestore/{STORE_ID}/upload")).assert_error(405, "NotSupportedOperationException")
    reply = await signed(port, "PATCH", f"/sequencestore/{STORE_ID}/uploads")
    reply.assert_error(405, "NotSupportedOperationException")


async def test_malformed_http_gets_rest_json(local_store: LocalStore) -> None:
    port = local_store.port
    for raw in (
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
    ):
        conn = await Connection.open(port)
        try:
            await conn.send(raw)
            reply = await conn.reply()
        finally:
            await conn.close()
        assert 400 <= reply.status < 500, (raw[:40], reply)
        assert reply.code in ("ValidationException", "UnknownOperationException"), (raw[:40], reply)
        assert set(json.loads(reply.body)) == {"message"}


async def test_idle_and_slow_connections_are_closed(make_store: MakeStore) -> None:
    store = await make_store(idle_timeout=0.5, body_timeout=0.5)
    port = store.port
    idle = await Connection.open(port)
    slowloris = await Connection.open(port)
    try:
        started = time.monotonic()
        for byte in b"POST /sequencestore/1234567890/uploads HTTP/1.1\r\nHost: x\r\n":
            try:
                await slowloris.send(bytes([byte]))
            except ConnectionError:
                break
            await asyncio.sleep(0.02)
        assert await idle.closed(limit=3)
        assert await slowloris.closed(limit=3)
        assert time.monotonic() - started < 4
    finally:
        await idle.close()
        await slowloris.close()
    # A part body that stalls: 408 in the service's shape, nothing recorded.
    upload = new_upload(store)
    target = part_target(upload)
    headers = {
        "Host": f"127.0.0.1:{port}",
        **signed_headers("PUT", f"http://127.0.0.1:{port}{target}", payload_hash="UNSIGNED-PAYLOAD"),
    }
    headers["Content-Length"] = "1000"
    conn = await Connection.open(port)
    try:
        await conn.send(head_bytes("PUT", target, headers) + b"@" * 10)
        (await conn.reply(limit=3)).assert_error(408, "RequestTimeoutException")
    finally:
        await conn.close()
    assert store.state.upload(STORE_ID, upload).parts == {}
    assert not list(store.state.upload(STORE_ID, upload).directory.iterdir())
