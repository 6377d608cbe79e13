"""The store's --hash-parts: SHA-256 over every part body received, whatever the request declared."""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Awaitable, Callable

import aiohttp
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from async_uploader.emulator import LocalStore
from async_uploader.emulator.app import wants_body_sha256
from async_uploader.emulator.auth import UNSIGNED_PAYLOAD
from async_uploader.emulator.cli import add_arguments, options_from_args

STORE_ID = "1234567890"
FIELDS = {"sourceFileType": "FASTQ", "subjectId": "s", "sampleId": "s", "name": "n"}
MakeStore = Callable[..., Awaitable[LocalStore]]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_flag_round_trips_from_the_command_line() -> None:
    assert options_from_args(parse("--discard", "--hash-parts")).hash_parts is True
    assert options_from_args(parse("--discard")).hash_parts is False


def test_which_bodies_are_hashed() -> None:
    declared = hashlib.sha256(b"x").hexdigest()
    # Without the flag: only where a signature or a declared hash needs the body's SHA-256.
    assert wants_body_sha256(None, hash_parts=False)
    assert wants_body_sha256(declared, hash_parts=False)
    assert not wants_body_sha256(UNSIGNED_PAYLOAD, hash_parts=False)
    # With it: every body.
    assert all(wants_body_sha256(sent, hash_parts=True) for sent in (None, declared, UNSIGNED_PAYLOAD))


async def put_part(store: LocalStore, upload_id: str, number: int, body: bytes, content_sha: str) -> int:
    url = f"{store.url}/sequencestore/{STORE_ID}/upload/{upload_id}/part?partSource=SOURCE1&partNumber={number}"
    request = AWSRequest(method="PUT", url=url, data=body, headers={"X-Amz-Content-SHA256": content_sha})
    SigV4Auth(Credentials("test", "test"), "omics", "us-east-1").add_auth(request)
    headers = {key: str(value) for key, value in request.headers.items()}
    async with aiohttp.ClientSession() as session, session.put(url, data=body, headers=headers) as response:
        await response.read()
        return response.status


async def test_hashing_store_accepts_unsigned_and_checks_declared_hashes(make_store: MakeStore) -> None:
    store = await make_store(discard=True, hash_parts=True)
    upload = store.state.create_upload(STORE_ID, dict(FIELDS))["uploadId"]
    body = b"@read\nACGT\n+\nIIII\n" * 1000
    assert await put_part(store, upload, 1, body, UNSIGNED_PAYLOAD) == 200
    assert await put_part(store, upload, 2, body, hashlib.sha256(body).hexdigest()) == 200
    assert await put_part(store, upload, 3, body, hashlib.sha256(b"other").hexdigest()) == 400
    assert [record["status"] for record in store.requests] == [200, 200, 400]
    assert [record["bytes"] for record in store.requests[:2]] == [len(body)] * 2
