"""Raw HTTP/1.1 for the store's tests: requests signed by hand with botocore's SigV4Auth, sent on a bare socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

STORE_ID = "1234567890"
FIELDS = {"sourceFileType": "FASTQ", "subjectId": "s", "sampleId": "s", "name": "n"}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def code(self) -> str | None:
        return self.headers.get("x-amzn-errortype")

    def assert_error(self, status: int, code: str, text: str = "") -> None:
        """The service's error shape: the status, x-amzn-ErrorType and a JSON body of one message."""
        assert (self.status, self.code) == (status, code), (self.status, self.headers, self.body[:300])
        assert self.headers.get("content-type", "").startswith("application/json"), self.headers
        body = json.loads(self.body)
        assert set(body) == {"message"} and isinstance(body["message"], str)
        assert text in body["message"], body


def signed_headers(
    method: str, url: str, body: bytes = b"", payload_hash: str | None = None, secret: str = "test"
) -> dict[str, str]:
    request = AWSRequest(method=method, url=url, data=body)
    if payload_hash is not None:
        request.headers["X-Amz-Content-SHA256"] = payload_hash
    SigV4Auth(Credentials("test", secret), "omics", "us-east-1").add_auth(request)
    return {k: str(v) for k, v in request.headers.items()}


def head_bytes(method: str, target: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


async def read_reply(reader: asyncio.StreamReader, limit: float = 10.0) -> Reply:
    async with asyncio.timeout(limit):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Reply(int(status_line.split()[1]), headers, body)


class Connection:
    """One TCP connection to the store: ``await conn.send(...)``, ``await conn.reply()``, ``await conn.closed()``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def reply(self, limit: float = 10.0) -> Reply:
        return await read_reply(self.reader, limit)

    async def closed(self, limit: float = 10.0) -> bool:
        """True once the store has closed the connection (EOF or reset) within ``limit`` seconds."""
        try:
            async with asyncio.timeout(limit):
                while await self.reader.read(65536):
                    pass
            return True
        except ConnectionError:
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def request(port: int, method: str, target: str, headers: dict[str, str], body: bytes = b"") -> Reply:
    conn = await Connection.open(port)
    try:
        await conn.send(head_bytes(method, target, headers) + body)
        return await conn.reply()
    finally:
        await conn.close()


async def signed(
    port: int, method: str, target: str, body: bytes = b"", payload_hash: str | None = None, **extra: Any
) -> Reply:
    """A correctly signed request (Host 127.0.0.1:PORT) with ``extra`` headers added after signing."""
    url = f"http://127.0.0.1:{port}{target}"
    headers = {"Host": f"127.0.0.1:{port}", **signed_headers(method, url, body, payload_hash)}
    headers["Content-Length"] = str(len(body))
    headers.update({k.replace("_", "-"): v for k, v in extra.items()})
    return await request(port, method, target, headers, body)
