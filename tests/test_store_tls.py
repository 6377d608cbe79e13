"""HTTPS: ``serve --tls`` makes a CA and a certificate for the loopback names, or serves the one it is given."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import botocore.exceptions
import pytest
import trustme
from botocore.config import Config

from async_uploader.emulator import LocalStore
from tests.store_helpers import STORE_ID, active, upload_read_set
from tests.store_raw import signed_headers
from tests.store_serve import ROOT, serve

MakeStore = Callable[..., Awaitable[LocalStore]]


def omics_over(url: str, verify: str | bool) -> Any:
    return boto3.client(
        "omics",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        verify=verify,
        config=Config(inject_host_prefix=False, retries={"mode": "standard", "total_max_attempts": 1}),
    )


def round_trip(url: str, ca_file: Path) -> None:
    client = omics_over(url, str(ca_file))
    data = gzip.compress(b"@r1\nACGT\n+\nIIII\n@r2\nGG\n+\nII\n")
    read_set = upload_read_set(client, {"SOURCE1": [data[:10], data[10:]]})
    meta = active(client, read_set)
    assert meta["sequenceInformation"]["totalReadCount"] == 2
    got = b"".join(
        client.get_read_set(sequenceStoreId=STORE_ID, id=read_set, file="SOURCE1", partNumber=n)["payload"].read()
        for n in range(1, meta["files"]["source1"]["totalParts"] + 1)
    )
    assert got == data
    # Without the printed CA the certificate is not trusted: the TLS is real.
    with pytest.raises(botocore.exceptions.SSLError):
        omics_over(url, True).list_multipart_read_set_uploads(sequenceStoreId=STORE_ID)


def test_serve_tls_round_trip_with_the_printed_ca(tmp_path: Path) -> None:
    with serve(tmp_path, "--tls") as served:
        assert served.url.startswith("https://127.0.0.1:") and served.ca_file is not None
        assert served.ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
        round_trip(served.url, served.ca_file)
        # The certificate names localhost too.
        round_trip(served.url.replace("127.0.0.1", "localhost"), served.ca_file)


async def test_in_process_tls_store(make_store: MakeStore) -> None:
    store = await make_store(tls=True)
    assert store.url.startswith("https://") and store.ca_path is not None and store.ca_path.is_file()
    target = f"/sequencestore/{STORE_ID}/uploads"
    async with aiohttp.ClientSession() as session:
        url = store.url + target
        async with session.post(url, headers=signed_headers("POST", url), ssl=store.client_ssl_context()) as reply:
            assert reply.status == 200 and await reply.json() == {"uploads": []}
        # Plain HTTP to the TLS port gets nothing a client could take for a reply.
        with pytest.raises(aiohttp.ClientError):
            plain = url.replace("https://", "http://")
            async with session.post(plain, headers=signed_headers("POST", plain)) as reply:
                await reply.read()
    assert [r["status"] for r in store.requests] == [200]


async def test_given_certificate(make_store: MakeStore, tmp_path: Path) -> None:
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.private_key_and_cert_chain_pem.write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    store = await make_store(tls=True, tls_cert=cert, tls_key=key)
    assert store.ca_path is None
    context = ssl.create_default_context()
    authority.configure_trust(context)
    url = f"{store.url}/sequencestore/{STORE_ID}/uploads"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, headers=signed_headers("POST", url), ssl=context) as reply,
    ):
        assert reply.status == 200


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"], "cannot use --tls-cert"),
        (["--tls-cert", "/nonexistent/cert.pem"], "go together"),
        (["--etag-family", "CRC32up"], "invalid choice"),
        (["--idle-timeout", "0"], "idle_timeout must be positive"),
    ],
)
def test_bad_serve_flags_are_one_line_errors(flags: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "async_uploader.emulator", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert message in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(("error:", "python -m async_uploader.emulator: error:"))


async def test_made_ca_verifies_only_loopback_names(make_store: MakeStore) -> None:
    store = await make_store(tls=True)
    assert store.ca_path is not None
    context = store.client_ssl_context()
    _, writer = await asyncio.open_connection("127.0.0.1", store.port, ssl=context, server_hostname="localhost")
    writer.close()
    await writer.wait_closed()
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.open_connection("127.0.0.1", store.port, ssl=context, server_hostname="example.org")
