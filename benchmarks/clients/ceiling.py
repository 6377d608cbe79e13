"""The ceiling: the same bytes PUT by a bare aiohttp client, with nothing an uploader adds.

Create, then ``--concurrency`` workers each PUT one part at a time, the body read from the file in 1 MiB slices
with an explicit Content-Length (never chunked), then Complete. An https:// endpoint is trusted through the CA
file in ``AWS_CA_BUNDLE`` when that is set, as botocore does. No retries, no digest, no progress, no checkpoint.
The store verifies SigV4, so each request is signed once with botocore's signer (UNSIGNED-PAYLOAD for parts: a few
tens of microseconds per part, noise next to a 100 MiB body). With tiny parts the same client is the *floor*:
signed small PUTs from a plain aiohttp loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import _common
import aiohttp
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

DEFAULT_PART_SIZE = 100 * 1024 * 1024
DEFAULT_CONCURRENCY = 10
SLICE = 1024 * 1024


class _Signer:
    def __init__(self) -> None:
        key = os.environ.get("AWS_ACCESS_KEY_ID", "test")
        secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "test")
        self._auth = SigV4Auth(Credentials(key, secret), "omics", _common.REGION)

    def headers(self, method: str, url: str, body: bytes | None) -> dict[str, str]:
        headers = {"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"} if body is None else {}
        if body:
            headers["Content-Type"] = "application/json"
        request = AWSRequest(method=method, url=url, data=body or b"", headers=headers)
        self._auth.add_auth(request)
        return dict(request.headers.items())


async def _call(
    session: aiohttp.ClientSession, signer: _Signer, method: str, url: str, payload: dict[str, Any]
) -> dict[str, Any]:
    body = json.dumps(payload).encode()
    async with session.request(method, url, data=body, headers=signer.headers(method, url, body)) as response:
        text = await response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {url}: {response.status} {text[:200]!r}")
        result: dict[str, Any] = json.loads(text or b"{}")
        return result


async def _slices(fd: int, offset: int, length: int) -> AsyncIterator[bytes]:
    end = offset + length
    while offset < end:
        chunk = os.pread(fd, min(SLICE, end - offset), offset)
        if not chunk:
            raise OSError("source shorter than expected")
        offset += len(chunk)
        yield chunk


async def _upload(session: aiohttp.ClientSession, signer: _Signer, args: argparse.Namespace, index: int) -> int:
    base = f"{args.endpoint.rstrip('/')}/sequencestore/{args.store_id}"
    part_size = args.part_size or DEFAULT_PART_SIZE
    created = await _call(
        session,
        signer,
        "POST",
        f"{base}/upload",
        {
            "sourceFileType": "FASTQ",
            "subjectId": _common.SUBJECT,
            "sampleId": _common.SAMPLE,
            "name": _common.name(index),
        },
    )
    upload_id = created["uploadId"]
    fds = [os.open(path, os.O_RDONLY) for path in _common.sources(args)]
    done: list[dict[str, Any]] = []

    def plan() -> Iterator[tuple[str, int, int, int, int]]:
        for source, fd, size in zip(("SOURCE1", "SOURCE2"), fds, _common.source_sizes(args), strict=False):
            for number, offset, length in _common.split(size, part_size):
                yield source, fd, number, offset, length

    parts = plan()

    async def worker() -> None:
        for source, fd, number, offset, length in parts:
            url = f"{base}/upload/{upload_id}/part?partSource={source}&partNumber={number}"
            headers = signer.headers("PUT", url, None)
            headers["Content-Length"] = str(length)
            async with session.put(url, data=_slices(fd, offset, length), headers=headers) as response:
                text = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"part {source} {number}: {response.status} {text[:200]!r}")
            checksum = json.loads(text)["checksum"]
            done.append({"partNumber": number, "partSource": source, "checksum": checksum})

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(args.concurrency or DEFAULT_CONCURRENCY):
                group.create_task(worker())
    finally:
        for fd in fds:
            os.close(fd)
    done.sort(key=lambda part: (part["partSource"], part["partNumber"]))
    await _call(session, signer, "POST", f"{base}/upload/{upload_id}/complete", {"parts": done})
    return len(done)


def _tls() -> ssl.SSLContext | bool:
    """The CAs to check an https:// endpoint against: ``AWS_CA_BUNDLE`` when set, as botocore reads it."""
    bundle = os.environ.get("AWS_CA_BUNDLE")
    return ssl.create_default_context(cafile=bundle) if bundle else True


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    signer = _Signer()
    connector = aiohttp.TCPConnector(limit=0, ssl=_tls())
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=20)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        counts = await asyncio.gather(*(_upload(session, signer, args, i) for i in range(args.count)))
        seconds = time.perf_counter() - started
    return {"bytes": sum(_common.source_sizes(args)) * args.count, "parts": sum(counts), "seconds": seconds}


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.uvloop:
        import uvloop

        return {**uvloop.run(_main(args)), "loop": "uvloop"}
    return {**asyncio.run(_main(args)), "loop": "asyncio"}


if __name__ == "__main__":
    cli = _common.parser(__doc__ or "")
    cli.add_argument("--uvloop", action="store_true", help="run on uvloop instead of asyncio's own loop")
    raise SystemExit(_common.main(run, cli.parse_args()))
