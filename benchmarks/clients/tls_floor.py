"""The least a Python client on OpenSSL can do to move the bytes: no HTTP, no signing, no checksum, no library.

One thread per source opens a TLS connection to ``--endpoint`` (a terminator in front of a sink that throws the
bytes away), trusting ``AWS_CA_BUNDLE``, and writes the file through it: each MiB read from the page cache into one
buffer with ``preadv``, then ``sendall`` on a blocking ``ssl.SSLSocket``, OpenSSL encrypting with the GIL released.
What any uploader spends above this is its own; what this spends is the floor under every client of the kind.
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


def _send(path: str, context: ssl.SSLContext, host: str, port: int) -> None:
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
    errors: list[BaseException] = []

    def send(path: str) -> None:
        try:
            _send(path, context, target.hostname or "127.0.0.1", target.port or 443)
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
    raise SystemExit(_common.main(run, _common.parser(__doc__ or "").parse_args()))
