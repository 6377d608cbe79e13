"""The least a Python client on OpenSSL can do to move the bytes: no HTTP, no signing, no checksum, no library.

One thread per source opens a TLS connection to ``--endpoint`` (a terminator in front of a sink that throws the
bytes away), trusting ``AWS_CA_BUNDLE``, and writes the file through it: each MiB read from the page cache into one
buffer with ``preadv``, then ``sendall`` on a blocking ``ssl.SSLSocket``, OpenSSL encrypting with the GIL released.
What any uploader spends above this is its own; what this spends is the floor under every client of the kind.

``--design`` adds what async_uploader's design cannot do without, and nothing else: asyncio and botocore imported,
the credentials resolved through a botocore session (the chain users rely on) and each 100 MiB signed with SigV4
before it is written, as a part request would be. What a client of that design spends above this is its own.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

import _common

SLICE = 1024 * 1024
PART = 100 * 1024 * 1024


class _Design:
    """What the design requires beyond the bytes: the imports, the credential chain, a SigV4 signature per part."""

    def __init__(self, endpoint: str) -> None:
        import asyncio  # noqa: F401 (imported for its cost: the engine runs on it)

        import botocore.auth
        import botocore.awsrequest
        import botocore.session

        credentials = botocore.session.Session().get_credentials()
        if credentials is None:
            raise RuntimeError("no AWS credentials")
        self._auth = botocore.auth.SigV4Auth(credentials.get_frozen_credentials(), "omics", _common.REGION)
        self._request = botocore.awsrequest.AWSRequest
        self._endpoint = endpoint

    def sign(self, number: int) -> None:
        request = self._request("PUT", f"{self._endpoint}/part?partNumber={number}", data=b"")
        request.headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
        self._auth.add_auth(request)


def _send(path: str, context: ssl.SSLContext, host: str, port: int, design: _Design | None) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        buffer = memoryview(bytearray(SLICE))
        with (
            socket.create_connection((host, port)) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            offset = 0
            while offset < size:
                if design is not None and offset % PART == 0:
                    design.sign(offset // PART + 1)
                got = os.preadv(fd, [buffer], offset)
                if not got:
                    raise OSError(f"{path}: file shrank at byte {offset}")
                tls.sendall(buffer[:got])
                offset += got
    finally:
        os.close(fd)


def run(args: argparse.Namespace) -> dict[str, Any]:
    target = urlsplit(args.endpoint)
    context = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE"))
    design = _Design(args.endpoint) if args.design else None
    errors: list[BaseException] = []

    def send(path: str) -> None:
        try:
            _send(path, context, target.hostname or "127.0.0.1", target.port or 443, design)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(path,)) for path in _common.sources(args)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return {"bytes": sum(_common.source_sizes(args)), "parts": len(threads)}


if __name__ == "__main__":
    parser = _common.parser(__doc__ or "")
    parser.add_argument("--design", action="store_true", help="also import, resolve and sign as the design must")
    raise SystemExit(_common.main(run, parser.parse_args()))
