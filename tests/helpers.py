"""Shared test helpers: a store in a few lines behind the transport seam, source files, settings and CLI argv.

``ScriptedStore`` stands behind ``MockTransport`` for engine tests that need no server.

``store = ScriptedStore()``; ``Uploader(..., transport=MockTransport(store))``; ``store.script(operation, outcome,
...)`` queues what the next requests of that operation get instead of the normal answer: a ``Response``, an
exception to raise, or ``HANG`` (never answer). Every request is kept in ``store.seen``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import socket
import ssl
import subprocess
import sys
import time
import zlib
from collections import Counter, deque
from pathlib import Path
from typing import Any

import anyio

from async_uploader import FileType, RateLimits, ReadSet, RetryConfig, UploadConfig
from async_uploader.core.errors import TransportError
from async_uploader.edge.transport import Response, SentRequest

HANG = object()
"""An outcome: the request is never answered (until it is cancelled)."""


class Delay:
    """An outcome: the normal answer, ``seconds`` late."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class LostReply:
    """An outcome: the store does what the request asks, and the connection breaks before its answer."""


class Gate:
    """An outcome: the normal answer once the test calls ``open()``: a wait on the test's word, not a guessed time.

    One gate may be scripted for several requests; every one of them waits for the same ``open()``.
    """

    def __init__(self) -> None:
        self._opened = anyio.Event()

    def open(self) -> None:
        self._opened.set()

    async def wait(self) -> None:
        await self._opened.wait()


UPLOAD_ID = "1000000001"
READ_SET_ID = "2000000001"


def error(status: int, code: str, message: str = "scripted") -> Response:
    """A rest-json error reply, as the service sends it."""
    return Response(status, {"x-amzn-ErrorType": code}, json.dumps({"message": message}).encode())


def throttled() -> Response:
    return error(429, "ThrottlingException", "Rate exceeded")


def _ok(body: dict[str, Any]) -> Response:
    return Response(200, {"Content-Type": "application/json"}, json.dumps(body).encode())


def operation_of(request: SentRequest) -> str:
    path = request.url_parts.path
    if request.method == "PUT":
        return "UploadReadSetPart"
    if request.method == "DELETE":
        return "AbortMultipartReadSetUpload"
    if request.method == "GET":
        if path.endswith("/metadata"):
            return "GetReadSetMetadata"
        if "/readset/" in path:
            return "GetReadSet"
        return "GetSequenceStore" if path.startswith("/sequencestore/") else "probe"
    for suffix, name in (
        ("/upload", "CreateMultipartReadSetUpload"),
        ("/complete", "CompleteMultipartReadSetUpload"),
        ("/parts", "ListReadSetUploadParts"),
        ("/uploads", "ListMultipartReadSetUploads"),
        ("/readsets", "ListReadSets"),
    ):
        if path.endswith(suffix):
            return name
    raise AssertionError(f"no operation for {request.method} {path}")


class ScriptedStore:
    """Answers like a store that accepts everything, except what a test scripted."""

    def __init__(self) -> None:
        self.seen: list[SentRequest] = []
        self.counts: Counter[str] = Counter()
        self.parts: dict[tuple[str, int], bytes] = {}
        self.completed: dict[str, dict[str, Any]] = {}  # read set id -> its ListReadSets/metadata answer
        self._script: dict[str, deque[object]] = {}

    def script(self, operation: str, *outcomes: object) -> None:
        self._script.setdefault(operation, deque()).extend(outcomes)

    def sent(self, operation: str) -> list[SentRequest]:
        return [request for request in self.seen if operation_of(request) == operation]

    async def __call__(self, request: SentRequest) -> Response:
        operation = operation_of(request)
        self.seen.append(request)
        self.counts[operation] += 1
        queued = self._script.get(operation)
        if queued:
            outcome = queued.popleft()
            if outcome is HANG:
                await anyio.sleep_forever()
            if isinstance(outcome, Delay):
                await anyio.sleep(outcome.seconds)
                return self._answer(operation, request)
            if isinstance(outcome, Gate):
                await outcome.wait()
                return self._answer(operation, request)
            if isinstance(outcome, LostReply):
                self._answer(operation, request)
                raise TransportError(f"{request.method} {request.url_parts.host}: connection reset by peer")
            if isinstance(outcome, BaseException):
                raise outcome
            if isinstance(outcome, Response):
                return outcome
            raise AssertionError(f"unknown outcome {outcome!r}")
        return self._answer(operation, request)

    def _answer(self, operation: str, request: SentRequest) -> Response:
        if operation == "CreateMultipartReadSetUpload":
            return _ok({"uploadId": UPLOAD_ID})
        if operation == "UploadReadSetPart":
            query = dict(request.url_parts.query)
            key = (query["partSource"], int(query["partNumber"]))
            self.parts[key] = request.body
            return _ok({"checksum": f"c-{key[0]}-{key[1]}-{len(request.body)}"})
        if operation == "CompleteMultipartReadSetUpload":
            if READ_SET_ID in self.completed:
                return error(404, "ResourceNotFoundException", "no such upload")
            files: dict[str, dict[str, int]] = {}
            for (source, _), body in sorted(self.parts.items()):
                entry = files.setdefault(f"source{source[-1]}", {"contentLength": 0, "totalParts": 0})
                entry["contentLength"] += len(body)
                entry["totalParts"] += 1
            self.completed[READ_SET_ID] = {"id": READ_SET_ID, "status": "ACTIVE", "name": "read set", "files": files}
            return _ok({"readSetId": READ_SET_ID})
        if operation == "GetReadSetMetadata":
            return _ok(self.completed.get(READ_SET_ID) or {"id": READ_SET_ID, "status": "ACTIVE"})
        if operation == "ListReadSets":
            return _ok({"readSets": list(self.completed.values())})
        if operation == "AbortMultipartReadSetUpload":
            return _ok({})
        if operation == "probe":
            return error(404, "UnknownOperationException", "no operation at this path")
        if operation == "GetSequenceStore":
            return _ok({"id": "1234567890", "eTagAlgorithmFamily": "MD5up"})
        raise AssertionError(f"{operation} is not answered by the scripted store")


def fast_config(part_size: int, **extra: Any) -> UploadConfig:
    """No rate limits and retries in milliseconds: engine tests that take no time."""
    settings: dict[str, Any] = {
        "part_size": part_size,
        "rates": RateLimits.unlimited(),
        "retry": RetryConfig(max_attempts=5, base_delay=0.001, max_delay=0.01),
    }
    settings.update(extra)
    return UploadConfig(**settings)


_BASES = bytes(b"ACGT"[n % 4] for n in range(256))
_QUALITIES = bytes(b"#+5?@FI"[n % 7] for n in range(256))


def _record(rng: random.Random, size: int, number: int) -> bytes:
    """One FASTQ record of exactly ``size`` bytes (at least 9): ``@NAME`` / bases / ``+`` / qualities."""
    name_length = 1 + (size - 7) % 2
    bases = (size - 6 - name_length) // 2
    name = (str(number % 10) * name_length).encode()
    sequence = rng.randbytes(bases).translate(_BASES)
    quality = rng.randbytes(bases).translate(_QUALITIES)
    return b"@" + name + b"\n" + sequence + b"\n+\n" + quality + b"\n"


def _stored_member(text: bytes) -> bytes:
    """A gzip member holding ``text`` in one stored (uncompressed) deflate block: exactly len(text) + 23 bytes."""
    assert len(text) <= 0xFFFF
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    block = bytes([1]) + len(text).to_bytes(2, "little") + (0xFFFF ^ len(text)).to_bytes(2, "little")
    trailer = zlib.crc32(text).to_bytes(4, "little") + len(text).to_bytes(4, "little")
    return header + block + text + trailer


def fastq_gz(size: int, seed: int = 0) -> bytes:
    """A valid gzip FASTQ of exactly ``size`` bytes (at least 32): random reads, compressed at level 1 in members,
    the last ones stored so the size comes out exact. Its bytes differ from offset to offset, so a byte out of
    place anywhere shows, and the store's ETag and counts are those of real FASTQ."""
    rng = random.Random(seed)
    out = bytearray()
    number = 0
    while size - len(out) > 600_000:
        text = b"".join(_record(rng, rng.randint(60, 400), number + n) for n in range(2000))
        number += 2000
        out += gzip.compress(text, compresslevel=1, mtime=0)
    while len(out) < size:
        left = size - len(out)
        take = min(left, 60_000)
        if 0 < left - take < 32:
            take = left - 32
        out += _stored_member(_record(rng, take - 23, number))
        number += 1
    assert len(out) == size
    return bytes(out)


def fastq_text(reads: int, seed: int = 0, length: int = 150, crlf: bool = False) -> bytes:
    """``reads`` FASTQ records of 1..``length`` random bases, qualities holding '@' and '+' (not line markers)."""
    rng = random.Random(seed)
    end = "\r\n" if crlf else "\n"
    records = []
    for n in range(reads):
        size = rng.randint(1, length)
        bases = "".join(rng.choices("ACGTN", k=size))
        quality = "".join(rng.choices("#+5@FI", k=size))
        records.append(f"@read{n} 1:N:0:ACGT{end}{bases}{end}+{end}{quality}{end}")
    return "".join(records).encode()


def gzip_members(data: bytes, count: int) -> bytes:
    """``data`` gzip-compressed as ``count`` concatenated members."""
    step = -(-len(data) // count)
    return b"".join(gzip.compress(data[i : i + step], compresslevel=6) for i in range(0, len(data), step))


def fastq_plain(size: int, seed: int = 0) -> bytes:
    """Plain (uncompressed) FASTQ of exactly ``size`` bytes (at least 9): random records, the last one sized to fit.
    Any base may be changed to another in place and it stays valid FASTQ of the same size."""
    rng = random.Random(seed)
    records: list[bytes] = []
    left, number = size, 0
    while left > 800:
        record = _record(rng, rng.randint(60, 400), number)
        records.append(record)
        left -= len(record)
        number += 1
    records.append(_record(rng, left, number))
    data = b"".join(records)
    assert len(data) == size
    return data


def gzip_like(path: Path, size: int, seed: int = 0) -> Path:
    """Write a valid FASTQ.gz of exactly ``size`` bytes (``fastq_gz``) to ``path``."""
    path.write_bytes(fastq_gz(size, seed or zlib.crc32(path.name.encode())))
    return path


def paired(directory: Path, size: int) -> ReadSet:
    first, second = gzip_like(directory / "r1.fq.gz", size), gzip_like(directory / "r2.fq.gz", size)
    return ReadSet(first, FileType.FASTQ, "subject-1", "sample-1", "read set", source2=second)


def upload_argv(
    url: str, *sources: Path, name: str = "n", extra: tuple[str, ...] = (), progress: bool = False
) -> list[str]:
    """``async-uploader upload`` of ``sources`` as FASTQ into store 1234567890 at ``url`` (no progress bar unless
    ``progress``)."""
    return [
        "upload",
        *map(str, sources),
        "--store-id",
        "1234567890",
        "--file-type",
        "FASTQ",
        "--subject-id",
        "s",
        "--sample-id",
        "x",
        "--name",
        name,
        "--endpoint-url",
        url,
        *([] if progress else ["--no-progress"]),
        *extra,
    ]


# --- real processes and endpoints around the local store: a TLS front, an HTTP proxy ---------------------------


class TlsFront:
    """An HTTPS endpoint for a plain-HTTP server on 127.0.0.1: terminates TLS with a certificate for ``localhost``
    and 127.0.0.1 issued by ``ca`` (a trustme CA) and relays the bytes both ways. ``url`` is https://localhost:PORT.
    """

    def __init__(self, target_port: int, ca: Any) -> None:
        self.target_port = target_port
        self.ca = ca
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def __aenter__(self) -> TlsFront:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=context)
        self.url = f"https://localhost:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for stream in (writer, up_writer):
                stream.close()
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(256 * 1024):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, ssl.SSLError):
        pass


class HttpProxy:
    """A real forward proxy (proxy.py) on 127.0.0.1, port 0, in its own process; ``access_lines()`` is its log.

    ``auth`` is ``USER:PASSWORD`` to require Proxy-Authorization. ``with HttpProxy(dir) as proxy:`` starts it
    and stops it again (a plain context manager, so a module-scoped fixture can share one).
    """

    def __init__(self, directory: Path, auth: str | None = None) -> None:
        self.directory = directory
        self.auth = auth
        self.log = directory / "proxy.log"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> HttpProxy:
        self.directory.mkdir(parents=True, exist_ok=True)
        port_file = self.directory / "proxy.port"
        argv = [sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", "0"]
        argv += ["--port-file", str(port_file), "--log-file", str(self.log), "--log-level", "INFO"]
        argv += ["--num-workers", "1", "--num-acceptors", "1"]
        if self.auth:
            argv += ["--basic-auth", self.auth]
        self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self._process.poll() is None:
            text = port_file.read_text() if port_file.exists() else ""
            if text.strip().isdigit() and self._accepts(int(text)):
                self.port = int(text)
                return self
            time.sleep(0.1)
        self.__exit__()
        raise AssertionError("proxy.py did not start listening within 30 s")

    @staticmethod
    def _accepts(port: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def url(self, credentials: str | None = None) -> str:
        return f"http://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}"

    def access_lines(self) -> list[str]:
        """The proxy's access log: one line per request it handled (``GET host:port/path``, ``CONNECT host:port``)."""
        if not self.log.exists():
            return []
        return [line for line in self.log.read_text(errors="replace").splitlines() if "access_log" in line]
